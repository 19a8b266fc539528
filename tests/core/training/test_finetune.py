"""run_finetune end to end on tiny models: outputs, determinism, resume equivalence, faults."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from spikelm_core.config import FinetuneConfig, load_config
from spikelm_core.errors import CheckpointError, ConfigError, SpikelmError
from spikelm_core.training import run_finetune
from spikelm_core.training.rundir import LOCK_NAME
from tests.training_fixtures import finetune_overrides, tiny_dirs  # noqa: F401

pytestmark = pytest.mark.slow

RECIPE = "recipes/tiny/finetune.yaml"


def _cfg(dirs, out, *extra):
    return load_config(FinetuneConfig, RECIPE, finetune_overrides(dirs, *extra), out_dir=str(out))


def _losses(path):
    return [json.loads(line)["loss"] for line in path.read_text().splitlines() if '"loss"' in line]


def test_finetune_writes_run_directory(tiny_dirs, tmp_path):
    r = run_finetune(_cfg(tiny_dirs, tmp_path / "run"))
    out = tmp_path / "run"
    assert (out / "run_config.yaml").is_file() and (out / "metrics.jsonl").is_file()
    assert (out / "final" / "model.safetensors").is_file() and (out / "final" / "config.json").is_file()
    assert (out / "final" / "tokenizer_config.json").is_file()
    assert (out / "checkpoint-2").is_dir() and (out / "checkpoint-4").is_dir()
    # each checkpoint records the precision its steps computed in (a resume elsewhere compares it)
    assert json.loads((out / "checkpoint-2" / "spikelm_precision.json").read_text()) == {"precision": r.precision}
    assert not (out / LOCK_NAME).exists()
    assert r.global_step == 4 and r.calibrated and r.task == "sst2"
    assert set(r.metrics) == {"dev"} and 0.0 <= r.metrics["dev"]["accuracy"] <= 1.0
    assert r.best_checkpoint is not None and 0.0 < r.firing_rate < 1.0
    assert set(r.layer_firing_rates) == {"layer.0", "layer.1"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_logs = [x for x in records if "loss" in x]
    assert [x["step"] for x in train_logs] == [1, 2, 3, 4]
    assert all("firing_rate" in x and "learning_rate" in x for x in train_logs)
    assert any("eval_accuracy" in x for x in records)
    # the resolved config replays the run
    assert load_config(FinetuneConfig, out / "run_config.yaml", []) == _cfg(tiny_dirs, tmp_path / "run")
    # the saved model is calibrated and reloads as a spiking classifier
    from transformers import AutoModelForSequenceClassification

    import spikelm_core  # noqa: F401  (Auto registration)
    from spikelm_core.calibration import is_calibrated

    m = AutoModelForSequenceClassification.from_pretrained(out / "final")
    assert is_calibrated(m) and m.config.num_labels == 2


def test_same_seed_gives_identical_metrics_jsonl(tiny_dirs, tmp_path):
    for name in ("a", "b"):
        run_finetune(_cfg(tiny_dirs, tmp_path / name, "train.eval_strategy=no", "train.keep_best=false"))
    a, b = (tmp_path / "a" / "metrics.jsonl").read_text(), (tmp_path / "b" / "metrics.jsonl").read_text()
    assert a == b and len(_losses(tmp_path / "a" / "metrics.jsonl")) == 4


class _Kill(Exception):
    pass


class _KillAfter(TrainerCallback):
    """Stands in for SIGKILL: the process dies after `step`, past the last checkpoint."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Kill()


def test_resume_gives_identical_final_weights(tiny_dirs, tmp_path):
    extra = ("train.max_steps=6", "train.save_steps=3", "train.eval_strategy=no", "train.keep_best=false")
    run_finetune(_cfg(tiny_dirs, tmp_path / "full", *extra))
    with pytest.raises(_Kill):
        run_finetune(_cfg(tiny_dirs, tmp_path / "cut", *extra), callbacks=[_KillAfter(4)])
    assert (tmp_path / "cut" / "checkpoint-3").is_dir() and not (tmp_path / "cut" / "final").exists()
    r = run_finetune(_cfg(tiny_dirs, tmp_path / "cut", *extra), resume="auto")
    assert r.resumed_from.endswith("checkpoint-3") and r.global_step == 6
    records = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    (mean,) = [x for x in records if "train_loss" in x]
    assert mean["train_loss_from_step"] == 4  # the resumed call's mean says which steps it covers
    full = load_file(tmp_path / "full" / "final" / "model.safetensors")
    cut = load_file(tmp_path / "cut" / "final" / "model.safetensors")
    assert full.keys() == cut.keys()
    for k in full:
        torch.testing.assert_close(cut[k], full[k], rtol=0, atol=0, msg=k)
    assert _losses(tmp_path / "cut" / "metrics.jsonl") == _losses(tmp_path / "full" / "metrics.jsonl")


