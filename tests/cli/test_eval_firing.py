"""`spikelm eval --plot-firing`: the per-token firing picture of a tiny BERT and a tiny BART, and its bad inputs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from spikelm_cli.main import app
from tests.cli.test_bad_input import refused
from tests.training_fixtures import tiny_dirs  # noqa: F401

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_SETS = ["-s", "data.max_length=16", "-s", "neuron.num_timesteps=3"]


def _eval(dirs, png, *extra):
    return ["eval", str(dirs["teacher"]), "--task", "sst2", "--data-dir", str(dirs["glue"]), *TINY_SETS,
            "--plot-firing", str(png), *extra]


def _written(png):
    assert png.read_bytes()[:8] == PNG_MAGIC
    return json.loads(png.with_suffix(".json").read_text())


def test_eval_pictures_the_first_dev_example(tiny_dirs, tmp_path):
    from transformers import AutoTokenizer

    png = tmp_path / "pics" / "firing.png"
    res = runner.invoke(app, _eval(tiny_dirs, png, "--format", "json"))
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["metrics"]["dev"]["accuracy"] >= 0  # stdout stays the eval JSON, with the picture's files
    assert result["firing_picture"] == {"png": str(png), "data": str(png.with_suffix(".json"))}
    assert "firing picture of dev example 0" in res.stderr and str(png) in res.stderr
    data = _written(png)
    assert data["schema"] == "spikelm.firing_tokens/1" and data["task"] == "sst2" and data["timesteps"] == 3
    assert data["input"] == {"kind": "example", "split": "dev", "index": 0}
    (panel,) = data["panels"]
    sentence = (tiny_dirs["glue"] / "SST-2" / "dev.tsv").read_text().splitlines()[1].split("\t")[0]
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["teacher"])
    assert panel["tokens"] == tokenizer.convert_ids_to_tokens(tokenizer(sentence)["input_ids"])
    assert panel["layers"] == ["layer.0", "layer.1"] and panel["neurons"] == [8, 8]
    assert panel["counts"] == [1] * len(panel["tokens"])
    for layer, row in zip(panel["layers"], panel["rates"]):
        assert sum(row) / len(row) == pytest.approx(panel["layer_rates"][layer])
        assert all(0.0 <= r <= 1.0 for r in row)


def test_eval_pictures_a_free_sentence(tiny_dirs, tmp_path):
    png = tmp_path / "text.png"
    res = runner.invoke(app, _eval(tiny_dirs, png, "--firing-text", "The river rose"))
    assert res.exit_code == 0, res.output
    assert "firing picture of free text" in res.stderr and "spikelm eval: sst2" in res.stdout
    data = _written(png)
    assert data["input"] == {"kind": "text", "text": "The river rose"}
    assert data["panels"][0]["tokens"] == ["[CLS]", "the", "river", "rose", "[SEP]"] and data["notes"] == []
    long = " ".join(["the river rose"] * 10)  # 32 tokens with [CLS] and [SEP], cut at data.max_length 16
    res = runner.invoke(app, _eval(tiny_dirs, png, "--firing-text", long))
    assert res.exit_code == 0, res.output
    data = _written(png)
    assert len(data["panels"][0]["tokens"]) == 16
    assert data["notes"] == ["free text cut at 16 of its 32 tokens (data.max_length)"]
    assert "note: free text cut at 16 of its 32 tokens" in res.stderr


@pytest.fixture(scope="module")
def tiny_bart(tmp_path_factory):
    """An untrained tiny dense BART (converted by eval) with a WordPiece tokenizer, and 3 validation documents."""
    from tests.conftest import write_tiny_bart

    d = tmp_path_factory.mktemp("bart")
    write_tiny_bart(d)
    rows = [{"document": "the river rose by the bridge", "summary": "river rose"},
            {"document": "farmers of the river", "summary": "the farmers"},
            {"document": "a bridge was on it", "summary": "a bridge"}]
    val = d / "validation.jsonl"
    val.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "model", val


def test_eval_pictures_bart_source_and_teacher_forced_target(tiny_bart, tmp_path):
    model, val = tiny_bart
    png = tmp_path / "bart.png"
    res = runner.invoke(app, [
        "eval", str(model), "--task", "xsum", "-s", f"data.validation_file={val}", "-s", "data.max_length=16",
        "-s", "data.max_target_length=8", "-s", "neuron.num_timesteps=3", "-s", "generate.num_beams=1",
        "-s", "generate.max_new_tokens=3", "--plot-firing", str(png), "--firing-example", "1",
    ])
    assert res.exit_code == 0, res.output
    data = _written(png)
    assert data["input"] == {"kind": "example", "split": "validation", "index": 1}
    source, target = data["panels"]
    assert source["tokens"] == ["[CLS]", "farmers", "of", "the", "river", "[SEP]"]
    assert source["layers"] == ["encoder.layers.0", "encoder.layers.1", "decoder.layers.0.cross_kv",
                                "decoder.layers.1.cross_kv"]
    assert target["tokens"] == ["[CLS]", "[CLS]", "the", "farmers"]  # decoder start + the summary shifted right
    assert target["layers"] == ["decoder.layers.0", "decoder.layers.1"] and target["neurons"] == [10, 10]
    assert any("teacher-forced" in note for note in data["notes"])
    assert "decoder.0 " in res.stderr and "decoder.0.cross_kv" in res.stderr


BAD = {
    "empty text": (["--firing-text", "  "], ["--firing-text is empty"]),
    "no token in the text": (["--firing-text", "\u200b\u200b"], ["holds no token the model's tokenizer reads"]),
    "example out of range": (["--firing-example", "11"], ["--firing-example 11 is out of range", "has 11 example",
                                                          "choose an index from 0 to 10"]),
    "example beyond the subset": (["--firing-example", "3", "-s", "data.eval_subset=2"], ["(data.eval_subset=2)"]),
    "negative example": (["--firing-example", "-1"], ["must be 0 or more"]),
    "text and example": (["--firing-text", "a", "--firing-example", "1"], ["not both"]),
    "dense model": (["-s", "neuron.kind=dense"], ["has no spiking neurons", "-s neuron.kind=elastic_bi"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_firing_inputs(case, tiny_dirs, tmp_path):
    args, needles = BAD[case]
    png = tmp_path / "out" / "firing.png"
    refused(runner.invoke(app, _eval(tiny_dirs, png, *args)), 2, *needles)
    assert not png.parent.exists()


@pytest.mark.parametrize("args, needles", [
    pytest.param(["--firing-text", "a river"], ["choose the input of --plot-firing", "--plot-firing firing.png"],
                 id="text-without-plot"),
    pytest.param(["--plot-firing", "firing.jpg"], ["must name a .png file"], id="not-png"),
])
def test_bad_firing_flags(args, needles, tiny_dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["eval", str(tiny_dirs["teacher"]), "--task", "sst2", "--data-dir", str(tiny_dirs["glue"]),
                              *args])
    refused(res, 2, *needles)
    assert list(tmp_path.iterdir()) == []


def test_eval_results_record_the_picture(tiny_dirs, tmp_path):
    png, out = tmp_path / "firing.png", tmp_path / "out"
    res = runner.invoke(app, _eval(tiny_dirs, png, "--out-dir", str(out)))
    assert res.exit_code == 0, res.output
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["firing_picture"] == {"png": str(png), "data": str(png.with_suffix(".json"))}


@pytest.mark.parametrize("case", ["out-dir is a file", "picture data on eval_results.json"])
def test_out_dir_refusals_come_before_the_picture(case, tiny_dirs, tmp_path):
    """Nothing is computed or written when --out-dir cannot take the results, or when the picture's
    data would land on them."""
    if case == "out-dir is a file":
        out, png, needle = tmp_path / "afile", tmp_path / "firing.png", "is a file"
        out.write_text("keep me")
    else:
        out, needle = tmp_path / "out", "where --out-dir keeps its eval_results.json"
        png = out / "eval_results.png"
    refused(runner.invoke(app, _eval(tiny_dirs, png, "--out-dir", str(out))), 2, needle)
    assert not png.exists() and not png.with_suffix(".json").exists()
    assert out.is_file() if case == "out-dir is a file" else not out.exists()


def test_a_dense_model_scores_as_its_converted_twin(tiny_dirs, tmp_path):
    """eval converts a dense model and calibrates it as `spikelm convert` does (the calibration text,
    not dev examples): the same scores and rates as eval of convert's output, whatever the batch
    size; the firing rates say which examples they cover."""
    twin = tmp_path / "twin"
    res = runner.invoke(app, ["convert", str(tiny_dirs["teacher"]), "--out", str(twin), "--timesteps", "3",
                                 "--seq-len", "64"])  # the tiny model has 64 positions: eval calibrates on 64 too
    assert res.exit_code == 0, res.output
    results = []
    for model, batch in ((tiny_dirs["teacher"], 2), (tiny_dirs["teacher"], 7), (twin, 3)):
        res = runner.invoke(app, ["eval", str(model), "--task", "sst2", "--data-dir", str(tiny_dirs["glue"]),
                                  "-s", "data.max_length=16", "-s", "neuron.num_timesteps=3", "-s", f"batch_size={batch}",
                                  "--format", "json"])
        assert res.exit_code == 0, res.output
        results.append(json.loads(res.stdout))
    assert [r["converted"] for r in results] == [True, True, False]
    for r in results[1:]:
        assert r["metrics"] == results[0]["metrics"]
        assert r["firing_rate"] == pytest.approx(results[0]["firing_rate"], abs=1e-6)
    n = results[0]["examples"]["dev"]
    assert results[0]["firing_rate_mean"].endswith(f"; over all {n} dev examples")
    text = runner.invoke(app, ["eval", str(tiny_dirs["teacher"]), "--task", "sst2", "--data-dir",
                               str(tiny_dirs["glue"]), "-s", "data.max_length=16"]).stdout
    assert "converted here and calibrated as spikelm convert does" in " ".join(text.split())


def test_firing_rates_cover_the_first_examples_whatever_the_batch(tiny_dirs, tmp_path, monkeypatch):
    """With more dev examples than `FIRING_EXAMPLES`, the rates are those of the first ones, the same at
    any batch size, and the description says how many of how many."""
    from spikelm_core.training import pipeline

    monkeypatch.setattr(pipeline, "FIRING_EXAMPLES", 5)
    results = []
    for batch in (1, 4, 16):
        res = runner.invoke(app, ["eval", str(tiny_dirs["teacher"]), "--task", "sst2", "--data-dir", str(tiny_dirs["glue"]),
                                  *TINY_SETS, "-s", f"batch_size={batch}", "--format", "json"])
        assert res.exit_code == 0, res.output
        results.append(json.loads(res.stdout))
    assert results[0]["firing_rate_mean"].endswith("; over the first 5 of 11 dev examples")
    assert all(r["firing_rate"] == pytest.approx(results[0]["firing_rate"], abs=1e-6) for r in results)
    every = runner.invoke(app, ["eval", str(tiny_dirs["teacher"]), "--task", "sst2", "--data-dir", str(tiny_dirs["glue"]),
                                *TINY_SETS, "-s", "data.eval_subset=5", "--format", "json"])
    assert json.loads(every.stdout)["firing_rate"] == pytest.approx(results[0]["firing_rate"], abs=1e-6)


def test_a_bf16_eval_pictures_in_bf16(tiny_dirs, tmp_path):
    """`-s bf16=true`: eval scores and counts under bf16 autocast, and the picture of the one example
    scored gives the same layer rates (a float32 picture would not)."""
    png = tmp_path / "bf16.png"
    res = runner.invoke(app, _eval(tiny_dirs, png, "-s", "bf16=true", "-s", "data.eval_subset=1", "-s", "compile=none",
                                   "--format", "json"))
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["precision"] == "bf16"
    data = _written(png)
    assert data["panels"][0]["layer_rates"] == pytest.approx(result["layer_firing_rates"], rel=1e-9)
    assert any("bf16" in note for note in data["notes"])
