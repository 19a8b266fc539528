"""The training commands through the CLI: tiny recipes end to end, and bad input -> message + exit code.

stdout carries results (tables or JSON), stderr progress and errors; no traceback ever reaches users.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import yaml
from typer.testing import CliRunner

from spikelm_cli.main import app
from spikelm_core.training.rundir import LOCK_NAME
from tests.training_fixtures import make_tiny_dense, tiny_dirs  # noqa: F401

runner = CliRunner()

TINY_SETS = ["data.max_length=16", "neuron.num_timesteps=3", "train.batch_size=5", "train.eval_batch_size=11"]


def _sets(*items):
    out = []
    for item in items:
        out += ["-s", item]
    return out


def _ft_args(dirs, out, *extra):
    return ["finetune", "recipes/tiny/finetune.yaml", "--out-dir", str(out), "--data-dir", str(dirs["glue"]),
            *_sets(f"model={dirs['dense']}", "data.source=glue/sst2", *TINY_SETS, *extra)]


def _ok(res):
    assert res.exit_code == 0, res.stderr
    assert "Traceback" not in res.stderr


def _fails(res, code, *needles):
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    assert res.stdout == ""
    assert res.stderr.startswith("error:") and "Traceback" not in res.stderr
    for n in needles:
        assert n in res.stderr, (n, res.stderr)


@pytest.mark.slow
def test_finetune_then_eval(tiny_dirs, tmp_path):
    res = runner.invoke(app, _ft_args(tiny_dirs, tmp_path / "ft"))
    _ok(res)
    assert "spikelm finetune" in res.stdout and "accuracy" in res.stdout
    assert "step 1/4 | loss" in res.stderr and "spike rate" in res.stderr and "ms/step" in res.stderr
    assert "step" not in res.stdout.split("steps")[0]  # progress stays off stdout

    final = tmp_path / "ft" / "final"
    res = runner.invoke(app, ["eval", str(final), "--task", "sst2", "--data-dir", str(tiny_dirs["glue"]), "--format", "json"])
    _ok(res)
    data = json.loads(res.stdout)
    assert data["task"] == "sst2" and set(data["metrics"]) == {"dev"} and data["examples"]["dev"] == 11
    assert set(data["layer_firing_rates"]) == {"layer.0", "layer.1"} and 0 < data["firing_rate"] < 1
    assert not data["converted"]
    # --data-dir given: the run's task, on that data; the info line does not claim the run's data
    assert "its data from the run's" not in res.stderr and "on the data of --data-dir" in res.stderr, res.stderr
    # without --task: the run's task, on the run's data
    res = runner.invoke(app, ["eval", str(final), "--format", "json"])
    _ok(res)
    assert json.loads(res.stdout)["metrics"] == data["metrics"] and "task sst2 and its data from the run's" in res.stderr
    res = runner.invoke(app, ["eval", "--model", str(final), "--format", "json"])  # however the model is named
    _ok(res)
    assert json.loads(res.stdout)["metrics"] == data["metrics"]
    res = runner.invoke(app, ["eval", str(final), "--task", "SST-2", "--format", "json"])  # naming the run's own task
    _ok(res)
    assert json.loads(res.stdout)["metrics"] == data["metrics"] and "task sst2 and its data from the run's" in res.stderr
    res = runner.invoke(app, ["eval", str(final), "--task", "rte", "--print-config"])  # another task: not the run's data
    assert res.exit_code == 0 and "from the run's" not in res.stderr and "rte" in res.stdout, res.output
    # ... but a task or data chosen with -s is the user's, not the run's
    res = runner.invoke(app, ["eval", str(final), "-s", "data.task=stsb", "-s", f"data.data_dir={tiny_dirs['glue']}"])
    assert res.exit_code == 3 and "1 output" in res.stderr and "from the run's" not in res.stderr, res.stderr

    res = runner.invoke(app, ["eval", "recipes/tiny/eval.yaml", *_sets(f"model={final}", "data.source=glue/sst2",
                                                                       f"data.data_dir={tiny_dirs['glue']}"),
                              "--out-dir", str(tmp_path / "ev")])
    _ok(res)
    assert "dev" in res.stdout and "firing rate" in res.stdout
    assert json.loads((tmp_path / "ev" / "eval_results.json").read_text())["metrics"]["dev"]["accuracy"] >= 0


@pytest.mark.slow
def test_a_convert_output_is_calibrated_again_on_the_task_a_trained_model_is_not(tiny_dirs, tmp_path):
    """`spikelm convert` calibrates on its calibration text; training from that checkpoint calibrates on
    the task's first batch (method doc, gotcha 3), and the trained model keeps its own amplitudes."""
    import torch
    from safetensors.torch import load_file

    conv = tmp_path / "conv"
    _ok(runner.invoke(app, ["convert", str(tiny_dirs["dense"]), "--out", str(conv), "--timesteps", "3"]))
    assert json.loads((conv / "config.json").read_text())["amplitudes_from"] == "spikelm convert"
    res = runner.invoke(app, [*_ft_args(tiny_dirs, tmp_path / "ft"), "-s", f"model={conv}", "--format", "json"])
    _ok(res)
    data = json.loads(res.stdout)
    assert data["calibrated"] and data["calibration"] == "the first training batch"
    assert "calibrated again on this run's data" in res.stderr
    assert "amplitudes_from" not in json.loads((tmp_path / "ft" / "final" / "config.json").read_text())
    before = {k: v for k, v in load_file(conv / "model.safetensors").items() if k.endswith(".alpha")}
    after = {k.removeprefix("bert."): v for k, v in load_file(tmp_path / "ft" / "final" / "model.safetensors").items()}
    assert before and any(not torch.equal(v, after[k]) for k, v in before.items())
    res = runner.invoke(app, [*_ft_args(tiny_dirs, tmp_path / "ft2"), "-s", f"model={tmp_path / 'ft' / 'final'}",
                              "--format", "json"])
    _ok(res)
    assert not json.loads(res.stdout)["calibrated"]


