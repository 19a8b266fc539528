"""A firing-rate target (`train.target_firing_rate`): a penalty on the per-layer firing rates of each
training batch, so that a run can be asked for an energy budget instead of a frequency coefficient k.

The rate is `spikelm_core.firing`'s, measured on the training batch itself: per neuron the fraction
of its output elements that are non-zero, pad tokens excluded; per layer the mean over its neurons,
keyed by `layer_key`. Its forward value is exactly that count (`s != 0`), so `layer_rates()` equals
`FiringReport.layer_rates()` of the same forward. Its gradient is that of the fired indicator

    f(s) = |s| / a_t   (ternary levels)      f(s) = s / a_t   (binary levels, LIF)

with a_t the neuron's amplitude at step t (1 for `amplitude: unit` and LIF), which is 1 where the
neuron fired and 0 elsewhere. The penalty is

    hinge   (default): P = mean over layers of max(0, rate_l - target)^2    (a budget)
    squared          : P = mean over layers of (rate_l - target)^2          (pulled both ways)

and the training loss adds `train.firing_rate_weight * P` (logged unweighted as `loss_firing`).

Which gradient path (method doc 2.4): no new surrogate; f is differentiated through the neurons'
own backward.

- Elastic bi-spiking and K/V spikes: the straight-through estimator, ds/du = 1 inside
  lo*a_t <= u_t <= a_t, so df/du = sign(s)/a_t there, and through BPTT and the layer input the
  gradient reaches the weights before the neuron. With ternary levels |s| has gradient sign(s) and
  sign(0) = 0: only elements that fired carry gradient. The penalty pushes them towards the
  threshold (lowering the rate) but cannot wake a silent element, so ternary rates below the target
  are not raised ('squared' then only moves firing membranes away from the threshold). With binary
  levels (f = s/a) the window 0 <= u <= a covers silent elements below threshold too.
- `learn_alpha`: the amplitudes get a gradient as well. f divides by a_t carrying the neuron's LSQ
  gradient scale g (`alpha_grad_scale`), so the magnitude term of the LSQ gradient cancels and what
  is left is the straight-through derivative of the indicator: df/da_t = -g |u_t| / a_t^2 for
  elements that fired inside the window, i.e. a larger amplitude (threshold a_t/2) lowers the rate.
- LIF: f = s with the sigmoid surrogate, non-zero for every element, silent ones included.

Capture: the recorder is `firing.FiringRecorder` (its pad masks and neuron discovery) with
differentiable counts, active only inside the training forward (`SpikelmTrainer.compute_loss`).
Forward hooks make compiled layers run eagerly (`models.common.CompilableLayer`), so a run with a
target does not compile its layers (`pipeline.training_compile_mode`). Under DDP each rank penalises
its own micro-batch; the gradients are averaged as usual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config.schema import FiringPenalty
from ..firing import FiringRecorder, layer_key, neuron_module_names, real_tokens
from ..neurons.functional import alpha_grad_scale

@dataclass(frozen=True)
class FiringTarget:
    """The target per-layer firing rate, the penalty's weight in the loss and its form."""

    rate: float
    weight: float = 1.0
    form: FiringPenalty = "hinge"

    @classmethod
    def from_train_args(cls, train) -> "FiringTarget | None":
        """The target a recipe's `train:` section asks for, or None."""
        if train.target_firing_rate is None:
            return None
        return cls(train.target_firing_rate, train.firing_rate_weight, train.firing_rate_penalty)

    def penalty(self, layer_rates: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unweighted penalty: mean over layers of max(0, r - target)^2 ('hinge') or (r - target)^2."""
        if not layer_rates:
            raise ValueError("no firing rates were recorded: the model ran no spiking neuron")
        gap = torch.stack(list(layer_rates.values())) - self.rate
        if self.form == "hinge":
            gap = gap.clamp_min(0)
        return gap.square().mean()


def _amplitude(neuron: nn.Module, spikes: torch.Tensor) -> torch.Tensor | float:
    """a_t as `[T, 1, ...]` (1.0 for unit amplitudes and LIF): detached, or with the neuron's LSQ
    gradient scale when it learns its amplitudes (see the module docstring)."""
    alpha = getattr(neuron, "alpha", None)
    if alpha is None or getattr(neuron, "amplitude", "unit") == "unit":
        return 1.0
    a = alpha.float().clamp_min(1e-5)
    if getattr(neuron, "learn_alpha", False) and alpha.requires_grad:
        a = a.detach() + (a - a.detach()) * alpha_grad_scale(spikes[0])
    else:
        a = a.detach()
    return a.view(-1, *([1] * (spikes.dim() - 1)))


def fired_count(neuron: nn.Module, spikes: torch.Tensor, token_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(elements that fired, elements), pads excluded, as float64 scalars: the first is the exact
    count of `spikes != 0` in the forward (so fired / elements is firing.py's rate to the last bit),
    with the gradient of the sum of f(s) (module docstring) in the backward."""
    binary = getattr(neuron, "levels", "ternary") == "binary"
    soft = (spikes if binary else spikes.abs()).float() / _amplitude(neuron, spikes)
    fired = spikes != 0
    if token_mask is None:
        elements = torch.tensor(spikes.numel(), device=spikes.device)
    else:
        real = real_tokens(spikes, token_mask)
        soft, fired = soft * real, fired & real
        elements = real.expand_as(spikes).sum()
    soft_sum = soft.sum()
    return fired.sum().double() + (soft_sum - soft_sum.detach()).double(), elements.double()


class LayerRateRecorder(FiringRecorder):
    """`FiringRecorder` with differentiable counts: `with recorder: model(**batch)`, then
    `layer_rates()` gives `{layer_key: rate}` as tensors with a gradient (not a `FiringReport`)."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self._order = neuron_module_names(model)
        if not self._order:
            raise ValueError(f"{type(model).__name__} has no spiking neurons to set a firing rate for")
        self._fired: dict[str, torch.Tensor] = {}
        self._elements: dict[str, torch.Tensor] = {}

    def start(self):
        self._fired, self._elements = {}, {}
        return super().start()

    def observe(self, name: str, module: nn.Module, spikes: torch.Tensor, token_mask: torch.Tensor | None) -> None:
        fired, elements = fired_count(module, spikes, token_mask)
        if name in self._fired:  # a neuron that runs twice in one forward: counts add up
            fired, elements = self._fired[name] + fired, self._elements[name] + elements
        self._fired[name], self._elements[name] = fired, elements

    def layer_rates(self) -> dict[str, torch.Tensor]:
        """Per layer, the mean over its neurons of fired / elements, in module order; a neuron that saw
        no real token has no rate and is left out, as in firing.py (a layer without any: 0)."""
        groups: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for name in self._order:
            if name in self._fired:
                elements = self._elements[name]
                groups.setdefault(layer_key(name), []).append((self._fired[name] / elements.clamp_min(1), elements > 0))
        out = {}
        for key, pairs in groups.items():  # masked means: no host sync per neuron
            rates = torch.stack([rate for rate, _ in pairs])
            seen = torch.stack([real for _, real in pairs]).to(rates.dtype)
            out[key] = (rates * seen).sum() / seen.sum().clamp_min(1)
        return out


__all__ = ["FiringTarget", "LayerRateRecorder", "fired_count"]
