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
