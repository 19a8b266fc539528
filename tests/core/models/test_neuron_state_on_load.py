"""transformers' `from_pretrained` leaves tensors the checkpoint lacks uninitialised unless `_init_weights`
sets them: a dense checkpoint loaded into a spiking class must give fresh neurons (amplitudes 1, not
calibrated; `fixed_alpha` with alpha_mode fixed), and a spiking checkpoint its saved amplitudes."""

import json

import pytest
import torch
from transformers import (BartConfig, BartForConditionalGeneration, BertConfig, BertForSequenceClassification, LlamaConfig,
                          LlamaForCausalLM)

from spikelm_core.calibration import calibrate
from spikelm_core.models.spiking_bart.modeling_spiking_bart import SpikingBartForConditionalGeneration
from spikelm_core.models.spiking_bert.modeling_spiking_bert import SpikingBertForSequenceClassification
from spikelm_core.models.spiking_llama.modeling_spiking_llama import SpikingLlamaForCausalLM

BERT = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=32)
BART = dict(vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32)
LLAMA = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
             intermediate_size=32, max_position_embeddings=32)
FAMILIES = {"bert": (BertForSequenceClassification, BertConfig(**BERT), "spiking_bert",
                     SpikingBertForSequenceClassification),
            "bart": (BartForConditionalGeneration, BartConfig(**BART), "spiking_bart",
                     SpikingBartForConditionalGeneration),
            "llama": (LlamaForCausalLM, LlamaConfig(**LLAMA), "spiking_llama", SpikingLlamaForCausalLM)}


def _dense_dir(tmp_path, dense_cls, config, spiking_type, **spiking):
    torch.manual_seed(0)
    dense_cls(config).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg.update(model_type=spiking_type, num_timesteps=2, **spiking)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("alpha_mode", ["calibrated", "fixed"])
def test_dense_checkpoint_gives_fresh_neurons(tmp_path, family, alpha_mode):
    dense_cls, config, spiking_type, spiking_cls = FAMILIES[family]
    model = spiking_cls.from_pretrained(_dense_dir(tmp_path, dense_cls, config, spiking_type, alpha_mode=alpha_mode,
                                                   fixed_alpha=0.5))
    fixed = alpha_mode == "fixed"
    for name, neuron in model.spiking_neurons():
        assert torch.equal(neuron.alpha, torch.full((2,), 0.5 if fixed else 1.0)), name
        assert bool(neuron.calibrated) == fixed, name
        assert neuron.is_calibrated == fixed, name
        assert float(neuron.spike_drop_p) == 0.0, name  # a non-persistent buffer: set, not left uninitialised


def test_spiking_checkpoint_keeps_its_amplitudes(tmp_path):
    torch.manual_seed(0)
    d = _dense_dir(tmp_path, BertForSequenceClassification, BertConfig(**BERT), "spiking_bert")
    model = SpikingBertForSequenceClassification.from_pretrained(d)
    ids = torch.randint(0, 50, (2, 6))
    calibrate(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    saved = {n: m.alpha.clone() for n, m in model.spiking_neurons()}
    model.save_pretrained(tmp_path / "spiking")
    again = SpikingBertForSequenceClassification.from_pretrained(tmp_path / "spiking")
    for name, neuron in again.spiking_neurons():
        assert torch.equal(neuron.alpha, saved[name]) and neuron.is_calibrated, name
        assert float(neuron.spike_drop_p) == 0.0, name
