"""spikelm_core.firing: one firing rate (pads excluded) for convert, eval, training logs and energy."""

from __future__ import annotations

import pytest
import torch

from spikelm_core.calibration import calibrate
from spikelm_core.energy.firing_pass import trace_firing
from spikelm_core.energy.macs import count_macs
from spikelm_core.firing import (
    MEAN_RATE_DESCRIPTION,
    FiringRecorder,
    FiringReport,
    SpikeStats,
    layer_key,
    measure_firing,
    record_firing,
    spike_profile,
    spike_stats,
    token_firing,
    token_row,
)
from spikelm_core.inputs import decoder_mask_from_labels
from spikelm_core.models.spiking_bart import SpikingBartConfig, SpikingBartForConditionalGeneration
from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification
from tests.conftest import TINY
from tests.core.models.test_spiking_bart import BART_TINY

T = 3


# --- counting one tensor -------------------------------------------------------------------------


def test_hand_counted_stats_with_a_pad_mask():
    a = 0.5
    # [T=2, B=2, L=3, D=2]; sequence 0 has 2 real tokens, sequence 1 has 1
    levels = torch.tensor([
        [[[1, 0], [-1, -1], [1, 1]], [[0, 1], [1, -1], [-1, 0]]],    # step 0
        [[[0, 0], [1, 0], [-1, 1]], [[-1, -1], [0, 1], [1, 1]]],     # step 1
    ], dtype=torch.float32)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    stats = spike_stats(a * levels, mask)
    # real elements: step 0: seq0 tok0 (1, 0), tok1 (-1, -1); seq1 tok0 (0, 1)
    #                step 1: seq0 tok0 (0, 0), tok1 (1, 0);  seq1 tok0 (-1, -1)
    assert (stats.positive, stats.negative, stats.nonzero, stats.total) == (3, 4, 7, 12)
    assert stats.kind == "ternary" and stats.firing_rate == pytest.approx(7 / 12)
    unmasked = spike_stats(a * levels)
    assert (unmasked.nonzero, unmasked.total) == (int((levels != 0).sum()), 24)
    profile = spike_profile(a * levels, mask)
    assert profile.step_positive.tolist() == [2, 1] and profile.step_negative.tolist() == [2, 2]
    assert profile.step_total.tolist() == [6, 6]
    assert profile.sample_nonzero.tolist() == [4, 3] and profile.sample_total.tolist() == [8, 4]
    assert profile.position_nonzero.tolist() == [4, 3, 0] and profile.position_total.tolist() == [8, 4, 0]


def test_spike_kinds_and_padding():
    binary = torch.tensor([0.0, 2.0, 2.0, 0.0]).view(1, 1, 2, 2)
    assert spike_stats(binary).kind == "binary"
    assert spike_stats(torch.tensor([0.5, 1.0]).view(1, 1, 1, 2)).kind == "dense"
    assert spike_stats(torch.zeros(1, 1, 2, 2)).kind == "none"
    x = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]).view(1, 1, 3, 2)  # token 2 is padding
    stats = spike_stats(x, token_mask=torch.tensor([[1, 1, 0]]))
    assert (stats.nonzero, stats.total) == (3, 4)
    heads = torch.ones(2, 1, 3, 5, 4)  # [T, B, H, L, d_h]: L found at axis 3
    assert spike_stats(heads, token_mask=torch.tensor([[1, 1, 1, 0, 0]])).total == 2 * 3 * 3 * 4
    with pytest.raises(ValueError, match="time-first"):
        spike_stats(torch.ones(2, 4, 5, 6), token_mask=torch.ones(3, 5))


