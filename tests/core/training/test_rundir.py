"""The run directory: which checkpoints count, the lock across hosts, what a run refuses to write into,
and that a run refused early leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import socket

import pytest
import yaml

from spikelm_core.config import FinetuneConfig, config_from_dict, config_to_dict
from spikelm_core.errors import CheckpointError, ConfigError
from spikelm_core.training.rundir import LOCK_NAME, RunDirectory, RunLock, last_complete_checkpoint, resolve_resume


def _checkpoint(root, step, state='{"global_step": 1}', files=True):
    """A checkpoint-<step>/ as the Trainer leaves it (its training state files empty), or cut short."""
    import torch

    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    if state is not None:
        try:
            parsed = json.loads(state)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("global_step"), int):
            state = json.dumps({"train_batch_size": 8, **parsed})
        (d / "trainer_state.json").write_text(state)
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth") if files else ():
            torch.save({}, d / name)
    return d


def _cfg(out):
    return config_from_dict(FinetuneConfig, {"model": "m", "out_dir": str(out), "data": {"task": "sst2"}})


def test_incomplete_checkpoints_are_skipped_with_a_warning(tmp_path, caplog):
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 10, state=None)  # killed before trainer_state.json
    _checkpoint(tmp_path, 4, state='{"global_st')  # cut short while writing it
    with caplog.at_level("WARNING", logger="spikelm"):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert "checkpoint-10" in caplog.text and "checkpoint-4" in caplog.text
    assert last_complete_checkpoint(tmp_path / "none") is None
    _checkpoint(tmp_path, 3, state="[]")  # JSON, not a Trainer state
    _checkpoint(tmp_path, 5, state='{"global_step": "five"}')
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")


def test_a_resume_value_that_is_no_directory_names_the_words(tmp_path):
    with pytest.raises(ConfigError, match="expected auto, never or a checkpoint directory .did you mean 'auto'.") as exc:
        resolve_resume("autoo", tmp_path)  # a mistyped word: a bad option (exit 2)
    assert exc.value.exit_code == 2
    with pytest.raises(CheckpointError, match="neither auto, never nor an existing directory"):
        resolve_resume(str(tmp_path / "checkpoint-9"), tmp_path)  # a path: a missing checkpoint (exit 3)


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text("some-other-host 1\n")
    with pytest.raises(ConfigError, match="host some-other-host"):
        RunLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).read_text() == "some-other-host 1\n"


def test_stale_lock_on_this_host_is_taken_over_and_records_host_and_pid(tmp_path):
    for stale in (f"{socket.gethostname()} 999999999\n", "999999999\n"):  # 0.1.0 locks hold the pid alone
        (tmp_path / LOCK_NAME).write_text(stale)
        lock = RunLock(tmp_path)
        lock.acquire()
        assert (tmp_path / LOCK_NAME).read_text() == f"{socket.gethostname()} {os.getpid()}\n"
        lock.release()
        assert not (tmp_path / LOCK_NAME).exists()


def test_a_directory_of_other_files_is_refused_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no spikelm run"):
        RunDirectory(_cfg(tmp_path), "finetune", "never").__enter__()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_an_earlier_run_needs_resume(tmp_path):
    (tmp_path / "run_config.yaml").write_text("command: finetune\n")
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ConfigError, match="holds an earlier run") as info:
        RunDirectory(_cfg(tmp_path), "finetune", "never").__enter__()
    assert "saved no checkpoint" in info.value.hint and "--resume auto starts afresh" in info.value.hint
    (tmp_path / "final").mkdir()
    with pytest.raises(ConfigError, match="holds an earlier run") as info:
        RunDirectory(_cfg(tmp_path), "finetune", "never").__enter__()
    assert info.value.hint == "it finished (final/): choose another --out-dir"


def test_a_run_refused_before_writing_leaves_no_directory(tmp_path):
    out = tmp_path / "new"
    run = RunDirectory(_cfg(out), "finetune", "never")
    with pytest.raises(RuntimeError):
        with run:
            assert out.is_dir()  # the lock is there
            raise RuntimeError("the teacher does not match")
    assert not out.exists()
    # nor the folders created above it, while one that holds something else stays
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("x")
    with pytest.raises(RuntimeError):
        with RunDirectory(_cfg(tmp_path / "a" / "b" / "c" / "run"), "finetune", "never"):
            assert (tmp_path / "a" / "b" / "c" / "run").is_dir()
            raise RuntimeError("refused")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["keep.txt"]
    # once run_config.yaml is written the directory stays (it is a run that can be resumed)
    with pytest.raises(RuntimeError):
        with RunDirectory(_cfg(out), "finetune", "never") as run:
            run.write_config()
            raise RuntimeError("later failure")
    assert (out / "run_config.yaml").is_file() and not (out / LOCK_NAME).exists()
    assert sorted(p.name for p in out.iterdir()) == ["run_config.yaml"]


def test_an_evaluation_of_a_runs_model_takes_the_runs_lengths_and_generation_unless_set(tmp_path, caplog):
    from spikelm_core.config import EvalConfig, load_config, save_config
    from spikelm_core.training.rundir import settings_of_run

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "checkpoint-7").mkdir()
    trained = config_from_dict(FinetuneConfig, {"model": "m", "out_dir": str(run), "data": {"task": "xsum",
                               "max_length": 512}, "generate": {"num_beams": 2, "max_new_tokens": 40}})
    save_config(trained, run / "run_config.yaml")

    def evaluated(model, task="xsum", *sets):
        return settings_of_run(load_config(EvalConfig, None, [f"model={model}", f"data.task={task}", *sets]))

    with caplog.at_level("INFO", logger="spikelm"):
        cfg = evaluated(run / "final")
    assert (cfg.data.max_length, cfg.generate.num_beams, cfg.generate.max_new_tokens) == (512, 2, 40)
    assert "data.max_length 512, generate.num_beams 2, generate.max_new_tokens 40" in caplog.text
    # what eval_config.yaml records replays as set
    assert load_config(EvalConfig, save_config(cfg, tmp_path / "eval_config.yaml")) == cfg
    # a setting given here stays; a checkpoint of the run counts as its model
    cfg = evaluated(run / "checkpoint-7", "xsum", "data.max_length=256", "generate.num_beams=1")
    assert (cfg.data.max_length, cfg.generate.num_beams, cfg.generate.max_new_tokens) == (256, 1, 40)
    # the run's shortest summary is not taken above the longest this eval allows
    shortest = config_from_dict(FinetuneConfig, {**config_to_dict(trained),
                                                 "generate": {"max_new_tokens": 40, "min_new_tokens": 10}})
    save_config(shortest, run / "run_config.yaml")
    assert evaluated(run / "final").generate.min_new_tokens == 10
    assert evaluated(run / "final", "xsum", "generate.max_new_tokens=8").generate.min_new_tokens == 0
    save_config(trained, run / "run_config.yaml")
    # this eval's own shortest summary above the run's longest, taken here: refused now, naming both keys
    from spikelm_core.errors import ConfigError

    with pytest.raises(ConfigError, match="generate.min_new_tokens 50 exceeds generate.max_new_tokens 40"):
        evaluated(run / "final", "xsum", "generate.min_new_tokens=50")
    # another task, a model outside a run, or a run config that does not load: unchanged
    default = load_config(EvalConfig, None, ["model=m", "data.task=sst2"])
    assert evaluated(run / "final", "sst2") == load_config(EvalConfig, None, [f"model={run / 'final'}",
                                                                              "data.task=sst2"])
    assert settings_of_run(default) == default
    # a dense run's model (a teacher) is scored dense, unless neuron settings are given
    dense = config_from_dict(FinetuneConfig, {"model": "m", "out_dir": str(run), "data": {"task": "xsum"},
                                              "neuron": {"kind": "dense"}})
    save_config(dense, run / "run_config.yaml")
    assert evaluated(run / "final").neuron.kind == "dense"
    assert evaluated(run / "final", "xsum", "neuron.kind=elastic_bi").neuron.kind == "elastic_bi"
    (run / "run_config.yaml").write_text("command: finetune\nmodel: [\n")
    assert evaluated(run / "final").data.max_length == 128
    # a GLUE run config an older spikelm wrote with a setting its task never read (refused today): its lengths
    # are not taken, and the eval says so instead of scoring at its own default in silence
    old = {**config_to_dict(config_from_dict(FinetuneConfig, {"model": "m", "out_dir": str(run),
                                                              "data": {"task": "sst2", "max_length": 32}}))}
    old["data"]["max_target_length"] = 128
    (run / "run_config.yaml").write_text(yaml.safe_dump(old))
    caplog.clear()
    with caplog.at_level("WARNING", logger="spikelm"):
        assert evaluated(run / "final", "sst2").data.max_length == 128
    assert "does not load" in caplog.text and "data.max_target_length" in caplog.text and "data.max_length" in caplog.text


def test_resume_auto_refuses_to_train_a_finished_run_again_from_an_older_checkpoint(tmp_path):
    """A finished keep_best run keeps its best checkpoint, older than its end: resuming from it would
    train the last steps again and replace final/."""
    (tmp_path / "final").mkdir()
    (tmp_path / "metrics.jsonl").write_text('{"step": 2, "eval_accuracy": 0.6}\n{"step": 4, "final_dev_accuracy": 0.5}\n')
    _checkpoint(tmp_path, 2, '{"global_step": 2}')
    with pytest.raises(ConfigError, match=r"holds a finished run \(final/, step 4\).*train steps 3-4 again") as exc:
        resolve_resume("auto", tmp_path)
    assert "spikelm eval" in exc.value.hint
    _checkpoint(tmp_path, 4, '{"global_step": 4}')  # its last step's checkpoint: the run ends as it did
    assert resolve_resume("auto", tmp_path) == str(tmp_path / "checkpoint-4")
    unfinished = tmp_path / "unfinished"
    _checkpoint(unfinished, 2, '{"global_step": 2}')
    assert resolve_resume("auto", unfinished) == str(unfinished / "checkpoint-2")


@pytest.mark.parametrize("checkpoint, inside, expected", [
    pytest.param(None, None, "--resume auto (from the start: no checkpoint was saved yet", id="no-checkpoint"),
    pytest.param(3, None, "--resume auto (from checkpoint-3)", id="checkpoint"),
    pytest.param(3, "the same sweep command again", "continue with: the same sweep command again (from checkpoint-3)",
                 id="sweep-point"),
])
def test_a_stopped_run_says_how_to_continue_it(tmp_path, caplog, checkpoint, inside, expected):
    from spikelm_core.training.rundir import continue_with

    out = tmp_path / "run"
    outer = continue_with(inside) if inside else contextlib.nullcontext()
    with caplog.at_level("WARNING", logger="spikelm"), outer, pytest.raises(KeyboardInterrupt):
        with RunDirectory(_cfg(out), "finetune", "auto") as run:
            run.write_config()
            if checkpoint is not None:
                _checkpoint(out, checkpoint)
            raise KeyboardInterrupt
    assert expected in caplog.text
    if inside is None:
        assert f"spikelm finetune {out / 'run_config.yaml'} --resume auto" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="spikelm"), pytest.raises(ValueError):  # an error is not a stop
        with RunDirectory(_cfg(out), "finetune", "auto") as run:
            raise ValueError("bad")
    assert "continue with" not in caplog.text


def test_a_resume_with_another_process_count_is_warned(tmp_path, caplog):
    from types import SimpleNamespace

    from spikelm_core.training.rundir import processes_of_checkpoint, warn_if_resumed_at_another_scale

    two = _checkpoint(tmp_path, 4, files=False)
    for rank in (0, 1):
        (two / f"rng_state_{rank}.pth").write_bytes(b"")
    one = _checkpoint(tmp_path, 8, files=False)
    (one / "rng_state.pth").write_bytes(b"")
    assert (processes_of_checkpoint(two), processes_of_checkpoint(one)) == (2, 1)
    assert processes_of_checkpoint(_checkpoint(tmp_path, 9, files=False)) is None
    args = SimpleNamespace(world_size=1, per_device_train_batch_size=8, gradient_accumulation_steps=1)
    with caplog.at_level("WARNING", logger="spikelm"):
        warn_if_resumed_at_another_scale(str(one), args)
        assert caplog.text == ""
        warn_if_resumed_at_another_scale(str(two), args)
    assert "checkpoint-4 was saved by a run of 2 process(es), global batch 16; this one has 1, global batch 8" \
        in caplog.text


def test_a_resume_from_another_data_folder_is_warned_and_other_settings_refused(tmp_path, caplog):
    out = tmp_path / "run"

    def cfg(**data):
        return config_from_dict(FinetuneConfig, {"model": "m", "out_dir": str(out),
                                                 "data": {"task": "sst2", **data}})

    with RunDirectory(cfg(data_dir="/data/a"), "finetune", "never") as run:
        run.write_config()
    _checkpoint(out, 2, '{"global_step": 2}')
    with caplog.at_level("WARNING", logger="spikelm"):
        with RunDirectory(cfg(data_dir="/data/b"), "finetune", "auto") as run:
            assert run.resume_from == str(out / "checkpoint-2")
    assert "data.data_dir was /data/a when the run started and is /data/b now" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="spikelm"):
        with RunDirectory(cfg(data_dir="/data/a"), "finetune", "auto"):
            pass
        with RunDirectory(cfg(data_dir="/data/./a/"), "finetune", "auto"):  # the same folder, spelt otherwise
            pass
    assert "data.data_dir" not in caplog.text
    with pytest.raises(ConfigError, match="differs from the one it started with"):
        with RunDirectory(cfg(data_dir="/data/a", max_length=64), "finetune", "auto"):
            pass


def test_a_resume_in_another_precision_than_its_checkpoint_is_warned(tmp_path, caplog):
    import json
    from types import SimpleNamespace

    from spikelm_core.training.callbacks import PRECISION_FILE, PrecisionRecord
    from spikelm_core.training.rundir import warn_if_resumed_at_another_precision

    checkpoint = _checkpoint(tmp_path, 3)
    PrecisionRecord("bf16").on_save(SimpleNamespace(output_dir=str(tmp_path)),
                                    SimpleNamespace(global_step=3, is_world_process_zero=True), None)
    assert json.loads((checkpoint / PRECISION_FILE).read_text()) == {"precision": "bf16"}
    with caplog.at_level("WARNING", logger="spikelm"):
        warn_if_resumed_at_another_precision(str(checkpoint), "bf16")
        assert caplog.text == ""
        warn_if_resumed_at_another_precision(str(_checkpoint(tmp_path, 5)), "float32")  # saved before the record
        assert caplog.text == ""
        warn_if_resumed_at_another_precision(str(checkpoint), "float32")
    assert "checkpoint-3 was trained in bf16 and this run continues in float32" in caplog.text


def test_an_eval_takes_a_runs_eval_subset_only_on_the_text_that_run_scored(tmp_path):
    from spikelm_core.config import EvalConfig, PretrainConfig, load_config, save_config
    from spikelm_core.training.rundir import settings_of_run

    a, b = tmp_path / "A.txt", tmp_path / "B.txt"
    for text in (a, b):
        text.write_text("the river rose\n")
    run = tmp_path / "pretrain"
    (run / "final").mkdir(parents=True)
    save_config(config_from_dict(PretrainConfig, {"command": "pretrain", "model": "m", "out_dir": str(run), "data": {
        "source": str(a), "validation_file": str(a), "eval_subset": 16, "max_length": 16}}), run / "run_config.yaml")
    for text, expected in ((a, 16), (b, None)):  # the masked-LM run's held-out text, then another text
        ev = load_config(EvalConfig, None, ["data.task=wikitext2", f"model={run / 'final'}", f"data.data_dir={text}"])
        assert settings_of_run(ev).data.eval_subset == expected, text
    # data.validation_file is not what a masked-LM eval reads (it reads data_dir / source)
    ev = load_config(EvalConfig, None, ["data.task=wikitext2", f"model={run / 'final'}", f"data.validation_file={a}"])
    assert settings_of_run(ev).data.eval_subset is None
    lm = tmp_path / "causal"
    (lm / "final").mkdir(parents=True)
    save_config(config_from_dict(FinetuneConfig, {"command": "finetune", "model": "m", "out_dir": str(lm), "data": {
        "task": "wikitext2", "data_dir": str(tmp_path), "eval_subset": 3}}), lm / "run_config.yaml")
    for splits, data_dir, expected in ((["valid"], tmp_path, 3), (["test"], tmp_path, None), (["valid"], a, None)):
        ev = load_config(EvalConfig, None, ["data.task=wikitext2", f"model={lm / 'final'}", f"data.data_dir={data_dir}",
                                            f"splits={json.dumps(splits)}"])
        assert settings_of_run(ev).data.eval_subset == expected, (splits, data_dir)
    hub = tmp_path / "hub"  # a run on the hub's text (its source a task name), scored on that text's valid split
    (hub / "final").mkdir(parents=True)
    save_config(config_from_dict(FinetuneConfig, {"command": "finetune", "model": "m", "out_dir": str(hub), "data": {
        "task": "wikitext2", "source": "wikitext-2", "eval_subset": 3}}), hub / "run_config.yaml")
    ev = load_config(EvalConfig, None, ["data.task=wikitext2", f"model={hub / 'final'}", 'splits=["valid"]'])
    assert settings_of_run(ev).data.eval_subset == 3


def test_a_trainer_state_without_its_step_or_batch_is_no_complete_checkpoint(tmp_path):
    from spikelm_core.training.rundir import checkpoint_is_complete

    for state, complete in (({}, False), ({"global_step": 2}, False), ({"global_step": 2, "train_batch_size": 8}, True),
                            ({"global_step": "2", "train_batch_size": 8}, False)):
        (tmp_path / "trainer_state.json").write_text(json.dumps(state))
        assert checkpoint_is_complete(tmp_path) is complete, state


def test_a_glue_run_reading_glue_dir_records_it_as_its_data_dir(tmp_path, monkeypatch):
    """run_config.yaml replays on the same data without $GLUE_DIR; a data_dir given stays, other tasks
    and an unset variable change nothing."""
    from spikelm_core.config import FinetuneConfig, config_from_dict
    from spikelm_core.training.rundir import with_glue_dir

    def cfg(**data):
        return config_from_dict(FinetuneConfig, {"model": "m", "out_dir": str(tmp_path / "o"), "data": data})

    monkeypatch.delenv("GLUE_DIR", raising=False)
    assert with_glue_dir(cfg(task="sst2")).data.data_dir is None
    monkeypatch.setenv("GLUE_DIR", str(tmp_path / "glue"))
    assert with_glue_dir(cfg(task="sst2")).data.data_dir == str((tmp_path / "glue").resolve())
    assert with_glue_dir(cfg(task="sst2", data_dir="/elsewhere")).data.data_dir == "/elsewhere"
    assert with_glue_dir(cfg(task="xsum")).data.data_dir is None


def test_a_multi_process_checkpoint_lacking_a_rank_state_is_incomplete(tmp_path, caplog):
    """A kill between the main process's trainer_state.json and another rank's rng_state_<rank>.pth leaves
    a checkpoint that would resume that rank with fresh random state: skipped, as a cut save is."""
    from spikelm_core.training.rundir import checkpoint_is_complete, processes_of_checkpoint

    good = _checkpoint(tmp_path, 2, files=False)
    for rank in (0, 1):
        (good / f"rng_state_{rank}.pth").write_bytes(b"")
    alone = _checkpoint(tmp_path, 4, files=False)
    (alone / "rng_state_0.pth").write_bytes(b"")  # rank 1's never landed
    gap = _checkpoint(tmp_path, 6, files=False)
    for rank in (0, 2):
        (gap / f"rng_state_{rank}.pth").write_bytes(b"")
    assert checkpoint_is_complete(good) and not checkpoint_is_complete(alone) and not checkpoint_is_complete(gap)
    assert processes_of_checkpoint(gap) == 3
    with caplog.at_level("WARNING", logger="spikelm"):
        assert last_complete_checkpoint(tmp_path) == str(good)
    assert "checkpoint-6" in caplog.text and "checkpoint-4" in caplog.text


def test_the_continue_command_names_torchrun_under_torchrun(tmp_path, monkeypatch):
    """A run of 2 processes continued with plain `spikelm` would halve its global batch: the replay
    header and the stop hint name the launcher and the process count (and the nodes across nodes)."""
    from spikelm_core.training.rundir import launcher, replay_header

    for key in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert launcher() == "spikelm"
    assert replay_header("finetune", tmp_path).endswith(f"  spikelm finetune {tmp_path / 'run_config.yaml'} --resume auto")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert "torchrun --nproc-per-node 2 -m spikelm_cli finetune" in replay_header("finetune", tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert launcher() == ("torchrun --nnodes 2 <the rendezvous options it was started with> --nproc-per-node 8 "
                          "-m spikelm_cli")


def test_resuming_explicitly_from_a_checkpoint_lacking_a_rank_state_names_the_file(tmp_path):
    """`--resume checkpoint-N` whose trainer_state.json is there but another rank's rng_state_<rank>.pth is not:
    the error names the missing file (it said "no readable trainer_state.json")."""
    alone = _checkpoint(tmp_path, 4, files=False)
    (alone / "rng_state_0.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"lacks rng_state_1\.pth") as info:
        resolve_resume(str(alone), tmp_path)
    assert "trainer_state.json" not in info.value.message


def test_eval_of_a_run_takes_its_task_data_and_dev_subset(tmp_path):
    """`spikelm eval RUN/final`: the run's task, data and data.eval_subset (the dev examples its final
    scores read); with --data-dir (data_given) the task alone; another task: None."""
    import yaml

    from spikelm_core.training.rundir import task_of_run

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "run_config.yaml").write_text(yaml.safe_dump(
        {"command": "finetune", "data": {"task": "sst2", "source": "glue/sst2", "data_dir": "/g", "eval_subset": 5}}))
    task, sets = task_of_run(run / "final")
    assert task == "sst2" and sets == ['data.source="glue/sst2"', 'data.data_dir="/g"', "data.eval_subset=5"]
    assert "data.eval_subset=5" not in task_of_run(run / "final", data_given=True)[1]
    assert task_of_run(run / "final", "rte") is None


def test_device_error_names_the_commands_own_key(monkeypatch):
    import torch

    from spikelm_core.errors import ConfigError
    from spikelm_core.training.args import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="train.device is 'cuda'") as train:
        check_device("cuda")
    assert "-s train.device=cpu" in train.value.hint
    with pytest.raises(ConfigError, match="^device is 'cuda'") as evaluation:  # eval's key is `device`
        check_device("cuda", "device")
    assert "-s device=cpu" in evaluation.value.hint
