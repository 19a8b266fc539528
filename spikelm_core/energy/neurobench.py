"""NeuroBench-compatible metrics of a spiking model, with NeuroBench's names and definitions, per sample.

NeuroBench (`neurobench` 2.3.0, Yik et al., Nature Communications 2025) defines its metrics through
hooks on `nn.Linear`/convolution/RNN layers and on activation modules. Those hooks cannot read
spikelm's models as they are: the neuron sits inside `SpikeLinear`, so a pre-hook sees the float
current rather than the spikes, and SpikeLM's spikes are ±α (NeuroBench only books inputs in
{-1, 0, 1} as ACs). spikelm therefore computes the same definitions from its own counts:

- **Footprint**: bytes of the parameters and buffers of the model.
- **ConnectionSparsity**: zero weights / all weights of the connection (Linear) layers.
- **ActivationSparsity**: zero outputs / all outputs of the spiking neurons, over all steps.
- **SynapticOperations**: `Effective_ACs` (the Linear layers driven by spikes: one AC per non-zero input
  and weight, T·fr·MACs with no zero weights), `Effective_MACs` (Linear layers with float input: pooler,
  heads) and `Dense` (every Linear op as if every input were non-zero, every step), per sample.
- **MembraneUpdates**: membrane updates of the neurons that keep a membrane: one per element for each step
  after the first, Σ (T − 1)·X (`memory.membrane_updates`, the `neuron_updates` count); 0 at T = 1.

NeuroBench does not see the attention matmuls Q·Kᵀ and probs·V (they are not layers): they are listed
apart (`attention_matmuls`). NeuroBench divides by the leading dimension of the input, which is T times
too many samples when T is folded into the batch; the numbers here are per real sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from spikelm_core.energy.memory import MATMULS, MemOp, membrane_updates

SOURCE = "NeuroBench 2.3.0 definitions (Yik et al., Nature Communications 2025), computed by spikelm"


def static_metrics(model: nn.Module) -> dict[str, Any]:
    """Footprint (bytes) and ConnectionSparsity (of every nn.Linear, SpikeLinear included)."""
    footprint = sum(p.numel() * p.element_size() for p in model.parameters())
    footprint += sum(b.numel() * b.element_size() for b in model.buffers())
    zeros = total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            zeros += int((module.weight == 0).sum())
            total += module.weight.numel()
    return {"Footprint": footprint, "ConnectionSparsity": round(zeros / total, 4) if total else 0.0}


def workload_metrics(ops: Sequence[MemOp], neurons: Iterable[Any], timesteps: int) -> dict[str, Any]:
    """ActivationSparsity, SynapticOperations and MembraneUpdates per sample, from the memory model's ops
    (per step, at the audited sequence length) and the traced neuron rates (pads excluded)."""
    neurons = list(neurons)
    elements = sum(n.elements for n in neurons)
    fired = sum(n.firing_rate * n.elements for n in neurons)
    linear = [op for op in ops if op.weights and op.component not in MATMULS]
    attention = [op for op in ops if op.component in MATMULS and op.macs]
    acs = sum(timesteps * op.firing_rate * op.macs for op in linear if op.firing_rate is not None)
    macs = sum(op.steps * op.macs for op in linear if op.firing_rate is None)
    dense = sum((timesteps if op.firing_rate is not None else op.steps) * op.macs for op in linear)
    updates = sum(membrane_updates(op, timesteps) for op in ops)
    return {
        "ActivationSparsity": 1 - fired / elements if elements else 0.0,
        "SynapticOperations": {"Effective_MACs": macs, "Effective_ACs": acs, "Dense": dense},
        "MembraneUpdates": updates,
        "attention_matmuls": {
            "Effective_ACs": sum(timesteps * op.firing_rate * op.macs for op in attention if op.firing_rate is not None),
            "Effective_MACs": sum(op.steps * op.macs for op in attention if op.firing_rate is None),
            "Dense": sum((timesteps if op.firing_rate is not None else op.steps) * op.macs for op in attention),
            "components": sorted({op.component for op in attention}),
        },
    }


def neurobench_metrics(model: nn.Module, ops: Sequence[MemOp], neurons: Iterable[Any], timesteps: int) -> dict[str, Any]:
    """The whole NeuroBench block of one run (JSON `neurobench`)."""
    return {"source": SOURCE, **static_metrics(model), **workload_metrics(ops, neurons, timesteps)}


__all__ = ["SOURCE", "neurobench_metrics", "static_metrics", "workload_metrics"]