@pytest.mark.slow
def test_eval_in_bf16_repeats_a_bf16_runs_own_evaluation(tiny_dirs, tmp_path):
    """A `train.bf16` run evaluates under bfloat16 autocast: eval's `bf16` (and the run's batch size)
    gives its final dev numbers again; the float32 default scores the same weights otherwise."""
    args = _ft_args(tiny_dirs, tmp_path / "ft", "train.bf16=true")
    args[args.index("data.source=glue/sst2")] = "data.source=glue/stsb"  # Pearson: a continuous score
    _ok(runner.invoke(app, args))
    records = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    run_pearson = next(r["final_dev_pearson"] for r in records if "final_dev_pearson" in r)
    pearson = {}
    for bf16 in ("true", "false"):
        res = runner.invoke(app, ["eval", str(tmp_path / "ft" / "final"), "--task", "stsb", "--data-dir",
                                  str(tiny_dirs["glue"]), "--format", "json", *_sets(f"bf16={bf16}", "batch_size=11")])
        _ok(res)
        scored = json.loads(res.stdout)
        pearson[bf16] = scored["metrics"]["dev"]["pearson"]
        assert scored["precision"] == ("bf16" if bf16 == "true" else "float32")
    assert pearson["true"] == pytest.approx(run_pearson, rel=0, abs=1e-7)
    assert pearson["false"] != pytest.approx(run_pearson, rel=0, abs=1e-7)


@pytest.mark.slow
def test_finetune_task_flag_picks_the_paper_recipe_and_json(tiny_dirs, tmp_path):
    res = runner.invoke(app, ["finetune", "--task", "mnli", "--data-dir", str(tiny_dirs["glue"]), "--out-dir",
                              str(tmp_path / "mnli"), "--format", "json",
                              *_sets(f"model={tiny_dirs['dense']}", *TINY_SETS, "train.max_steps=2",
                                     "train.logging_steps=1")])
    _ok(res)
    data = json.loads(res.stdout)
    assert data["task"] == "mnli" and set(data["metrics"]) == {"dev_matched", "dev_mismatched"}
    assert data["precision"] == "float32"
    saved = (tmp_path / "mnli" / "run_config.yaml").read_text()
    assert "lr: 2.0e-05" in saved and "epochs: 5" in saved and "glue/mnli" in saved


