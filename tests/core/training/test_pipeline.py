"""The training skeleton's own decisions: compile by default only where it pays, the planned step
count, the calibration examples, and one error listing every missing input."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from spikelm_core.errors import CheckpointError, DataError
from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification
from spikelm_core.training.pipeline import (
    AUTO_COMPILE_MIN_EXAMPLES,
    AUTO_COMPILE_MIN_STEPS,
    calibration_indices,
    cap_steps_by_epochs,
    compile_if_asked,
    planned_steps,
    preflight,
    training_compile_mode,
)
from tests.conftest import TINY


def _layers_compiled(model):
    return [layer._compiled is not None for layer in model.bert.encoder.layer]


@pytest.mark.parametrize("mode, work, threshold, compiled", [
    ("auto", AUTO_COMPILE_MIN_STEPS - 1, AUTO_COMPILE_MIN_STEPS, False),
    ("auto", AUTO_COMPILE_MIN_STEPS, AUTO_COMPILE_MIN_STEPS, True),
    ("auto", AUTO_COMPILE_MIN_EXAMPLES, AUTO_COMPILE_MIN_EXAMPLES, True),
    ("none", 10**6, AUTO_COMPILE_MIN_STEPS, False),
    ("layers", 1, AUTO_COMPILE_MIN_STEPS, True),
])
def test_compile_auto_compiles_long_runs_only(mode, work, threshold, compiled):
    model = SpikingBertForSequenceClassification(SpikingBertConfig(**TINY, num_timesteps=2))
    n = compile_if_asked(model, mode, work=work, threshold=threshold)
    assert n == (TINY["num_hidden_layers"] if compiled else 0)
    assert _layers_compiled(model) == [compiled] * TINY["num_hidden_layers"]


@pytest.mark.parametrize("mode", ["auto", "layers"])
def test_reference_neurons_asked_for_stay_eager(mode, monkeypatch):
    """SPIKELM_NEURON_IMPL=reference is kept: compiled layers would switch the neurons to "fast"."""
    from spikelm_core.neurons import spiking_neurons

    monkeypatch.setenv("SPIKELM_NEURON_IMPL", "reference")
    model = SpikingBertForSequenceClassification(SpikingBertConfig(**TINY, num_timesteps=2))
    assert compile_if_asked(model, mode, work=10**6) == 0
    assert _layers_compiled(model) == [False] * TINY["num_hidden_layers"]
    assert {n.impl for _, n in spiking_neurons(model)} == {"reference"}


def test_compile_auto_leaves_models_without_spiking_layers_alone(caplog):
    from transformers import BertConfig, BertForSequenceClassification

    with caplog.at_level("INFO", logger="spikelm"):
        assert compile_if_asked(BertForSequenceClassification(BertConfig(**TINY)), "auto", work=10**6) == 0
    assert "compile" not in caplog.text


@pytest.mark.parametrize("compile_mode", ["auto", "layers", "none"])
def test_a_firing_target_keeps_the_layers_eager(compile_mode, caplog):
    train = SimpleNamespace(compile=compile_mode, target_firing_rate=None)
    assert training_compile_mode(train) == compile_mode
    with caplog.at_level("INFO", logger="spikelm"):
        assert training_compile_mode(SimpleNamespace(compile=compile_mode, target_firing_rate=0.2)) == "none"
    assert ("spiking layers run eagerly" in caplog.text) == (compile_mode != "none")


def test_planned_steps():
    args = SimpleNamespace(max_steps=-1, per_device_train_batch_size=8, gradient_accumulation_steps=2, world_size=1,
                           num_train_epochs=3.0)
    assert planned_steps(args, 100) == 21  # ceil(100 / 16) = 7 steps an epoch
    assert planned_steps(SimpleNamespace(**{**vars(args), "num_train_epochs": 0.5}), 100) == 4
    assert planned_steps(SimpleNamespace(**{**vars(args), "max_steps": 5}), 100) == 5


def test_preflight_lists_model_and_data_with_their_fixes(tmp_path):
    def no_data():
        raise DataError("no local data for GLUE task 'mnli'", hint="give --data-dir DIR")

    with pytest.raises(CheckpointError) as info:
        preflight("finetune", str(tmp_path / "missing-model"), no_data, "pass --model minilm")
    err = info.value
    assert "2 problems" in err.message and err.exit_code == 3
    text = "\n".join(err.details)
    assert "missing-model" in text and "fix: pass --model minilm" in text and "fix: give --data-dir DIR" in text
    with pytest.raises(DataError):  # one problem is raised as it is
        preflight("finetune", None, no_data)
    preflight("finetune", None, lambda: None)


def test_a_twin_whose_teacher_is_missing_is_not_told_to_change_its_student(tmp_path):
    """A distillation twin initialised from its own teacher: another --model changes the student only,
    so the family's fix is offered to a student that is not the teacher, not to the twin."""
    from spikelm_core.training.pipeline import Pipeline

    missing = str(tmp_path / "teacher" / "final")
    fixes = {}
    spelt_otherwise = f"{tmp_path}/teacher/./final"
    for name, model in [("twin", missing), ("twin, spelt otherwise", spelt_otherwise),
                        ("student", str(tmp_path / "student"))]:
        pipeline = Pipeline(SimpleNamespace(model=model), "distill", distill=SimpleNamespace(teacher=missing))
        pipeline.model_fix = "pass --model minilm"
        with pytest.raises(CheckpointError) as info:
            pipeline.preflight()
        fixes[name] = "\n".join([info.value.message, info.value.hint or "", *info.value.details])
    assert "--model minilm" not in fixes["twin"] and "--model minilm" not in fixes["twin, spelt otherwise"]
    assert "cannot start" not in fixes["twin"]  # one model, one problem
    # a student that is not its teacher: both missing, said together, the student's with the family's fix
    assert "2 problems" in fixes["student"] and "the teacher:" in fixes["student"]
    assert fixes["student"].rstrip().endswith("pass --model minilm")


