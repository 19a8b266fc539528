"""`spikelm finetune` / `spikelm distill` on a language-modelling text (`--task wikitext2`) with a tiny
odd-sized Llama: full training windows, the final perplexity equal to `spikelm eval` on the trained
model, the distillation term logged, train/validation files, and the teacher checks."""

from __future__ import annotations

import json
import random

import pytest
import torch
from typer.testing import CliRunner

from spikelm_cli.main import app
from spikelm_core.training.causal_lm import collate_windows

runner = CliRunner()
WORDS = "the a of and to in is was it for on that with as at by river rose bridge farmers".split()
TINY = ["-s", "neuron.num_timesteps=2", "-s", "data.max_length=16", "-s", "data.seq_len=16", "-s", "train.batch_size=4",
        "-s", "train.max_steps=3", "-s", "train.logging_steps=1", "-s", "data.max_tokens=120", "--format", "json"]


def _text(path, words: int, seed: int):
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(words // 10)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm_train")
    return _text(d / "train.txt", 400, 0), _text(d / "valid.txt", 200, 1)


def _run(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    return json.loads(res.stdout)


def test_finetune_then_eval_scores_the_same_perplexity(tiny_dense_llama_dir, texts, tmp_path):
    train, valid = texts
    r = _run("finetune", "--task", "wikitext2", "--model", tiny_dense_llama_dir, "--out-dir", tmp_path / "ft",
             "-s", f"data.train_file={train}", "-s", f"data.validation_file={valid}", *TINY)
    assert r["task"] == "wikitext2" and r["global_step"] == 3 and r["primary_metric"] == "perplexity"
    v = r["metrics"]["validation"]
    assert v["tokens"] == 120 and v["windows"] == 8 and v["perplexity"] > 1  # [BOS] + 15 tokens per window
    records = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in records if "loss" in rec] == [1, 2, 3]
    assert records[-1]["final_validation_perplexity"] == pytest.approx(v["perplexity"])  # the run's record keeps it
    # the trained model, scored by eval on the same windows, gives the same number
    e = _run("eval", tmp_path / "ft" / "final", "--task", "wikitext2", "--data-dir", valid, "--seq-len", 16,
             "--max-tokens", 120, "--format", "json")
    assert e["perplexity"] == pytest.approx(v["perplexity"], rel=1e-6)
    assert e["firing_rate"] == pytest.approx(r["firing_rate"])
    # without --task: the run's task, on the text its final perplexity read, with its windows
    again = _run("eval", tmp_path / "ft" / "final", "--format", "json")
    assert again["perplexity"] == pytest.approx(v["perplexity"], rel=1e-6)


def test_eval_of_a_run_scores_its_split_and_windows_and_training_on_the_scored_text_is_warned_of(
        tiny_dense_llama_dir, texts, tmp_path):
    train, valid = texts
    folder = tmp_path / "text" / "wikitext-2"
    folder.mkdir(parents=True)
    for name, source in (("train", train), ("valid", valid), ("test", train)):
        (folder / f"{name}.txt").write_text(source.read_text())
    r = _run("finetune", "--task", "wikitext2", "--model", tiny_dense_llama_dir, "--out-dir", tmp_path / "ft",
             "--data-dir", tmp_path / "text", "-s", "data.eval_subset=3", *TINY)
    v = r["metrics"]["validation"]
    assert v["windows"] == 3
    # without --task: the run's split (valid, not eval's default test) and its windows
    e = _run("eval", tmp_path / "ft" / "final", "--format", "json")
    assert list(e["metrics"]) == ["valid"] and e["metrics"]["valid"]["windows"] == 3
    assert e["perplexity"] == pytest.approx(v["perplexity"], rel=1e-6)
    # another text (eval's default split, test) is scored whole: the run's window count is its own text's
    other = _run("eval", tmp_path / "ft" / "final", "--task", "wikitext2", "--data-dir", tmp_path / "text",
                 "--format", "json")
    assert list(other["metrics"]) == ["test"] and other["metrics"]["test"]["windows"] > 3
    # a run that scores the text it trained on says so
    res = runner.invoke(app, ["finetune", "--task", "wikitext2", "--model", str(tiny_dense_llama_dir), "--out-dir",
                              str(tmp_path / "same"), "--data-dir", str(tmp_path / "text"),
                              "-s", f"data.train_file={folder / 'valid.txt'}", *TINY])
    assert res.exit_code == 0, res.stderr
    assert "is the training text" in " ".join(res.stderr.split())
    # data.max_tokens below one window of the final evaluation: refused, naming the setting
    res = runner.invoke(app, ["finetune", "--task", "wikitext2", "--model", str(tiny_dense_llama_dir), "--out-dir",
                              str(tmp_path / "few"), "--data-dir", str(tmp_path / "text"), *TINY,
                              "-s", "data.max_tokens=10"])
    assert res.exit_code == 2 and "data.max_tokens 10 is less than one window" in " ".join(res.stderr.split())


def test_a_tokenizer_without_bos_trains_on_full_windows_of_max_length(tiny_dense_llama_dir, texts, tmp_path):
    """Without a BOS token each training window is max_length text tokens (before, the stride rule of
    eval's windows refused every max_length)."""
    import shutil

    from spikelm_core.evaluation.perplexity import packed_windows

    from tests.conftest import tiny_llama_tokenizer

    model = tmp_path / "nobos"
    shutil.copytree(tiny_dense_llama_dir, model)
    tok = tiny_llama_tokenizer()
    tok.bos_token = None
    tok.save_pretrained(model)
    train, valid = texts
    r = _run("finetune", "--task", "wikitext2", "--model", model, "--out-dir", tmp_path / "ft",
             "-s", f"data.train_file={train}", "-s", f"data.validation_file={valid}", *TINY)
    assert r["global_step"] == 3 and r["metrics"]["validation"]["perplexity"] > 1
    ids = list(range(40))
    assert packed_windows(ids, 16) == [tuple(range(16)), tuple(range(16, 32))]  # the tail of 8 dropped
    assert packed_windows(ids, 16, bos_token_id=99) == [(99, *range(15)), (99, *range(15, 30))]


def test_both_lengths_beyond_the_model_are_said_together(tiny_dense_llama_dir, texts, tmp_path):
    train, valid = texts
    res = runner.invoke(app, ["finetune", "--task", "wikitext2", "--model", str(tiny_dense_llama_dir),
                              "--out-dir", str(tmp_path / "x"), "-s", f"data.train_file={train}",
                              "-s", f"data.validation_file={valid}", "-s", "data.max_length=65"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    for needle in ("the lengths exceed the model's positions", "data.max_length is 65 but the model has 64",
                   "data.seq_len 256 (the final perplexity's windows) exceeds", "-s data.seq_len=64 or less"):
        assert needle in res.stderr, (needle, res.stderr)
    assert "--seq-len" not in res.stderr and not (tmp_path / "x").exists()


def test_distill_logs_the_kd_term_and_trains_on_full_windows(tiny_dense_llama_dir, texts, tmp_path):
    train, valid = texts
    r = _run("distill", "--task", "wikitext2", "--model", tiny_dense_llama_dir, "--teacher", tiny_dense_llama_dir,
             "--data-dir", valid, "-s", f"data.train_file={train}", "--out-dir", tmp_path / "kd", *TINY)
    assert r["command"] == "distill" and r["metrics"]["validation"]["tokens"] == 120
    records = [json.loads(line) for line in (tmp_path / "kd" / "metrics.jsonl").read_text().splitlines()]
    kd = [rec["loss_kd"] for rec in records if "loss_kd" in rec]
    assert len(kd) == 3 and all(x > 0 for x in kd)
    assert not any("loss_ce" in rec for rec in records)  # the recipe's alpha_ce is 0: KD only
    # 400 words -> full windows of 15 tokens each; 3 steps of 4 read 12 of them
    assert 0 < r["epochs"] <= 1
    # the hidden-state term: student and teacher hidden states compare entry for entry
    _run("distill", "--task", "wikitext2", "--model", tiny_dense_llama_dir, "--teacher", tiny_dense_llama_dir,
         "--data-dir", valid, "-s", f"data.train_file={train}", "--out-dir", tmp_path / "kdh", *TINY,
         "-s", "distill.alpha_hidden=1")
    records = [json.loads(line) for line in (tmp_path / "kdh" / "metrics.jsonl").read_text().splitlines()]
    hidden = [rec["loss_hidden"] for rec in records if "loss_hidden" in rec]
    assert len(hidden) == 3 and all(x > 0 for x in hidden)


def test_the_teacher_must_fit_a_causal_student(tiny_dense_llama_dir, tiny_dense_bert_dir, texts, tmp_path):
    train, valid = texts
    common = ["--task", "wikitext2", "--model", tiny_dense_llama_dir, "--data-dir", valid, "--out-dir", tmp_path / "x",
              "-s", "data.max_length=16", "-s", "data.seq_len=16"]
    res = runner.invoke(app, ["distill", *map(str, common), "--teacher", str(tiny_dense_llama_dir),
                              "-s", "distill.alpha_attn=1", "-s", f"data.train_file={train}"])
    assert res.exit_code == 2 and "Traceback" not in res.output  # a setting the run cannot honour: the recipe's fault
    assert "distill.alpha_attn: matches a spiking BERT student's attention maps" in res.stderr
    xsum = runner.invoke(app, ["distill", "--task", "xsum", "--model", str(tiny_dense_llama_dir), "--teacher",
                               str(tiny_dense_llama_dir), "-s", "distill.alpha_attn=1", "--out-dir", str(tmp_path / "y")])
    assert xsum.exit_code == 2 and "distill.alpha_attn: matches" in xsum.stderr, xsum.stderr
    res = runner.invoke(app, ["distill", *map(str, common), "--teacher", str(tiny_dense_bert_dir),
                              "-s", f"data.train_file={train}"])
    assert res.exit_code == 3 and "Traceback" not in res.output
    assert "needs a Llama-family causal LM as the teacher" in res.stderr


def test_collate_windows_labels_are_the_inputs():
    b = collate_windows([{"input_ids": [1, 5, 6]}, {"input_ids": [1, 7, 8]}])
    assert torch.equal(b["labels"], b["input_ids"]) and b["attention_mask"].sum() == 6


def test_causal_lm_refuses_training_calibration_examples(tiny_dense_llama_dir, texts, tmp_path):
    train, valid = texts
    res = runner.invoke(app, [str(a) for a in (
        "finetune", "--task", "wikitext2", "--model", tiny_dense_llama_dir, "--out-dir", tmp_path / "c",
        "-s", f"data.train_file={train}", "-s", f"data.validation_file={valid}", *TINY,
        "-s", "train.calibration_order=random")])
    assert res.exit_code == 2 and "calibration text" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "c").exists()  # refused before the run starts: nothing left behind
    for settings, message in ((["train.eval_strategy=steps", "train.eval_steps=2"], "no evaluation runs during it"),
                              (["train.keep_best=true"], "train.keep_best: needs evaluation"),
                              (["data.max_length=2"], "data.max_length is 2")):
        res = runner.invoke(app, [str(a) for a in (
            "finetune", "--task", "wikitext2", "--model", tiny_dense_llama_dir, "--out-dir", tmp_path / "c",
            "-s", f"data.train_file={train}", "-s", f"data.validation_file={valid}", *TINY,
            *(x for s in settings for x in ("-s", s)))])
        assert res.exit_code == 2 and message in res.stderr and not (tmp_path / "c").exists(), res.stderr


def test_a_wikitext2_run_replays_from_its_run_config(tiny_dense_llama_dir, texts, tmp_path):
    """run_config.yaml holds every setting, the unused evaluation defaults too: replaying it (as a
    sweep's points and `--resume auto` do) is not refused."""
    train, valid = texts
    res = runner.invoke(app, [str(a) for a in (
        "finetune", "--task", "wikitext2", "--model", tiny_dense_llama_dir, "--out-dir", tmp_path / "r",
        "-s", f"data.train_file={train}", "-s", f"data.validation_file={valid}", *TINY,
        "-s", "train.eval_strategy=epoch", "-s", "train.keep_best=true")])
    assert res.exit_code == 0, res.stderr
    assert "are not used" in res.stderr  # the evaluation defaults are named, not acted on
    res = runner.invoke(app, ["finetune", str(tmp_path / "r" / "run_config.yaml"), "--resume", "auto"])
    assert res.exit_code == 0, res.stderr
