"""Spiking BART: placement, dense-weight round trip, cached = uncached decoding, Auto classes."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM, BartConfig, BartForConditionalGeneration, BertTokenizerFast

import spikelm_core  # noqa: F401
from spikelm_core.calibration import calibrate, is_calibrated
from spikelm_core.conversion import convert_model
from spikelm_core.neurons.settings import NeuronSettings
from spikelm_core.models.common import SpikeLinear, SpikeMatmul
from spikelm_core.models.spiking_bart import SpikingBartConfig, SpikingBartForConditionalGeneration
from spikelm_core.models.spiking_bart.modeling_spiking_bart import SpikingBartAttention
from spikelm_core.neurons import BiSpikeNeuron, TernarySpike

from tests.conftest import write_tiny_vocab

BART_TINY = dict(
    vocab_size=99, d_model=24, encoder_layers=2, decoder_layers=2, encoder_attention_heads=3,
    decoder_attention_heads=3, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
    pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2, forced_eos_token_id=None,
)


def tiny(**kw):
    return SpikingBartConfig(**{**BART_TINY, "num_timesteps": 3, **kw})


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (5, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    ids[0, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_neurons_before_every_linear_and_on_every_kv():
    m = SpikingBartForConditionalGeneration(tiny())
    dec = m.model.decoder.layers[0]
    for attn in (m.model.encoder.layers[0].self_attn, dec.self_attn, dec.encoder_attn):
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
            assert isinstance(lin, SpikeLinear) and isinstance(lin.neuron, BiSpikeNeuron)
        assert isinstance(attn.qk, SpikeMatmul) and isinstance(attn.qk.neuron, TernarySpike)
        assert isinstance(attn.av.neuron, TernarySpike)
    assert isinstance(dec.fc1, SpikeLinear) and isinstance(dec.fc2, SpikeLinear)
    assert type(m.lm_head) is torch.nn.Linear
    # 2 encoder layers x 8 + 2 decoder layers x 14
    assert len(m.spiking_neurons()) == 44


def test_parameter_names_equal_hf_bart():
    dense = BartForConditionalGeneration(BartConfig(**BART_TINY))
    spiking = SpikingBartForConditionalGeneration(tiny())
    spiking_keys = {k for k in spiking.state_dict() if not k.endswith((".alpha", ".calibrated"))}
    assert spiking_keys == set(dense.state_dict())


def test_training_loss_backpropagates_with_hidden_states():
    m = SpikingBartForConditionalGeneration(tiny())
    labels = torch.randint(5, 99, (5, 6))
    out = m(**batch(), labels=labels, output_hidden_states=True)
    assert out.logits.shape == (5, 6, 99)
    assert len(out.decoder_hidden_states) == 3 and len(out.encoder_hidden_states) == 3
    out.loss.backward()
    assert m.model.decoder.layers[0].encoder_attn.k_proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("readout", ["per_step", "mean"])
def test_incremental_decoding_equals_full_forward(readout):
    torch.manual_seed(1)
    m = SpikingBartForConditionalGeneration(tiny(encoder_readout=readout, dropout=0.0)).eval()
    b = batch()
    calibrate(m, b)
    dec = torch.randint(5, 99, (5, 6))
    dec[:, 0] = 2
    with torch.no_grad():
        full = m(**b, decoder_input_ids=dec, use_cache=False).logits
        enc = m.get_encoder()(**b)
        cache, steps = None, []
        for i in range(dec.shape[1]):
            out = m(attention_mask=b["attention_mask"], encoder_outputs=enc, decoder_input_ids=dec[:, i : i + 1],
                    cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-4, rtol=1e-4)
    as_tuple = (enc.last_hidden_state,)  # the per-step states lost: refused, never the mean read instead
    if readout == "per_step":
        with pytest.raises(ValueError, match="per_step' reads the encoder's per-step states"):
            m(attention_mask=b["attention_mask"], encoder_outputs=as_tuple, decoder_input_ids=dec, use_cache=False)
    else:
        torch.testing.assert_close(m(attention_mask=b["attention_mask"], encoder_outputs=as_tuple,
                                     decoder_input_ids=dec, use_cache=False).logits, full)


@pytest.mark.parametrize("readout", ["mean", "last"])
def test_the_lm_head_reads_the_decoder_steps_as_the_readout_says(readout):
    torch.manual_seed(4)
    m = SpikingBartForConditionalGeneration(tiny(readout=readout, dropout=0.0)).eval()
    b = batch()
    calibrate(m, b)
    seen = {}
    m.model.decoder.register_forward_hook(lambda mod, args, out: seen.update(steps=out[0]))
    dec = torch.randint(5, 99, (5, 6))
    with torch.no_grad():
        out = m.model(**b, decoder_input_ids=dec, use_cache=False)
    steps = seen["steps"]  # [T, B, L, D]
    assert steps.shape[0] == 3
    torch.testing.assert_close(out.last_hidden_state, steps[-1] if readout == "last" else steps.mean(0))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_with_and_without_cache_gives_same_tokens(num_beams):
    torch.manual_seed(2)
    m = SpikingBartForConditionalGeneration(tiny(dropout=0.0)).eval()
    b = batch(seed=3)
    calibrate(m, b)
    kw = dict(max_new_tokens=7, min_new_tokens=7, num_beams=num_beams, do_sample=False,
              pad_token_id=0, eos_token_id=3, decoder_start_token_id=2)
    with_cache = m.generate(**b, use_cache=True, **kw)
    without = m.generate(**b, use_cache=False, **kw)
    assert with_cache.shape == (5, 8)
    assert torch.equal(with_cache, without)


def test_live_decoder_tokens_end_after_the_first_eos():
    m = SpikingBartForConditionalGeneration(tiny())
    ids = torch.tensor([[2, 7, 3, 0, 0], [2, 7, 8, 9, 3], [3, 7, 8, 9, 9]])  # eos 3; a start token equal to eos counts
    assert m._live_decoder_tokens(ids).tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]


def _decoder_tokens(report) -> int:
    """Decoder tokens the first decoder FFN neuron counted (its input is d_model wide, T steps)."""
    stats = report.neurons["model.decoder.layers.0.fc1.neuron"]
    return stats.total // (3 * BART_TINY["d_model"])


def test_firing_counts_only_real_decoder_tokens_in_training_and_generation():
    from spikelm_core.firing import record_firing

    torch.manual_seed(2)
    m = SpikingBartForConditionalGeneration(tiny(dropout=0.0)).eval()
    b = batch(seed=3)
    calibrate(m, b)
    # training: summaries of 6 and 2 tokens padded with -100 to 6; the padded batch counts 8 decoder tokens
    labels = torch.tensor([[11, 12, 13, 14, 15, 3], [21, 3, -100, -100, -100, -100]])
    two = {k: v[:2] for k, v in b.items()}
    with torch.no_grad(), record_firing(m) as padded:
        loss = m(**two, labels=labels).loss
    assert _decoder_tokens(padded) == 8
    with torch.no_grad():  # the loss is the same as each summary alone
        alone = [m(**{k: v[i:i + 1] for k, v in two.items()}, labels=labels[i:i + 1, :n]).loss for i, n in ((0, 6), (1, 2))]
    torch.testing.assert_close(loss, (alone[0] * 6 + alone[1] * 2) / 8)
    # generation: sequences that end early (EOS made likely for some) count no token after their end
    with torch.no_grad():
        first = m(**b, decoder_input_ids=torch.full((5, 1), 2)).logits[:, -1]
    gap = first.max(-1).values - first[:, 3]
    m.final_logits_bias[0, 3] += gap.median() + 1e-4  # about half the documents end at once
    kw = dict(max_new_tokens=6, num_beams=1, do_sample=False, pad_token_id=0, eos_token_id=3, decoder_start_token_id=2)
    with torch.no_grad(), record_firing(m) as batched:
        out = m.generate(**b, use_cache=True, **kw)
    lengths = m._live_decoder_tokens(out).sum(1)  # where each sequence ends
    assert len(set(lengths.tolist())) > 1  # not all at once
    fed = out[:, :-1]  # the tokens fed to the decoder; real ones: up to (not including) the first EOS fed
    real = int(m._live_decoder_tokens(fed).sum())
    assert real < fed.numel() and _decoder_tokens(batched) == real
    singles = 0
    for i in range(5):  # each document alone generates the same tokens and counts the same spikes' tokens
        with torch.no_grad(), record_firing(m) as one:
            alone = m.generate(**{k: v[i:i + 1, : int(b["attention_mask"][i].sum())] for k, v in b.items()},
                               use_cache=True, **kw)
        assert torch.equal(alone[0], out[i, : alone.shape[1]])
        singles += _decoder_tokens(one)
    assert singles == real


def test_fused_and_reference_attention_agree():
    torch.manual_seed(4)
    m = SpikingBartForConditionalGeneration(tiny(dropout=0.0, attention_dropout=0.0)).eval()
    b = batch()
    calibrate(m, b)
    dec = torch.randint(5, 99, (5, 4))
    outs = {}
    for impl in ("fused", "reference"):
        SpikingBartAttention.attention_impl = impl
        try:
            outs[impl] = m(**b, decoder_input_ids=dec, use_cache=False).logits
        finally:
            SpikingBartAttention.attention_impl = "fused"
    torch.testing.assert_close(outs["fused"], outs["reference"], atol=1e-5, rtol=1e-5)


@pytest.fixture
def tiny_dense_bart_dir(tmp_path):
    d = tmp_path / "dense_bart"
    torch.manual_seed(0)
    BartForConditionalGeneration(BartConfig(**BART_TINY)).save_pretrained(d)
    BertTokenizerFast(vocab=str(write_tiny_vocab(tmp_path / "vocab.txt"))).save_pretrained(d)
    return d


def test_convert_dense_bart_round_trip(tiny_dense_bart_dir, tmp_path):
    out = tmp_path / "spiking_bart"
    r = convert_model(str(tiny_dense_bart_dir), out, NeuronSettings(num_timesteps=2), seq_len=16, batch_size=2)
    assert r.architecture == "SpikingBartForConditionalGeneration"
    assert not r.newly_initialised
    src, dst = load_file(tiny_dense_bart_dir / "model.safetensors"), load_file(out / "model.safetensors")
    for key, tensor in src.items():
        assert torch.equal(dst[key], tensor), key
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert isinstance(model, SpikingBartForConditionalGeneration) and is_calibrated(model)
    assert set(r.layer_firing_rates) == {"encoder.layers.0", "encoder.layers.1", "decoder.layers.0", "decoder.layers.1"}
    dense = BartForConditionalGeneration.from_pretrained(tiny_dense_bart_dir)
    assert torch.equal(model.model.shared.weight, dense.model.shared.weight)
    assert model.lm_head.weight.data_ptr() == model.model.shared.weight.data_ptr()


def test_convert_a_bart_with_an_untied_lm_head_and_refuse_one_with_untied_stack_tables(tmp_path):
    """tie_word_embeddings false: transformers 5 keeps the shared, encoder and decoder tables and the LM head
    apart. The spiking BART unties the LM head alone (its stacks share `shared`, as transformers 4 and every
    spikelm BART saved them): stack tables that differ were lost in silence (the last one loaded won)."""
    from spikelm_core.errors import CheckpointError

    d = tmp_path / "untied"
    torch.manual_seed(0)
    dense = BartForConditionalGeneration(BartConfig(**BART_TINY, tie_word_embeddings=False))
    with torch.no_grad():
        dense.lm_head.weight.normal_()
        for table in (dense.model.encoder.embed_tokens, dense.model.decoder.embed_tokens):
            table.weight.copy_(dense.model.shared.weight)
    dense.save_pretrained(d)
    BertTokenizerFast(vocab=str(write_tiny_vocab(tmp_path / "vocab.txt"))).save_pretrained(d)
    out = tmp_path / "spiking"
    convert_model(str(d), out, NeuronSettings(num_timesteps=2), seq_len=16, batch_size=2)
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    for name in ("model.shared", "model.encoder.embed_tokens", "model.decoder.embed_tokens", "lm_head"):
        assert torch.equal(model.get_submodule(name).weight, dense.get_submodule(name).weight), name
    assert model.lm_head.weight.data_ptr() != model.model.shared.weight.data_ptr()
    with torch.no_grad():
        dense.model.decoder.embed_tokens.weight.normal_()
    dense.save_pretrained(d)
    with pytest.raises(CheckpointError, match="two different tensors"):
        convert_model(str(d), tmp_path / "spiking2", NeuronSettings(num_timesteps=2), seq_len=16, batch_size=2)


def test_two_different_tensors_for_one_tied_parameter_are_refused(tmp_path):
    """A config that ties the embeddings over a checkpoint whose tables differ: refused, not one lost."""
    import json

    from spikelm_core.errors import CheckpointError

    d = tmp_path / "mislabelled"
    torch.manual_seed(0)
    dense = BartForConditionalGeneration(BartConfig(**BART_TINY, tie_word_embeddings=False))
    with torch.no_grad():
        dense.model.decoder.embed_tokens.weight.normal_()
    dense.save_pretrained(d)
    BertTokenizerFast(vocab=str(write_tiny_vocab(tmp_path / "vocab.txt"))).save_pretrained(d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": True}))
    with pytest.raises(CheckpointError, match="two different tensors") as info:
        convert_model(str(d), tmp_path / "spiking", NeuronSettings(num_timesteps=2), seq_len=16, batch_size=2)
    assert "embed_tokens" in info.value.message and "cannot be converted" in info.value.hint
    assert not (tmp_path / "spiking").exists()


def test_calibration_and_firing_inputs_carry_the_summaries_padding_as_the_decoder_mask():
    from spikelm_core.inputs import model_inputs

    labels = torch.tensor([[11, 12, 3], [21, 3, -100]])
    batch = {"input_ids": torch.ones(2, 4, dtype=torch.long), "decoder_input_ids": torch.ones(2, 3, dtype=torch.long),
             "labels": labels}
    out = model_inputs(batch)
    assert "labels" not in out and out["decoder_attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert "decoder_attention_mask" not in model_inputs({"input_ids": labels, "labels": labels})  # BERT MLM: none


def test_feed_forward_takes_the_checkpoints_activation():
    """Both stacks' feed-forward applies the config's `activation_function` (BART's default: GELU)."""
    from spikelm_core.models.spiking_bart import SpikingBartForConditionalGeneration

    torch.manual_seed(0)
    for act, kind in (("relu", torch.nn.ReLU), ("gelu", None)):
        model = SpikingBartForConditionalGeneration(tiny(activation_function=act)).eval()
        layers = [*model.model.encoder.layers, *model.model.decoder.layers]
        assert layers and all(kind is None or isinstance(layer.act, kind) for layer in layers)
        x = torch.randn(3, 2, 4, BART_TINY["d_model"])
        pre = layers[0].fc1(x)
        expected = torch.relu(pre) if act == "relu" else torch.nn.functional.gelu(pre)
        torch.testing.assert_close(layers[0].act(pre), expected)


def test_tied_weights_are_saved_once_and_ignored_on_save_so_a_resume_ties_them_again(tmp_path):
    """The Trainer loads a checkpoint with strict=False and warns of missing keys unless they are the
    model's keys to ignore on save: the tied LM head and embeddings must be exactly those."""
    model = SpikingBartForConditionalGeneration(tiny())
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    fresh = SpikingBartForConditionalGeneration(tiny())
    missing = set(fresh.load_state_dict(state, strict=False).missing_keys)
    assert missing and missing == fresh._keys_to_ignore_on_save
    fresh.tie_weights()
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)


