"""Fast paths of the spiking neurons: one autograd Function per neuron over the whole time axis.

Design: the forward runs the membrane loop without building an autograd graph and saves only
what the backward needs: the spike level `q` and the straight-through window `lo*a <= u <= a`,
as int8 levels and a bool window eagerly, or packed in one int8 code per element inside a
compiled graph, where a bool output defeats vectorisation (the reference loop keeps several float
copies per step). The backward is the hand-written BPTT of the same equations. `reference.py` holds the
plain loops these are tested against (spikes exactly equal, gradients to 1e-6).

Shapes are time-first: `x: [T, ...]`; `alpha: [T]`, one amplitude per step.
"""

from __future__ import annotations

import torch


def _bcast(a: torch.Tensor, ndim: int) -> torch.Tensor:
    """`[T]` -> `[T, 1, 1, ...]`, broadcastable against a `[T, ...]` tensor of `ndim` dims."""
    return a.view(-1, *([1] * (ndim - 1)))


def membrane_step(u, s_prev, a_prev, x_t, decay: float, reset: str):
    """u_t from u_{t-1}, the previous spike and amplitude; `u is None` at t = 0."""
    if u is None or reset == "none":
        return x_t
    if reset == "official":
        return decay * u * (a_prev - s_prev) + x_t
    return decay * (u - s_prev) + x_t


@torch.no_grad()
def calibrate_bi_spike(
    x: torch.Tensor, k: float, decay: float, reset: str, lo: int, unit: bool, reduce_mean=None
) -> torch.Tensor:
    """alpha_t = k * mean|u_t|, sequentially over t (u_t depends on alpha_{t-1}).

    `reduce_mean(t: Tensor) -> Tensor` averages a scalar across processes (identity if None),
    so every rank calibrates the same amplitudes.
    """
    T = x.shape[0]
    alpha = torch.empty(T, dtype=torch.float32, device=x.device)
    u = s = None
    for t in range(T):  # the amplitudes in the input's dtype, as the forward uses them (bf16 under autocast)
        u = membrane_step(u, s, alpha[t - 1].to(x.dtype) if t else None, x[t], decay, reset)
        m = u.abs().float().mean()
        if reduce_mean is not None:
            m = reduce_mean(m)
        alpha[t] = k * m
        a = alpha[t].clamp_min(1e-5).to(x.dtype)
        q = torch.clamp(torch.round(u / a), lo, 1)
        s = q if unit else a * q
    return alpha


def window_of(u: torch.Tensor, a: torch.Tensor, lo, high: torch.Tensor | None = None) -> torch.Tensor:
    """The straight-through window as 1.0 where lo*a <= u <= a, else 0.0, without boolean tensors:
    inside a compiled graph a bool mask (saved or stored) keeps the CPU kernels from vectorising
    (about ten times slower). ceil(u - a) >= 1 exactly when u > a, so the window matches the
    reference's clamp bit for bit. With per-channel levels (`high`, allocation) the window is
    lo*a <= u <= high*a, `lo` then per channel too."""
    top = a if high is None else high * a
    return 1.0 - torch.clamp(torch.ceil(u - top), 0, 1) - torch.clamp(torch.ceil(lo * a - u), 0, 1)


def encode_state(q: torch.Tensor, u: torch.Tensor, a: torch.Tensor, lo: int) -> torch.Tensor:
    """One int8 per element for the backward: the level q in {-1, 0, 1}, plus 3 when u lies outside
    the straight-through window [lo*a, a] (`window_of`)."""
    return (q + 3.0 * (1.0 - window_of(u, a, lo))).to(torch.int8)