@pytest.mark.parametrize("shape", [pytest.param((3, 5, 7, 24), id="TBLD"), pytest.param((3, 5, 3, 7, 8), id="TBHLd")])
def test_spike_profile_matches_direct_counts(shape):
    torch.manual_seed(0)
    x = torch.randint(-1, 2, shape).float() * 0.7
    mask = torch.ones(5, 7, dtype=torch.long)
    mask[1, 4:] = 0
    mask[3, 6:] = 0
    profile = spike_profile(x, mask)
    view = [1] * x.dim()
    view[1], view[-2] = 5, 7
    real = mask.bool().view(view).expand_as(x)
    nonzero = (x != 0) & real
    assert profile.sample_nonzero.tolist() == nonzero.sum(tuple(d for d in range(x.dim()) if d != 1)).tolist()
    assert profile.position_nonzero.tolist() == nonzero.sum(tuple(d for d in range(x.dim()) if d != x.dim() - 2)).tolist()
    assert profile.step_positive.tolist() == ((x > 0) & real).sum(tuple(range(1, x.dim()))).tolist()
    assert profile.step_negative.tolist() == ((x < 0) & real).sum(tuple(range(1, x.dim()))).tolist()
    assert int(profile.sample_total.sum()) == int(real.sum()) == int(profile.position_total.sum())
    stats = spike_stats(x, mask)
    assert stats.nonzero == int(nonzero.sum()) and stats.kind == "ternary"


# --- layers and the report -----------------------------------------------------------------------


@pytest.mark.parametrize("name, key", [
    pytest.param("bert.encoder.layer.3.attention.self.query.neuron", "layer.3", id="bert"),
    pytest.param("encoder.layer.11.output.dense.neuron", "layer.11", id="bert-base-model"),
    pytest.param("model.encoder.layers.2.fc1.neuron", "encoder.layers.2", id="bart-encoder"),
    pytest.param("model.decoder.layers.2.encoder_attn.qk.neuron", "decoder.layers.2", id="bart-decoder"),
    pytest.param("decoder.layers.0.self_attn.q_proj.neuron", "decoder.layers.0", id="bart-model"),
    pytest.param("model.layers.5.mlp.down_proj.neuron", "layers.5", id="llama"),
    pytest.param("layers.12.self_attn.qk.neuron", "layers.12", id="llama-base-model"),
    pytest.param("bert.pooler.spike", "bert.pooler.spike", id="outside-layers"),
])
def test_layer_keys(name, key):
    assert layer_key(name) == key


def test_report_means_and_layers():
    report = FiringReport(neurons={
        "model.encoder.layers.0.fc1.neuron": SpikeStats(nonzero=1, positive=1, total=4, kind="binary"),
        "model.encoder.layers.0.fc2.neuron": SpikeStats(nonzero=30, positive=10, negative=20, total=100, kind="ternary"),
        "model.decoder.layers.0.fc1.neuron": SpikeStats(nonzero=0, total=10),
    })
    assert report.rate("model.encoder.layers.0.fc1.neuron") == 0.25
    assert report.mean_rate == pytest.approx((0.25 + 0.30 + 0.0) / 3)  # a mean over neurons, not over elements
    assert report.layer_rates() == {"encoder.layers.0": pytest.approx(0.275), "decoder.layers.0": 0.0}
    assert report.description == MEAN_RATE_DESCRIPTION and "pads excluded" in report.description
    data = report.to_dict()
    assert data["mean_rate"] == report.mean_rate and data["layers"] == report.layer_rates()
    assert data["neurons"]["model.encoder.layers.0.fc2.neuron"] == {
        "rate": 0.3, "positive": 10, "negative": 20, "nonzero": 30, "elements": 100, "kind": "ternary"}
    assert FiringReport().mean_rate == 0.0


# --- models ----------------------------------------------------------------------------------------


def tiny_bert(**neuron):
    torch.manual_seed(0)
    config = SpikingBertConfig(**TINY, num_timesteps=T, num_labels=2, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0, **neuron)
    return SpikingBertForSequenceClassification(config).eval()


def tiny_bart():
    torch.manual_seed(0)
    return SpikingBartForConditionalGeneration(SpikingBartConfig(**BART_TINY, num_timesteps=T)).eval()


