"""Common machinery of every spiking neuron: time-first shapes, implementation switch, calibration state."""

from __future__ import annotations

import torch
from torch import nn


def distributed_mean(value: torch.Tensor) -> torch.Tensor:
    """Average a tensor across torch.distributed ranks (identity when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


IMPLS = ("fast", "compiled", "inline", "reference")


def default_impl() -> str:
    """The neuron implementation new neurons start with: $SPIKELM_NEURON_IMPL, else "fast"."""
    import os

    impl = os.environ.get("SPIKELM_NEURON_IMPL", "fast")
    if impl not in IMPLS:
        from ..errors import ConfigError

        raise ConfigError(f"the environment variable SPIKELM_NEURON_IMPL={impl!r} is not a neuron implementation",
                          details=[f"choices: {', '.join(IMPLS)}"],
                          hint="unset it (the default, 'fast', is what every command runs) or set one of the choices")
    return impl


def set_neuron_impl(model: nn.Module, impl: str) -> None:
    """Switch every spiking neuron of `model` to `impl` ("fast", "compiled", "inline" or "reference")."""
    if impl not in IMPLS:
        raise ValueError(f"neuron impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    for m in model.modules():
        if isinstance(m, SpikingNeuron):
            m.impl = impl


def spike_identically(neurons) -> bool:
    """Whether the neurons emit identical spikes for identical inputs: the same kind and settings,
    equal amplitudes, none learning its amplitudes. Reads amplitudes from the device: cache the answer
    (see `SpikingNeuron.state_version`)."""
    first, *rest = neurons
    signature = first.spike_signature()
    return signature is not None and all(n.spike_signature() == signature and first.same_state(n) for n in rest)


class SpikingNeuron(nn.Module):
    """Base class: maps `x: [T, ...]` to spikes of the same shape.

    Neurons keep no firing statistics: `spikelm_core.firing` counts their outputs with forward
    hooks (one definition of the firing rate, pads excluded).
    """

    #: "ternary" ({-a, 0, +a}) or "binary" ({0, a} or {0, 1}); energy accounting reads it.
    levels: str = "ternary"
    #: bumped whenever the state that decides the spikes changes (calibration, loading), so callers
    #: can cache decisions that read it (`spike_identically`)
    state_version: int = 0
    #: set only while `calibration.calibrate` runs with `tokens="real"`: maps a time-first input to the
    #: elements the amplitudes are calibrated on (its real tokens, `firing.real_token_rows`); None = all
    calibration_select = None

    def __init__(self) -> None:
        super().__init__()
        #: "fast" (fused autograd Function, eager), "compiled" (the same with torch.compile'd
        #: kernels: fastest for long runs, pays a one-off compile), "inline" (plain differentiable
        #: ops that torch.compile traces into a compiled layer's graph) or "reference" (plain loops).
        self.impl = default_impl()

    # -- calibration (overridden by neurons with amplitudes) ---------------------------------
    @property
    def is_calibrated(self) -> bool:
        return True

    def mark_uncalibrated(self) -> None:
        """Make the next forward calibrate again (no-op for neurons without amplitudes)."""

    def spike_signature(self) -> tuple | None:
        """The settings that decide this neuron's spikes, or None when they may change during
        training (learnt amplitudes) or are not known yet (uncalibrated). Two neurons with equal
        signatures and equal state (`same_state`) spike identically on the same input."""
        return None

    def same_state(self, other: "SpikingNeuron") -> bool:
        """Whether `other` holds the same spike-deciding state (amplitudes) as this neuron."""
        return True

    def spike_levels(self, output: torch.Tensor) -> torch.Tensor:
        """The spikes inside an output of this neuron, as firing counts and the energy audit read
        them: the output itself, unless the neuron scales its spikes per channel afterwards."""
        return output

    def _calibration_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The part of `x` calibration reads: all of it, or what `calibration_select` keeps."""
        return x if self.calibration_select is None else self.calibration_select(x)

    def _check_time(self, x: torch.Tensor, expected: int | None) -> None:
        if expected is not None and x.shape[0] != expected:
            raise ValueError(
                f"{type(self).__name__} expects a time-first input with T={expected}, got shape {tuple(x.shape)}"
            )


def spiking_neurons(model: nn.Module) -> list[tuple[str, SpikingNeuron]]:
    """(qualified name, neuron) for every spiking neuron, in registration (= forward) order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SpikingNeuron)]


def non_finite_neurons(model: nn.Module) -> list[str]:
    """'name.buffer (from step t)' for each neuron state tensor (amplitudes, per-channel scales, ...)
    of `model` that holds a NaN or an infinity: amplitudes that can drive no spike, which every
    pipeline refuses rather than report numbers from."""
    bad = []
    for name, neuron in spiking_neurons(model):
        for key, tensor in [*neuron.named_parameters(recurse=False), *neuron.named_buffers(recurse=False)]:
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                where = ""
                if key == "alpha" and tensor.dim() == 1:
                    where = f" (from step {int((~torch.isfinite(tensor.detach())).nonzero()[0])})"
                bad.append(f"{name}.{key}{where}")
    return bad
