"""Compiled spiking layers (`compile_layers`): the same spikes and gradients as the eager model."""

import pytest
import torch

from spikelm_core.calibration import calibrate
from spikelm_core.models.common import compile_layers
from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification

from tests.conftest import TINY

pytestmark = pytest.mark.slow


def _model(T, **kw):
    torch.manual_seed(0)
    cfg = SpikingBertConfig(**{**TINY, "num_timesteps": T, "num_labels": 2, "attention_probs_dropout_prob": 0.0,
                               "hidden_dropout_prob": 0.0, **kw})
    return SpikingBertForSequenceClassification(cfg)


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 99, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1])}


def _run(model, b):
    model.zero_grad()
    out = model(**b, output_hidden_states=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), [h.detach() for h in out.hidden_states], grads


@pytest.mark.parametrize("T", [3])
def test_compiled_layers_equal_eager(T):
    import torch._dynamo

    eager = _model(T)
    b = _batch()
    calibrate(eager, {k: v for k, v in b.items() if k != "labels"})
    compiled = _model(T)
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    assert compile_layers(compiled) == TINY["num_hidden_layers"]
    ref = _run(eager, b)
    got = _run(compiled, b)
    # the compiled path ran, one graph for every layer (the first layer's expanded input included)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5)
    for h1, h2 in zip(got[1], ref[1]):
        torch.testing.assert_close(h1, h2, atol=1e-5, rtol=1e-5)
    assert got[2].keys() == ref[2].keys()
    for name in ref[2]:
        torch.testing.assert_close(got[2][name], ref[2][name], atol=1e-5, rtol=1e-4, msg=name)


def test_compiled_layers_fall_back_to_eager_when_recording_or_uncalibrated():
    """Firing statistics, calibration and attention maps need the eager layer; it takes over."""
    from spikelm_core.firing import measure_firing

    model = _model(2)
    compile_layers(model)
    b = {k: v for k, v in _batch().items() if k != "labels"}
    layer = model.bert.encoder.layer[0]
    assert not layer._compilable_now()  # not calibrated yet: the first forward calibrates eagerly
    calibrate(model, b)
    assert layer._compilable_now()
    report = measure_firing(model, [b])
    assert 0.0 < report.mean_rate < 1.0
    out = model(**b, output_attentions=True)
    assert len(out.attentions) == TINY["num_hidden_layers"]


def test_a_failing_compiler_falls_back_to_eager(caplog):
    model = _model(2)
    b = {k: v for k, v in _batch().items() if k != "labels"}
    calibrate(model, b)
    expected = model(**b).logits
    compile_layers(model)
    layer = model.bert.encoder.layer[0]

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    for lyr in model.bert.encoder.layer:
        lyr._compiled = broken
    with caplog.at_level("WARNING"):
        got = model(**b).logits
    torch.testing.assert_close(got, expected)
    assert layer._compiled is None and "runs eagerly from now on" in caplog.text


def test_a_model_as_loaded_compiles_at_its_first_large_training_step(monkeypatch):
    """compile_policy "auto" (a model as loaded): a training step whose input is large enough
    compiles the layers, with the eager model's results; inference, tiny inputs, policy "none" and
    `SPIKELM_COMPILE=none` stay eager."""
    from spikelm_core.models import common
    from spikelm_core.models.common import set_compile_policy
    from spikelm_core.training.pipeline import compile_if_asked

    monkeypatch.delenv("SPIKELM_COMPILE", raising=False)
    b = _batch()
    eager = _model(2)
    calibrate(eager, {k: v for k, v in b.items() if k != "labels"})
    ref = _run(eager, b)

    def fresh():
        m = _model(2)
        m.load_state_dict(eager.state_dict())
        return m, m.bert.encoder.layer

    # the batch's layer input is T x 3 x 9 x 24 = 1296 elements
    model, layers = fresh()
    _run(model, b)
    assert all(lyr._compiled is None for lyr in layers)  # below the default size: eager
    monkeypatch.setattr(common, "AUTO_COMPILE_MIN_ELEMENTS", 1000)
    model.eval()
    with torch.no_grad():
        model(**b)
    assert all(lyr._compiled is None for lyr in layers)  # inference: eager
    model.train()
    got = _run(model, b)
    assert all(lyr._compiled is not None for lyr in layers)
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5)
    for name in ref[2]:
        torch.testing.assert_close(got[2][name], ref[2][name], atol=1e-5, rtol=1e-4, msg=name)

    model, layers = fresh()
    set_compile_policy(model, "none")
    _run(model, b)
    assert all(lyr._compiled is None for lyr in layers)
    model, layers = fresh()
    compile_if_asked(model, "auto", work=10)  # a pipeline's short run decides: eager throughout
    _run(model, b)
    assert all(lyr._compiled is None for lyr in layers)
    monkeypatch.setenv("SPIKELM_COMPILE", "none")
    model, layers = fresh()
    _run(model, b)
    assert all(lyr._compiled is None for lyr in layers)
    with pytest.raises(ValueError, match="auto, layers or none"):
        set_compile_policy(model, "always")


