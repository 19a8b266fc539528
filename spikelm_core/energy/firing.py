"""Firing rates for the energy audit: spike counts from forward hooks on the neurons.

The rate that bills an op is the fraction of non-zero elements (+1 or -1, times alpha) in its
spiking operand over the whole [T, B, L, D] tensor, pad tokens excluded (energy-method.md, 1).
Counts are accumulated over batches (never per-batch means). The same pass classifies each
operand as binary {0, a}, ternary {-a, 0, a} (one scalar a per step) or dense, since existing
SNN counters misread ternary spikes as dense (section 8).

This pass is separate from the MAC trace: hooks see values, fvcore handles see only shapes.
Every hook here returns at once while `torch.jit.is_tracing()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spikelm_core.energy.errors import EnergyAuditError

KINDS = ("none", "binary", "ternary", "dense")
"""Operand kinds, in merge order: 'none' = no non-zero value seen yet."""

_MAGNITUDE_RTOL = 1e-5


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
        raise EnergyAuditError(
            f"cannot apply a [{batch}, {length}] token mask to a spike tensor of shape {list(shape)}",
            hint="neuron outputs must be time-first: [T, B, L, D] or [T, B, H, L, d_h]",
        )
    last = len(shape) - 1 if len(shape) > 3 else len(shape)
    candidates = [axis for axis in range(2, last) if shape[axis] == length]
    if not candidates:
        raise EnergyAuditError(f"no axis of size L={length} in spike tensor of shape {list(shape)}")
    return candidates[-1]


def spike_stats(x: torch.Tensor, token_mask: torch.Tensor | None = None) -> SpikeStats:
    """Count non-zero, positive and negative elements of a time-first spike tensor.

    Args:
        x: neuron output [T, B, ...]; values in {0, a_t} (binary) or {-a_t, 0, a_t} (ternary)
            with one magnitude a_t per step t.
        token_mask: [B, L], 1 for real tokens; pad tokens are left out of every count.
    """
    x = x.detach()
    nonzero = x != 0
    if token_mask is None:
        weight = None
        total = x.numel()
    else:
        axis = _token_axis(tuple(x.shape), tuple(token_mask.shape))
        view = [1] * x.dim()
        view[1], view[axis] = token_mask.shape
        weight = (token_mask.to(device=x.device) != 0).view(view).expand_as(x)
        total = int(weight.sum())
        nonzero = nonzero & weight

    positive = int(((x > 0) & nonzero).sum())
    negative = int(((x < 0) & nonzero).sum())
    count = int(nonzero.sum())
    kind = _spike_kind(x, nonzero, count, negative)
    return SpikeStats(nonzero=count, positive=positive, negative=negative, total=total, kind=kind)


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
            raise EnergyAuditError(
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
    tensor `x: [T, B, ...]`; `token_mask: [B, L]` (1 = real token) excludes pads."""
    return _profile_and_stats(x, token_mask)[0]


def _profile_and_stats(x: torch.Tensor, token_mask: torch.Tensor | None) -> tuple[SpikeProfile, SpikeStats]:
    """One pass over the spike tensor for both the profile and the stats (the hook's hot path).

    Counts come from sign(x) (exact: sums of +-1 in float32 stay exact far beyond these sizes),
    reduced to [T, B, L] before the [B, L] token mask is applied. The kind check is the same as
    `spike_stats`: per step, every non-zero magnitude must be within rtol of the step's largest.
    """
    x = x.detach()
    if x.dim() < 2:
        raise EnergyAuditError(f"spike tensor must be time-first [T, B, ...], got shape {list(x.shape)}")
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


def neuron_module_names(model: nn.Module) -> list[str]:
    """Names of the model's spiking neurons (`SpikingNeuron` instances), in module order.

    An `nn.Identity` in a neuron's place (e.g. `spike_kv=False`) is not a neuron: its op is float.
    """
    from spikelm_core.neurons import SpikingNeuron

    return [name for name, module in model.named_modules() if isinstance(module, SpikingNeuron)]


class FiringRateRecorder:
    """Forward hooks that accumulate `SpikeStats` per neuron; use as a context manager.

    Set `token_mask` ([B, L], 1 = real token) before each forward so pad tokens are excluded.

        with FiringRateRecorder(model) as recorder:
            for batch in batches:
                recorder.token_mask = batch["attention_mask"]
                model(**batch)
        rates = recorder.firing_rates()
    """

    def __init__(self, model: nn.Module, neuron_names: Iterable[str] | None = None, *, detail: bool = False):
        modules = dict(model.named_modules())
        names = list(neuron_names) if neuron_names is not None else neuron_module_names(model)
        missing = [n for n in names if n not in modules]
        if missing:
            raise EnergyAuditError("unknown neuron module(s)", details=missing)
        self._modules = {n: modules[n] for n in names}
        self._handles: list[Any] = []
        self.token_mask: torch.Tensor | None = None
        self.mask_for: Callable[[str], torch.Tensor | None] | None = None
        """Optional per-neuron mask (neuron name -> [B, L] mask), used instead of `token_mask`:
        an encoder-decoder's decoder neurons see the decoder's tokens, not the source's."""
        self.stats: dict[str, SpikeStats] = {n: SpikeStats() for n in names}
        self.detail = detail
        """Also keep a `SpikeProfile` per neuron (per step, position and sequence) in `profiles`."""
        self.profiles: dict[str, SpikeProfile] = {n: SpikeProfile.empty() for n in names}

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if torch.jit.is_tracing():
                return
            spikes = output[0] if isinstance(output, (tuple, list)) else output
            mask = self.mask_for(name) if self.mask_for is not None else self.token_mask
            if self.detail:
                profile, stats = _profile_and_stats(spikes, mask)
                self.profiles[name] = self.profiles[name].merge(profile)
            else:
                stats = spike_stats(spikes, mask)
            self.stats[name] = self.stats[name].merge(stats)

        return hook

    def __enter__(self) -> "FiringRateRecorder":
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def firing_rates(self) -> dict[str, float]:
        """Non-zero fraction per neuron; raises if a neuron never ran or its output is dense."""
        never = [n for n, s in self.stats.items() if s.total == 0]
        if never:
            raise EnergyAuditError("neuron(s) never ran during the firing-rate pass", details=never)
        dense = [n for n, s in self.stats.items() if s.kind == "dense"]
        if dense:
            raise EnergyAuditError(
                "neuron output(s) are not spikes (more than one magnitude per step): cannot bill them as ACs",
                details=dense,
            )
        return {n: s.firing_rate for n, s in self.stats.items()}


def collect_firing_rates(
    model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], *, max_batches: int | None = None
) -> dict[str, SpikeStats]:
    """Run `model(**batch)` in eval mode under no_grad and return the spike counts per neuron.

    Each batch is a mapping of model inputs; its `attention_mask` (if any) excludes pad tokens.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FiringRateRecorder(model) as recorder:
            for index, batch in enumerate(batches):
                if max_batches is not None and index >= max_batches:
                    break
                recorder.token_mask = batch.get("attention_mask")
                model(**batch)
    finally:
        model.train(was_training)
    return dict(recorder.stats)
