"""`convert_model`: weights copied exactly, calibrated amplitudes, the checkpoint's head kept, bad inputs."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, BartConfig, BartForConditionalGeneration, BertConfig, BertForSequenceClassification
from transformers import BertTokenizerFast

import spikelm_core  # noqa: F401
from spikelm_core.calibration import is_calibrated
from spikelm_core.checkpoints import load_model
from spikelm_core.conversion import convert_model
from spikelm_core.errors import CheckpointError, ConfigError
from spikelm_core.neurons.settings import NeuronSettings
from tests.conftest import TINY, write_tiny_vocab

BART_TINY = dict(
    vocab_size=99, d_model=24, encoder_layers=2, decoder_layers=2, encoder_attention_heads=3,
    decoder_attention_heads=3, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
    pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2, forced_eos_token_id=None,
)


def test_converted_weights_equal_source_tensor_by_tensor(tiny_dense_bert_dir, tmp_path):
    out = tmp_path / "spiking"
    r = convert_model(str(tiny_dense_bert_dir), out, NeuronSettings(num_timesteps=3), seq_len=16, batch_size=2)
    src = load_file(tiny_dense_bert_dir / "model.safetensors")
    dst = load_file(out / "model.safetensors")
    for key, tensor in src.items():
        if key.endswith("position_ids"):
            continue
        assert torch.equal(dst[key], tensor), key
    assert r.copied_tensors == len([k for k in src if not k.endswith("position_ids")])
    model = AutoModel.from_pretrained(out)  # the saved model loads with the Auto classes
    assert type(model).__name__ == "SpikingBertModel" and is_calibrated(model)
    assert model.config.num_timesteps == 3
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()
    assert 0 < r.firing_rate < 1 and r.neurons == {"BiSpikeNeuron": 12, "TernarySpike": 4}
    assert set(r.layer_firing_rates) == {"layer.0", "layer.1"}


def test_result_settings_keep_the_model_config_names(tiny_dense_bert_dir, tmp_path):
    r = convert_model(str(tiny_dense_bert_dir), tmp_path / "o", NeuronSettings(num_timesteps=2, k=3.0), seq_len=12,
                      batch_size=2)
    assert r.settings == {"neuron_kind": "elastic_bi", "num_timesteps": 2, "k": 3.0, "decay": 0.25, "reset": "official",
                          "levels": "ternary", "amplitude": "elastic", "alpha_mode": "calibrated", "fixed_alpha": 1.0,
                          "spike_kv": True, "learn_alpha": False, "salient_fraction": 0.0, "salient_mode": "steps",
                          "salient_steps": 2, "k_candidates": [], "channel_scale": False, "readout": "mean"}
    assert r.allocation is None
    assert list(r.settings)[0] == "neuron_kind"


def test_head_checkpoint_converts_to_head_model(tmp_path):
    d = tmp_path / "dense_cls"
    BertForSequenceClassification(BertConfig(**TINY, num_labels=3)).save_pretrained(d)
    write_tiny_vocab(d / "vocab.txt")
    r = convert_model(str(d), tmp_path / "out", NeuronSettings(num_timesteps=2), seq_len=12, batch_size=2)
    assert r.architecture == "SpikingBertForSequenceClassification"
    assert not r.newly_initialised


def test_lif_conversion(tiny_dense_bert_dir, tmp_path):
    r = convert_model(str(tiny_dense_bert_dir), tmp_path / "lif", NeuronSettings(kind="lif", num_timesteps=2),
                      seq_len=12, batch_size=2)
    assert r.neurons == {"LIFNeuron": 16} and r.alpha_min is None
    assert r.settings["neuron_kind"] == "lif"


def test_bart_conversion_keeps_the_lm_head_and_generation_settings(tmp_path):
    d = tmp_path / "bart"
    torch.manual_seed(0)
    BartForConditionalGeneration(BartConfig(**BART_TINY)).save_pretrained(d)
    BertTokenizerFast(vocab=str(write_tiny_vocab(tmp_path / "vocab.txt"))).save_pretrained(d)
    r = convert_model(str(d), tmp_path / "out", NeuronSettings(num_timesteps=2), seq_len=16, batch_size=2)
    assert r.architecture == "SpikingBartForConditionalGeneration" and not r.newly_initialised
    assert {"encoder.layers.0", "decoder.layers.1"} <= set(r.layer_firing_rates)
    loaded = load_model(tmp_path / "out", head="seq2seq_lm")
    assert not loaded.converted and is_calibrated(loaded.model)
    assert loaded.model.generation_config.decoder_start_token_id == 2


def test_a_checkpoint_without_the_weights_of_its_head_is_refused(tiny_dense_llama_dir, tmp_path):
    """A LlamaForCausalLM whose file holds no lm_head.weight (untied): a random LM head is refused, not noted."""
    import shutil

    from safetensors.torch import save_file

    d = tmp_path / "no_head"
    shutil.copytree(tiny_dense_llama_dir, d)
    state = {k: v for k, v in load_file(d / "model.safetensors").items() if not k.startswith("lm_head.")}
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="no weights for its LM head") as info:
        convert_model(str(d), tmp_path / "out", NeuronSettings(num_timesteps=2), seq_len=16, batch_size=2)
    assert "lm_head.weight" in info.value.details[0] and "tie_word_embeddings" in info.value.hint
    assert not (tmp_path / "out").exists()


def test_generation_settings_kept_in_an_older_config_json_are_kept(tmp_path):
    """No generation_config.json, num_beams & co. in config.json (older BART checkpoints): transformers reads
    them from there, and so does the conversion; the spiking model saves them in generation_config.json."""
    import json

    d = tmp_path / "bart"
    torch.manual_seed(0)
    BartForConditionalGeneration(BartConfig(**BART_TINY)).save_pretrained(d)
    BertTokenizerFast(vocab=str(write_tiny_vocab(tmp_path / "vocab.txt"))).save_pretrained(d)
    (d / "generation_config.json").unlink()
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(num_beams=4, max_length=142, min_length=56, no_repeat_ngram_size=3, length_penalty=2.0)
    (d / "config.json").write_text(json.dumps(cfg))
    dense = BartForConditionalGeneration.from_pretrained(d).generation_config
    convert_model(str(d), tmp_path / "out", NeuronSettings(num_timesteps=2), seq_len=16, batch_size=2)
    for model_dir in (d, tmp_path / "out"):
        g = load_model(model_dir, head=None).model.generation_config
        for key in ("num_beams", "max_length", "min_length", "no_repeat_ngram_size", "length_penalty",
                    "decoder_start_token_id"):
            assert getattr(g, key) == getattr(dense, key), (model_dir, key)


def test_llama_conversion_copies_every_weight_key_for_key(tiny_dense_llama_dir, tmp_path):
    from spikelm_core.calibration import CAUSAL_CALIBRATION_FILE

    out = tmp_path / "spiking_llama"
    r = convert_model(str(tiny_dense_llama_dir), out, NeuronSettings(num_timesteps=2), seq_len=16, batch_size=2)
    assert r.architecture == "SpikingLlamaForCausalLM" and not r.newly_initialised and not r.dropped
    src, dst = load_file(tiny_dense_llama_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert r.copied_tensors == len(src)
    for key, tensor in src.items():
        assert torch.equal(dst[key], tensor), key
    assert r.neurons == {"BiSpikeNeuron": 14, "TernarySpike": 4} and 0 < r.firing_rate < 1
    assert r.calibration_text == (str(CAUSAL_CALIBRATION_FILE) if CAUSAL_CALIBRATION_FILE.is_file() else "packaged")
    loaded = load_model(out, head=None)
    assert type(loaded.model).__name__ == "SpikingLlamaForCausalLM" and not loaded.converted
    assert is_calibrated(loaded.model) and loaded.model.config.num_timesteps == 2


def test_llama_calibrates_on_the_given_text(tiny_dense_llama_dir, tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text("the river rose and the bridge was on the river .\n" * 40)
    r = convert_model(str(tiny_dense_llama_dir), tmp_path / "o", NeuronSettings(num_timesteps=1), calib_data=text,
                      seq_len=12, batch_size=3, calib_batches=2)
    assert r.calibration_text == str(text) and r.firing_tokens == 2 * 3 * 12


def test_dense_kind_is_refused(tiny_dense_bert_dir, tmp_path):
    with pytest.raises(ConfigError, match="'dense' has no neurons"):
        convert_model(str(tiny_dense_bert_dir), tmp_path / "x", NeuronSettings(kind="dense"))
    assert not (tmp_path / "x").exists()


def test_spiking_source_is_refused(tiny_dense_bert_dir, tmp_path):
    convert_model(str(tiny_dense_bert_dir), tmp_path / "s", NeuronSettings(num_timesteps=2), seq_len=12, batch_size=2)
    with pytest.raises(CheckpointError, match="spiking model already") as exc:
        convert_model(str(tmp_path / "s"), tmp_path / "again")
    assert exc.value.exit_code == 3 and not (tmp_path / "again").exists()


def test_pickled_weights_are_refused(tiny_dense_bert_dir, tmp_path):
    import shutil

    d = tmp_path / "pickled"
    shutil.copytree(tiny_dense_bert_dir, d)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        convert_model(str(d), tmp_path / "x")


@pytest.mark.parametrize("values", [dict(num_timesteps=0), dict(k=0), dict(k=-1.5), dict(k=float("inf")),
                                    dict(k=float("nan")), dict(decay=1.5)], ids=["T0", "k0", "k-neg", "k-inf",
                                                                                 "k-nan", "decay"])
def test_bad_settings_are_refused_by_the_settings_type(values):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        NeuronSettings(**values)


def test_core_imports_without_typer_and_rich():
    code = (
        "import sys\n"
        "sys.modules['typer'] = None\n"  # a None entry makes `import typer` fail as if absent
        "sys.modules['rich'] = None\n"
        "import spikelm_core, spikelm_core.conversion, spikelm_core.checkpoints, spikelm_core.calibration\n"
        "assert 'typer' not in [m for m, v in sys.modules.items() if v is not None]\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_a_checkpoint_without_a_pooler_is_saved_without_one_and_a_headless_drop_is_warned(tmp_path):
    """A BertForQuestionAnswering (no pooler, no architectures): the converted model keeps no random pooler
    that a later load would trust, and the dropped qa_outputs head is named."""
    import json

    from transformers import BertConfig, BertForQuestionAnswering

    from spikelm_core.checkpoints import load_model
    from tests.conftest import TINY
    from tests.training_fixtures import tiny_tokenizer

    src = tmp_path / "qa"
    torch.manual_seed(0)
    BertForQuestionAnswering(BertConfig(**TINY)).save_pretrained(src)
    tiny_tokenizer(src / "vocab.txt").save_pretrained(src)
    cfg = json.loads((src / "config.json").read_text())
    cfg.pop("architectures")
    (src / "config.json").write_text(json.dumps(cfg))
    result = convert_model(src, tmp_path / "out", calib_batches=1, batch_size=2, seq_len=16)
    assert not result.newly_initialised
    assert any("pooler" in w for w in result.warnings) and any("qa_outputs" in w for w in result.warnings)
    again = load_model(tmp_path / "out", head="sequence_classification", num_labels=2, need_tokenizer=False)
    assert "bert.pooler.dense.weight" in again.weights.newly_initialised
