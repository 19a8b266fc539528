"""Firing rates: the one definition every part of spikelm reports (convert, eval, training logs, energy).

A neuron's firing rate is the fraction of non-zero elements (+a or -a) in its output over the whole
time-first tensor `[T, B, ..., L, ...]`, **pad tokens excluded**, counted over all the batches seen
(counts are summed, never per-batch means). A -a spike counts like a +a spike: both are one
accumulate (energy-method.md, section 1).

- `spike_stats` / `SpikeStats`: non-zero, positive, negative and total counts of one tensor, and its
  kind: binary {0, a}, ternary {-a, 0, a} (one magnitude a per step) or dense (several magnitudes).
- `spike_profile` / `SpikeProfile`: the same counts split per step, per token position and per
  sequence (the energy audit's bootstrap resamples sequences).
- `layer_key`: the layer a neuron belongs to (`layer.3` in BERT, `encoder.layers.2` /
  `decoder.layers.2` in BART, else the neuron's own module path).
- `FiringReport`: per-neuron stats; `rate(name)`, `mean_rate`, `layer_rates()`, `to_dict()`.
- `record_firing(model)` / `FiringRecorder`: forward hooks that fill a report while the model runs
  (training steps included); `measure_firing(model, batches)`: eval mode, no grad.
- `token_firing(model, batch)` / `TokenFiring`: the same rates per layer (rows) and token position
  (columns), from the per-position counts of `SpikeProfile`; a row's token-weighted mean is the
  layer's rate (`spikelm eval --plot-firing` draws it).

Which tokens are real comes from the model's own inputs. A forward pre-hook on every module whose
`forward` takes `attention_mask` (BERT: the `SpikingBertModel`; BART: the encoder and the decoder
stacks) reads the mask it is called with; each neuron uses the mask of its nearest such ancestor.
A BART decoder's `attention_mask` is the decoder's own padding (`decoder_attention_mask` at the top;
absent means every decoder token is real); its cross-attention K/V spikes are computed from encoder
states, so they use the decoder's `encoder_attention_mask`. This also holds under `generate()`,
which calls the encoder and the decoder separately. Hooks return at once while TorchScript traces
the model (fvcore's MAC count), and a neuron with a forward hook makes a compiled layer run eagerly
(`models.common.CompilableLayer`), so every spike is seen.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .inputs import model_inputs
from .neurons import spiking_neurons

KINDS = ("none", "binary", "ternary", "dense")
"""Operand kinds, in merge order: 'none' = no non-zero value seen yet."""

MEAN_RATE_DESCRIPTION = "mean over neurons, each over all steps and real tokens (pads excluded)"
"""What `FiringReport.mean_rate` is (the energy audit's MAC-weighted mean is a different number)."""

_MAGNITUDE_RTOL = 1e-5
# BART cross-attention: K and V (and their spikes) are computed from the encoder's states
_CROSS_KV_SUFFIXES = (".encoder_attn.k_proj.neuron", ".encoder_attn.v_proj.neuron", ".encoder_attn.qk.neuron",
                      ".encoder_attn.av.neuron")
_BART_LAYER = re.compile(r"(?:^|\.)(encoder|decoder)\.layers\.(\d+)(?:\.|$)")
_BERT_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)(?:\.|$)")
_DECODER_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")  # a decoder-only stack (Llama)


# ---------------------------------------------------------------------------------------------
# counting one spike tensor


@dataclass(frozen=True)
class SpikeStats:
    """Element counts of one neuron's output, accumulated over batches."""

    nonzero: int = 0
    positive: int = 0
    negative: int = 0
    total: int = 0
    """Elements counted (pad tokens excluded)."""
    kind: str = "none"
    """'binary', 'ternary', 'dense' or 'none' (all zeros so far)."""

    @property
    def firing_rate(self) -> float:
        """Non-zero fraction, either sign: a -alpha spike costs one AC like a +alpha spike."""
        return self.nonzero / self.total if self.total else 0.0

    def merge(self, other: "SpikeStats") -> "SpikeStats":
        return SpikeStats(
            nonzero=self.nonzero + other.nonzero,
            positive=self.positive + other.positive,
            negative=self.negative + other.negative,
            total=self.total + other.total,
            kind=max(self.kind, other.kind, key=KINDS.index),
        )