def test_an_unknown_spikelm_compile_value_is_named_once(monkeypatch, caplog):
    from spikelm_core.models import common

    monkeypatch.setattr(common, "_env_warned", set())
    monkeypatch.setenv("SPIKELM_COMPILE", "Always")
    caplog.set_level("WARNING", logger="spikelm")
    assert common._compile_env() is None and common._compile_env() is None
    assert [r.getMessage() for r in caplog.records].count(
        "SPIKELM_COMPILE='Always' is not one of auto, layers, none: ignored (the recipe's train.compile decides)") == 1
    monkeypatch.setenv("SPIKELM_COMPILE", " Layers ")
    assert common._compile_env() == "layers"


def test_compiled_bart_equals_eager_in_training_and_cached_generation():
    """Spiking BART's encoder and decoder layers as compiled graphs: the loss and gradients of a
    training step, and beam-2 generation with the KV cache (the cache is read, written and reordered
    between beams outside the graph), equal the eager model's. (One beam width: each other width
    compiles the decoder layers again, about 40 s on 2 cores with an empty compile cache.)"""
    import torch._dynamo

    from spikelm_core.models.spiking_bart import SpikingBartForConditionalGeneration
    from tests.core.models.test_spiking_bart import batch, tiny

    torch.manual_seed(2)
    eager = SpikingBartForConditionalGeneration(tiny(dropout=0.0, attention_dropout=0.0))
    b = batch(seed=3)
    calibrate(eager, b)
    compiled = SpikingBartForConditionalGeneration(tiny(dropout=0.0, attention_dropout=0.0))
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    assert compile_layers(compiled) == 4
    labels = torch.randint(5, 99, (5, 6))
    grads = []
    for m in (eager, compiled):
        m.train()
        m.zero_grad()
        loss = m(**b, labels=labels).loss
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-5, rtol=1e-5)
    for name, g in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], g, atol=1e-5, rtol=1e-4, msg=name)
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=3,
              decoder_start_token_id=2, use_cache=True, output_scores=True, return_dict_in_generate=True)
    outs = [m.eval().generate(**b, num_beams=2, **kw) for m in (eager, compiled)]
    assert torch.equal(outs[0].sequences, outs[1].sequences)
    for s0, s1 in zip(outs[0].scores, outs[1].scores):
        torch.testing.assert_close(s1, s0, atol=1e-5, rtol=1e-5)
    assert all(layer._compiled is not None for layer in compiled.model.decoder.layers)  # no fallback


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_layers_equal_eager_on_cuda():
    """`compile_layers` on CUDA (runs where a GPU exists): the same outputs and gradients as the eager
    model on the same device, and the eager neuron's spikes equal to the reference loop's there."""
    import torch._dynamo

    from spikelm_core.neurons import BiSpikeNeuron
    from spikelm_core.neurons import reference as R

    device = torch.device("cuda")
    b = {k: v.to(device) for k, v in _batch().items()}
    eager = _model(3).to(device)
    calibrate(eager, {k: v for k, v in b.items() if k != "labels"})
    compiled = _model(3).to(device)
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    assert compile_layers(compiled) == TINY["num_hidden_layers"]
    ref, got = _run(eager, b), _run(compiled, b)
    torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5)
    for name in ref[2]:
        torch.testing.assert_close(got[2][name], ref[2][name], atol=1e-5, rtol=1e-4, msg=name)
    x = torch.randn(4, 6, 10, 32, device=device, requires_grad=True)
    n = BiSpikeNeuron(4).to(device)
    s = n(x)
    assert torch.equal(s, R.bi_spike_reference(x.detach(), n.alpha))


def test_dropout_masks_are_the_same_eager_and_compiled():
    """`UniformDropout` (uniform > p): with dropout on, a seeded training step of the compiled layers
    equals the eager one (the same masks from the same random stream)."""
    import torch._dynamo

    kw = {"attention_probs_dropout_prob": 0.2, "hidden_dropout_prob": 0.3}
    eager = _model(2, **kw)
    b = _batch()
    calibrate(eager, {k: v for k, v in b.items() if k != "labels"})
    compiled = _model(2, **kw)
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    compile_layers(compiled)
    runs = []
    for m in (eager, compiled):
        m.train()
        torch.manual_seed(7)
        runs.append(_run(m, b))
    torch.testing.assert_close(runs[1][0], runs[0][0], atol=1e-5, rtol=1e-5)
    for name in runs[0][2]:
        torch.testing.assert_close(runs[1][2][name], runs[0][2][name], atol=1e-5, rtol=1e-4, msg=name)
    assert all(layer._compiled is not None for layer in compiled.bert.encoder.layer)


def test_compiled_layers_recomputed_by_activation_checkpointing_equal_eager():
    """Compiled layers under activation checkpointing (`train.activation_checkpointing` with `train.compile:
    layers`): the recomputation runs the compiled graph again (torch's early stop, which cannot unwind
    it, is off: `CompilableLayer.recomputed`); the same gradients as the eager model."""
    import torch._dynamo

    eager = _model(3)
    b = _batch()
    calibrate(eager, {k: v for k, v in b.items() if k != "labels"})
    compiled = _model(3)
    compiled.load_state_dict(eager.state_dict())
    torch._dynamo.reset()
    compile_layers(compiled)
    compiled.activation_checkpointing_enable()
    eager.train(), compiled.train()
    ref = _run(eager, b)
    got = _run(compiled, b)
    got_again = _run(compiled, b)  # a second step: the compiled graph reused
    for name in ref[2]:
        torch.testing.assert_close(got[2][name], ref[2][name], atol=1e-5, rtol=1e-4, msg=name)
        torch.testing.assert_close(got_again[2][name], got[2][name], msg=name)