def _calib(examples=None, order="first", seed=42, batch_size=32):
    return SimpleNamespace(calibration_examples=examples, calibration_order=order, seed=seed, batch_size=batch_size)


def test_calibration_indices_first_in_file_order_by_default():
    assert calibration_indices(100, _calib()) == list(range(32))  # one training batch, as the released code
    assert calibration_indices(100, _calib(examples=5)) == [0, 1, 2, 3, 4]
    assert calibration_indices(3, _calib(examples=5)) == [0, 1, 2]  # never more than the data


def test_calibration_under_torchrun_reads_the_global_first_batch_on_every_rank(monkeypatch):
    """2 processes of batch 32 calibrate on the 64 rows one process of batch 64 would (the same on each rank,
    so the ranks' means agree with one process's); an explicit count stays as given."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        assert calibration_indices(100, _calib()) == list(range(64))
    assert calibration_indices(100, _calib(examples=5)) == [0, 1, 2, 3, 4]


def test_calibration_indices_random_is_a_seeded_draw_over_the_whole_set():
    one = calibration_indices(1000, _calib(examples=50, order="random"))
    assert one == calibration_indices(1000, _calib(examples=50, order="random"))  # the same on every rank
    assert one != calibration_indices(1000, _calib(examples=50, order="random", seed=43))
    assert one == sorted(one) and len(set(one)) == 50 and 0 <= one[0] and one[-1] < 1000
    assert max(one) > 500  # drawn over the whole file, not its start
    assert calibration_indices(4, _calib(examples=10, order="random")) == [0, 1, 2, 3]


def _args(max_steps, batch=32, accum=1, world=1, epochs=3.0):
    return SimpleNamespace(max_steps=max_steps, per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
                           world_size=world, num_train_epochs=epochs)


def test_max_epochs_caps_steps_by_passes_over_the_data():
    args = _args(1000)
    assert cap_steps_by_epochs(args, 3, 3668) == 345 and args.max_steps == 345  # MRPC: 115 batches a pass
    args = _args(1000)
    assert cap_steps_by_epochs(args, 3, 32000) is None and args.max_steps == 1000  # SST-2's 32k: 1000 steps first
    args = _args(1000, batch=8, accum=2, world=2)  # 32 examples a step
    assert cap_steps_by_epochs(args, 0.5, 8551) == 134 and planned_steps(args, 8551) == 134
    args = _args(-1)
    assert cap_steps_by_epochs(args, 3, 100) is None and args.max_steps == -1  # epochs alone: nothing to cap
    assert cap_steps_by_epochs(_args(50), None, 10) is None


def test_a_resumed_runs_calibration_is_said_to_come_from_its_checkpoint():
    from spikelm_core.training.pipeline import _calibration_text

    assert _calibration_text("the first training batch", None) == "the first training batch"
    text = _calibration_text("the first training batch", "/runs/x/checkpoint-5")
    assert text.startswith("the first training batch at the run's start") and "checkpoint-5, with its amplitudes" in text


def test_a_checkpoint_of_an_averaging_run_is_said_to_be_scored_raw(tmp_path):
    from spikelm_core.training.pipeline import _averaged_checkpoint_warning

    assert _averaged_checkpoint_warning(tmp_path) == [] and _averaged_checkpoint_warning(None) == []
    (tmp_path / "weight_average.safetensors").write_bytes(b"")
    (warning,) = _averaged_checkpoint_warning(tmp_path)
    assert "raw weights" in warning and "final/ holds the average" in warning


@pytest.mark.parametrize("kw,expected", [({}, True), ({"neuron_kind": "lif"}, False),
                                         ({"alpha_mode": "fixed", "amplitude": "unit"}, False)])
def test_calibrate_if_needed_says_calibrated_only_for_data_calibrated_amplitudes(kw, expected):
    """A run's 'calibrated' (and its 'amplitudes calibrated on ...' line) is true only when amplitudes
    came from data: LIF neurons have none, alpha_mode 'fixed' keeps fixed_alpha."""
    import torch

    from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification
    from spikelm_core.training.pipeline import calibrate_if_needed
    from tests.conftest import TINY

    model = SpikingBertForSequenceClassification(SpikingBertConfig(**TINY, num_timesteps=2, **kw))
    ids = torch.randint(5, 99, (2, 7))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    assert calibrate_if_needed(model, batch, converted=True) is expected