def test_a_dense_bart_loaded_for_training_ties_its_keys_again_on_resume(tmp_path):
    """As spikelm's classes do (above): a dense BART that spikelm loads has its tied keys as the keys to
    ignore on save, so the Trainer's resume ties them instead of warning that they are missing."""
    from transformers import BartConfig, BartForConditionalGeneration

    from spikelm_core.checkpoints import load_model
    from spikelm_core.neurons.settings import NeuronSettings

    BartForConditionalGeneration(BartConfig(**BART_TINY)).save_pretrained(tmp_path / "dense")
    loaded = load_model(tmp_path / "dense", head="seq2seq_lm", neuron=NeuronSettings(kind="dense"), need_tokenizer=False)
    model = loaded.model
    assert type(model).__name__ == "BartForConditionalGeneration"
    model.save_pretrained(tmp_path / "checkpoint")
    state = load_file(tmp_path / "checkpoint" / "model.safetensors")
    missing = set(model.load_state_dict(state, strict=False).missing_keys)
    assert missing == model._keys_to_ignore_on_save and "lm_head.weight" in missing


def test_resize_token_embeddings_resizes_final_logits_bias():
    m = SpikingBartForConditionalGeneration(tiny())
    with torch.no_grad():
        m.final_logits_bias.copy_(torch.arange(99.0).reshape(1, 99))
    m.resize_token_embeddings(104)
    assert m.final_logits_bias.shape == (1, 104) and m.lm_head.weight.shape[0] == 104
    assert torch.equal(m.final_logits_bias[0, :99], torch.arange(99.0))
    assert torch.equal(m.final_logits_bias[0, 99:], torch.zeros(5))
    logits = m(**batch(), decoder_input_ids=torch.full((5, 2), 2)).logits
    assert logits.shape[-1] == 104
    m.resize_token_embeddings(90)
    assert m.final_logits_bias.shape == (1, 90)
    assert torch.equal(m.final_logits_bias[0], torch.arange(90.0))
    assert "final_logits_bias" in dict(m.named_buffers())


def test_return_dict_false_gives_the_tuple_and_attention_maps_are_refused():
    """The transformers contract: return_dict=False (or config.return_dict False) returns the output's
    tuple; output_attentions=True is refused (spiking BART returns no attention maps), not ignored."""
    torch.manual_seed(0)
    model = SpikingBartForConditionalGeneration(tiny()).eval()
    b = batch()
    with torch.no_grad():
        out = model(**b)
        as_tuple = model(**b, return_dict=False)
        model.config.return_dict = False
        from_config = model(**b)
    assert isinstance(as_tuple, tuple) and isinstance(from_config, tuple)
    torch.testing.assert_close(as_tuple[0], out.logits)
    torch.testing.assert_close(from_config[0], out.logits)
    model.config.return_dict = True
    with pytest.raises(ValueError, match="attention maps"):
        model(**b, output_attentions=True)