def padded(batch=5, length=7, seed=1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_eval_and_energy_agree_neuron_by_neuron_on_a_padded_batch():
    model = tiny_bert()
    batch = padded()
    calibrate(model, batch)
    report = measure_firing(model, [batch, padded(seed=2)])
    audit = trace_firing(model, [batch, padded(seed=2)], calibrate=False)
    assert list(report.neurons) == list(audit.neurons) and len(report.neurons) == 8 * TINY["num_hidden_layers"]
    for name, stats in report.neurons.items():
        assert stats == audit.neurons[name], name  # the same counts, the same rate
    real = int(batch["attention_mask"].sum()) + int(padded(seed=2)["attention_mask"].sum())
    ffn1 = report.neurons["bert.encoder.layer.0.intermediate.dense.neuron"]
    assert ffn1.total == T * real * TINY["hidden_size"]  # pads left out
    # the pad positions do fire: counting them would give another rate
    with record_firing(model) as unmasked:
        with torch.no_grad():
            model(input_ids=batch["input_ids"])
    assert unmasked.neurons["bert.encoder.layer.0.intermediate.dense.neuron"].total == T * 35 * TINY["hidden_size"]
    assert report.missing == () and set(report.layer_rates()) == {"layer.0", "layer.1"}


def test_bart_masks_encoder_decoder_and_cross_attention_apart():
    model = tiny_bart()
    batch = padded(batch=4, length=9)
    mask = batch["attention_mask"]
    # training's decoder mask with the text as labels: the decoder token that reads the EOS is past the end
    decoder_mask = decoder_mask_from_labels(batch["input_ids"].masked_fill(mask == 0, -100))
    calibrate(model, batch)
    report = measure_firing(model, [{**batch, "decoder_attention_mask": decoder_mask}])
    audit = trace_firing(model, [batch], calibrate=False, seq2seq=True)  # derives the same decoder mask
    assert report.neurons == audit.neurons
    d = BART_TINY["d_model"]
    src, dec = int(mask.sum()), int(decoder_mask.sum())
    assert src == dec < mask.numel()
    assert report.neurons["model.encoder.layers.0.fc1.neuron"].total == T * src * d
    assert report.neurons["model.decoder.layers.0.fc1.neuron"].total == T * dec * d
    assert report.neurons["model.decoder.layers.0.encoder_attn.q_proj.neuron"].total == T * dec * d
    assert report.neurons["model.decoder.layers.0.encoder_attn.k_proj.neuron"].total == T * src * d  # encoder states
    assert report.neurons["model.decoder.layers.0.encoder_attn.qk.neuron"].total == T * src * d
    assert list(report.layer_rates()) == ["encoder.layers.0", "encoder.layers.1", "decoder.layers.0",
                                          "decoder.layers.1"]
    # without a decoder mask every decoder token counts
    plain = measure_firing(model, [batch])
    assert plain.neurons["model.decoder.layers.0.fc1.neuron"].total == T * mask.numel() * d
    assert plain.neurons["model.encoder.layers.0.fc1.neuron"] == report.neurons["model.encoder.layers.0.fc1.neuron"]


def test_generate_masks_the_source_through_separate_encoder_and_decoder_calls():
    model = tiny_bart()
    batch = padded(batch=4, length=6)
    calibrate(model, batch)
    with record_firing(model) as report, torch.no_grad():
        model.generate(**batch, num_beams=2, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    d = BART_TINY["d_model"]
    src = int(batch["attention_mask"].sum())
    assert report.neurons["model.encoder.layers.1.fc2.neuron"].total == T * src * BART_TINY["encoder_ffn_dim"]
    # cross K/V run once per beam on the cached encoder states, masked by the source's padding
    assert report.neurons["model.decoder.layers.0.encoder_attn.k_proj.neuron"].total == 2 * T * src * d
    steps = report.neurons["model.decoder.layers.0.fc1.neuron"].total // (T * d)
    assert steps == 4 * 2 * 3  # 4 sequences x 2 beams x 3 decoder steps, one token each (KV cache)


def test_recording_sees_every_forward_but_no_trace_and_forces_eager_layers():
    model = tiny_bert()
    ids = torch.randint(1, 99, (2, 7))
    calibrate(model, {"input_ids": ids})
    layer = model.bert.encoder.layer[0]
    assert layer._compilable_now()
    outputs = {}
    watch = [m.register_forward_hook(lambda mod, i, o, n=n: outputs.__setitem__(n, o.detach()))
             for n, m in model.spiking_neurons()]
    with record_firing(model) as report:
        assert not layer._compilable_now()  # hooked neurons: the eager layer runs
        with torch.no_grad():
            model(input_ids=ids)
        for handle in watch:
            handle.remove()
        before = dict(report.neurons)
        count_macs(model, seq_len=7)  # a traced forward: nothing recorded
        assert report.neurons == before
    assert layer._compilable_now() and not any(n._forward_hooks for _, n in model.spiking_neurons())
    for name, stats in report.neurons.items():
        assert stats == spike_stats(outputs[name]), name


def test_lif_neurons_are_binary():
    model = tiny_bert(neuron_kind="lif")
    report = measure_firing(model, [padded()])
    assert report.neurons and {s.kind for s in report.neurons.values()} <= {"binary", "none"}
    assert all(s.negative == 0 for s in report.neurons.values())


def test_a_bare_neuron_is_recorded_per_step_with_signs_apart():
    """What the neurons' own counters used to give (they are gone): per-step rates, + and - apart."""
    from spikelm_core.neurons import BiSpikeNeuron, TernarySpike

    # P(|x| > (k/2) E|x|) for N(0,1) at k = 2: P(|x| > sqrt(2/pi)) = 0.4249; later steps per the method doc
    torch.manual_seed(0)
    neuron = BiSpikeNeuron(4, k=2.0)
    with record_firing(neuron, detail=True) as report:
        neuron(torch.randn(100_000).expand(4, -1).contiguous())
    profile = report.profiles[""]
    steps = ((profile.step_positive + profile.step_negative) / profile.step_total).tolist()
    for got, want in zip(steps, [0.425, 0.34, 0.29, 0.23]):
        assert abs(got - want) < 0.01
    assert report.rate("") == pytest.approx(sum(steps) / 4)

    stateless = TernarySpike(1, alpha_mode="fixed", fixed_alpha=1.0)
    with record_firing(stateless) as report:
        stateless(torch.tensor([[[0.9, -0.9, 0.1, -0.1]]]))
    assert report.neurons[""] == SpikeStats(nonzero=2, positive=1, negative=1, total=4, kind="ternary")


# --- per token ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, side, row", [
    pytest.param("bert.encoder.layer.1.intermediate.dense.neuron", "source", "layer.1", id="bert"),
    pytest.param("model.encoder.layers.0.self_attn.qk.neuron", "source", "encoder.layers.0", id="bart-encoder"),
    pytest.param("model.decoder.layers.1.self_attn.k_proj.neuron", "target", "decoder.layers.1", id="bart-decoder"),
    pytest.param("model.decoder.layers.1.encoder_attn.q_proj.neuron", "target", "decoder.layers.1", id="bart-cross-q"),
    pytest.param("model.decoder.layers.1.encoder_attn.v_proj.neuron", "source", "decoder.layers.1.cross_kv",
                 id="bart-cross-v"),
    pytest.param("model.decoder.layers.0.encoder_attn.av.neuron", "source", "decoder.layers.0.cross_kv",
                 id="bart-cross-v-spike"),
])
def test_token_rows(name, side, row):
    assert token_row(name) == (side, row)