@pytest.mark.slow
def test_mnli_mismatched_is_scored_by_the_last_evaluations_model_or_the_kept_one(tiny_dirs, tmp_path):
    """The released code scores MNLI-mismatched on the last epoch's model whichever epoch matched selects
    (train.mismatched_model 'last', the default); 'kept' scores it on the model final/ holds."""
    sets = [f"model={tiny_dirs['dense']}", *TINY_SETS, "train.max_steps=3", "train.eval_strategy=steps",
            "train.eval_steps=1", "train.save_steps=1", "train.keep_best=true", "train.lr=1e-3",
            "data.train_subset=15"]
    scores = {}
    for mode in ("last", "kept"):
        out = tmp_path / mode
        res = runner.invoke(app, ["finetune", "--task", "mnli", "--data-dir", str(tiny_dirs["glue"]), "--out-dir",
                                  str(out), "--format", "json", *_sets(*sets, f"train.mismatched_model={mode}")])
        _ok(res)
        data = json.loads(res.stdout)
        assert data["best_checkpoint"] != str(out / "checkpoint-3")  # keep_best kept an earlier model
        scores[mode] = data["metrics"]["dev_mismatched"]
        logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
                  if "final_dev_mismatched_loss" in x]
        # 'last': scored once, inside the last evaluation (step 3), before the best came back; 'kept': after
        assert len(logged) == 1 and logged[0]["step"] == 3
        assert logged[0]["final_dev_mismatched_loss"] == pytest.approx(scores[mode]["loss"])
        if mode == "last":  # resumed from its last step's checkpoint: the score that evaluation logged
            res = runner.invoke(app, ["finetune", "--task", "mnli", "--data-dir", str(tiny_dirs["glue"]), "--out-dir",
                                      str(out), "--format", "json", "--resume", "auto",
                                      *_sets(*sets, f"train.mismatched_model={mode}")])
            _ok(res)
            assert json.loads(res.stdout)["metrics"]["dev_mismatched"] == pytest.approx(scores[mode])
            assert "scored on the kept model" not in res.stderr
        res = runner.invoke(app, ["eval", str(out / "final"), "--task", "mnli", "--data-dir", str(tiny_dirs["glue"]),
                                  "--format", "json", "-s", "batch_size=11"])
        _ok(res)
        scores[f"{mode} final/"] = json.loads(res.stdout)["metrics"]["dev_mismatched"]
    # the same run twice (one seed): the last step's model and the kept (earlier) one score apart
    assert scores["last"]["loss"] != pytest.approx(scores["kept"]["loss"], rel=1e-6)
    assert scores["kept"]["accuracy"] == scores["kept final/"]["accuracy"]  # final/ holds the kept model


@pytest.mark.slow
def test_distill_tiny_recipe(tiny_dirs, tmp_path):
    res = runner.invoke(app, ["distill", "recipes/tiny/distill.yaml", "--teacher", str(tiny_dirs["teacher"]),
                              "--data-dir", str(tiny_dirs["glue"]), "--out-dir", str(tmp_path / "d"),
                              *_sets("data.source=glue/sst2", *TINY_SETS)])
    _ok(res)
    assert "spikelm distill" in res.stdout
    # the recipe's student is its teacher's twin (model = distill.teacher): --teacher set both
    saved = yaml.safe_load((tmp_path / "d" / "run_config.yaml").read_text())
    assert saved["model"] == saved["distill"]["teacher"] == str(tiny_dirs["teacher"])
    assert "(ce " in res.stderr and "kd " in res.stderr and "hidden " in res.stderr and "attn " in res.stderr
    logs = [json.loads(x) for x in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert all(k in logs[0] for k in ("loss_ce", "loss_kd", "loss_hidden", "loss_attn"))


def _tiny_distill_logs(dirs, tmp_path, checkpointing: bool, *extra):
    """The tiny distillation with `train.activation_checkpointing` on or off: (its out-dir, its per-step loss logs)."""
    out = tmp_path / f"d{checkpointing}"
    res = runner.invoke(app, ["distill", "recipes/tiny/distill.yaml", "--teacher", str(dirs["teacher"]),
                              "--data-dir", str(dirs["glue"]), "--out-dir", str(out),
                              *_sets("data.source=glue/sst2", *TINY_SETS, "train.logging_steps=1", *extra,
                                     f"train.activation_checkpointing={str(checkpointing).lower()}")])
    _ok(res)
    logs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return out, [r for r in logs if "loss" in r and "step" in r]


def test_activation_checkpointing_trains_the_same_run(tiny_dirs, tmp_path, monkeypatch):
    """`train.activation_checkpointing` recomputes each spiking layer in the backward: the same losses, step
    by step (the first, calibrating step runs plainly); refused beside a firing-rate target."""
    import torch.utils.checkpoint

    calls, real = [], torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    losses = []
    for on in (False, True):
        out, logs = _tiny_distill_logs(tiny_dirs, tmp_path, on)
        losses.append([(r["step"], r["loss"], r["firing_rate"]) for r in logs])
        assert yaml.safe_load((out / "run_config.yaml").read_text())["train"]["activation_checkpointing"] is on
        assert bool(calls) is on  # the student's layers (2) recomputed on every step after the first
    assert len(losses[0]) >= 3
    for (step, a, rate_a), (step_b, b, rate_b) in zip(*losses, strict=True):
        assert step == step_b and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), (step, a, b)
        # the logged rate counts each forward once, pads excluded: the recomputation (whose masks are gone) is not counted
        assert math.isclose(rate_a, rate_b, rel_tol=1e-6), (step, rate_a, rate_b)
    res = runner.invoke(app, ["distill", "recipes/tiny/distill.yaml", "--teacher", str(tiny_dirs["teacher"]),
                              "--print-config", *_sets("train.activation_checkpointing=true",
                                                       "train.target_firing_rate=0.2")])
    _fails(res, 2, "train.activation_checkpointing", "target_firing_rate")


