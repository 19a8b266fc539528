"""Spiking BERT: placement, shapes, Auto round trip, calibration state, gradients."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

import spikelm_core  # noqa: F401  (registers the Auto classes)
from spikelm_core.calibration import calibrate, is_calibrated
from spikelm_core.firing import measure_firing
from spikelm_core.models.spiking_bert import (
    SpikeLinear,
    SpikeMatmul,
    SpikingBertConfig,
    SpikingBertForMaskedLM,
    SpikingBertForPreTraining,
    SpikingBertForSequenceClassification,
    SpikingBertModel,
)
from spikelm_core.neurons import BiSpikeNeuron, LIFNeuron, TernarySpike

from tests.conftest import TINY


def tiny_config(**kw):
    return SpikingBertConfig(**{**TINY, "num_timesteps": 3, **kw})


def batch(B=5, L=7, vocab=99, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[0, L - 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_neurons_sit_where_spikelm_puts_them():
    m = SpikingBertModel(tiny_config())
    layer = m.encoder.layer[0]
    for lin in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value,
                layer.attention.output.dense, layer.intermediate.dense, layer.output.dense):
        assert isinstance(lin, SpikeLinear) and isinstance(lin.neuron, BiSpikeNeuron)
    for mm in (layer.attention.self.qk, layer.attention.self.av):
        assert isinstance(mm, SpikeMatmul) and isinstance(mm.neuron, TernarySpike)
    # three separate Q/K/V neurons
    ids = {id(layer.attention.self.query.neuron), id(layer.attention.self.key.neuron),
           id(layer.attention.self.value.neuron)}
    assert len(ids) == 3
    assert len(m.spiking_neurons()) == 8 * TINY["num_hidden_layers"]
    assert type(m.pooler.dense) is torch.nn.Linear  # pooler stays float


def test_lif_variant_and_float_kv():
    m = SpikingBertModel(tiny_config(neuron_kind="lif", spike_kv=False))
    layer = m.encoder.layer[0]
    assert isinstance(layer.attention.self.query.neuron, LIFNeuron)
    assert isinstance(layer.attention.self.qk.neuron, torch.nn.Identity)


def test_parameter_names_equal_hf_bert():
    from transformers import BertConfig, BertForSequenceClassification

    dense = BertForSequenceClassification(BertConfig(**TINY))
    spiking = SpikingBertForSequenceClassification(tiny_config())
    dense_keys = set(dense.state_dict())
    spiking_params = {k for k in spiking.state_dict() if not k.endswith((".alpha", ".calibrated"))}
    assert spiking_params == dense_keys


@pytest.mark.parametrize("T", [1, 3])
def test_forward_shapes_and_time_axis(T):
    m = SpikingBertModel(tiny_config(num_timesteps=T)).eval()
    out = m(**batch(), output_hidden_states=True, output_spike_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (5, 7, 24)
    assert out.pooler_output.shape == (5, 24)
    assert out.spike_states.shape == (T, 5, 7, 24)
    torch.testing.assert_close(out.spike_states.mean(0), out.last_hidden_state)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (5, 7, 24)
    assert out.attentions[0].shape == (5, 3, 7, 7)


def test_padding_does_not_change_unpadded_rows():
    m = SpikingBertModel(tiny_config()).eval()
    b = batch()
    calibrate(m, b)
    full = m(**b).last_hidden_state
    longer = {k: torch.cat([v, torch.zeros(5, 3, dtype=v.dtype)], 1) for k, v in b.items()}
    padded = m(**longer).last_hidden_state[:, :7]
    torch.testing.assert_close(full[1:], padded[1:], atol=1e-5, rtol=1e-5)


def test_classification_regression_and_mlm_losses_backpropagate():
    b = batch()
    cls = SpikingBertForSequenceClassification(tiny_config(num_labels=3))
    out = cls(**b, labels=torch.tensor([0, 1, 2, 1, 0]))
    out.loss.backward()
    assert cls.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    reg = SpikingBertForSequenceClassification(tiny_config(num_labels=1))
    out = reg(**b, labels=torch.rand(5) * 5)
    assert reg.config.problem_type == "regression" and out.logits.shape == (5, 1)
    out.loss.backward()
    mlm = SpikingBertForMaskedLM(tiny_config())
    labels = b["input_ids"].clone()
    labels[:, ::2] = -100
    out = mlm(**b, labels=labels)
    assert out.logits.shape == (5, 7, 99)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits.reshape(-1, 99), labels.reshape(-1)))
    out.loss.backward()
    # a batch that drew no masked token: loss 0 with a graph, not 0/0 = NaN
    nothing = mlm(**b, labels=torch.full_like(labels, -100)).loss
    assert nothing.item() == 0.0 and nothing.requires_grad
    pt = SpikingBertForPreTraining(tiny_config())
    pt(**b, labels=labels, next_sentence_label=torch.tensor([0, 1, 0, 1, 1])).loss.backward()


def test_explicit_calibration_and_auto_round_trip(tmp_path):
    model = SpikingBertForSequenceClassification(tiny_config()).eval()
    assert not is_calibrated(model)
    calibrate(model, batch(seed=1))
    assert is_calibrated(model)
    b = batch(seed=2)
    logits = model(**b).logits
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "spiking_bert"
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert is_calibrated(loaded)
    for (n1, a), (n2, c) in zip(model.spiking_neurons(), loaded.spiking_neurons()):
        assert n1 == n2 and torch.equal(a.alpha, c.alpha)
    torch.testing.assert_close(loaded(**b).logits, logits, atol=0, rtol=0)  # no recalibration on load
    base = AutoModel.from_pretrained(tmp_path)
    assert isinstance(base, SpikingBertModel) and is_calibrated(base)
    assert (tmp_path / "model.safetensors").is_file()


def test_mlm_round_trip_keeps_tied_decoder(tmp_path):
    m = SpikingBertForMaskedLM(tiny_config())
    calibrate(m, batch())
    m.save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert loaded.cls.predictions.decoder.weight.data_ptr() == loaded.bert.embeddings.word_embeddings.weight.data_ptr()


def test_measure_firing_reports_every_neuron():
    m = SpikingBertModel(tiny_config())
    b = batch()
    calibrate(m, b)
    rep = measure_firing(m, [b, batch(seed=3)], detail=True)
    assert len(rep.neurons) == 16
    assert 0.0 < rep.mean_rate < 1.0
    profile = next(iter(rep.profiles.values()))
    assert len(profile.step_positive) == 3 and len(profile.step_negative) == 3


def test_bad_config_values_name_the_field():
    with pytest.raises(Exception, match="k: Input should be greater than 0"):
        tiny_config(k=-1.0)
    with pytest.raises(Exception, match="reset: Input should be .official., .soft. or .none."):
        tiny_config(reset="hard")
    with pytest.raises(Exception, match="num_timesteps: Input should be greater than or equal to 1"):
        tiny_config(num_timesteps=0)
    with pytest.raises(Exception, match="readout: Input should be .mean. or .last."):
        tiny_config(readout="first")


def test_readout_last_feeds_the_heads_the_last_step_and_keeps_hidden_states_as_means():
    torch.manual_seed(0)
    m = SpikingBertForSequenceClassification(tiny_config(readout="last", num_labels=1)).eval()
    b = batch()
    calibrate(m, b)
    out = m.bert(**b, output_hidden_states=True, output_spike_states=True)
    torch.testing.assert_close(out.last_hidden_state, out.spike_states[-1])
    torch.testing.assert_close(out.hidden_states[-1], out.spike_states.mean(0))  # what distillation matches
    torch.testing.assert_close(m(**b).logits, m.classifier(m.bert.pooler(out.spike_states[-1])))
    last = m(**b).logits
    m.config.readout = "mean"
    mean = m(**b).logits
    torch.testing.assert_close(mean, m.classifier(m.bert.pooler(out.spike_states.mean(0))))
    assert not torch.allclose(mean, last)  # T = 3 steps differ


@pytest.mark.parametrize("T", [1, 3])
def test_fused_attention_equals_reference(T):
    from spikelm_core.models.spiking_bert.modeling_spiking_bert import SpikingBertSelfAttention

    torch.manual_seed(0)
    cfg = tiny_config(num_timesteps=T, attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0, num_labels=2)
    model = SpikingBertForSequenceClassification(cfg)
    b = batch()
    calibrate(model, b)
    labels = torch.tensor([0, 1, 1, 0, 1])
    results = {}
    for impl in ("fused", "reference"):
        SpikingBertSelfAttention.attention_impl = impl
        try:
            model.zero_grad()
            out = model(**b, labels=labels)
            out.loss.backward()
            results[impl] = (out.logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None])
        finally:
            SpikingBertSelfAttention.attention_impl = "fused"
    torch.testing.assert_close(results["fused"][0], results["reference"][0], atol=1e-5, rtol=1e-5)
    for g1, g2 in zip(results["fused"][1], results["reference"][1]):
        torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)


def test_learn_alpha_trains_amplitudes_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = SpikingBertForSequenceClassification(tiny_config(learn_alpha=True, num_labels=2))
    b = batch()
    calibrate(model, b)
    neurons = [m for m in model.modules() if isinstance(m, (BiSpikeNeuron, TernarySpike))]
    assert neurons and all(isinstance(n.alpha, torch.nn.Parameter) for n in neurons)
    before = {id(n): n.alpha.detach().clone() for n in neurons}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(**b, labels=torch.tensor([0, 1, 1, 0, 1])).loss.backward()
    assert all(n.alpha.grad is not None for n in neurons)
    opt.step()
    assert any(not torch.equal(n.alpha.detach(), before[id(n)]) for n in neurons)
    model.save_pretrained(tmp_path / "m")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m")
    assert again.config.learn_alpha and is_calibrated(again)
    torch.testing.assert_close(again.bert.encoder.layer[0].attention.self.query.neuron.alpha.detach(),
                               model.bert.encoder.layer[0].attention.self.query.neuron.alpha.detach())


def test_uniform_dropout_keeps_each_element_with_probability_1_minus_p():
    from spikelm_core.models.common import UniformDropout, uniform_dropout

    torch.manual_seed(0)
    x = torch.ones(400, 500)
    y = uniform_dropout(x, 0.25, True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.005
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))
    torch.manual_seed(0)
    assert torch.equal(uniform_dropout(x, 0.25, True), y)  # seeded: the same mask
    assert uniform_dropout(x, 0.25, False) is x and uniform_dropout(x, 0.0, True) is x
    assert torch.equal(uniform_dropout(x, 1.0, True), torch.zeros_like(x))
    d = UniformDropout(0.5).eval()
    assert d(x) is x


def test_attention_takes_plain_ops_for_half_precision_gradients_on_cpu(monkeypatch):
    """`attention_with_dropout`: SDPA for float32 and for inference; plain ops (`math_attention`) when
    the gradients run in bf16 (a bf16 input, or autocast), with the same values and gradients."""
    import torch.nn.functional as F

    from spikelm_core.models import common

    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, 5, 4) for _ in range(3))
    mask = torch.zeros(3, 1, 1, 5)
    mask[..., 3:] = torch.finfo(torch.float32).min
    sdpa_calls = []
    real_sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(common.F, "scaled_dot_product_attention",
                        lambda *a, **kw: sdpa_calls.append(a[0].dtype) or real_sdpa(*a, **kw))

    def run(dtype, autocast=False, grad=True):
        leaves = [x.to(dtype).clone().requires_grad_(grad) for x in (q, k, v)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), torch.set_grad_enabled(grad):
            out = common.attention_with_dropout(*leaves, mask.to(dtype), 0.0, True)
        grads = torch.autograd.grad(out.float().sum(), leaves) if grad else None
        return out, grads

    ref = common.math_attention(q, k, v, mask)
    out, _ = run(torch.float32)
    assert sdpa_calls == [torch.float32]  # float32: SDPA
    torch.testing.assert_close(out, ref)
    run(torch.bfloat16, grad=False)
    assert len(sdpa_calls) == 2  # inference in bf16: SDPA too
    out, grads = run(torch.bfloat16)
    out_ac, grads_ac = run(torch.float32, autocast=True)
    assert len(sdpa_calls) == 2  # gradients in bf16, either way: plain ops
    assert out.dtype == torch.bfloat16 and out_ac.dtype == torch.bfloat16
    leaves = [x.to(torch.bfloat16).clone().requires_grad_() for x in (q, k, v)]
    sdpa_out = real_sdpa(*leaves, attn_mask=mask.to(torch.bfloat16))
    sdpa_grads = torch.autograd.grad(sdpa_out.float().sum(), leaves)
    torch.testing.assert_close(out, sdpa_out, atol=2e-2, rtol=2e-2)
    for g, g_ac, ref_g in zip(grads, grads_ac, sdpa_grads):
        torch.testing.assert_close(g, ref_g, atol=3e-2, rtol=3e-2)
        torch.testing.assert_close(g_ac.float(), ref_g.float(), atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("tie", [True, False])
def test_mlm_decoder_saved_unless_tied_and_tied_keys_ignored_on_save(tmp_path, tie):
    """Tied decoder keys are saved once, under their sources (and so listed to ignore on save, which
    keeps the Trainer from warning on resume); an untied decoder is saved and loads back as it was."""
    from safetensors.torch import load_file

    model = SpikingBertForMaskedLM(tiny_config(tie_word_embeddings=tie))
    model.save_pretrained(tmp_path)
    saved = set(load_file(tmp_path / "model.safetensors"))
    decoder = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    assert (decoder & saved == set()) == tie and (model._keys_to_ignore_on_save >= decoder) == tie
    again = SpikingBertForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(again.cls.predictions.decoder.weight, model.cls.predictions.decoder.weight)


@pytest.mark.parametrize("act", ["relu", "gelu_new", "gelu"])
def test_feed_forward_takes_the_checkpoints_activation(act):
    """The intermediate layer applies the config's `hidden_act` (a ReLU BERT stays a ReLU BERT)."""
    from transformers.activations import ACT2FN

    from spikelm_core.models.spiking_bert.modeling_spiking_bert import SpikingBertIntermediate

    torch.manual_seed(0)
    layer = SpikingBertIntermediate(tiny_config(hidden_act=act))
    x = torch.randn(3, 2, 5, TINY["hidden_size"])
    pre = layer.dense(x)
    assert (pre < 0).any()
    torch.testing.assert_close(layer(x), ACT2FN[act](pre))
    assert ((layer(x) >= 0).all()) == (act == "relu")
    if act == "gelu":  # BERT's default, the released code's exact erf GELU
        default = SpikingBertIntermediate(tiny_config())
        default.load_state_dict(layer.state_dict())
        torch.testing.assert_close(default(x), torch.nn.functional.gelu(pre, approximate="none"))


