"""Under torch.distributed, calibration averages mean|u_t| across ranks: all ranks hold equal amplitudes."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spikelm_core.neurons import BiSpikeNeuron


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(100 + rank)  # different data on every rank
    n = BiSpikeNeuron(3)
    n(torch.randn(3, 64) * (1 + rank))
    out[rank] = n.alpha.tolist()
    dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_calibrate_identically():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
        a0, a1 = out[0], out[1]
    assert a0 == a1
    x0 = torch.Generator().manual_seed(100)
    step0 = 2.0 * (torch.randn(3, 64, generator=x0)[0].abs().mean()
                   + (torch.randn(3, 64, generator=torch.Generator().manual_seed(101)) * 2)[0].abs().mean()) / 2
    assert abs(a0[0] - step0.item()) < 1e-5


def test_text_batches_frame_encoders_and_causal_lms():
    from spikelm_core.calibration import text_batches
    from tests.conftest import tiny_llama_tokenizer

    tok = tiny_llama_tokenizer()
    tok.cls_token, tok.sep_token = "<s>", "</s>"  # an encoder-style framing for comparison
    text = "the river rose\nand the bridge\n" * 30
    causal = text_batches(tok, text, seq_len=9, batch_size=4, causal=True)
    first = causal[0]
    assert set(first) == {"input_ids", "attention_mask"} and first["input_ids"].shape == (4, 9)
    assert (first["input_ids"][:, 0] == tok.bos_token_id).all() and bool(first["attention_mask"].all())
    assert (first["input_ids"][:, 1:] != tok.bos_token_id).all()  # [BOS] + 8 text tokens, no end token
    encoder = text_batches(tok, text, seq_len=9, batch_size=4)[0]
    assert set(encoder) == {"input_ids", "attention_mask", "token_type_ids"}
    assert (encoder["input_ids"][:, 0] == tok.cls_token_id).all()
    assert (encoder["input_ids"][:, -1] == tok.sep_token_id).all()


def test_a_calibration_text_shorter_than_one_sequence_is_warned_of(caplog):
    from spikelm_core.calibration import text_batches
    from tests.conftest import tiny_llama_tokenizer

    tok = tiny_llama_tokenizer()
    with caplog.at_level("WARNING", logger="spikelm"):
        (batch,) = text_batches(tok, "the river rose", seq_len=9, batch_size=4, causal=True)
    assert batch["input_ids"].shape == (1, 4) and "holds 3 token(s), less than one sequence of 8" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="spikelm"):
        text_batches(tok, "the river rose and the bridge " * 3, seq_len=9, batch_size=4, causal=True)
    assert caplog.text == ""  # a last partial sequence beside full ones is dropped, as before


def test_default_calibration_text_for_causal_lms(tmp_path, monkeypatch):
    from spikelm_core import calibration

    wiki = tmp_path / "valid.txt"
    wiki.write_text(" = Title = \n running text\n")
    monkeypatch.setattr(calibration, "CAUSAL_CALIBRATION_FILE", wiki)
    assert calibration.calibration_text(causal=True) == (wiki.read_text(), str(wiki))
    assert calibration.calibration_text()[1] == calibration.PACKAGED  # encoders keep the packaged prose
    monkeypatch.setattr(calibration, "CAUSAL_CALIBRATION_FILE", tmp_path / "absent.txt")
    assert calibration.calibration_text(causal=True)[1] == calibration.PACKAGED
    assert calibration.calibration_text(wiki, causal=False)[1] == str(wiki)


def _tiny_spiking_bert(**kw):
    from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification
    from tests.conftest import TINY

    torch.manual_seed(0)
    return SpikingBertForSequenceClassification(SpikingBertConfig(**{**TINY, "num_timesteps": 3, **kw})).eval()


def _amplitudes(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith(("alpha", "channel_scales"))}


@pytest.mark.parametrize("channel_scale", [False, True])
def test_real_token_calibration_does_not_depend_on_padding(channel_scale):
    """tokens='real': a batch padded with 5 extra positions calibrates every neuron (membrane and K/V
    spikes, amplitudes and channel scales) as the unpadded batch does; tokens='all' does not."""
    from spikelm_core.calibration import calibrate

    model = _tiny_spiking_bert(channel_scale=channel_scale)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 99, (3, 6), generator=g)
    tight = {"input_ids": ids, "attention_mask": torch.ones(3, 6, dtype=torch.long)}
    padded = {"input_ids": torch.cat([ids, torch.zeros(3, 5, dtype=torch.long)], 1),
              "attention_mask": torch.cat([torch.ones(3, 6, dtype=torch.long), torch.zeros(3, 5, dtype=torch.long)], 1)}
    calibrate(model, tight)
    reference = _amplitudes(model)
    assert any(k.endswith("channel_scales") for k in reference) == channel_scale
    calibrate(model, padded, tokens="real")
    real = _amplitudes(model)
    calibrate(model, padded)
    everything = _amplitudes(model)
    assert reference.keys() == real.keys()
    for key in reference:
        torch.testing.assert_close(real[key], reference[key], rtol=1e-5, atol=1e-7)
    assert any(not torch.allclose(everything[k], reference[k]) for k in reference)
    assert all(n.calibration_select is None for n in model.modules() if hasattr(n, "calibration_select"))


def test_real_token_calibration_is_the_mean_over_real_tokens_only():
    """Hand-computed: a K-spike neuron (stateless, a_t = k * mean|x_t|) that reads one real token of
    value 1 and a pad of value 7 per sequence calibrates a_t = 2 * 1 with tokens='real' (2 * 4 with all)."""
    from spikelm_core.calibration import calibrate
    from spikelm_core.neurons import TernarySpike

    class Owner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.neuron = TernarySpike(num_timesteps=2, k=2.0)

        def forward(self, input_ids, attention_mask=None):
            x = torch.where(attention_mask.bool(), 1.0, 7.0)[..., None].expand(-1, -1, 4)  # [B, L, D]
            return self.neuron(x.unsqueeze(0).expand(2, -1, -1, -1).float())

        def parameters(self, recurse=True):
            yield torch.nn.Parameter(torch.zeros(1))

    owner = Owner()
    batch = {"input_ids": torch.zeros(2, 2, dtype=torch.long), "attention_mask": torch.tensor([[1, 0], [1, 0]])}
    calibrate(owner, batch, tokens="real")
    assert owner.neuron.alpha.tolist() == [2.0, 2.0]
    calibrate(owner, batch)
    assert owner.neuron.alpha.tolist() == [8.0, 8.0]
    with pytest.raises(ValueError, match="tokens must be one of all, real"):
        calibrate(owner, batch, tokens="pads")


def _pad(ids: torch.Tensor, extra: int) -> tuple[torch.Tensor, torch.Tensor]:
    b, n = ids.shape
    padded = torch.cat([ids, torch.zeros(b, extra, dtype=torch.long)], 1)
    return padded, torch.cat([torch.ones(b, n, dtype=torch.long), torch.zeros(b, extra, dtype=torch.long)], 1)


@pytest.mark.parametrize("family", ["bart", "llama"])
def test_real_token_calibration_ignores_padding_in_bart_and_llama(family):
    """The same for a spiking BART (source and decoder pads, cross-attention K/V read the source mask)
    and a spiking Llama (right pads behind a causal mask)."""
    from spikelm_core.calibration import calibrate

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(5)
    if family == "bart":
        from spikelm_core.models.spiking_bart import SpikingBartConfig, SpikingBartForConditionalGeneration
        from tests.core.models.test_spiking_bart import BART_TINY

        model = SpikingBartForConditionalGeneration(SpikingBartConfig(**BART_TINY, num_timesteps=2)).eval()
        src, tgt = torch.randint(4, 99, (2, 5), generator=g), torch.randint(4, 99, (2, 4), generator=g)
        tight = {"input_ids": src, "attention_mask": torch.ones_like(src), "decoder_input_ids": tgt,
                 "decoder_attention_mask": torch.ones_like(tgt)}
        (p_src, m_src), (p_tgt, m_tgt) = _pad(src, 3), _pad(tgt, 2)
        padded = {"input_ids": p_src, "attention_mask": m_src, "decoder_input_ids": p_tgt, "decoder_attention_mask": m_tgt}
    else:
        from spikelm_core.models.spiking_llama import SpikingLlamaConfig, SpikingLlamaForCausalLM
        from tests.conftest import LLAMA_TINY

        model = SpikingLlamaForCausalLM(SpikingLlamaConfig(**LLAMA_TINY, num_timesteps=2)).eval()
        ids = torch.randint(3, 101, (2, 6), generator=g)
        tight = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        p_ids, mask = _pad(ids, 4)
        padded = {"input_ids": p_ids, "attention_mask": mask}
    calibrate(model, tight)
    reference = _amplitudes(model)
    assert reference
    calibrate(model, padded, tokens="real")
    for key, value in _amplitudes(model).items():
        torch.testing.assert_close(value, reference[key], rtol=1e-5, atol=1e-7)


def test_non_finite_amplitudes_are_refused_when_calibrated_and_when_loaded(tmp_path):
    """The 'official' reset amplifies the membrane once amplitudes pass 4 (method doc 2.1): a tiny
    BERT at T=16 calibrates to NaN amplitudes, which calibration refuses (naming the neurons and the
    step), the soft reset does not; amplitudes saved non-finite are refused when a checkpoint loads."""
    from spikelm_core.calibration import calibrate
    from spikelm_core.checkpoints import load_model
    from spikelm_core.errors import CheckpointError, ConfigError
    from spikelm_core.models.spiking_bert import SpikingBertForSequenceClassification
    from tests.core.models.test_spiking_bert import batch, tiny_config

    torch.manual_seed(0)
    model = SpikingBertForSequenceClassification(tiny_config(num_timesteps=16))
    with pytest.raises(ConfigError, match="calibration gave non-finite amplitudes") as exc:
        calibrate(model, batch(seed=1))
    assert exc.value.details[0] == "bert.encoder.layer.0.attention.self.query.neuron.alpha (from step 10)"
    assert exc.value.details[-1] == "... and 11 more"
    assert "--reset soft" in exc.value.hint and "16 time steps" in exc.value.hint
    soft = SpikingBertForSequenceClassification(tiny_config(num_timesteps=16, reset="soft"))
    calibrate(soft, batch(seed=1))
    assert all(torch.isfinite(n.alpha).all() for _, n in soft.spiking_neurons())

    name, neuron = soft.spiking_neurons()[2]
    neuron.alpha[5:] = float("nan")
    soft.save_pretrained(tmp_path / "nan")
    with pytest.raises(CheckpointError, match="holds non-finite amplitudes in 1 neuron state tensor") as exc:
        load_model(tmp_path / "nan", head="sequence_classification", need_tokenizer=False)
    assert exc.value.details == [f"{name}.alpha (from step 5)"]


def test_a_model_whose_outputs_collapse_after_calibration_is_refused():
    """Finite but huge amplitudes (the official reset over 8 or 9 steps: ~1e20) overflow RMSNorm's
    float32 mean square, which returns zeros: every logit equal, a perplexity of exactly the
    vocabulary size. Refused; soft resets at the same T are fine."""
    from spikelm_core.calibration import calibrate
    from spikelm_core.errors import ConfigError
    from spikelm_core.models.spiking_llama import SpikingLlamaConfig, SpikingLlamaForCausalLM

    from tests.conftest import LLAMA_TINY

    ids = torch.randint(4, LLAMA_TINY["vocab_size"], (8, 32), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    torch.manual_seed(0)
    m = SpikingLlamaForCausalLM(SpikingLlamaConfig(**LLAMA_TINY, num_timesteps=9))
    with pytest.raises(ConfigError, match="collapsed") as err:
        calibrate(m, batch)
    assert "--reset soft" in err.value.hint
    torch.manual_seed(0)
    calibrate(SpikingLlamaForCausalLM(SpikingLlamaConfig(**LLAMA_TINY, num_timesteps=9,
                                                         reset="soft")), batch)


def test_calibration_mode_train_draws_dropout_as_the_released_first_step():
    """`mode="train"` calibrates with dropout on (the released code's first pretraining step): other
    amplitudes than eval mode's when the model has dropout, the same without; the model's mode is restored."""
    from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification
    from tests.conftest import TINY

    from spikelm_core.calibration import calibrate

    def alphas(dropout, mode):
        torch.manual_seed(0)
        model = SpikingBertForSequenceClassification(SpikingBertConfig(
            **{**TINY, "num_timesteps": 2, "hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}))
        model.eval()
        g = torch.Generator().manual_seed(3)
        batch = {"input_ids": torch.randint(5, 99, (4, 9), generator=g), "attention_mask": torch.ones(4, 9, dtype=torch.long)}
        torch.manual_seed(1)
        calibrate(model, batch, mode=mode)
        assert not model.training
        return torch.cat([n.alpha.flatten() for _, n in model.spiking_neurons()])

    assert not torch.equal(alphas(0.3, "train"), alphas(0.3, "eval"))
    torch.testing.assert_close(alphas(0.0, "train"), alphas(0.0, "eval"))
    with pytest.raises(ValueError, match="mode must be one of"):
        alphas(0.0, "sometimes")