@pytest.mark.parametrize("scoped", [("distill.spike_drop=0.5", "distill.spike_drop_steps=4"),
                                    ("distill.hidden_stage_steps=3", "distill.hidden_stage_local=true")],
                         ids=["spike_drop", "hidden_stage_local"])
def test_activation_checkpointing_recomputes_under_the_students_scope(tiny_dirs, tmp_path, scoped):
    """Spike drop and layer-local gradients act on the student's forward; activation checkpointing runs that
    forward again in the backward, which must see them too (torch refused the recomputation: a traceback)."""
    losses = [[(r["step"], r["loss"]) for r in _tiny_distill_logs(tiny_dirs, tmp_path, on, *scoped)[1]]
              for on in (False, True)]
    assert len(losses[0]) >= 3
    for (step, a), (step_b, b) in zip(*losses, strict=True):
        assert step == step_b and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), (step, a, b)


@pytest.mark.slow
@pytest.mark.parametrize("nsp", [True, False], ids=["mlm+nsp-from-scratch", "mlm-from-dense+kd"])
def test_pretrain_tiny_recipe(tiny_dirs, tmp_path, nsp):
    sets = [f"tokenizer={tiny_dirs['dense']}", f"data.source={tiny_dirs['corpus']}", "data.max_length=16",
            f"data.validation_file={tiny_dirs['corpus']}", "neuron.num_timesteps=3", "train.batch_size=5"]
    if not nsp:
        sets += ["mlm.nsp=false", f"model={tiny_dirs['dense']}", f"distill.teacher={tiny_dirs['mlm_teacher']}",
                 "distill.alpha_ce=1.0", "distill.alpha_hidden=1.0"]
    res = runner.invoke(app, ["pretrain", "recipes/tiny/pretrain.yaml", "--out-dir", str(tmp_path / "p"),
                              "--format", "json", *_sets(*sets)])
    _ok(res)
    data = json.loads(res.stdout)
    assert data["global_step"] == 4 and data["train_loss"] is not None and data["calibrated"]
    assert data["calibration"] == "the first training batch"
    held_out = data["metrics"]["validation"]  # the recipe's eval_subset: 16 sequences, scored after training
    assert data["primary_metric"] == "mlm_accuracy" and held_out["sequences"] == 16 and held_out["masked_tokens"] > 0
    assert held_out["mlm_perplexity"] == pytest.approx(math.exp(held_out["mlm_loss"]))
    assert ("nsp_accuracy" in held_out) == nsp and "over the 16 held-out sequences" in data["firing_rate_mean"]
    final = [json.loads(x) for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines() if "final_" in x]
    assert final[-1]["final_validation_mlm_accuracy"] == held_out["mlm_accuracy"]
    assert final[-1]["epoch"] == pytest.approx(data["epochs"])  # every record has step and epoch
    # eval of the saved model on the same text: the run's held-out scores again (its length, masking,
    # NSP and, on its held-out file, the number of sequences it scored taken from the run)
    res = runner.invoke(app, ["eval", str(tmp_path / "p" / "final"), "--task", "wikitext2", "--data-dir",
                              str(tiny_dirs["corpus"]), "--format", "json"])
    _ok(res)
    again = json.loads(res.stdout)
    assert again["metrics"]["test"] == pytest.approx(held_out, rel=1e-6)
    assert again["firing_rate"] == pytest.approx(data["firing_rate"], rel=1e-6)
    assert "data.max_length 16" in res.stderr and ("mlm.nsp True" in res.stderr) == nsp
    assert "data.eval_subset 16" in res.stderr
    # without --task: the run's own held-out text, scored as the run scored it
    res = runner.invoke(app, ["eval", str(tmp_path / "p" / "final"), "--format", "json"])
    _ok(res)
    assert json.loads(res.stdout)["metrics"]["test"] == pytest.approx(held_out, rel=1e-6)
    assert "a masked-LM run: scored on its held-out text" in res.stderr
    cfg = json.loads((tmp_path / "p" / "final" / "config.json").read_text())
    assert cfg["architectures"] == ["SpikingBertForPreTraining" if nsp else "SpikingBertForMaskedLM"]
    lrs = [json.loads(x)["learning_rate"] for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()
           if "learning_rate" in x]
    # the lr each step used: warmup over 2 steps, then linear decay over a 20-step horizon (not the 4 run)
    assert lrs == pytest.approx([0.0, 1e-4, 2e-4, 2e-4 * 17 / 18])


