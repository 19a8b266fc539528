"""One spike pass for Q, K and V (`SharedInputProjections`): the same outputs and gradients as three
separate neurons, used only where exact, and invisible to firing rates and the energy audit."""

from __future__ import annotations

import copy

import pytest
import torch

from spikelm_core.calibration import calibrate
from spikelm_core.firing import measure_firing
from spikelm_core.models.common import compile_layers
from tests.conftest import TINY
from tests.core.models.test_compile_layers import _batch, _run
from tests.core.models.test_compile_layers import _model as compiled_test_model


def _model(**kw):
    return compiled_test_model(3, **kw)


def _attentions(model):
    return [layer.attention.self for layer in model.bert.encoder.layer]


def _apart(model):
    other = copy.deepcopy(model)
    for att in _attentions(other):
        att.share_input_spikes = False
    return other


def _count_neuron_calls(model):
    calls = {"n": 0}
    for att in _attentions(model):
        for lin in (att.query, att.key, att.value):
            inner = lin.neuron.forward

            def counted(x, inner=inner):
                calls["n"] += 1
                return inner(x)

            lin.neuron.forward = counted  # not a hook: hooks switch sharing off on purpose
    return calls


@pytest.mark.parametrize("kind", ["elastic_bi", "lif"])
def test_shared_pass_equals_separate_neurons(kind):
    model = _model(neuron_kind=kind)
    calibrate(model, _batch())
    apart = _apart(model)
    calls = _count_neuron_calls(model)
    shared = _run(model, _batch())
    assert all(att.sharing("qkv") for att in _attentions(model))
    assert calls["n"] == len(_attentions(model))  # one neuron pass per layer instead of three
    reference = _run(apart, _batch())
    torch.testing.assert_close(shared[0], reference[0], rtol=0, atol=1e-5)
    for a, b in zip(shared[1], reference[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert shared[2].keys() == reference[2].keys()
    for name in shared[2]:
        torch.testing.assert_close(shared[2][name], reference[2][name], rtol=0, atol=1e-5, msg=name)
    assert model.state_dict().keys() == apart.state_dict().keys()  # checkpoints load either way


def test_the_spikes_themselves_are_identical():
    model = _model()
    calibrate(model, _batch())
    att = _attentions(model)[0]
    h = torch.randn(3, 2, 5, TINY["hidden_size"])
    spikes = [lin.neuron(h) for lin in (att.query, att.key, att.value)]
    assert torch.equal(spikes[0], spikes[1]) and torch.equal(spikes[0], spikes[2])


def test_different_amplitudes_run_apart_and_stay_exact():
    model = _model()
    calibrate(model, _batch())
    att = _attentions(model)[1]
    with torch.no_grad():
        att.key.neuron.alpha.mul_(1.5)  # in place: the cached decision must notice
    calls = _count_neuron_calls(model)
    out = _run(model, _batch())
    first = _attentions(model)[0]
    assert not att.sharing("qkv") and first.sharing("qkv")
    assert calls["n"] == 1 + 3  # layer 0 shares, layer 1 runs its three neurons
    reference = _run(_apart(model), _batch())
    torch.testing.assert_close(out[0], reference[0], rtol=0, atol=1e-5)


def test_learnt_and_uncalibrated_amplitudes_are_never_shared():
    model = _model(learn_alpha=True)
    calibrate(model, _batch())
    _run(model, _batch())
    assert not any(att.sharing("qkv") for att in _attentions(model))
    fresh = _model()
    calls = _count_neuron_calls(fresh)
    fresh(**_batch())  # uncalibrated: each neuron calibrates on its own input first
    assert calls["n"] == 3 * len(_attentions(fresh))


def test_firing_rates_still_see_every_neuron():
    model = _model()
    calibrate(model, _batch())
    report = measure_firing(model, [_batch()])
    names = [n for n in report.neurons if ".attention.self.query." in n or ".attention.self.value." in n]
    assert len(names) == 2 * TINY["num_hidden_layers"]
    q, v = (report.neurons[f"bert.encoder.layer.0.attention.self.{p}.neuron"] for p in ("query", "value"))
    assert q == v  # identical spikes, each counted


@pytest.mark.slow
def test_compiled_layers_share_exactly():
    import torch._dynamo

    torch._dynamo.reset()
    model = _model()
    calibrate(model, _batch())
    apart = _apart(model)
    compile_layers(model)
    compiled = _run(model, _batch())
    assert all(att.sharing("qkv") for att in _attentions(model))
    reference = _run(apart, _batch())
    torch.testing.assert_close(compiled[0], reference[0], rtol=0, atol=1e-5)
    for name in compiled[2]:
        torch.testing.assert_close(compiled[2][name], reference[2][name], rtol=0, atol=1e-5, msg=name)


def test_bart_self_and_cross_attention_share_exactly():
    from spikelm_core.models.spiking_bart import SpikingBartConfig, SpikingBartForConditionalGeneration
    from spikelm_core.models.spiking_bart.modeling_spiking_bart import SpikingBartAttention
    from tests.core.models.test_spiking_bart import BART_TINY

    torch.manual_seed(0)
    model = SpikingBartForConditionalGeneration(SpikingBartConfig(**{**BART_TINY, "num_timesteps": 2, "dropout": 0.0,
                                                                     "attention_dropout": 0.0}))
    g = torch.Generator().manual_seed(2)
    batch = {"input_ids": torch.randint(4, 99, (2, 7), generator=g), "attention_mask": torch.ones(2, 7, dtype=torch.long),
             "labels": torch.randint(4, 99, (2, 5), generator=g)}
    calibrate(model, batch)
    apart = copy.deepcopy(model)
    for m in apart.modules():
        if isinstance(m, SpikingBartAttention):
            m.share_input_spikes = False
    outs = []
    for m in (model, apart):
        m.zero_grad()
        out = m(**batch)
        out.loss.backward()
        outs.append((out.logits.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    attentions = [m for m in model.modules() if isinstance(m, SpikingBartAttention)]
    assert any(a.sharing("qkv") for a in attentions) and any(a.sharing("kv") for a in attentions)
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=1e-5)
    for name in outs[1][1]:
        torch.testing.assert_close(outs[0][1][name], outs[1][1][name], rtol=0, atol=1e-5, msg=name)


def test_spike_drop_runs_the_projections_apart():
    """Inside `spike_drop` (training) each of Q, K and V draws its own mask of passed inputs: one shared
    pass would give the three projections one mask."""
    from spikelm_core.neurons import spike_drop

    model = _model()
    calibrate(model, _batch())
    calls = _count_neuron_calls(model)
    model.train()
    with spike_drop(model, 0.5):
        model(**_batch())
    assert calls["n"] == 3 * len(_attentions(model))
    calls["n"] = 0
    model(**_batch())  # outside the block: shared again
    assert calls["n"] == len(_attentions(model))
