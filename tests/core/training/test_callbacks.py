"""FiringRateCallback: the pad-excluded rate in the logs, per-layer rates, one warning per dead layer;
JsonlMetricsCallback on resume."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from spikelm_core.calibration import calibrate
from spikelm_core.firing import measure_firing
from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification
from spikelm_core.training.callbacks import FiringRateCallback, JsonlMetricsCallback
from tests.conftest import TINY


def _model(**neuron):
    torch.manual_seed(0)
    config = SpikingBertConfig(**TINY, num_timesteps=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                               **neuron)
    return SpikingBertForSequenceClassification(config).eval()


def _padded_batch():
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 99, (5, 7), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, 3:] = 0
    mask[4, 5:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 0, 1, 1])}


def _args(tmp_path, logging_steps=1):
    return TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, logging_steps=logging_steps)


def _step(cb, model, args, state, batch=None):
    """One training step as the Trainer runs it: callback, forward with grad, backward, optimizer step."""
    batch = batch or {"input_ids": torch.randint(5, 99, (5, 7))}
    cb.on_step_begin(args, state, TrainerControl(), model=model)
    model.train()
    out = model(**batch)
    if out.loss is not None:
        out.loss.backward()
        torch.optim.SGD(model.parameters(), lr=0.0).step()
    state.global_step += 1
    cb.on_step_end(args, state, TrainerControl(), model=model)


def test_training_step_reports_the_pad_excluded_rate_and_layers(tmp_path):
    model = _model()
    batch = _padded_batch()
    calibrate(model, batch)
    expected = measure_firing(model, [batch])  # eval, no grad; without dropout the same spikes
    cb = FiringRateCallback()
    _step(cb, model, _args(tmp_path), TrainerState(global_step=0), batch)
    assert cb.last_rate == pytest.approx(expected.mean_rate, abs=1e-12) and 0.0 < cb.last_rate < 1.0
    assert cb.last_layer_rates == pytest.approx(expected.layer_rates(), abs=1e-12)
    assert list(cb.last_layer_rates) == ["layer.0", "layer.1"] and cb.warnings == []
    # counting the pads would give another number: the callback does not
    with_pads = measure_firing(model, [{"input_ids": batch["input_ids"], "labels": batch["labels"]}])
    assert with_pads.mean_rate != pytest.approx(cb.last_rate, abs=1e-9)
    logs = {"loss": 1.0}
    cb.on_log(None, None, TrainerControl(), logs=logs)
    assert logs["firing_rate"] == round(cb.last_rate, 6)
    assert not any(n._forward_hooks for _, n in model.spiking_neurons())  # recording stops with the step


def test_dead_layers_warn_once_and_rate_is_logged(caplog, tmp_path):
    args = _args(tmp_path)
    state = TrainerState(global_step=0)
    dead = _model(alpha_mode="fixed", fixed_alpha=1e6, reset="soft")  # threshold 5e5: no neuron ever fires
    cb = FiringRateCallback()
    with caplog.at_level("WARNING", logger="spikelm"):
        for _ in range(2):
            _step(cb, dead, args, state)
    assert cb.last_rate == 0.0
    assert sorted(cb.last_layer_rates) == ["layer.0", "layer.1"]
    assert len(cb.warnings) == 2 and all("dead" in w for w in cb.warnings)  # once per layer, not per step
    assert caplog.text.count("dead (firing rate 0)") == 2
    logs = {"loss": 1.0}
    cb.on_log(args, state, TrainerControl(), logs=logs)
    assert logs["firing_rate"] == 0.0
    # counting is off outside logged steps
    assert not any(n._forward_hooks for _, n in dead.spiking_neurons())


def test_only_logged_steps_are_recorded(tmp_path):
    args = _args(tmp_path, logging_steps=2)
    model = _model()
    calibrate(model, {"input_ids": torch.randint(5, 99, (5, 7))})
    cb = FiringRateCallback()
    state = TrainerState(global_step=0)
    _step(cb, model, args, state)  # step 1: not logged
    assert cb.last_rate is None
    _step(cb, model, args, state)  # step 2: logged
    assert cb.last_rate is not None and 0.0 < cb.last_rate < 1.0


def test_healthy_model_does_not_warn(tmp_path):
    model = _model()
    calibrate(model, {"input_ids": torch.randint(5, 99, (5, 7))})
    cb = FiringRateCallback()
    _step(cb, model, _args(tmp_path), TrainerState(global_step=0))
    assert 0.0 < cb.last_rate < 1.0 and cb.warnings == []


def test_jsonl_resume_drops_lines_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "lo')
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    cb = JsonlMetricsCallback(path, resume_step=3)
    cb.on_train_begin(args, TrainerState(), TrainerControl())
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2, 3]
    cb.on_log(args, TrainerState(global_step=4, epoch=1.0), TrainerControl(),
              logs={"loss": float("nan"), "train_runtime": 3.0})
    last = json.loads(path.read_text().splitlines()[-1])
    assert last == {"step": 4, "epoch": 1.0, "loss": "nan"} and cb.wall_clock == {"train_runtime": 3.0}


def test_compile_time_is_shown_once_after_the_second_step(caplog, monkeypatch):
    import time
    from types import SimpleNamespace

    from spikelm_core.training.callbacks import CompileTimeCallback

    clock = iter([0.0, 40.0, 40.0, 41.5, 41.5, 43.0, 43.0, 44.5])
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    cb = CompileTimeCallback()
    state = SimpleNamespace(is_world_process_zero=True)
    with caplog.at_level("INFO", logger="spikelm"):
        for _ in range(4):
            cb.on_step_begin(None, state, None)
            cb.on_step_end(None, state, None)
    assert caplog.text.count("compiled spiking layers") == 1
    assert "first step took 40.0 s, the second 1.50 s (about 38 s compiling" in caplog.text


def _mean_over_two_ranks(rank: int, store_file: str, out_file: str) -> None:
    import json

    import torch.distributed as dist

    from spikelm_core.training.callbacks import mean_over_ranks

    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=2)
    try:
        means = mean_over_ranks([1.0 + rank, 10.0 * rank], "cpu")
        if rank == 0:
            with open(out_file, "w") as fh:
                json.dump(means, fh)
    finally:
        dist.destroy_process_group()


def test_logged_parts_and_rates_are_means_over_ranks(tmp_path):
    """What each rank logs (loss parts, the firing rate) is the mean over ranks, as the Trainer logs `loss`;
    in one process the values pass unchanged."""
    import json

    import torch.multiprocessing as mp

    from spikelm_core.training.callbacks import mean_over_ranks

    assert mean_over_ranks([0.25, 3.0], "cpu") == [0.25, 3.0]
    out = tmp_path / "means.json"
    mp.spawn(_mean_over_two_ranks, args=(str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    assert json.loads(out.read_text()) == [1.5, 5.0]


def test_non_finite_numbers_stay_visible_in_metrics_and_are_null_in_results(tmp_path):
    """metrics.jsonl writes a diverged run's numbers as text, run and eval results as null: JSON has
    neither Infinity nor NaN (json.loads of the standard would reject them)."""
    from spikelm_core.training.callbacks import jsonl_record
    from spikelm_core.training.results import RunResult

    assert jsonl_record({"step": 3, "final_test_perplexity": float("inf"), "loss": 0.5}) == {
        "step": 3, "final_test_perplexity": "inf", "loss": 0.5}
    result = RunResult(command="finetune", out_dir="o", final_dir="o/final", task="wikitext2", global_step=3,
                       epochs=1.0, train_loss=None, metrics={"test": {"perplexity": float("inf")}},
                       primary_metric="perplexity")
    text = json.dumps(result.to_dict(), allow_nan=False)
    assert json.loads(text)["metrics"] == {"test": {"perplexity": None}}