def test_held_out_text_without_a_mask_is_refused_before_training_and_may_change_on_resume(tiny_dirs, tmp_path):
    word = tmp_path / "word.txt"
    word.write_text("the\n")
    sets = [f"tokenizer={tiny_dirs['dense']}", f"data.source={tiny_dirs['corpus']}", "data.max_length=16",
            "neuron.num_timesteps=2", "train.batch_size=5", "train.max_steps=2", "train.save_steps=1", "mlm.nsp=false",
            "mlm.mlm_probability=0.01"]
    out = tmp_path / "p"
    res = runner.invoke(app, ["pretrain", "recipes/tiny/pretrain.yaml", "--out-dir", str(out), "--held-out", str(word),
                              *_sets(*sets)])
    assert res.exit_code == 4 and "Traceback" not in res.stderr, res.stderr
    assert "no token of the held-out text was masked" in res.stderr and "-s data.validation_file=null" in res.stderr
    assert not list(out.glob("checkpoint-*")) and not (out / "final").exists()  # nothing trained
    # the held-out text is read once, after training: a resumed masked-LM run may change it, a GLUE run not
    from spikelm_core.config import FinetuneConfig, PretrainConfig, config_from_dict
    from spikelm_core.training.rundir import changed_settings, resume_may_change

    def two(cls, data, **changed):
        return (config_from_dict(cls, data),
                config_from_dict(cls, {**data, "data": {**data["data"], **changed}}))

    pretrain = {"command": "pretrain", "data": {"source": str(tiny_dirs["corpus"]), "validation_file": "a.txt"}}
    old, new = two(PretrainConfig, pretrain, validation_file=None, eval_subset=5)
    assert changed_settings(old, new, resume_may_change(new)) == []
    # a sweep's finished point is another matter: its table compares held-out scores
    assert [k for k, _, _ in changed_settings(old, new)] == ["data.eval_subset", "data.validation_file"]
    finetune = {"command": "finetune", "model": "m", "data": {"task": "sst2"}}
    assert [k for k, _, _ in changed_settings(*two(FinetuneConfig, finetune, eval_subset=5))] == ["data.eval_subset"]


def test_pretraining_text_problems_are_named_together_and_early(tiny_dirs, tmp_path):
    res = runner.invoke(app, ["pretrain", "recipes/tiny/pretrain.yaml", "--out-dir", str(tmp_path / "p"),
                              "--text", str(tmp_path / "none.txt"), "--held-out", str(tmp_path / "gone.txt"),
                              *_sets(f"tokenizer={tiny_dirs['dense']}")])
    _fails(res, 4, "the text files do not exist", "none.txt' (data.source)", "gone.txt' (data.validation_file)")
    res = runner.invoke(app, ["pretrain", "recipes/tiny/pretrain.yaml", "--out-dir", str(tmp_path / "p"),
                              *_sets(f"tokenizer={tiny_dirs['dense']}", "data.max_length=4")])
    _fails(res, 2, "data.max_length: must be at least 5 for masked-LM sequences with next-sentence prediction")


def test_a_blank_held_out_text_is_refused_before_the_corpus_is_tokenised(tiny_dirs, tmp_path, monkeypatch):
    from spikelm_core.training import mlm

    def tokenised(*args, **kwargs):
        raise AssertionError("the training corpus was tokenised before the held-out text was checked")

    monkeypatch.setattr(mlm, "mlm_dataset", tokenised)
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n")
    res = runner.invoke(app, ["pretrain", "recipes/tiny/pretrain.yaml", "--out-dir", str(tmp_path / "p"),
                              "--held-out", str(blank), *_sets(f"tokenizer={tiny_dirs['dense']}",
                                                              f"data.source={tiny_dirs['corpus']}")])
    assert res.exit_code == 4 and "held-out text (data.validation_file, --held-out): the text corpus" in res.stderr


