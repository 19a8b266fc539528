"""Whiteboard reference implementations of the spiking neurons.

These are plain Python loops over the time axis, written to be obviously correct rather than fast.
Every fast path in `functional.py` is tested against them: spikes exactly equal, input gradients
to 1e-6 (see tests/test_neurons.py). Shapes are time-first: `x: [T, ...]`.

Straight-through estimator: `s = spike.detach() + (c - c.detach())` with `c = u.clamp(lo*a, a)`.
The forward value is the spike; the gradient is that of the clamp, 1 where `lo*a <= u <= a`
(inclusive, as torch.clamp's backward is) and 0 elsewhere.

The amplitudes enter the arithmetic in the input's dtype, as in the fast paths: under bf16 autocast
the level is round(u / alpha) of a bf16 quotient, so the threshold alpha/2 holds to bf16's resolution
(a quotient within 2^-9 above one half rounds to exactly one half, and then, half to even, to 0).
"""

from __future__ import annotations

import torch


def _ste_spike(u: torch.Tensor, a: torch.Tensor, lo: int, unit_amplitude: bool, learn_alpha: bool = False) -> torch.Tensor:
    q = torch.clamp(torch.round(u / a), lo, 1)
    spike = q if unit_amplitude else a * q
    window = torch.clamp(u, lo * a.detach(), a.detach())
    out = spike.detach() + (window - window.detach())
    if learn_alpha:
        # LSQ (method doc 2.4): ds/da = lo below the range, +1 above, round(u/a) - u/a inside,
        # times grad_scale = 1/sqrt(numel * Qp), Qp = 1
        v = (u / a).detach()
        dsda = torch.where(v < lo, float(lo), torch.where(v > 1, 1.0, torch.round(v) - v))
        scale = 1.0 / u.numel() ** 0.5
        out = out + (a - a.detach()) * dsda * scale
    return out


def _membrane(t: int, u, s, alpha: torch.Tensor, x: torch.Tensor, decay: float, reset: str) -> torch.Tensor:
    """u_t from u_{t-1} and the previous spike s_{t-1} (both None at t = 0), as 2.1 writes it."""
    if t == 0 or reset == "none":
        return x[t]
    if reset == "official":
        return decay * u * (alpha[t - 1] - s).detach() + x[t]
    if reset == "soft":
        return decay * (u - s.detach()) + x[t]
    raise ValueError(f"unknown reset {reset!r}")


def bi_spike_reference(
    x: torch.Tensor,
    alpha: torch.Tensor,
    decay: float = 0.25,
    reset: str = "official",
    levels: str = "ternary",
    amplitude: str = "elastic",
    learn_alpha: bool = False,
) -> torch.Tensor:
    """Elastic bi-spiking neuron over `x: [T, ...]` with amplitudes `alpha: [T]` (fixed, or with
    LSQ gradients when `learn_alpha`).

    official: u_t = decay * u_{t-1} * (alpha_{t-1} - s_{t-1}) + x_t   (alpha, s detached)
    soft:     u_t = decay * (u_{t-1} - s_{t-1}) + x_t                (s detached)
    none:     u_t = x_t
    s_t = alpha_t * clamp(round(u_t / alpha_t), lo, 1), lo = -1 (ternary) or 0 (binary).
    """
    lo = -1 if levels == "ternary" else 0
    unit = amplitude == "unit"
    alpha = alpha.to(x.dtype)
    outs = []
    u = s = None
    for t in range(x.shape[0]):
        u = _membrane(t, u, s, alpha, x, decay, reset)
        a = alpha[t].clamp_min(1e-5)
        s = _ste_spike(u, a, lo, unit, learn_alpha)
        outs.append(s)
    return torch.stack(outs)


