"""NeuroBench-compatible metrics (spikelm_core/energy/neurobench.py), and agreement with NeuroBench's own code.

The agreement test runs only where the optional `neurobench` package is installed
(`pip install --no-deps neurobench snntorch`); the project never needs it.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from spikelm_core.energy import FP32, count_macs, energy_from_counts
from spikelm_core.energy.memory import Shape, forward_ops
from spikelm_core.energy.neurobench import neurobench_metrics, static_metrics, workload_metrics
from spikelm_core.firing import measure_firing
from spikelm_core.models.common import SpikeLinear

T, B, L, H, HEADS, FF = 3, 5, 7, 24, 3, 37


@pytest.fixture(scope="module")
def tiny():
    """A tiny spiking BERT classifier, calibrated on one batch with no padding, its rates and ops."""
    from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification

    torch.manual_seed(0)
    config = SpikingBertConfig(hidden_size=H, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=FF,
                               vocab_size=99, num_timesteps=T, num_labels=2)
    model = SpikingBertForSequenceClassification(config).eval()
    batch = {"input_ids": torch.randint(1, 99, (B, L)), "attention_mask": torch.ones(B, L, dtype=torch.long)}
    firing = measure_firing(model, [batch])
    rates = {name: s.firing_rate for name, s in firing.neurons.items()}
    report = energy_from_counts(count_macs(model, seq_len=L).rows, rates, T, FP32, seq_len=L)
    ops = forward_ops(report.rows, Shape(hidden=H, heads=HEADS, ffn=FF, seq_len=L))
    return model, batch, firing, report, ops


def test_definitions_from_spikelm_counts(tiny):
    model, _, firing, report, ops = tiny
    neurons = [type("N", (), {"elements": s.total, "firing_rate": s.firing_rate})() for s in firing.neurons.values()]
    m = workload_metrics(ops, neurons, T)
    syn, att = m["SynapticOperations"], m["attention_matmuls"]
    # the Linear ACs and the attention ACs together are the energy report's spiking ACs
    assert math.isclose(syn["Effective_ACs"] + att["Effective_ACs"], report.total_spiking_acs, rel_tol=1e-12)
    assert syn["Effective_MACs"] == report.total_spiking_macs == H * H + H * 2  # pooler + classifier, once
    linear_macs = 2 * L * (4 * H * H + 2 * H * FF)
    assert syn["Dense"] == T * linear_macs + H * H + 2 * H
    assert att["Dense"] == T * 2 * 2 * L * L * H and att["components"] == ["av", "qk"]
    # one membrane update per neuron per step after the first: the six SpikeLinear neurons of each layer
    assert m["MembraneUpdates"] == 2 * (T - 1) * L * (5 * H + FF)
    total = sum(s.total for s in firing.neurons.values())
    fired = sum(s.firing_rate * s.total for s in firing.neurons.values())
    assert math.isclose(m["ActivationSparsity"], 1 - fired / total)
    static = static_metrics(model)
    assert static["Footprint"] == sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
        b.numel() * b.element_size() for b in model.buffers())
    assert static["ConnectionSparsity"] == 0.0
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        pruned.bert.encoder.layer[0].attention.self.query.weight[:12] = 0
    assert static_metrics(pruned)["ConnectionSparsity"] == round(12 * H / (2 * (4 * H * H + 2 * H * FF) + H * H + 2 * H), 4)
    assert set(neurobench_metrics(model, ops, neurons, T)) >= {"Footprint", "ConnectionSparsity", "ActivationSparsity",
                                                               "SynapticOperations", "MembraneUpdates"}


def test_neurobench_agrees_on_the_linear_layers(tiny):
    """NeuroBench's own per-layer count on the same spikes (unit ternary, fed to plain nn.Linear copies)."""
    pytest.importorskip("snntorch")
    nb_layers = pytest.importorskip("neurobench.metrics.utils.layers")
    from neurobench.models import TorchModel

    model, batch, firing, report, ops = tiny
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, SpikeLinear):  # the spikes the layer multiplies, as NeuroBench's {-1, 0, 1}
            hooks.append(module.neuron.register_forward_hook(
                lambda mod, args, out, name=name: seen.__setitem__(name, torch.sign(out).detach())))
        elif isinstance(module, nn.Linear):  # float input (pooler, classifier)
            hooks.append(module.register_forward_pre_hook(
                lambda mod, args, name=name: seen.__setitem__(name, args[0].detach())))
    with torch.no_grad():
        model(**batch)
    for h in hooks:
        h.remove()
    acs = macs = dense = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        plain = nn.Linear(module.in_features, module.out_features)
        plain.load_state_dict({"weight": module.weight, "bias": module.bias})
        x = seen[name].reshape(-1, module.in_features)
        ops_, spiking = nb_layers.single_layer_MACs(x, plain)
        total, _ = nb_layers.single_layer_MACs(x, plain, total=True)
        assert spiking == isinstance(module, SpikeLinear), name
        acs, macs = (acs + ops_, macs) if spiking else (acs, macs + ops_)
        dense += total
    neurons = [type("N", (), {"elements": s.total, "firing_rate": s.firing_rate})() for s in firing.neurons.values()]
    ours = workload_metrics(ops, neurons, T)["SynapticOperations"]
    # NeuroBench divides by the leading dimension; per real sample it is B (T is folded into the batch here)
    assert math.isclose(acs / B, ours["Effective_ACs"], rel_tol=1e-9)
    assert math.isclose(macs / B, ours["Effective_MACs"], rel_tol=1e-9)
    assert math.isclose(dense / B, ours["Dense"], rel_tol=1e-9)
    # the attention matmuls are not connection layers for NeuroBench: it never sees them
    layers = TorchModel(model).connection_layers()
    assert len(layers) == 2 * 6 + 2 and all(isinstance(layer, nn.Linear) for layer in layers)
    assert not any(type(m).__name__ == "SpikeMatmul" for m in layers)