def test_compile_auto_weighs_the_steps_a_resumed_run_has_left(tiny_dirs, tmp_path, monkeypatch):
    """`compile: auto` compiles for the steps this call trains: a run resumed near its end is not
    charged a compile for the steps it already took."""
    from spikelm_core.training import pipeline

    asked = []
    real = pipeline.compile_if_asked

    def record(model, mode, *, work=0, **kwargs):
        asked.append((mode, work))
        return real(model, mode, work=work, **kwargs)

    monkeypatch.setattr(pipeline, "compile_if_asked", record)
    extra = ("train.max_steps=6", "train.save_steps=3", "train.eval_strategy=no", "train.keep_best=false",
             "train.compile=auto")
    with pytest.raises(_Kill):
        run_finetune(_cfg(tiny_dirs, tmp_path / "cut", *extra), callbacks=[_KillAfter(4)])
    run_finetune(_cfg(tiny_dirs, tmp_path / "cut", *extra), resume="auto")
    assert asked == [("auto", 6), ("auto", 3)]  # resumed from checkpoint-3: 3 steps left


@pytest.mark.parametrize("extra", [("train.keep_best=false",), ("train.eval_steps=3", "train.weight_average=0.9")])
def test_resuming_from_the_last_steps_checkpoint_takes_no_step(tiny_dirs, tmp_path, extra):
    """Killed after its last checkpoint but before final/ (or --resume auto on a finished run): the
    run ends as it did, with no extra step (the Trainer alone would take one) and the same weights,
    the best checkpoint's average where it keeps one."""
    import shutil

    extra = ("train.max_steps=6", "train.save_steps=3", *extra)  # 5 steps an epoch: the end is mid-epoch
    first = run_finetune(_cfg(tiny_dirs, tmp_path / "run", *extra))
    done = load_file(tmp_path / "run" / "final" / "model.safetensors")
    shutil.rmtree(tmp_path / "run" / "final")
    r = run_finetune(_cfg(tiny_dirs, tmp_path / "run", *extra), resume="auto")
    assert r.resumed_from.endswith("checkpoint-6") and r.global_step == 6 and r.train_loss is None
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["train_loss"] for x in records if "train_loss" in x] == [first.train_loss]  # no 0.0 for no step
    assert all(set(x) - {"step", "epoch"} for x in records)  # no empty record
    assert len([x for x in records if any(k.startswith("final_") for k in x)]) <= 1  # final scores once
    assert not (tmp_path / "run" / "checkpoint-7").exists()
    assert r.metrics == first.metrics
    again = load_file(tmp_path / "run" / "final" / "model.safetensors")
    for k in done:
        torch.testing.assert_close(again[k], done[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("failure", ["kill", "disk full"])
def test_a_save_cut_short_is_skipped_and_resume_gives_identical_weights(tiny_dirs, tmp_path, monkeypatch, failure):
    """A kill (or a full disk) while checkpoint-6 is being written leaves its weights but not its
    optimizer or trainer state; --resume auto skips it, continues from checkpoint-3 and ends with the
    weights of an uninterrupted run."""
    import errno

    from spikelm_core.training.trainers import SpikelmTrainer

    extra = ("train.max_steps=9", "train.save_steps=3", "train.eval_strategy=no", "train.keep_best=false")
    run_finetune(_cfg(tiny_dirs, tmp_path / "full", *extra))
    original = SpikelmTrainer._save_optimizer_and_scheduler

    def cut_short(self, output_dir):
        if output_dir.endswith("checkpoint-6"):
            raise _Kill() if failure == "kill" else OSError(errno.ENOSPC, "No space left on device", output_dir)
        return original(self, output_dir)

    monkeypatch.setattr(SpikelmTrainer, "_save_optimizer_and_scheduler", cut_short)
    with pytest.raises((_Kill, OSError)):
        run_finetune(_cfg(tiny_dirs, tmp_path / "cut", *extra))
    monkeypatch.setattr(SpikelmTrainer, "_save_optimizer_and_scheduler", original)
    half = tmp_path / "cut" / "checkpoint-6"
    assert (half / "model.safetensors").is_file() and not (half / "trainer_state.json").exists()
    r = run_finetune(_cfg(tiny_dirs, tmp_path / "cut", *extra), resume="auto")
    assert r.resumed_from.endswith("checkpoint-3") and r.global_step == 9
    full = load_file(tmp_path / "full" / "final" / "model.safetensors")
    cut = load_file(tmp_path / "cut" / "final" / "model.safetensors")
    for k in full:
        torch.testing.assert_close(cut[k], full[k], rtol=0, atol=0, msg=k)


def test_a_moved_or_copied_run_resumes_with_its_own_best_checkpoint(tiny_dirs, tmp_path):
    """trainer_state.json records the best checkpoint by its absolute path: a run moved (or copied) and
    resumed at its last checkpoint (killed before final/) kept (copied) the old folder's best weights or
    (moved) none, and ended with other weights than it did."""
    import shutil

    extra = ("train.max_steps=4", "train.eval_steps=1", "train.save_steps=4", "train.lr=5e-3")
    first = run_finetune(_cfg(tiny_dirs, tmp_path / "run", *extra))
    assert first.best_checkpoint is not None
    mask = os.umask(0)
    os.umask(mask)  # the checkpoint's weights take the usual modes (safetensors writes them 0600)
    assert os.stat(os.path.join(first.best_checkpoint, "model.safetensors")).st_mode & 0o777 == 0o666 & ~mask
    done = load_file(tmp_path / "run" / "final" / "model.safetensors")
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    shutil.move(tmp_path / "run", tmp_path / "moved")
    for name in ("moved", "copy"):
        shutil.rmtree(tmp_path / name / "final")
        r = run_finetune(_cfg(tiny_dirs, tmp_path / name, *extra), resume="auto")
        assert r.best_checkpoint == str(tmp_path / name / os.path.basename(first.best_checkpoint)), name
        assert r.metrics["dev"] == first.metrics["dev"], name
        again = load_file(tmp_path / name / "final" / "model.safetensors")
        for k in done:
            torch.testing.assert_close(again[k], done[k], rtol=0, atol=0, msg=f"{name}: {k}")


def test_resume_auto_without_checkpoint_starts_fresh(tiny_dirs, tmp_path, caplog):
    with caplog.at_level("INFO", logger="spikelm"):
        r = run_finetune(_cfg(tiny_dirs, tmp_path / "run", "train.max_steps=1", "train.eval_strategy=no",
                              "train.keep_best=false"), resume="auto")
    assert r.resumed_from is None and "starting fresh" in caplog.text


def test_never_refuses_a_directory_with_checkpoints_and_resume_checks_config(tiny_dirs, tmp_path):
    extra = ("train.max_steps=2", "train.save_steps=1", "train.eval_strategy=no", "train.keep_best=false")
    run_finetune(_cfg(tiny_dirs, tmp_path / "run", *extra))
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        run_finetune(_cfg(tiny_dirs, tmp_path / "run", *extra))
    with pytest.raises(ConfigError, match="differs") as info:
        run_finetune(_cfg(tiny_dirs, tmp_path / "run", *extra, "train.lr=1e-3"), resume="auto")
    assert any("train.lr" in d for d in info.value.details)
    with pytest.raises(CheckpointError, match="not a Trainer checkpoint"):
        run_finetune(_cfg(tiny_dirs, tmp_path / "run", *extra), resume=str(tmp_path))


def test_a_resume_checkpoint_that_does_not_fit_is_refused_before_training(tiny_dirs, tmp_path):
    """Damaged weights, a foreign model's checkpoint or an unreadable trainer_state.json: a clear
    CheckpointError before any step, and a new run directory left as it was (absent)."""
    extra = ("train.max_steps=2", "train.save_steps=2", "train.eval_strategy=no", "train.keep_best=false")
    run_finetune(_cfg(tiny_dirs, tmp_path / "run", *extra))
    checkpoint = tmp_path / "run" / "checkpoint-2"
    foreign = tmp_path / "foreign"
    import shutil

    shutil.copytree(checkpoint, foreign)
    weights = load_file(foreign / "model.safetensors")
    from safetensors.torch import save_file

    name = next(k for k in weights if k.endswith("classifier.weight"))
    save_file({**weights, name: torch.zeros(3, weights[name].shape[1])}, foreign / "model.safetensors")
    with pytest.raises(CheckpointError, match="do not fit this run's model") as info:
        run_finetune(_cfg(tiny_dirs, tmp_path / "new", *extra), resume=str(foreign))
    assert any(name in d for d in info.value.details) and not (tmp_path / "new").exists()
    data = (checkpoint / "model.safetensors").read_bytes()
    (checkpoint / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        run_finetune(_cfg(tiny_dirs, tmp_path / "run", *extra), resume="auto")
    (checkpoint / "trainer_state.json").write_text("[]")  # JSON, but not a Trainer state
    with pytest.raises(CheckpointError, match="not a Trainer checkpoint"):
        run_finetune(_cfg(tiny_dirs, tmp_path / "run", *extra), resume=str(checkpoint))
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == []  # no staging left


def test_final_appears_whole_or_not_at_all(tiny_dirs, tmp_path, monkeypatch):
    """A save of final/ that fails part-way leaves the run's earlier final/ (here: none) and no final/."""
    from spikelm_core.training.trainers import SpikelmTrainer

    extra = ("train.max_steps=1", "train.eval_strategy=no", "train.keep_best=false")
    original = SpikelmTrainer.save_model

    def half_then_fail(self, output_dir=None, _internal_call=False):
        original(self, output_dir, _internal_call)
        if output_dir and not os.path.basename(output_dir).startswith("checkpoint-"):
            raise _Kill()

    monkeypatch.setattr(SpikelmTrainer, "save_model", half_then_fail)
    with pytest.raises(_Kill):
        run_finetune(_cfg(tiny_dirs, tmp_path / "run", *extra))
    assert not (tmp_path / "run" / "final").exists()
    monkeypatch.setattr(SpikelmTrainer, "save_model", original)
    r = run_finetune(_cfg(tiny_dirs, tmp_path / "run", *extra), resume="auto")
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file() and r.global_step >= 1
    assert not (tmp_path / "run" / ".final.partial").exists()


def test_output_directory_in_use_is_refused(tiny_dirs, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{os.getppid()}\n")  # a live process that is not us
    with pytest.raises(ConfigError, match="in use by another run"):
        run_finetune(_cfg(tiny_dirs, out))
    (out / LOCK_NAME).write_text("999999999\n")  # stale: no such process
    r = run_finetune(_cfg(tiny_dirs, out, "train.max_steps=1", "train.eval_strategy=no", "train.keep_best=false"))
    assert r.global_step == 1 and not (out / LOCK_NAME).exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_requested_but_unavailable(tiny_dirs, tmp_path):
    with pytest.raises(ConfigError, match="no CUDA device"):
        run_finetune(_cfg(tiny_dirs, tmp_path / "run", "train.device=cuda"))


class _Poison(TrainerCallback):
    """Makes the weights NaN at the start of step 3, after checkpoint-2 was written."""

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 2:
            with torch.no_grad():
                model.classifier.weight.fill_(float("nan"))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_dirs, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(tiny_dirs, out, "train.save_steps=2", "train.eval_strategy=no", "train.keep_best=false")
    with pytest.raises(SpikelmError, match="loss became nan at step 3") as info:
        run_finetune(cfg, callbacks=[_Poison()])
    assert "checkpoint-2" in info.value.details[0] and "--resume auto continues" in info.value.hint
    with pytest.raises(SpikelmError, match="loss became nan at step 3") as info:  # no checkpoint before it
        run_finetune(_cfg(tiny_dirs, tmp_path / "early", "train.save_steps=4", "train.eval_strategy=no",
                          "train.keep_best=false"), callbacks=[_Poison()])
    assert "no checkpoint to continue from" in info.value.hint
    good = load_file(out / "checkpoint-2" / "model.safetensors")
    assert torch.isfinite(good["classifier.weight"]).all()
    assert not (out / "checkpoint-3").exists() and not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("task,splits,metric", [
    pytest.param("stsb", {"dev"}, "pearson", id="stsb-regression"),
    pytest.param("mnli", {"dev_matched", "dev_mismatched"}, "accuracy", id="mnli-matched-mismatched"),
])
def test_other_tasks(tiny_dirs, tmp_path, task, splits, metric):
    r = run_finetune(_cfg(tiny_dirs, tmp_path / task, f"data.source=glue/{task}", "train.max_steps=2",
                          "train.eval_steps=1", "train.save_steps=1"))
    assert set(r.metrics) == splits and all(metric in m for m in r.metrics.values())
    assert r.primary_metric == metric


def test_compiled_layers_and_length_grouping(tiny_dirs, tmp_path):
    """`train.compile: layers` and `train.sampling: group_by_length` run end to end; steps that
    record firing rates (every logging step) take the eager layers, the others the compiled graph."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    cfg = _cfg(tiny_dirs, tmp_path / "run", "train.compile=layers", "train.sampling=group_by_length",
               "train.logging_steps=4")
    r = run_finetune(cfg)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert r.global_step == 4 and 0.0 <= r.metrics["dev"]["accuracy"] <= 1.0
    assert 0.0 < r.firing_rate < 1.0
    losses = _losses(tmp_path / "run" / "metrics.jsonl")
    assert len(losses) == 1 and losses[0] == losses[0]  # logged once, finite


def test_model_config_overrides_reach_the_trained_model(tiny_dirs, tmp_path):
    cfg = _cfg(tiny_dirs, tmp_path / "run", "model_config={hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}",
               "train.max_steps=1")
    run_finetune(cfg)
    saved = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert saved["hidden_dropout_prob"] == 0.0 and saved["attention_probs_dropout_prob"] == 0.0
    with pytest.raises(ConfigError, match="num_timesteps"):  # neuron fields stay in the neuron section
        run_finetune(_cfg(tiny_dirs, tmp_path / "run2", "model_config={num_timesteps: 2}"))
    # sizes: the loaded weights fix them (a config error, not a "damaged checkpoint")
    with pytest.raises(ConfigError, match="model_config resizes the model .*dense., whose weights fix its sizes") as exc:
        run_finetune(_cfg(tiny_dirs, tmp_path / "run3", "model_config={hidden_size: 48, hidden_dropout_prob: 0.0}"))
    assert exc.value.details == ["hidden_size: 24 in the checkpoint, 48 asked for"]
    assert not (tmp_path / "run3").exists()
    assert _cfg(tiny_dirs, tmp_path / "run4", "model_config=null").model_overrides == {}


def test_keep_best_keeps_a_best_evaluation_between_saves(tiny_dirs, tmp_path):
    """With evaluations more often than saves, the best evaluation is still the one kept: a checkpoint is
    saved at every evaluation (the Trainer keeps only a best that was saved)."""
    r = run_finetune(_cfg(tiny_dirs, tmp_path / "run", "train.max_steps=4", "train.eval_steps=1",
                          "train.save_steps=4", "train.lr=5e-3"))
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if '"eval_accuracy"' in x and '"final_' not in x]
    best = max(evals, key=lambda e: (e["eval_accuracy"], -e["step"]))
    assert r.best_checkpoint is not None and r.best_checkpoint.endswith(f"checkpoint-{best['step']}")
    assert r.metrics["dev"]["accuracy"] == pytest.approx(best["eval_accuracy"])


def test_a_regression_checkpoint_with_a_fresh_head_trains_classification_on_cross_entropy(tiny_dirs, tmp_path):
    """An STS-B model (config problem_type 'regression') restarted on SST-2 with --reinit-head: the task sets
    the loss (its saved problem_type would make the 2-label head train on a broadcast MSE)."""
    from tests.training_fixtures import make_tiny_dense

    stsb = make_tiny_dense(tmp_path / "stsb", "cls", num_labels=1, problem_type="regression")
    r = run_finetune(_cfg(tiny_dirs, tmp_path / "run", f"model={stsb}", "neuron.kind=dense", "reinit_head=true",
                          "train.batch_size=2", "train.eval_batch_size=2"))
    saved = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert saved["problem_type"] == "single_label_classification" and len(saved["id2label"]) == 2
    assert 0.0 <= r.metrics["dev"]["accuracy"] <= 1.0