def _token_axis(shape: tuple[int, ...], mask_shape: tuple[int, ...]) -> int:
    """Axis of the L dimension in a time-first tensor [T, B, ..., L, ..., D], given a [B, L] mask.

    The feature axis (last) is skipped unless the tensor is [T, B, L]; when several axes have
    size L, the last one wins (head-split layouts are [T, B, H, L, d_h]).
    """
    batch, length = mask_shape
    if len(shape) < 3 or shape[1] != batch:
        raise ValueError(
            f"cannot apply a [{batch}, {length}] token mask to a spike tensor of shape {list(shape)}: "
            "neuron outputs must be time-first, [T, B, L, D] or [T, B, H, L, d_h]"
        )
    last = len(shape) - 1 if len(shape) > 3 else len(shape)
    candidates = [axis for axis in range(2, last) if shape[axis] == length]
    if not candidates:
        raise ValueError(f"no axis of size L={length} in spike tensor of shape {list(shape)}")
    return candidates[-1]


def real_tokens(x: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """The `[B, L]` token mask as a bool view broadcastable against the time-first `x` (True = a
    real token): the one place that decides which elements of a neuron output are counted."""
    axis = _token_axis(tuple(x.shape), tuple(token_mask.shape))
    view = [1] * x.dim()
    view[1], view[axis] = token_mask.shape
    return (token_mask.to(device=x.device) != 0).view(view)


def real_token_rows(x: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """The real-token elements of the time-first `x`, pads dropped, as `[T, N, ...]` (N real tokens;
    the axes after the token axis kept, so the feature axis stays last): what a neuron calibrates on
    with `calibrate(..., tokens="real")`. The token axis is found as `real_tokens` finds it."""
    axis = _token_axis(tuple(x.shape), tuple(token_mask.shape))
    return x.movedim(axis, 2)[:, token_mask.to(device=x.device) != 0]


def spike_stats(x: torch.Tensor, token_mask: torch.Tensor | None = None) -> SpikeStats:
    """Count non-zero, positive and negative elements of a time-first spike tensor.

    Args:
        x: neuron output [T, B, ...]; values in {0, a_t} (binary) or {-a_t, 0, a_t} (ternary)
            with one magnitude a_t per step t.
        token_mask: [B, L], non-zero for real tokens; pad tokens are left out of every count.
    """
    x = x.detach()
    nonzero = x != 0
    if token_mask is None:
        total = x.numel()
    else:
        weight = real_tokens(x, token_mask).expand_as(x)
        total = int(weight.sum())
        nonzero = nonzero & weight

    positive = int(((x > 0) & nonzero).sum())
    negative = int(((x < 0) & nonzero).sum())
    count = int(nonzero.sum())
    return SpikeStats(nonzero=count, positive=positive, negative=negative, total=total,
                      kind=_spike_kind(x, nonzero, count, negative))


def _spike_kind(x: torch.Tensor, nonzero: torch.Tensor, count: int, negative: int) -> str:
    """'none', 'binary', 'ternary' or 'dense' (more than one magnitude among a step's non-zeros)."""
    if count == 0:
        return "none"
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    magnitude = x.abs().to(dtype).reshape(x.shape[0], -1)
    mask = nonzero.reshape(x.shape[0], -1)
    high = torch.where(mask, magnitude, torch.zeros_like(magnitude)).amax(dim=1)
    low = torch.where(mask, magnitude, torch.full_like(magnitude, float("inf"))).amin(dim=1)
    fired = mask.any(dim=1)
    graded = bool(((high - low) > _MAGNITUDE_RTOL * high)[fired].any())
    return "dense" if graded else ("ternary" if negative else "binary")


@dataclass(frozen=True)
class SpikeProfile:
    """Where the spikes of one neuron fell: per time step, per token position and per sequence.

    Counts (int64 tensors), accumulated over batches, pad tokens excluded:

    - `step_positive`, `step_negative`, `step_total`: [T] per time step;
    - `position_nonzero`, `position_total`: [L] per token position (empty without a token mask);
    - `sample_nonzero`, `sample_total`: [S] per sequence, in batch order (the bootstrap's unit).
    """

    step_positive: torch.Tensor
    step_negative: torch.Tensor
    step_total: torch.Tensor
    position_nonzero: torch.Tensor
    position_total: torch.Tensor
    sample_nonzero: torch.Tensor
    sample_total: torch.Tensor

    @staticmethod
    def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.numel() == 0:
            return b.clone()
        if b.numel() == 0:
            return a.clone()
        if a.shape == b.shape:
            return a + b
        n = max(a.numel(), b.numel())  # batches of different lengths: pad the shorter one
        return _pad_to(a, n) + _pad_to(b, n)

    def merge(self, other: "SpikeProfile") -> "SpikeProfile":
        if self.step_total.numel() and other.step_total.numel() and self.step_total.shape != other.step_total.shape:
            raise ValueError(
                f"time steps changed between batches ({self.step_total.numel()} vs {other.step_total.numel()})"
            )
        return SpikeProfile(
            step_positive=self._add(self.step_positive, other.step_positive),
            step_negative=self._add(self.step_negative, other.step_negative),
            step_total=self._add(self.step_total, other.step_total),
            position_nonzero=self._add(self.position_nonzero, other.position_nonzero),
            position_total=self._add(self.position_total, other.position_total),
            sample_nonzero=torch.cat([self.sample_nonzero, other.sample_nonzero]),
            sample_total=torch.cat([self.sample_total, other.sample_total]),
        )

    @classmethod
    def empty(cls) -> "SpikeProfile":
        z = torch.zeros(0, dtype=torch.long)
        return cls(z, z, z, z, z, z, z)


def _pad_to(x: torch.Tensor, n: int) -> torch.Tensor:
    """`x` zero-padded at the end to length `n`."""
    return torch.cat([x, x.new_zeros(n - x.numel())]) if x.numel() < n else x


def spike_profile(x: torch.Tensor, token_mask: torch.Tensor | None = None) -> SpikeProfile:
    """Per-step (+ and - separately), per-position and per-sequence counts of a time-first spike
    tensor `x: [T, B, ...]`; `token_mask: [B, L]` (non-zero = real token) excludes pads."""
    return profile_and_stats(x, token_mask)[0]


def profile_and_stats(x: torch.Tensor, token_mask: torch.Tensor | None) -> tuple[SpikeProfile, SpikeStats]:
    """One pass over the spike tensor for both the profile and the stats.

    Counts come from sign(x) (exact: sums of +-1 in float32 stay exact far beyond these sizes),
    reduced to [T, B, L] before the [B, L] token mask is applied. The kind check is the same as
    `spike_stats`: per step, every non-zero magnitude must be within rtol of the step's largest.
    """
    x = x.detach()
    if x.dim() < 2:
        raise ValueError(f"spike tensor must be time-first [T, B, ...], got shape {list(x.shape)}")
    steps, batch = x.shape[0], x.shape[1]
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    sign = torch.sign(xf)
    fired = sign.abs()
    axis = _token_axis(tuple(x.shape), tuple(token_mask.shape)) if token_mask is not None else None
    keep = (0, 1) if axis is None else (0, 1, axis)
    reduce = tuple(d for d in range(x.dim()) if d not in keep)
    if reduce:
        net = sign.sum(reduce).round().long()  # positive - negative, per [T, B(, L)]
        nonzero = fired.sum(reduce).round().long()
    else:
        net, nonzero = sign.long(), fired.long()
    positive = (nonzero + net) // 2
    negative = nonzero - positive
    if axis is not None:
        real = (token_mask.to(device=x.device) != 0).long()  # [B, L]
        positive, negative, nonzero = positive * real, negative * real, nonzero * real
        inner = x.numel() // (steps * real.numel())  # elements per (step, token)
        real = real.cpu()
        step_total = torch.full((steps,), int(real.sum()) * inner, dtype=torch.long)
        sample_total = real.sum(1) * inner * steps
        position_total = real.sum(0) * inner * steps
        position_nonzero = nonzero.sum((0, 1)).cpu()
    else:
        step_total = torch.full((steps,), x[0].numel(), dtype=torch.long)
        sample_total = torch.full((batch,), x.numel() // batch, dtype=torch.long)
        position_total = position_nonzero = torch.zeros(0, dtype=torch.long)
    step_dims = tuple(range(1, positive.dim()))
    sample_dims = tuple(d for d in range(nonzero.dim()) if d != 1)
    profile = SpikeProfile(
        step_positive=positive.sum(step_dims).cpu() if step_dims else positive.cpu(),
        step_negative=negative.sum(step_dims).cpu() if step_dims else negative.cpu(),
        step_total=step_total,
        position_nonzero=position_nonzero,
        position_total=position_total,
        sample_nonzero=nonzero.sum(sample_dims).cpu(),
        sample_total=sample_total,
    )
    pos, neg = int(profile.step_positive.sum()), int(profile.step_negative.sum())
    count = pos + neg
    if count == 0:
        kind = "none"
    else:
        flat = xf.reshape(steps, -1)
        high = torch.maximum(flat.amax(dim=1), -flat.amin(dim=1))
        scale = torch.where(high > 0, high, torch.ones_like(high)).view(-1, *([1] * (x.dim() - 1)))
        # |s| - |x|/high is 0 at zeros and at full-size spikes, and > rtol for a smaller magnitude
        graded = bool((fired - xf.abs() / scale).amax() > _MAGNITUDE_RTOL)
        kind = "dense" if graded else ("ternary" if neg else "binary")
    return profile, SpikeStats(nonzero=count, positive=pos, negative=neg, total=int(step_total.sum()), kind=kind)


# ---------------------------------------------------------------------------------------------
# neurons and layers


def neuron_module_names(model: nn.Module) -> list[str]:
    """Names of the model's spiking neurons (`SpikingNeuron` instances), in module order.

    An `nn.Identity` in a neuron's place (e.g. `spike_kv=False`) is not a neuron: its op is float.
    """
    return [name for name, _ in spiking_neurons(model)]


def layer_key(neuron_name: str) -> str:
    """The layer a neuron belongs to, the key of `FiringReport.layer_rates()`.

    'bert.encoder.layer.3.attention.self.query.neuron' -> 'layer.3';
    'model.encoder.layers.2.fc1.neuron' -> 'encoder.layers.2' (BART's stacks kept apart:
    'decoder.layers.2'); 'model.layers.5.mlp.down_proj.neuron' -> 'layers.5' (a decoder-only Llama);
    a neuron outside the layers -> its own module path.
    """
    match = _BART_LAYER.search(neuron_name)
    if match:
        return f"{match.group(1)}.layers.{match.group(2)}"
    match = _BERT_LAYER.search(neuron_name)
    if match:
        return f"layer.{match.group(1)}"
    match = _DECODER_LAYER.search(neuron_name)
    if match:
        return f"layers.{match.group(1)}"
    return neuron_name


def reads_encoder_tokens(neuron_name: str) -> bool:
    """True for a BART cross-attention K/V neuron: its input is encoder states, one row per source token."""
    return neuron_name.endswith(_CROSS_KV_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# the report


@dataclass
class FiringReport:
    """Firing statistics of a model's neurons over some forwards (see the module docstring)."""

    neurons: dict[str, SpikeStats] = field(default_factory=dict)
    """Per neuron that ran (module name -> counts); in module order once recording has stopped."""
    profiles: dict[str, SpikeProfile] = field(default_factory=dict)
    """Per-step, per-position and per-sequence counts (only when recorded with `detail=True`)."""
    missing: tuple[str, ...] = ()
    """Neurons that were watched but never ran (or saw no real token)."""
    description: str = MEAN_RATE_DESCRIPTION
    """What `mean_rate` is."""

    def rate(self, name: str) -> float:
        """The neuron's firing rate: non-zero fraction of its output, pads excluded."""
        return self.neurons[name].firing_rate

    @property
    def mean_rate(self) -> float:
        """Mean over neurons of `rate(name)` (0.0 when no neuron ran); a neuron that saw no real token
        has no rate and is left out (it is listed in `missing`)."""
        return _mean([s.firing_rate for s in self.neurons.values() if s.total])

    def layer_rates(self) -> dict[str, float]:
        """Mean of `rate(name)` over the neurons of each layer, keyed by `layer_key`, in layer order
        (neurons that saw no real token left out, as in `mean_rate`)."""
        groups: dict[str, list[float]] = {}
        for name, stats in self.neurons.items():
            if stats.total:
                groups.setdefault(layer_key(name), []).append(stats.firing_rate)
        return {key: _mean(rates) for key, rates in groups.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form: mean rate, its description, per-layer and per-neuron numbers."""
        return {
            "mean_rate": self.mean_rate,
            "description": self.description,
            "layers": self.layer_rates(),
            "neurons": {
                name: {"rate": s.firing_rate, "positive": s.positive, "negative": s.negative, "nonzero": s.nonzero,
                       "elements": s.total, "kind": s.kind}
                for name, s in self.neurons.items()
            },
            "missing": list(self.missing),
        }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# ---------------------------------------------------------------------------------------------
# recording


def _recomputing() -> bool:
    """Whether this forward runs inside a backward: activation checkpointing (`train.activation_checkpointing`)
    running a layer again. Its spikes were counted in the forward, and its token masks are gone by then (the
    mask-taking module's forward has returned), so it is not counted again."""
    current = getattr(torch._C, "_current_graph_task_id", None)  # torch's: -1 outside a backward
    return current is not None and current() != -1


class FiringRecorder:
    """Forward hooks that fill a `FiringReport` while the model runs.

    Use as a context manager (`with record_firing(model) as report: ...`), or call `start()` and
    `stop()` where no block fits (a Trainer callback). Counting runs under any grad mode and in
    training mode too; spikes are detached.
    """

    def __init__(self, model: nn.Module, *, detail: bool = False):
        self.detail = detail
        self.report = FiringReport()
        self._modules = dict(model.named_modules())
        self._neurons = neuron_module_names(model)
        self._signatures: dict[str, inspect.Signature] = {}
        """Modules whose forward takes `attention_mask`: where the token masks are read."""
        for name, module in self._modules.items():
            try:
                signature = inspect.signature(module.forward)
            except (TypeError, ValueError):
                continue
            if "attention_mask" in signature.parameters:
                self._signatures[name] = signature
        self._owners = {name: self._mask_owner(name) for name in self._neurons}
        self._cross = {name for name in self._neurons if reads_encoder_tokens(name)}
        """Neurons that read the encoder's tokens (their mask is the owner's `encoder_attention_mask`)."""
        self._masks: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        self._handles: list[Any] = []

    def _mask_owner(self, neuron: str) -> str | None:
        """The nearest ancestor of `neuron` whose forward takes `attention_mask`."""
        owners = [o for o in self._signatures if o == "" or neuron.startswith(o + ".")]
        return max(owners, key=len) if owners else None

    def _pre_hook(self, owner: str):
        signature = self._signatures[owner]

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if torch.jit.is_tracing():
                return
            try:
                bound = signature.bind_partial(*args, **kwargs).arguments
            except TypeError:
                bound = kwargs
            mask = bound.get("attention_mask")
            tokens = bound.get("input_ids")
            if mask is not None and tokens is not None and mask.dim() == 2 and mask.shape[1] > tokens.shape[1]:
                mask = mask[:, -tokens.shape[1]:]  # a decoder step with a cache: the mask covers past tokens too
            self._masks[owner] = (mask, bound.get("encoder_attention_mask"))

        return hook

    def _post_hook(self, owner: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self._masks.pop(owner, None)

        return hook

    def token_mask(self, name: str) -> torch.Tensor | None:
        """The `[B, L]` token mask of neuron `name` in the forward now running (None: every token is
        real), read from its nearest mask-taking ancestor; valid from that ancestor's call on."""
        owner = self._owners.get(name)
        masks = self._masks.get(owner) if owner is not None else None
        return None if masks is None else masks[1 if name in self._cross else 0]

    def _neuron_hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if torch.jit.is_tracing() or _recomputing():
                return
            spikes = module.spike_levels(output[0] if isinstance(output, (tuple, list)) else output)
            self.observe(name, module, spikes, self.token_mask(name))

        return hook

    def observe(self, name: str, module: nn.Module, spikes: torch.Tensor, token_mask: torch.Tensor | None) -> None:
        """Count one neuron output into the report (a subclass may collect something else: the
        firing-rate target's differentiable counts, `training/firing_target.py`)."""
        report = self.report
        if self.detail:
            profile, stats = profile_and_stats(spikes, token_mask)
            report.profiles[name] = report.profiles.get(name, SpikeProfile.empty()).merge(profile)
        else:
            stats = spike_stats(spikes, token_mask)
        report.neurons[name] = report.neurons[name].merge(stats) if name in report.neurons else stats

    def start(self, *, count: bool = True) -> FiringReport:
        """Register the hooks on a fresh report and return it (filled as the model runs).

        `count=False` tracks the token masks only (`token_mask`, for calibration): no spike is
        counted and the report stays empty."""
        self.stop()
        self.report = FiringReport()
        for owner in sorted({o for o in self._owners.values() if o is not None}):
            module = self._modules[owner]
            self._handles.append(module.register_forward_pre_hook(self._pre_hook(owner), with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._post_hook(owner)))
        if count:
            for name in self._owners:
                self._handles.append(self._modules[name].register_forward_hook(self._neuron_hook(name)))
        return self.report

    def stop(self) -> FiringReport:
        """Remove the hooks; the report lists the neurons that never ran in `missing`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._masks.clear()
        report = self.report
        report.neurons = {n: report.neurons[n] for n in self._neurons if n in report.neurons}  # module order
        report.profiles = {n: report.profiles[n] for n in self._neurons if n in report.profiles}
        report.missing = tuple(n for n in self._neurons  # never ran, or saw no real token
                               if n not in report.neurons or not report.neurons[n].total)
        return report

    def __enter__(self) -> FiringReport:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def record_firing(model: nn.Module, *, detail: bool = False) -> FiringRecorder:
    """`with record_firing(model) as report:` counts every neuron's spikes inside the block.

    `detail=True` also keeps a `SpikeProfile` per neuron (per step, position and sequence).
    """
    return FiringRecorder(model, detail=detail)


def measure_firing(
    model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], *, detail: bool = False
) -> FiringReport:
    """Firing of `model` over `batches`: eval mode, no grad, one teacher-forced forward per batch.

    Each batch is a mapping of model inputs (other keys, e.g. labels, are dropped); its
    `attention_mask` marks real source tokens, `decoder_attention_mask` real decoder tokens (BART;
    without it every decoder token counts). An encoder-decoder runs without its KV cache.
    """
    config = getattr(model, "config", None)
    extra = {"use_cache": False} if getattr(config, "is_encoder_decoder", False) else {}

    def run(device: torch.device) -> None:
        for batch in batches:
            model(**{k: v.to(device) for k, v in model_inputs(batch).items()}, **extra)

    return _recorded(model, run, detail=detail)


def _recorded(model: nn.Module, run, *, detail: bool) -> FiringReport:
    """`run(device)` in eval mode, without grad, with every neuron recorded; the mode is restored."""
    was_training = model.training
    model.eval()
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        with torch.no_grad(), record_firing(model, detail=detail) as report:
            run(device)
    finally:
        model.train(was_training)
    return report


# ---------------------------------------------------------------------------------------------
# per token

TOKEN_RATE_DESCRIPTION = (
    "per layer and token: mean over the layer's neurons of each neuron's non-zero fraction at that token "
    "(all channels, heads and steps; pads excluded); a row's token-weighted mean is the layer's rate"
)
"""What a cell of `TokenFiring.rates` is."""

CROSS_KV_ROW = ".cross_kv"
"""Suffix of the row of a BART decoder layer's cross-attention K/V spikes (they read source tokens)."""

_DECODER = re.compile(r"(?:^|\.)decoder(?:\.|$)")


def token_row(neuron_name: str) -> tuple[str, str]:
    """(side, row) of a neuron in the per-token view.

    side: 'target' for a BART decoder neuron that reads decoder tokens, else 'source' (BERT, the
    BART encoder, and the BART cross-attention K/V spikes, which are computed from encoder states);
    row: `layer_key`, with `CROSS_KV_ROW` added for the cross-attention K/V neurons, so that every
    neuron sits in exactly one (side, row):
    'model.decoder.layers.1.encoder_attn.k_proj.neuron' -> ('source', 'decoder.layers.1.cross_kv').
    """
    key = layer_key(neuron_name)
    if reads_encoder_tokens(neuron_name):
        return "source", key + CROSS_KV_ROW
    return ("target" if _DECODER.search(neuron_name) else "source"), key


@dataclass(frozen=True)
class TokenFiring:
    """Firing rate per layer (rows) and token position (columns) of one side of a model's input.

    A cell is the mean over the row's neurons of each neuron's firing rate at that position: its
    non-zero fraction over every channel (and head) and all T steps of the real tokens there, the
    same count as `FiringReport` (pads excluded). Hence the `counts`-weighted mean of a row over the
    positions is the mean of the neurons' rates: `FiringReport.layer_rates()` of that layer.

    No neuron in spikelm's models spikes attention probabilities (K and V are spiked after their
    projections, `[T, B, H, L, d_h]`: per token). A neuron with a query and a key axis
    (`[T, B, H, L, L]`) would be counted per query token: the token mask goes on the last axis of size
    L before the feature axis (`_token_axis`).
    """

    side: str
    """'source' (BERT's input; BART's encoder input) or 'target' (BART's decoder input, teacher-forced)."""
    tokens: tuple[str, ...]
    """Column labels, one per position."""
    layers: tuple[str, ...]
    """Row keys in module order (`token_row`)."""
    rates: torch.Tensor
    """[layers, positions] float64; NaN at a position without a real token."""
    counts: torch.Tensor
    """[positions] real tokens seen at each position (1 each for one unpadded sequence): the weights."""
    neurons: tuple[int, ...]
    """Neurons per row."""
    description: str = TOKEN_RATE_DESCRIPTION

    def layer_rates(self) -> dict[str, float]:
        """Each row's mean over positions, weighted by `counts` (= `FiringReport.layer_rates()`, for
        a layer whose neurons all read this side)."""
        weights = self.counts.to(torch.float64)
        total = float(weights.sum())
        sums = (torch.nan_to_num(self.rates, nan=0.0) * weights).sum(1)
        return {layer: float(v) / total if total else 0.0 for layer, v in zip(self.layers, sums.tolist())}

    def dead_layers(self) -> tuple[str, ...]:
        """Rows without a single spike at any real token."""
        real = self.counts > 0
        return tuple(layer for layer, row in zip(self.layers, self.rates) if not bool((row[real] > 0).any()))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (NaN -> None)."""
        return {
            "side": self.side,
            "description": self.description,
            "tokens": list(self.tokens),
            "counts": self.counts.tolist(),
            "layers": list(self.layers),
            "neurons": list(self.neurons),
            "rates": [[None if v != v else v for v in row] for row in self.rates.tolist()],
            "layer_rates": self.layer_rates(),
            "dead_layers": list(self.dead_layers()),
        }


def token_firing(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    *,
    source_tokens: Iterable[str] | None = None,
    target_tokens: Iterable[str] | None = None,
) -> tuple[TokenFiring, ...]:
    """Per-token firing of `model` on `batch` (eval mode, no grad): one `TokenFiring` per side.

    `batch`: `input_ids`, `attention_mask` (absent: every token is real), `token_type_ids`; for an
    encoder-decoder, the target as `decoder_input_ids` (+ `decoder_attention_mask`, absent: every
    decoder token is real) or as `labels` (shifted right as in training; -100 marks pads). Without
    a target only the encoder runs, and only the 'source' side is returned. With several sequences
    a column is a position, over the real tokens of all sequences there (`counts`).

    `source_tokens` / `target_tokens` label the columns (default: the position numbers).
    """
    ids = batch["input_ids"]
    inputs = dict(model_inputs(batch))
    inputs.setdefault("attention_mask", torch.ones_like(ids))
    seq2seq = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    if seq2seq and "decoder_input_ids" not in inputs and batch.get("labels") is not None:
        labels = batch["labels"]
        inputs["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=labels)
        inputs.setdefault("decoder_attention_mask", (labels != -100).long())
    target = seq2seq and "decoder_input_ids" in inputs
    if target:
        inputs.setdefault("decoder_attention_mask", torch.ones_like(inputs["decoder_input_ids"]))

    def run(device: torch.device) -> None:
        moved = {k: v.to(device) for k, v in inputs.items()}
        if not seq2seq:
            model(**moved)
        elif target:
            model(**moved, use_cache=False)
        else:
            model.get_encoder()(input_ids=moved["input_ids"], attention_mask=moved["attention_mask"])

    report = _recorded(model, run, detail=True)
    sides = {"source": (inputs["attention_mask"], source_tokens)}
    if target:
        sides["target"] = (inputs["decoder_attention_mask"], target_tokens)
    rows: dict[str, dict[str, list[str]]] = {side: {} for side in sides}
    for name in report.profiles:
        side, row = token_row(name)
        rows[side].setdefault(row, []).append(name)
    return tuple(_token_panel(side, rows[side], report, mask, labels) for side, (mask, labels) in sides.items())


def _token_panel(side: str, rows: dict[str, list[str]], report: FiringReport, mask: torch.Tensor,
                 labels: Iterable[str] | None) -> TokenFiring:
    counts = (mask != 0).sum(0).long().cpu()
    length = counts.numel()
    tokens = tuple(str(t) for t in labels) if labels is not None else tuple(str(i) for i in range(length))
    if len(tokens) != length:
        raise ValueError(f"{len(tokens)} {side} token labels for {length} positions")
    table = []
    for row, names in rows.items():
        per_neuron = []
        for name in names:
            profile = report.profiles[name]
            if not profile.position_total.numel():
                raise ValueError(f"neuron {name} was recorded without a token mask")
            nonzero = _pad_to(profile.position_nonzero, length).to(torch.float64)
            total = _pad_to(profile.position_total, length).to(torch.float64)
            per_neuron.append(torch.where(total > 0, nonzero / total.clamp(min=1), torch.nan))
        table.append(torch.stack(per_neuron).mean(0))
    rates = torch.stack(table) if table else torch.zeros(0, length, dtype=torch.float64)
    return TokenFiring(side=side, tokens=tokens, layers=tuple(rows), rates=rates, counts=counts,
                       neurons=tuple(len(names) for names in rows.values()))


__all__ = [
    "CROSS_KV_ROW",
    "KINDS",
    "MEAN_RATE_DESCRIPTION",
    "TOKEN_RATE_DESCRIPTION",
    "FiringRecorder",
    "FiringReport",
    "SpikeProfile",
    "SpikeStats",
    "TokenFiring",
    "layer_key",
    "measure_firing",
    "neuron_module_names",
    "profile_and_stats",
    "reads_encoder_tokens",
    "real_tokens",
    "record_firing",
    "spike_profile",
    "spike_stats",
    "token_firing",
    "token_row",
]