def decode_state(code: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(level q, window 0/1) as `dtype` from `encode_state`'s code, again without booleans."""
    c = code.to(dtype)
    window = torch.clamp(2.0 - c, 0, 1)
    return c - 3.0 + 3.0 * window, window


def _packed_state() -> bool:
    """Inside a compiled graph the backward state is one int8 code per element (`encode_state`);
    eagerly it is a bool window (and int8 levels), which need fewer separate kernels."""
    return torch.compiler.is_compiling()


def bi_spike_forward_kernel(x, alpha, decay: float, reset: str, lo: int, unit: bool, need_state: bool = True):
    """Forward of the whole time axis without autograd, written for the compiler (which fuses each
    step's elementwise work): spikes and, when `need_state` (a backward will follow), the backward
    state, each element's level and straight-through window packed in one int8 code
    (`encode_state`). Eagerly, `bi_spike_forward_eager` computes the same spikes faster."""
    a_all = alpha.to(x.dtype)
    a_clamped = a_all.clamp_min(1e-5)
    outs, steps = [], []
    u = s = None
    for t in range(x.shape[0]):
        u = membrane_step(u, s, a_all[t - 1] if t else None, x[t], decay, reset)
        a = a_clamped[t]
        q = torch.clamp(torch.round(u / a), lo, 1)
        s = q if unit else a * q
        outs.append(s)
        if need_state:
            steps.append(encode_state(q, u, a, lo))
    if not need_state:
        return torch.stack(outs), ()
    return torch.stack(outs), (torch.stack(steps),)


def bi_spike_backward_kernel(grad_out, alpha, state, decay: float, reset: str, unit: bool):
    """Hand-written BPTT: dL/du_t = dL/ds_t * window_t + dL/du_{t+1} * du_{t+1}/du_t."""
    a_all = alpha.to(grad_out.dtype)
    a_clamped = a_all.clamp_min(1e-5)
    grads = [None] * grad_out.shape[0]
    g_next = None
    for t in range(grad_out.shape[0] - 1, -1, -1):
        q, window = decode_state(state[0][t], grad_out.dtype)
        g = grad_out[t] * window
        if g_next is not None and reset != "none":
            if reset == "official":
                s = q if unit else a_clamped[t] * q
                # u_{t+1} = (decay * u_t) * (a_t - s_t) + x_{t+1}
                g = g + g_next * (a_all[t] - s) * decay
            else:
                g = g + g_next * decay
        grads[t] = g
        g_next = g
    return torch.stack(grads)


def bi_spike_forward_eager(x, alpha, decay: float, reset: str, lo: int, unit: bool, need_state: bool = True):
    """`bi_spike_forward_kernel` for eager execution: the same spikes, bit for bit, in fewer passes
    over memory. Every step writes into preallocated outputs and one scratch tensor (in-place ops
    and `out=`, no `torch.stack`), the membrane's products run in the reference's order (no fused
    multiply-add, which rounds differently), and the backward state is a bool window per step
    (|u| <= a for ternary spikes, one comparison) plus int8 levels only where the backward reads
    them (steps 0..T-2 of the official reset). Returns (spikes, (windows,) or (windows, levels))."""
    T = x.shape[0]
    a_all = alpha.to(x.dtype)
    a_clamped = a_all.clamp_min(1e-5)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    scratch = torch.empty(x.shape[1:], dtype=x.dtype, device=x.device)
    windows = levels = below = None
    if need_state:
        windows = torch.empty(x.shape, dtype=torch.bool, device=x.device)
        if lo != -1:
            below = torch.empty(x.shape[1:], dtype=torch.bool, device=x.device)
        if T > 1 and reset == "official":
            levels = torch.empty((T - 1, *x.shape[1:]), dtype=torch.int8, device=x.device)
    u = None
    for t in range(T):
        a = a_clamped[t]
        if t == 0 or reset == "none":
            u = x[t]
        elif reset == "official":  # (decay * u) * (a_{t-1} - s_{t-1}) + x_t
            u = torch.mul(u, decay)
            torch.sub(a_all[t - 1], out[t - 1], out=scratch)
            u.mul_(scratch).add_(x[t])
        else:  # decay * (u - s_{t-1}) + x_t
            u = torch.sub(u, out[t - 1]).mul_(decay).add_(x[t])
        q = torch.div(u, a, out=scratch).round_().clamp_(lo, 1)
        if unit:
            out[t].copy_(q)
        else:
            torch.mul(a, q, out=out[t])
        if need_state:
            if levels is not None and t < T - 1:
                levels[t].copy_(q)
            if lo == -1:  # lo*a <= u <= a is |u| <= a, exactly
                torch.le(torch.abs(u, out=scratch), a, out=windows[t])
            else:
                torch.le(u, a, out=windows[t])
                windows[t].logical_and_(torch.ge(u, lo * a, out=below))
    if not need_state:
        return out, ()
    return out, (windows,) if levels is None else (windows, levels)


def bi_spike_backward_eager(grad_out, alpha, state, decay: float, reset: str, unit: bool):
    """The backward of `bi_spike_forward_eager` (the BPTT of `bi_spike_backward_kernel`), written
    into one preallocated gradient, each product in the reference's order (no fused multiply-add):
    the same gradients bit for bit."""
    windows, levels = state[0], state[1] if len(state) > 1 else None
    T = grad_out.shape[0]
    a_all = alpha.to(grad_out.dtype)
    a_clamped = a_all.clamp_min(1e-5)
    grad_x = torch.empty(grad_out.shape, dtype=grad_out.dtype, device=grad_out.device)
    zero = torch.zeros((), dtype=grad_out.dtype, device=grad_out.device)
    scratch = None
    for t in range(T - 1, -1, -1):
        g = torch.where(windows[t], grad_out[t], zero, out=grad_x[t])  # one pass (a bool factor would be copied to float)
        if t == T - 1 or reset == "none":
            continue
        if reset == "official":  # + dL/du_{t+1} * (a_t - s_t) * decay
            if scratch is None:
                scratch = torch.empty(g.shape, dtype=g.dtype, device=g.device)
            scratch.copy_(levels[t])
            if not unit:
                scratch.mul_(a_clamped[t])
            torch.sub(a_all[t], scratch, out=scratch)
            g.add_(scratch.mul_(grad_x[t + 1]).mul_(decay))  # the reference's order: bit for bit
        else:
            g.add_(torch.mul(grad_x[t + 1], decay))
    return grad_x


def _straight_through(value, u, window):
    """`value` in the forward; gradient `window` (0.0/1.0) with respect to `u` in the backward."""
    return value + (u - u.detach()) * window


def alpha_grad_scale(x_t: torch.Tensor) -> float:
    """LSQ's gradient scale for a step's amplitude: 1 / sqrt(numel * Qp), Qp = 1 (one level each side)."""
    return 1.0 / float(x_t.numel()) ** 0.5


def _scaled(alpha: torch.Tensor, scale: float) -> torch.Tensor:
    """`alpha` in the forward (exactly); its gradient multiplied by `scale`."""
    return alpha.detach() + (alpha * scale - (alpha * scale).detach())


def _spike(u, a, lo, unit: bool, learn_alpha: bool, high: torch.Tensor | None = None):
    """One step's spike with the straight-through gradient to `u`; with `learn_alpha` also the LSQ
    gradient to `a`: -1 (lo) below the range, +1 above, round(u/a) - u/a inside. With per-channel
    levels (`high` and `lo` tensors `[C]`, allocation) the level is clamped to [lo, high] instead."""
    top = 1 if high is None else high
    q = torch.clamp(torch.round(u / a), lo, top)
    if not learn_alpha:
        return _straight_through(q if unit else a * q, u, window_of(u, a, lo, high))
    c = torch.clamp(u / a, lo, top)
    return a * (q.detach() + (c - c.detach()))


def bi_spike_inline(x, alpha, decay: float, reset: str, lo: int, unit: bool, learn_alpha: bool = False):
    """The neuron in plain differentiable ops: the same spikes and gradients as `BiSpikeFunction`.

    No custom autograd Function and no host synchronisation, so `torch.compile` can trace it into
    the graph of a whole layer and fuse it with its neighbours (LayerNorm, GELU, the residual adds)
    in both the forward and the backward. Run eagerly it is slower than `BiSpikeFunction`.
    `learn_alpha`: the amplitudes get LSQ gradients (scaled by `alpha_grad_scale`); the membrane
    still sees them detached (method doc 2.1, 2.4).
    """
    a_all = alpha.detach().to(x.dtype)
    outs = []
    u = s = None
    for t in range(x.shape[0]):
        u = membrane_step(u, None if s is None else s.detach(), a_all[t - 1] if t else None, x[t], decay, reset)
        a = alpha[t].to(x.dtype).clamp_min(1e-5)
        if learn_alpha:
            a = _scaled(a, alpha_grad_scale(x[t]))
        s = _spike(u, a if learn_alpha else a.detach(), lo, unit, learn_alpha)
        outs.append(s)
    return torch.stack(outs)


def stateless_spike_inline(x, alpha, lo: int, unit: bool, learn_alpha: bool = False):
    """`StatelessSpikeFunction` in plain differentiable ops (see `bi_spike_inline`)."""
    outs = []
    for t in range(x.shape[0]):
        a = alpha[t].to(x.dtype).clamp_min(1e-5)
        a = _scaled(a, alpha_grad_scale(x[t])) if learn_alpha else a.detach()
        outs.append(_spike(x[t], a, lo, unit, learn_alpha))
    return torch.stack(outs)


def channel_bounds(salient: torch.Tensor, mode: str, steps: int, lo: int, dtype: torch.dtype):
    """Per-channel spike bounds `(low, high)` of an allocating neuron, each `[C]`: salient channels
    with mode "steps" reach `steps` levels each side (`lo * steps` below), every other channel
    `(lo, 1)`. Float-mode salient channels keep `(lo, 1)`: their spikes are replaced by the input."""
    high = torch.ones(salient.shape, dtype=dtype, device=salient.device)
    if mode == "steps":
        high = high + (steps - 1) * salient.to(dtype)
    return lo * high, high


def bi_spike_allocated(x, alpha, decay: float, reset: str, lo: int, unit: bool, salient: torch.Tensor, mode: str,
                       steps: int, learn_alpha: bool = False):
    """The elastic bi-spiking neuron with outlier-aware allocation over `x: [T, ..., C]`, in plain
    differentiable ops (`bi_spike_inline` with per-channel bounds). `salient: [C]` bool marks the
    salient input channels: with mode "steps" they emit multi-level spikes q * a_t, |q| <= `steps`
    (the membrane and its reset as for every channel, with the spike's full value); with mode
    "float" they emit their input x_t unchanged (gradient 1). Reference:
    `reference.bi_spike_allocated_reference`."""
    a_all = alpha.detach().to(x.dtype)
    low, high = channel_bounds(salient, mode, steps, lo, x.dtype)
    outs = []
    u = s = None
    for t in range(x.shape[0]):
        u = membrane_step(u, None if s is None else s.detach(), a_all[t - 1] if t else None, x[t], decay, reset)
        a = alpha[t].to(x.dtype).clamp_min(1e-5)
        a = _scaled(a, alpha_grad_scale(x[t])) if learn_alpha else a.detach()
        s = _spike(u, a, low, unit, learn_alpha, high)
        outs.append(torch.where(salient, x[t], s) if mode == "float" else s)
    return torch.stack(outs)


_COMPILED: dict[str, object] = {}


def compiled_kernels():
    """torch.compile'd (fused) versions of the two kernels, or None where compiling is unavailable."""
    if "kernels" not in _COMPILED:
        try:
            import torch._dynamo

            # one graph per (T, reset form, levels, amplitude, grad/no-grad): allow more than the default 8
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            _COMPILED["kernels"] = (
                torch.compile(bi_spike_forward_kernel, dynamic=True),
                torch.compile(bi_spike_backward_kernel, dynamic=True),
            )
        except Exception as exc:  # no compiler backend on this platform
            from ..log import logger

            logger.warning("torch.compile is unavailable (%s); neurons run eagerly", exc)
            _COMPILED["kernels"] = None
    return _COMPILED["kernels"]


class BiSpikeFunction(torch.autograd.Function):
    """Multi-step elastic bi-spiking neuron with straight-through BPTT.

    Eagerly (`bi_spike_forward_eager`) it saves a bool window per step and int8 levels for the steps
    the backward reads, instead of float copies; inside a compiled graph, or with `compiled=True`
    (torch.compile'd kernels that fuse each step's elementwise work), one int8 code per element.
    """

    @staticmethod
    def forward(ctx, x, alpha, decay: float, reset: str, lo: int, unit: bool, compiled: bool = False):
        kernels = compiled_kernels() if compiled else None
        eager = kernels is None and not _packed_state()
        fwd = kernels[0] if kernels else bi_spike_forward_eager if eager else bi_spike_forward_kernel
        need_state = any(ctx.needs_input_grad)  # inference and tracing keep no backward state
        out, state = fwd(x, alpha, decay, reset, lo, unit, need_state)
        if need_state:
            ctx.save_for_backward(alpha, *state)
        ctx.decay, ctx.reset, ctx.unit, ctx.kernels, ctx.eager = decay, reset, unit, kernels, eager
        return out

    @staticmethod
    def backward(ctx, grad_out):
        alpha, *state = ctx.saved_tensors
        bwd = ctx.kernels[1] if ctx.kernels else bi_spike_backward_eager if ctx.eager else bi_spike_backward_kernel
        grad_x = bwd(grad_out.contiguous(), alpha, tuple(state), ctx.decay, ctx.reset, ctx.unit)
        return grad_x, None, None, None, None, None, None


class StatelessSpikeFunction(torch.autograd.Function):
    """s_t = alpha_t * clamp(round(x_t / alpha_t), lo, 1) for all t at once; straight-through."""

    @staticmethod
    def forward(ctx, x, alpha, lo: int, unit: bool):
        a = _bcast(alpha.to(x.dtype).clamp_min(1e-5), x.dim())
        if _packed_state():
            q = torch.clamp(torch.round(x / a), lo, 1)
            ctx.save_for_backward(encode_state(q, x, a, lo))
            return q if unit else a * q
        # eagerly: in place, and a window of one comparison for ternary spikes (|x| <= a)
        if any(ctx.needs_input_grad):
            if lo == -1:
                ctx.save_for_backward(torch.abs(x) <= a)
            else:
                ctx.save_for_backward((x >= lo * a) & (x <= a))
        q = torch.div(x, a).round_().clamp_(lo, 1)
        return q if unit else q.mul_(a)

    @staticmethod
    def backward(ctx, grad_out):
        (state,) = ctx.saved_tensors
        if state.dtype == torch.int8:
            return grad_out * decode_state(state, grad_out.dtype)[1], None, None, None
        return torch.where(state, grad_out, torch.zeros((), dtype=grad_out.dtype, device=grad_out.device)), None, None, None


class LIFSpikeFunction(torch.autograd.Function):
    """Heaviside forward, sigmoid-surrogate backward: dS/dz = a * sig(a z) * (1 - sig(a z))."""

    @staticmethod
    def forward(ctx, z, surrogate_alpha: float):
        ctx.save_for_backward(z)
        ctx.surrogate_alpha = surrogate_alpha
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (z,) = ctx.saved_tensors
        a = ctx.surrogate_alpha
        sig = torch.sigmoid(a * z)
        return grad_out * a * sig * (1 - sig), None


def lif_multistep(x, tau: float, v_threshold: float, v_reset: float, surrogate_alpha: float):
    """LIF over `x: [T, ...]` (SpikingJelly LIFNode semantics); autograd through the membrane."""
    v = torch.full_like(x[0], v_reset)
    outs = []
    for t in range(x.shape[0]):
        h = v + (x[t] - (v - v_reset)) / tau
        s = LIFSpikeFunction.apply(h - v_threshold, surrogate_alpha)
        v = h * (1 - s) + v_reset * s
        outs.append(s)
    return torch.stack(outs)
