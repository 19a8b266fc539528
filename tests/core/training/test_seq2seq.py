"""Spiking BART summarisation end to end: a tiny dense teacher trained here, distilled into its
spiking twin with `spikelm distill`, scored with `spikelm eval` (ROUGE); and the bad inputs."""

import json

import pytest
import torch
from typer.testing import CliRunner

from spikelm_cli.main import app

from tests.conftest import make_tiny_bart

runner = CliRunner()
WORDS = "the a of and to in is was it for on that with as at by river rose bridge farmers".split()


def _docs(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        words = [WORDS[int(i)] for i in torch.randint(0, len(WORDS), (12,), generator=g)]
        rows.append({"document": " ".join(words), "summary": " ".join(words[:3])})
    return rows


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_bart_teacher(tmp_path_factory):
    """A tiny dense BART trained for a few steps to copy the first words of the document."""
    d = tmp_path_factory.mktemp("bart_teacher")
    model, tok = make_tiny_bart(d)
    rows = _docs(16)
    enc = tok([r["document"] for r in rows], return_tensors="pt", padding=True)
    labels = tok([r["summary"] for r in rows], return_tensors="pt", padding=True)["input_ids"]
    labels[labels == tok.pad_token_id] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        opt.zero_grad()
        model(**enc, labels=labels).loss.backward()
        opt.step()
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _data(tmp_path, n_train=8, n_val=4):
    train = _write(tmp_path / "train.jsonl", _docs(n_train, seed=1))
    val = _write(tmp_path / "validation.jsonl", _docs(n_val, seed=2))
    return train, val


def _distill_tiny_bart(teacher, tmp_path, *settings: str):
    """`spikelm distill` of the tiny XSum recipe on 4 generated documents; (run dir, validation file)."""
    train, val = _data(tmp_path)
    out = tmp_path / "run"
    args = ["distill", "recipes/tiny/distill_xsum.yaml", "--out-dir", str(out), "--format", "json",
            "-s", f"model={teacher}", "-s", f"distill.teacher={teacher}", "-s", f"data.train_file={train}",
            "-s", f"data.validation_file={val}", "-s", "data.train_subset=4"]
    res = runner.invoke(app, args + [x for setting in settings for x in ("-s", setting)])
    assert res.exit_code == 0, res.output
    return out, val


@pytest.mark.slow
def test_distill_then_eval_on_tiny_bart(tiny_bart_teacher, tmp_path):
    out, val = _distill_tiny_bart(tiny_bart_teacher, tmp_path, "train.max_steps=8")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert len(losses) == 8 and losses[-1] < losses[0]  # distillation loss decreases on one repeated batch
    assert {"loss_kd", "loss_hidden", "loss_ce"} <= set(next(x for x in lines if "loss" in x))
    final = lines[-1]
    assert {"final_validation_rouge1", "final_validation_rougeL"} <= set(final)
    assert (out / "final" / "model.safetensors").is_file() and (out / "run_config.yaml").is_file()

    res = runner.invoke(app, ["eval", str(out / "final"), "--task", "xsum", "--format", "json",
                              "-s", f"data.validation_file={val}", "-s", "generate.num_beams=2",
                              "-s", "generate.max_new_tokens=6", "-s", "data.max_length=64"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data["metrics"]["validation"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert data["examples"]["validation"] == 4 and 0 < data["firing_rate"] < 1
    assert data["firing_rate_mean"].endswith("; while generating 4 validation summaries")  # which split's
    low, high = data["intervals"]["validation"]["rougeL"]  # a bootstrap interval around each ROUGE mean
    assert low <= data["metrics"]["validation"]["rougeL"] <= high
    (first, *_) = data["summaries"]["validation"]  # what the model wrote, beside its ROUGE
    assert set(first) == {"document", "reference", "prediction"} and first["reference"]
    empty = sum(1 for s in data["summaries"]["validation"] if not s["prediction"].strip())
    assert not empty or any("generated summaries are empty" in w for w in data["warnings"])


def test_a_runs_empty_summaries_are_warned_of_in_its_summary(tiny_bart_teacher, tmp_path, monkeypatch):
    from dataclasses import replace

    import spikelm_core.training.seq2seq as s2s

    real = s2s._score
    monkeypatch.setattr(s2s, "_score", lambda *a, **k: replace(real(*a, **k), empty_predictions=3))
    train, val = _data(tmp_path)
    res = runner.invoke(app, ["distill", "recipes/tiny/distill_xsum.yaml", "--out-dir", str(tmp_path / "run"),
                              "--format", "json", "-s", f"model={tiny_bart_teacher}",
                              "-s", f"distill.teacher={tiny_bart_teacher}", "-s", f"data.train_file={train}",
                              "-s", f"data.validation_file={val}", "-s", "train.max_steps=1"])
    assert res.exit_code == 0, res.output
    assert any("validation: 3 of 4 generated summaries are empty" in w for w in json.loads(res.stdout)["warnings"])
    assert "3 of 4 generated summaries are empty" in res.stderr  # said as the run ends, as eval says it


@pytest.mark.slow
def test_staged_local_distillation_on_tiny_bart(tiny_bart_teacher, tmp_path):
    out, _ = _distill_tiny_bart(tiny_bart_teacher, tmp_path, "train.max_steps=3", "distill.hidden_stage_steps=2",
                                "distill.hidden_stage_local=true")
    steps = [x for x in (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()) if "loss_kd" in x]
    assert len(steps) == 3
    for x in steps[:2]:  # the stage: the hidden-state term alone (alpha_hidden 1.0)
        assert x["loss"] == pytest.approx(x["loss_hidden"], rel=1e-4)
    assert steps[2]["loss"] == pytest.approx(steps[2]["loss_kd"] + 0.5 * steps[2]["loss_ce"] + steps[2]["loss_hidden"],
                                             rel=1e-4)


@pytest.mark.slow
def test_distill_and_eval_on_the_stored_xsum_sample(tiny_bart_teacher, tmp_path, shared_data):
    out = tmp_path / "xsum"
    res = runner.invoke(app, [
        "distill", "recipes/tiny/distill_xsum.yaml", "--out-dir", str(out),
        "-s", f"model={tiny_bart_teacher}", "-s", f"distill.teacher={tiny_bart_teacher}",
        "-s", f"data.train_file={shared_data / 'summarization/xsum/xsum-1000.jsonl'}",
        "-s", f"data.validation_file={shared_data / 'summarization/xsum/xsum-1000.jsonl'}",
    ])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "recipes/tiny/eval_xsum.yaml", "--format", "json", "-s", f"model={out / 'final'}",
                              "-s", f"data.validation_file={shared_data / 'summarization/xsum/xsum-1000.jsonl'}"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["task"] == "xsum"


def test_summarization_task_with_a_bert_checkpoint_names_the_architectures(tiny_dense_bert_dir, tmp_path):
    _, val = _data(tmp_path)
    res = runner.invoke(app, ["eval", str(tiny_dense_bert_dir), "--task", "xsum", "-s", f"data.validation_file={val}",
                              "-s", "data.max_length=64"])
    assert res.exit_code == 3
    assert "needs an encoder-decoder (BART)" in res.stderr and "GLUE tasks" in res.stderr
    assert "Traceback" not in res.output


def test_beam_size_below_one_is_refused(tiny_bart_teacher, tmp_path):
    _, val = _data(tmp_path)
    res = runner.invoke(app, ["eval", str(tiny_bart_teacher), "--task", "xsum", "-s", f"data.validation_file={val}",
                              "-s", "generate.num_beams=0", "-s", "data.max_length=64"])
    assert res.exit_code == 2 and "generate.num_beams: must be >= 1, got 0" in res.stderr


def test_missing_columns_and_long_sources_are_reported(tiny_bart_teacher, tmp_path):
    bad = _write(tmp_path / "bad.jsonl", [{"article": "x", "abstract": "y"}])
    res = runner.invoke(app, ["eval", str(tiny_bart_teacher), "--task", "xsum", "-s", f"data.validation_file={bad}",
                              "-s", "data.max_length=64"])
    assert res.exit_code == 4 and "columns found: article, abstract" in res.stderr
    blank = _write(tmp_path / "blank.jsonl", [{"document": "x y", "summary": " "}] * 3)
    res = runner.invoke(app, ["eval", str(tiny_bart_teacher), "--task", "xsum", "-s", f"data.validation_file={blank}",
                              "-s", "data.max_length=64"])
    assert res.exit_code == 4 and "3 empty or non-text summary(s)" in res.stderr  # every row counted, not the first
    _, val = _data(tmp_path)
    res = runner.invoke(app, ["eval", str(tiny_bart_teacher), "--task", "xsum", "-s", f"data.validation_file={val}",
                              "-s", "data.max_length=4096"])
    assert res.exit_code == 2 and "exceeds the model's 64 positions" in res.stderr
    # generation past the decoder's positions: refused before anything runs, with the setting to change
    res = runner.invoke(app, ["eval", str(tiny_bart_teacher), "--task", "xsum", "-s", f"data.validation_file={val}",
                              "-s", "data.max_length=64", "-s", "generate.max_new_tokens=65"])
    assert res.exit_code == 2 and "generated length 65 (generate.max_new_tokens)" in res.stderr
    assert "-s generate.max_new_tokens=64" in res.stderr and "Traceback" not in res.output
    # finetune: summaries or generation past the positions refused before the run starts (nothing left behind)
    train, val = _data(tmp_path)
    for setting, name in (("data.max_target_length=100", "data.max_target_length"),
                          ("generate.max_new_tokens=100", "generate.max_new_tokens")):
        out = tmp_path / "ft-long"
        res = runner.invoke(app, ["finetune", "--task", "xsum", "--out-dir", str(out), "-s", f"model={tiny_bart_teacher}",
                                  "-s", f"data.train_file={train}", "-s", f"data.validation_file={val}",
                                  "-s", "data.max_length=64", "-s", setting, "-s", "train.max_steps=1"])
        assert res.exit_code == 2 and f"({name}) exceeds the model's 64 positions" in res.stderr, res.output
        assert not out.exists()


def test_task_flag_picks_the_bart_recipe():
    from spikelm_core.training.recipes import paper_recipe

    assert paper_recipe("distill", "xsum").as_posix().endswith("recipes/bart_base/distill_xsum.yaml")
    assert paper_recipe("finetune", "cnn-dm").name == "finetune_cnn_dm.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("compile_mode, beams", [("none", 1), ("layers", 2)])
def test_finetune_without_a_teacher_on_tiny_bart(tiny_bart_teacher, tmp_path, compile_mode, beams):
    """Summarisation fine-tuning end to end, eager and with compiled layers (training, then generation
    for the final ROUGE through the compiled encoder and decoder layers, KV cache outside the graph)."""
    train, val = _data(tmp_path)
    out = tmp_path / "ft"
    res = runner.invoke(app, [
        "finetune", "--task", "xsum", "--out-dir", str(out), "--format", "json",
        "-s", f"model={tiny_bart_teacher}", "-s", f"data.train_file={train}", "-s", f"data.validation_file={val}",
        "-s", "data.max_length=64", "-s", "data.max_target_length=16", "-s", "train.max_steps=2",
        "-s", "train.batch_size=4", "-s", "train.eval_batch_size=4", "-s", "train.eval_strategy=no",
        "-s", "train.keep_best=false", "-s", "train.device=cpu", "-s", "neuron.num_timesteps=2",
        "-s", f"generate.num_beams={beams}", "-s", "generate.max_new_tokens=4", "-s", f"train.compile={compile_mode}",
    ])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["global_step"] == 2 and set(data["metrics"]["validation"]) >= {"rouge1", "rougeL"}
    assert data["calibrated"] is True  # the dense BART was converted and calibrated before training


def test_one_local_split_names_the_missing_one_and_a_source_path_is_refused(tiny_bart_teacher, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    train, val = _data(tmp_path)
    base = ["finetune", "--task", "xsum", "--model", str(tiny_bart_teacher), "-s", "data.max_length=64",
            "-s", "train.max_steps=1"]
    # the training file alone: the validation split is the one missing, and the fix names its setting
    out = tmp_path / "one-split"
    res = runner.invoke(app, base + ["--out-dir", str(out), "-s", f"data.train_file={train}"])
    assert res.exit_code == 4 and "no local validation data for 'xsum'" in res.stderr, res.output
    assert "-s data.validation_file=FILE" in res.stderr and not out.exists()
    # data.source is a dataset name for summarisation: a local directory there is refused, not ignored
    res = runner.invoke(app, base + ["--out-dir", str(out), "-s", f"data.source={tmp_path}"])
    assert res.exit_code == 2 and "is not read by summarisation task 'xsum'" in res.stderr, res.output
    assert "Traceback" not in res.output and not out.exists()


def test_the_missing_teachers_fix_makes_a_dense_teacher_of_the_task(tiny_bart_teacher, tmp_path):
    train, val = _data(tmp_path)
    res = runner.invoke(app, ["distill", "--task", "cnn_dm", "--model", str(tiny_bart_teacher),
                              "--out-dir", str(tmp_path / "run"), "-s", f"distill.teacher={tmp_path / 'nope'}",
                              "-s", f"data.train_file={train}", "-s", f"data.validation_file={val}",
                              "-s", "data.text_column=document", "-s", "data.summary_column=summary"])
    # the task's recipe converts a finetuned model to spiking, which distill refuses as a teacher
    assert res.exit_code == 3 and "spikelm finetune --task cnn_dm --model DIR -s neuron.kind=dense" in res.stderr, \
        res.output