def _force(model, pattern):
    """Replace every neuron's output by `pattern(name, output)` (hooks registered before the recorder's)."""
    return [module.register_forward_hook(lambda mod, i, o, n=name: pattern(n, o))
            for name, module in model.spiking_neurons()]


def test_token_firing_by_hand_with_padding_and_a_dead_layer():
    """Forced spikes: in layer 0 only the query neuron fires, everywhere at token 1 and on a third of
    the channels of token 3; layer 1 never fires. A cell is the mean over the layer's 8 neurons."""
    model = tiny_bert()
    ids = torch.randint(5, 99, (2, 5), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # position 3: one real token; 4: none

    def pattern(name, out):
        spikes = torch.zeros_like(out)
        if name == "bert.encoder.layer.0.attention.self.query.neuron":  # [T, B, L, D]
            spikes[:, :, 1] = 0.5
            spikes[:, :, 3, : TINY["hidden_size"] // 3] = -0.5
            spikes[:, 1, 4] = 0.5  # a pad: never counted
        return spikes

    hooks = _force(model, pattern)
    try:
        (panel,) = token_firing(model, {"input_ids": ids, "attention_mask": mask},
                                source_tokens=["[CLS]", "a", "b", "c", "[SEP]"])
    finally:
        for handle in hooks:
            handle.remove()
    assert panel.side == "source" and panel.layers == ("layer.0", "layer.1") and panel.neurons == (8, 8)
    assert panel.tokens == ("[CLS]", "a", "b", "c", "[SEP]") and panel.counts.tolist() == [2, 2, 2, 1, 1]
    assert panel.rates[0].tolist() == [0.0, 1 / 8, 0.0, (1 / 3) / 8, 0.0]
    assert panel.rates[1].tolist() == [0.0] * 5
    assert panel.dead_layers() == ("layer.1",)
    # the weighted mean is the neuron's rate over real elements: (2 tokens + 1/3 of one) / 8 real tokens, / 8 neurons
    assert panel.layer_rates() == {"layer.0": pytest.approx((2 + 1 / 3) / 8 / 8, rel=1e-12), "layer.1": 0.0}
    data = panel.to_dict()
    assert data["rates"][0][1] == 1 / 8 and data["dead_layers"] == ["layer.1"] and data["counts"] == [2, 2, 2, 1, 1]


def test_token_rows_average_back_to_the_layer_rates_on_a_padded_batch():
    model = tiny_bert()
    batch = padded()
    batch["attention_mask"][:, 6] = 0  # no sequence has a real token at the last position
    calibrate(model, batch)
    report = measure_firing(model, [batch])
    (panel,) = token_firing(model, batch)
    assert panel.tokens == tuple(str(i) for i in range(7))
    assert panel.counts.tolist() == batch["attention_mask"].sum(0).tolist()
    assert torch.isnan(panel.rates[:, 6]).all() and not torch.isnan(panel.rates[:, :6]).any()
    assert list(panel.layer_rates()) == list(report.layer_rates())
    for layer, rate in report.layer_rates().items():
        assert panel.layer_rates()[layer] == pytest.approx(rate, rel=1e-12, abs=1e-15), layer
    assert panel.to_dict()["rates"][0][6] is None  # JSON has no NaN
    # one unpadded sequence: every position counts once, and the plain mean of a row is the layer rate
    single = {"input_ids": batch["input_ids"][:1, :6]}
    (alone,) = token_firing(model, single)
    rates = measure_firing(model, [single]).layer_rates()
    assert alone.counts.tolist() == [1] * 6
    assert alone.rates.mean(1).tolist() == pytest.approx(list(rates.values()), rel=1e-12)


def test_token_firing_of_bart_source_target_and_encoder_only():
    model = tiny_bart()
    calibrate(model, padded(batch=4, length=9))
    batch = {k: v[1:2] for k, v in padded(batch=4, length=9).items()}  # 4 real source tokens, 5 pads
    labels = torch.tensor([[7, 8, 9, 3, -100]])
    source, target = token_firing(model, {**batch, "labels": labels})
    assert source.side == "source" and target.side == "target"
    assert source.layers == ("encoder.layers.0", "encoder.layers.1", "decoder.layers.0.cross_kv",
                             "decoder.layers.1.cross_kv")
    assert source.neurons == (8, 8, 4, 4) and target.neurons == (10, 10)
    assert source.counts.tolist() == [1] * 4 + [0] * 5 and torch.isnan(source.rates[:, 4:]).all()
    assert target.layers == ("decoder.layers.0", "decoder.layers.1") and target.counts.tolist() == [1, 1, 1, 1, 0]
    # the same forward through measure_firing: the decoder reads the labels shifted right, pads masked
    decoder = {"decoder_input_ids": torch.tensor([[2, 7, 8, 9, 3]]), "decoder_attention_mask": (labels != -100).long()}
    report = measure_firing(model, [{**batch, **decoder}])
    layers = report.layer_rates()
    for key in ("encoder.layers.0", "encoder.layers.1"):
        assert source.layer_rates()[key] == pytest.approx(layers[key], rel=1e-12)
    for i in (0, 1):  # a decoder layer's rate mixes its decoder-side and cross K/V neurons, 10 : 4
        key = f"decoder.layers.{i}"
        mixed = (10 * target.layer_rates()[key] + 4 * source.layer_rates()[key + ".cross_kv"]) / 14
        assert mixed == pytest.approx(layers[key], rel=1e-12)
    # no target: the encoder alone runs, with the same spikes
    (encoder,) = token_firing(model, batch)
    assert encoder.layers == ("encoder.layers.0", "encoder.layers.1")
    torch.testing.assert_close(encoder.rates, source.rates[:2], rtol=0, atol=0, equal_nan=True)


def test_an_attention_shaped_spike_counts_per_query_token():
    """[T, B, H, L_query, L_key]: the mask goes on the query axis (no spikelm neuron has this shape)."""
    x = torch.zeros(2, 1, 3, 4, 4)
    x[:, :, :, 1, :] = 1.0  # query token 1 fires towards every key
    x[:, :, :, 3, 0] = 1.0  # query 3 (a pad) towards key 0
    profile = spike_profile(x, torch.tensor([[1, 1, 1, 0]]))
    assert profile.position_nonzero.tolist() == [0, 2 * 3 * 4, 0, 0]
    assert profile.position_total.tolist() == [2 * 3 * 4] * 3 + [0]


def test_token_labels_must_match_the_positions():
    model = tiny_bert()
    with pytest.raises(ValueError, match="2 source token labels for 3 positions"):
        token_firing(model, {"input_ids": torch.tensor([[5, 6, 7]])}, source_tokens=["a", "b"])


def test_a_mask_only_recorder_tracks_token_masks_and_counts_nothing():
    model = tiny_bert()
    batch = padded()
    calibrate(model, batch)
    recorder = FiringRecorder(model)
    name = "bert.encoder.layer.0.intermediate.dense.neuron"
    seen = []
    handle = dict(model.named_modules())[name].register_forward_hook(
        lambda mod, i, o: seen.append(recorder.token_mask(name)))
    report = recorder.start(count=False)
    with torch.no_grad():
        model(**batch)
    recorder.stop()
    handle.remove()
    assert len(seen) == 1 and torch.equal(seen[0], batch["attention_mask"])
    assert report.neurons == {} and len(report.missing) == 8 * TINY["num_hidden_layers"]
    assert recorder.token_mask(name) is None  # masks are dropped once the forward is over


def test_a_neuron_without_a_real_token_has_no_rate():
    """A BART decoder whose tokens are all padding: its neurons ran but saw no real token. They are
    `missing`, and neither the mean nor the layer rates count them as silent (rate 0)."""
    from spikelm_core.training.firing_target import LayerRateRecorder

    model = tiny_bart()
    batch = padded(batch=4, length=6)
    calibrate(model, batch)
    decoder = {"decoder_input_ids": batch["input_ids"][:, :3], "decoder_attention_mask": torch.zeros(4, 3, dtype=torch.long)}
    report = measure_firing(model, [{**batch, **decoder}])
    cross = [n for n in report.neurons if n.startswith("model.decoder.layers.0.") and "encoder_attn" in n
             and n.endswith(("k_proj.neuron", "v_proj.neuron", "qk.neuron", "av.neuron"))]
    blind = [n for n, s in report.neurons.items() if s.total == 0]
    assert len(cross) == 4 and blind and set(blind) == set(report.missing)
    assert report.layer_rates()["decoder.layers.0"] == pytest.approx(sum(report.rate(n) for n in cross) / 4)
    seen = [s.firing_rate for s in report.neurons.values() if s.total]
    assert report.mean_rate == pytest.approx(sum(seen) / len(seen))
    recorder = LayerRateRecorder(model)
    with recorder, torch.no_grad():
        model(**batch, **decoder, use_cache=False)
    for key, rate in recorder.layer_rates().items():
        assert float(rate) == pytest.approx(report.layer_rates()[key], rel=1e-12), key
