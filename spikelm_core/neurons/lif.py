"""LIF neuron for the LIF-BERT baseline, with SpikingJelly `LIFNode` semantics.

tau 2, v_threshold 1, v_reset 0, decay_input=True, hard reset, detach_reset=False, sigmoid
surrogate with slope 4 (spikelm-method.md section 5). Output is binary {0, 1}; no amplitude.
"""

from __future__ import annotations

import torch

from . import functional as F
from . import reference as R
from .base import SpikingNeuron


class LIFNeuron(SpikingNeuron):
    """Multi-step LIF: `[T, ...]` currents -> `[T, ...]` spikes in {0, 1}."""

    levels = "binary"

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float = 0.0,
        surrogate_alpha: float = 4.0,
        num_timesteps: int | None = None,
    ) -> None:
        super().__init__()
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)
        self.v_threshold = float(v_threshold)
        self.v_reset = float(v_reset)
        self.surrogate_alpha = float(surrogate_alpha)
        self.num_timesteps = num_timesteps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_time(x, self.num_timesteps)
        fn = R.lif_reference if self.impl == "reference" else F.lif_multistep
        s = fn(x, self.tau, self.v_threshold, self.v_reset, self.surrogate_alpha)
        return s

    def spike_signature(self) -> tuple:
        return (type(self), self.impl, self.num_timesteps, self.tau, self.v_threshold, self.v_reset,
                self.surrogate_alpha)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, v_threshold={self.v_threshold}, v_reset={self.v_reset}"
