"""Spiking neurons. Time-first shapes: every neuron maps `x: [T, ...]` to spikes `[T, ...]`.

- `BiSpikeNeuron`: SpikeLM's elastic bi-spiking neuron (ternary {-a, 0, +a}, membrane, calibrated a).
- `TernarySpike`: the stateless spike SpikeLM applies to K and V after their projections.
- `LIFNeuron`: binary LIF (SpikingJelly LIFNode semantics) for the LIF-BERT baseline.
- `spike_drop`: a training-time block in which amplitude neurons pass some inputs on unspiked.
- `reference`: plain loops the fast paths are tested against.
"""

from .base import SpikingNeuron, distributed_mean, non_finite_neurons, set_neuron_impl, spiking_neurons
from .elastic import BiSpikeNeuron, TernarySpike, spike_drop
from .lif import LIFNeuron

__all__ = ["SpikingNeuron", "BiSpikeNeuron", "TernarySpike", "LIFNeuron", "distributed_mean", "set_neuron_impl",
           "spike_drop", "spiking_neurons", "non_finite_neurons"]