def bi_spike_allocated_reference(
    x: torch.Tensor,
    alpha: torch.Tensor,
    salient: torch.Tensor,
    mode: str = "steps",
    steps: int = 2,
    decay: float = 0.25,
    reset: str = "official",
    levels: str = "ternary",
    amplitude: str = "elastic",
    learn_alpha: bool = False,
) -> torch.Tensor:
    """Outlier-aware allocation, written out: the elastic bi-spiking neuron over `x: [T, ..., C]`
    where the channels marked in `salient: [C]` either run `steps` sub-steps per time step (mode
    "steps": sub-step j spikes the residual the earlier sub-steps left, r_j = u_t - s_t^(0..j-1), with
    the step's amplitude; the step's spike is their sum) or stay float (mode "float": x_t).

    Membrane as `bi_spike_reference`, the reset reading the step's summed spike. Gradient: straight
    through where lo*m*a <= u <= m*a (m = `steps` on salient channels, 1 elsewhere); with `learn_alpha`
    the LSQ gradient with the same bounds, scaled by 1/sqrt(numel of the step).
    """
    lo = -1 if levels == "ternary" else 0
    unit = amplitude == "unit"
    m = torch.where(salient, float(steps), 1.0).to(x.dtype) if mode == "steps" else torch.ones_like(salient, dtype=x.dtype)
    alpha = alpha.to(x.dtype)
    outs = []
    u = s = None
    for t in range(x.shape[0]):
        u = _membrane(t, u, s, alpha, x, decay, reset)
        a = alpha[t].clamp_min(1e-5)
        ad = a.detach()
        # the forward value: sub-steps on the residual (one sub-step on ordinary channels)
        with torch.no_grad():
            total = torch.zeros_like(u)
            residual = u.clone()
            for j in range(int(m.max())):
                active = m > j
                sub = torch.clamp(torch.round(residual / ad), lo, 1) * active
                total = total + sub
                residual = residual - sub * ad
            value = total if unit else ad * total
        window = torch.clamp(u, lo * m * ad, m * ad)
        spike = value + (window - window.detach())
        if learn_alpha:
            v = (u / a).detach()
            dsda = torch.where(v < lo * m, lo * m, torch.where(v > m, m, torch.round(v) - v))
            spike = spike + (a - ad) * dsda / u.numel() ** 0.5
        s = torch.where(salient, x[t], spike) if mode == "float" else spike
        outs.append(s)
    return torch.stack(outs)


def bi_spike_calibrate_reference(
    x: torch.Tensor, k: float, decay: float = 0.25, reset: str = "official", levels: str = "ternary",
    amplitude: str = "elastic",
) -> torch.Tensor:
    """The amplitudes a neuron calibrates on `x`: alpha_t = k * mean|u_t|, step by step."""
    lo = -1 if levels == "ternary" else 0
    dtype = torch.promote_types(x.dtype, torch.float32)  # the amplitudes and means: float32 for bf16 input
    alpha = torch.empty(x.shape[0], dtype=dtype)
    u = s = None
    with torch.no_grad():
        for t in range(x.shape[0]):
            if t == 0 or reset == "none":
                u = x[t]
            elif reset == "official":
                u = decay * u * (alpha[t - 1].to(x.dtype) - s) + x[t]
            else:
                u = decay * (u - s) + x[t]
            alpha[t] = k * u.abs().to(dtype).mean()
            a = alpha[t].clamp_min(1e-5).to(x.dtype)
            q = torch.clamp(torch.round(u / a), lo, 1)
            s = q if amplitude == "unit" else a * q
    return alpha


def ternary_spike_reference(
    x: torch.Tensor, alpha: torch.Tensor, levels: str = "ternary", amplitude: str = "elastic", learn_alpha: bool = False
) -> torch.Tensor:
    """Stateless spike of each time slice: s_t = alpha_t * clamp(round(x_t / alpha_t), lo, 1)."""
    lo = -1 if levels == "ternary" else 0
    unit = amplitude == "unit"
    alpha = alpha.to(x.dtype)
    return torch.stack([_ste_spike(x[t], alpha[t].clamp_min(1e-5), lo, unit, learn_alpha) for t in range(x.shape[0])])


def lif_reference(
    x: torch.Tensor, tau: float = 2.0, v_threshold: float = 1.0, v_reset: float = 0.0, surrogate_alpha: float = 4.0
) -> torch.Tensor:
    """SpikingJelly `LIFNode` semantics (decay_input=True, hard reset, detach_reset=False).

    H_t = V_{t-1} + (X_t - (V_{t-1} - V_reset)) / tau,  V_{-1} = V_reset
    S_t = Heaviside(H_t - V_th) forward, sigmoid surrogate (slope `surrogate_alpha`) backward
    V_t = H_t * (1 - S_t) + V_reset * S_t
    """
    v = torch.full_like(x[0], v_reset)
    outs = []
    for t in range(x.shape[0]):
        h = v + (x[t] - (v - v_reset)) / tau
        z = h - v_threshold
        sig = torch.sigmoid(surrogate_alpha * z)
        heaviside = (z >= 0).to(x.dtype)
        s = heaviside.detach() + (sig - sig.detach())  # forward: step; backward: sigmoid'
        v = h * (1 - s) + v_reset * s
        outs.append(s)
    return torch.stack(outs)