def test_mlm_head_activation_apart_from_the_ffn(tmp_path):
    """`mlm_head_act: relu` (the released pretraining config) puts ReLU in the masked-LM head's transform
    alone: the FFN keeps `hidden_act`; the setting survives save and load; an unknown name is refused."""
    from transformers.activations import ACT2FN

    from spikelm_core.models.spiking_bert import SpikingBertForPreTraining

    for cls in (SpikingBertForMaskedLM, SpikingBertForPreTraining):
        torch.manual_seed(0)
        model = cls(SpikingBertConfig(**TINY, num_timesteps=2, mlm_head_act="relu"))
        assert isinstance(model.cls.predictions.transform.transform_act_fn, type(ACT2FN["relu"]))
        assert model.config.hidden_act == "gelu"
        assert not isinstance(model.bert.encoder.layer[0].intermediate.act, type(ACT2FN["relu"]))
        torch.manual_seed(0)
        default = cls(SpikingBertConfig(**TINY, num_timesteps=2))
        assert not isinstance(default.cls.predictions.transform.transform_act_fn, type(ACT2FN["relu"]))
    model.save_pretrained(tmp_path / "m")
    again = AutoModelForMaskedLM.from_pretrained(tmp_path / "m")
    assert isinstance(again.cls.predictions.transform.transform_act_fn, type(ACT2FN["relu"]))
    with pytest.raises(ValueError, match="mlm_head_act 'rellu' is not an activation"):
        SpikingBertForMaskedLM(SpikingBertConfig(**TINY, num_timesteps=2, mlm_head_act="rellu"))


@pytest.mark.parametrize("T", [1, 3])
def test_attention_maps_are_probabilities_under_dropout(T):
    """The maps distillation compares (method doc 13) are the softmax rows, also in training mode with
    attention dropout: a dropped map has exact zeros (attention_kl's log) and rows off 1."""
    torch.manual_seed(0)
    model = SpikingBertForSequenceClassification(tiny_config(num_timesteps=T, attention_probs_dropout_prob=0.5,
                                                             hidden_dropout_prob=0.0, num_labels=2))
    b = batch()
    calibrate(model, b)
    model.train()
    with torch.no_grad():
        maps = model(**b, output_attentions=True).attentions
    for a in maps:
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]))
        assert (a[1:] > 0).all()  # the unpadded examples: no key dropped to zero