def test_a_run_held_out_on_a_folder_is_scored_again_on_it_whatever_its_layout(tiny_dirs, tmp_path):
    """pretrain --held-out FOLDER reads every .txt file in it; eval without --task reads it so too, even
    laid out as wikitext-2 splits (where --task wikitext2 --data-dir reads the split's file alone)."""
    folder = tmp_path / "held" / "wikitext-2"
    folder.mkdir(parents=True)
    docs = [d for d in tiny_dirs["corpus"].read_text().split("\n\n") if d.strip()]
    (folder / "test.txt").write_text("\n\n".join(docs[: len(docs) // 2]))
    (folder / "valid.txt").write_text("\n\n".join(docs[len(docs) // 2:]))
    sets = [f"tokenizer={tiny_dirs['dense']}", f"data.source={tiny_dirs['corpus']}", "data.max_length=16",
            "neuron.num_timesteps=2", "train.batch_size=5", "train.max_steps=1", "mlm.nsp=false",
            "data.eval_subset=null"]
    out = tmp_path / "p"
    res = runner.invoke(app, ["pretrain", "recipes/tiny/pretrain.yaml", "--out-dir", str(out), "--held-out",
                              str(tmp_path / "held"), "--format", "json", *_sets(*sets)])
    _ok(res)
    held_out = json.loads(res.stdout)["metrics"]["validation"]
    res = runner.invoke(app, ["eval", str(out / "final"), "--format", "json"])
    _ok(res)
    assert json.loads(res.stdout)["metrics"]["test"] == pytest.approx(held_out, rel=1e-6)
    # a wikitext-2 layout without the split asked for: refused, not read whole
    (folder / "test.txt").unlink()
    res = runner.invoke(app, ["eval", str(tiny_dirs["mlm_teacher"]), "--task", "wikitext2", "--data-dir",
                              str(tmp_path / "held"), "-s", "data.max_length=16"])
    assert res.exit_code == 4 and "no test text in" in res.stderr, res.stderr


def test_a_schedule_that_ends_before_the_run_is_warned_of(tiny_dirs, tmp_path):
    sets = [f"tokenizer={tiny_dirs['dense']}", f"data.source={tiny_dirs['corpus']}", "data.max_length=16",
            "data.validation_file=null", "neuron.num_timesteps=2", "train.batch_size=5", "train.warmup_steps=0",
            "train.schedule_steps=2", "train.max_steps=3", "mlm.nsp=false"]
    res = runner.invoke(app, ["pretrain", "recipes/tiny/pretrain.yaml", "--out-dir", str(tmp_path / "p"), *_sets(*sets)])
    _ok(res)
    assert "train.schedule_steps 2 ends the linear schedule before the run's 3 steps: its last 1 step(s) train at learning rate 0" in res.stderr
    lrs = [json.loads(x)["learning_rate"] for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()
           if "learning_rate" in x]
    assert lrs[-1] == 0.0


# -- bad input ---------------------------------------------------------------------------------

def test_unknown_task_lists_valid_ones():
    res = runner.invoke(app, ["finetune", "--task", "sst3"])
    _fails(res, 2, "unknown task 'sst3'", "did you mean 'sst2'", "cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, xsum, cnn_dm")


def test_no_recipe_and_no_task():
    _fails(runner.invoke(app, ["finetune"]), 2, "--task")


def test_data_dir_without_expected_file(tiny_dirs, tmp_path):
    glue = tmp_path / "glue"
    (glue / "SST-2").mkdir(parents=True)
    (glue / "SST-2" / "train.tsv").write_text("sentence\tlabel\nthe river\t1\n")
    res = runner.invoke(app, ["finetune", "recipes/tiny/finetune.yaml", "--data-dir", str(glue), "--out-dir",
                              str(tmp_path / "o"), *_sets(f"model={tiny_dirs['dense']}", "data.source=glue/sst2")])
    _fails(res, 4, "dev.tsv", "SST-2/{train.tsv,dev.tsv}")


def test_malformed_yaml_names_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: finetune\nmodel: minilm\ntrain: {lr: 2e-5\n")
    res = runner.invoke(app, ["finetune", str(bad)])
    _fails(res, 2, "line")
    assert "column" in res.stderr


def test_unknown_key_did_you_mean():
    res = runner.invoke(app, ["finetune", "recipes/tiny/finetune.yaml", "-s", "train.learning_rate=1e-4"])
    _fails(res, 2, "train.learning_rate", "did you mean 'train.lr'")


def test_set_without_equals():
    _fails(runner.invoke(app, ["finetune", "recipes/tiny/finetune.yaml", "-s", "train.lr"]), 2, "train.lr")


def test_recipe_for_another_command():
    _fails(runner.invoke(app, ["finetune", "recipes/tiny/pretrain.yaml"]), 2, "pretrain")


def test_output_directory_in_use(tiny_dirs, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{os.getppid()}\n")
    _fails(runner.invoke(app, _ft_args(tiny_dirs, out)), 2, "in use by another run", f"pid {os.getppid()}")


def test_cuda_unavailable(tiny_dirs, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the no-CUDA error")
    _fails(runner.invoke(app, _ft_args(tiny_dirs, tmp_path / "o", "train.device=cuda")), 2, "no CUDA device",
           "train.device=cpu")


@pytest.mark.parametrize("kind", ["labels", "vocab", "no-head"])
def test_teacher_mismatch(tiny_dirs, tmp_path, kind):
    if kind == "labels":
        teacher = make_tiny_dense(tmp_path / "t", "cls", num_labels=3)
        needle = "labels: teacher 3, task 2"
    elif kind == "vocab":
        teacher = make_tiny_dense(tmp_path / "t", "cls", vocab_size=120)
        needle = "vocabulary: teacher 120 tokens, student 99"
    else:
        teacher = tiny_dirs["dense"]
        needle = "no sequence-classification head"
    res = runner.invoke(app, ["distill", "recipes/tiny/distill.yaml", "--teacher", str(teacher), "--data-dir",
                              str(tiny_dirs["glue"]), "--out-dir", str(tmp_path / "d"),
                              *_sets(f"model={tiny_dirs['dense']}", "data.source=glue/sst2", *TINY_SETS)])
    _fails(res, 3, needle)


def test_eval_label_count_mismatch_and_missing_checkpoint(tiny_dirs, tmp_path):
    _fails(runner.invoke(app, ["eval", str(tmp_path / "nope"), "--task", "sst2"]), 3, "does not exist")


def test_pretrain_missing_corpus(tmp_path):
    res = runner.invoke(app, ["pretrain", "recipes/tiny/pretrain.yaml", "-s", f"data.source={tmp_path}/none.txt",
                              "--out-dir", str(tmp_path / "p")])
    _fails(res, 4, "none.txt", "does not exist")


def test_progress_bar_on_a_terminal_and_plain_lines_otherwise(monkeypatch):
    import io

    from rich.console import Console
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from spikelm_cli import render

    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    state = TrainerState(max_steps=10, global_step=0)
    logs = {"loss": 0.5, "loss_ce": 0.4, "loss_kd": 0.1, "learning_rate": 2e-5, "firing_rate": 0.137}
    for terminal in (True, False):
        buf = io.StringIO()
        monkeypatch.setattr(render, "err", Console(file=buf, force_terminal=terminal, width=200, highlight=False))
        cb = render.progress_callback()
        cb.on_train_begin(args, state, TrainerControl())
        state.global_step = 2
        cb.on_step_end(args, state, TrainerControl())
        cb.on_log(args, state, TrainerControl(), logs=dict(logs))
        cb.on_log(args, state, TrainerControl(), logs={"eval_accuracy": 0.75, "eval_runtime": 1.0})
        cb.on_train_end(args, state, TrainerControl())
        text = buf.getvalue()
        assert "loss 0.500 (ce 0.400, kd 0.100)" in text and "spike rate 0.137" in text and "ms/step" in text
        assert "eval step 2 | accuracy 0.7500" in text and "runtime" not in text
        assert ("━" in text) == terminal  # a bar only on a terminal
        assert text.count("step 2/10 |") == (0 if terminal else 1)
        state.global_step = 0


def test_run_summary_shows_the_firing_target_beside_the_reached_rates(monkeypatch):
    import io

    from rich.console import Console

    from spikelm_cli import render
    from spikelm_core.training import RunResult

    buf = io.StringIO()
    monkeypatch.setattr(render, "out", Console(file=buf, width=200, highlight=False))
    result = RunResult(command="finetune", out_dir="o", final_dir="o/final", task="sst2", global_step=4, epochs=1.0,
                       train_loss=0.5, firing_rate=0.2, firing_rate_mean="mean over neurons",
                       layer_firing_rates={"layer.0": 0.25, "layer.1": 0.15}, target_firing_rate=0.2)
    render.training_result(result, "text")
    text = buf.getvalue()
    assert "0.250 0.150" in text and "target rate" in text and "0.200 per layer" in text
    # a resumed run whose checkpoint the Trainer has since deleted (save_total_limit): the step it resumed at
    # travels in the result, nothing is read back
    result.resumed_from, result.resumed_at_step = "o/checkpoint-2", 2
    render.training_result(result, "text")
    assert "mean of steps 3-4, this call" in buf.getvalue()
    # under torchrun the main process alone prints it
    monkeypatch.setenv("RANK", "1")
    before = buf.getvalue()
    render.training_result(result, "text")
    assert buf.getvalue() == before


def test_missing_metric_sink_is_a_config_error(tiny_dirs, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        pytest.skip("tensorboard is installed")
    _fails(runner.invoke(app, _ft_args(tiny_dirs, tmp_path / "o", "train.report_to=[tensorboard]")), 2,
           "tensorboard", "metrics.jsonl")


@pytest.mark.slow
def test_dense_teacher_finetune_then_distill_on_text(tiny_dirs, tmp_path):
    res = runner.invoke(app, _ft_args(tiny_dirs, tmp_path / "teacher", "neuron.kind=dense", "train.max_steps=2",
                                      f"model={tiny_dirs['teacher']}") + ["--format", "json"])
    _ok(res)
    data = json.loads(res.stdout)
    assert data["firing_rate"] is None and not data["calibrated"]
    assert json.loads((tmp_path / "teacher" / "final" / "config.json").read_text())["model_type"] == "bert"
    res = runner.invoke(app, ["eval", str(tmp_path / "teacher" / "final"), "--task", "sst2", "--data-dir",
                              str(tiny_dirs["glue"]), "-s", "neuron.kind=dense", "--format", "json"])
    _ok(res)
    data = json.loads(res.stdout)
    assert data["firing_rate"] is None and 0 <= data["metrics"]["dev"]["accuracy"] <= 1
    _fails(runner.invoke(app, ["pretrain", "recipes/tiny/pretrain.yaml", "-s", "neuron.kind=dense"]), 2,
           "neuron.kind", "'dense'")
    # masked-LM distillation on text with `spikelm distill` (no GLUE task)
    res = runner.invoke(app, ["distill", "recipes/tiny/distill.yaml", "--out-dir", str(tmp_path / "mlm"),
                              "--teacher", str(tiny_dirs["mlm_teacher"]), "--format", "json",
                              *_sets(f"model={tiny_dirs['dense']}", f"data.source={tiny_dirs['corpus']}",
                                     "data.max_length=16", "neuron.num_timesteps=3", "train.batch_size=5",
                                     "train.eval_strategy=no", "train.keep_best=false")])
    _ok(res)
    data = json.loads(res.stdout)
    assert data["task"] is None and data["global_step"] == 4


def test_a_missing_teacher_is_named_and_the_refused_run_leaves_no_folders(tiny_dirs, tmp_path):
    out = tmp_path / "new" / "deeper" / "d"
    res = runner.invoke(app, ["distill", "recipes/tiny/distill.yaml", "--teacher", str(tmp_path / "no-teacher"),
                              "--data-dir", str(tiny_dirs["glue"]), "--out-dir", str(out),
                              *_sets(f"model={tiny_dirs['dense']}", "data.source=glue/sst2", *TINY_SETS)])
    _fails(res, 3, "the teacher: model directory")
    assert not (tmp_path / "new").exists()


def test_eval_result_printed_by_the_main_process_alone(monkeypatch):
    """Under torchrun every rank returns the same EvalResult; only rank 0 prints it (a second copy of the
    JSON would make `--format json` output unparsable)."""
    import io

    from rich.console import Console

    from spikelm_cli import render
    from spikelm_core.training.results import EvalResult

    buf = io.StringIO()
    monkeypatch.setattr(render, "out", Console(file=buf, width=200))
    result = EvalResult(model="m", task="stsb", metrics={"dev": {"pearson": 0.5, "spearmanr": 0.4}},
                        examples={"dev": 3}, primary_metric="pearson")
    render.eval_result(result, "json")
    assert buf.getvalue().count('"schema"') == 1
    monkeypatch.setenv("RANK", "1")
    before = buf.getvalue()
    render.eval_result(result, "json")
    render.eval_result(result, "text")
    assert buf.getvalue() == before
