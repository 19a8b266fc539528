"""FiringRateCallback: rate in the logs, one warning per dead layer; JsonlMetricsCallback on resume."""

from __future__ import annotations

import json

import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification
from spikelm_core.training.callbacks import FiringRateCallback, JsonlMetricsCallback, layer_of
from tests.conftest import TINY


def _model(**neuron):
    torch.manual_seed(0)
    return SpikingBertForSequenceClassification(SpikingBertConfig(**TINY, num_timesteps=3, **neuron)).eval()


def _step(cb, model, args, state):
    cb.on_step_begin(args, state, TrainerControl(), model=model)
    with torch.no_grad():
        model(input_ids=torch.randint(5, 99, (5, 7)))
    state.global_step += 1
    cb.on_step_end(args, state, TrainerControl(), model=model)


def test_dead_layers_warn_once_and_rate_is_logged(caplog):
    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True, logging_steps=1)
    state = TrainerState(global_step=0)
    dead = _model()
    for _, n in dead.spiking_neurons():  # every neuron silent
        n.firing_rate = lambda: 0.0
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
    assert not any(n.track_stats for _, n in dead.spiking_neurons())


def test_healthy_model_does_not_warn():
    from spikelm_core.calibration import calibrate

    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True, logging_steps=1)
    model = _model()
    calibrate(model, {"input_ids": torch.randint(5, 99, (5, 7))})
    cb = FiringRateCallback()
    _step(cb, model, args, TrainerState(global_step=0))
    assert 0.0 < cb.last_rate < 1.0 and cb.warnings == []


def test_layer_of():
    assert layer_of("bert.encoder.layer.3.attention.self.k_spike") == "layer.3"
    assert layer_of("bert.pooler.spike") == "bert.pooler.spike"


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
