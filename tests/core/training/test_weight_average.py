"""`train.weight_average`: the moving average against hand-computed values, its swap, file and
resume, and a tiny run whose evaluations, best checkpoint and final/ are the average."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from spikelm_core.config import FinetuneConfig, load_config
from spikelm_core.errors import CheckpointError
from spikelm_core.training.weight_average import FILE, WeightAverage, decay_at
from tests.core.training.test_finetune import _Kill, _KillAfter
from tests.training_fixtures import finetune_overrides, tiny_dirs  # noqa: F401


def _model(w):
    model = torch.nn.Linear(2, 1, bias=False)
    model.frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([w]))
    return model


def _set(model, w):
    with torch.no_grad():
        model.weight.copy_(torch.tensor([w]))


def test_the_decay_warms_up_then_holds():
    assert decay_at(0.99, 0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert decay_at(0.99, 8) == pytest.approx(0.5)  # 9 / 18
    assert decay_at(0.99, 10_000) == 0.99
    assert decay_at(0.5, 100) == 0.5


def test_the_average_against_hand_computed_values():
    model = _model([1.0, 2.0])
    avg = WeightAverage(model, decay=0.9)
    assert avg.names == ["weight"]  # frozen parameters are not averaged
    _set(model, [3.0, 4.0])
    avg.update(model)  # d = 0.1: 0.1 * [1, 2] + 0.9 * [3, 4]
    torch.testing.assert_close(avg.average["weight"], torch.tensor([[2.8, 3.8]]))
    _set(model, [0.0, 0.0])
    avg.update(model)  # d = 2 / 11: (2 / 11) * [2.8, 3.8]
    torch.testing.assert_close(avg.average["weight"], torch.tensor([[2.8 * 2 / 11, 3.8 * 2 / 11]]))
    assert avg.updates == 2


def test_the_swap_puts_the_own_weights_back_even_on_error():
    model = _model([1.0, 2.0])
    avg = WeightAverage(model, decay=0.9)
    _set(model, [5.0, 6.0])
    with avg.swapped_in(model):
        assert model.weight.tolist() == [[1.0, 2.0]]
    assert model.weight.tolist() == [[5.0, 6.0]]
    with pytest.raises(RuntimeError), avg.swapped_in(model):
        raise RuntimeError("boom")
    assert model.weight.tolist() == [[5.0, 6.0]]


def test_the_file_round_trips_and_a_wrong_one_is_refused(tmp_path):
    model = _model([1.0, 2.0])
    avg = WeightAverage(model, decay=0.9)
    _set(model, [3.0, 4.0])
    avg.update(model)
    avg.save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [FILE]  # written atomically: no temporary file left
    again = WeightAverage(_model([0.0, 0.0]), decay=0.9)
    again.load(tmp_path)
    assert again.updates == 1 and torch.equal(again.average["weight"], avg.average["weight"])
    other = torch.nn.Linear(2, 1)  # has a bias the file lacks
    with pytest.raises(CheckpointError, match="lacks 1 of the model's parameters"):
        WeightAverage(other, decay=0.9).load(tmp_path)
    (tmp_path / FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read .*weight_average.safetensors"):
        again.load(tmp_path)


# ----------------------------------------------------------------------------------- a tiny run

def _cfg(dirs, out, *extra):
    return load_config(FinetuneConfig, "recipes/tiny/finetune.yaml",
                       finetune_overrides(dirs, "train.weight_average=0.5", "train.lr=1e-3", *extra),
                       out_dir=str(out))


@pytest.mark.slow
def test_a_run_evaluates_keeps_and_saves_the_average(tiny_dirs, tmp_path):
    from spikelm_core.training import run_finetune

    out = tmp_path / "run"
    r = run_finetune(_cfg(tiny_dirs, out))
    for step in (2, 4):  # checkpoints: the raw weights, the average beside them
        raw = load_file(out / f"checkpoint-{step}" / "model.safetensors")
        average = load_file(out / f"checkpoint-{step}" / FILE)
        assert average and all(name in raw for name in average)
        assert any(not torch.equal(raw[name], average[name]) for name in average)
    best = load_file(f"{r.best_checkpoint}/{FILE}")
    final = load_file(out / "final" / "model.safetensors")
    for name, value in best.items():  # final/ is the best checkpoint's average
        torch.testing.assert_close(final[name], value, rtol=0, atol=0, msg=name)
    assert not (out / "final" / FILE).exists()
    # the evaluation that chose the best checkpoint scored its average: the final evaluation repeats it
    step = int(r.best_checkpoint.rsplit("-", 1)[1])
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"eval_loss"' in x]
    logged = next(x["eval_loss"] for x in evals if x["step"] == step)
    assert r.metrics["dev"]["loss"] == pytest.approx(logged, abs=1e-5)


@pytest.mark.slow
def test_resume_restores_the_average(tiny_dirs, tmp_path):
    from spikelm_core.training import run_finetune

    extra = ("train.max_steps=6", "train.save_steps=3", "train.eval_strategy=no", "train.keep_best=false")
    run_finetune(_cfg(tiny_dirs, tmp_path / "full", *extra))
    with pytest.raises(_Kill):
        run_finetune(_cfg(tiny_dirs, tmp_path / "cut", *extra), callbacks=[_KillAfter(4)])
    run_finetune(_cfg(tiny_dirs, tmp_path / "cut", *extra), resume="auto")
    full = load_file(tmp_path / "full" / "final" / "model.safetensors")
    cut = load_file(tmp_path / "cut" / "final" / "model.safetensors")
    for name in full:
        torch.testing.assert_close(cut[name], full[name], rtol=0, atol=0, msg=name)
    # resumed from a checkpoint of another run directory: its own average is read
    run_finetune(_cfg(tiny_dirs, tmp_path / "other", *extra), resume=str(tmp_path / "cut" / "checkpoint-3"))
    other = load_file(tmp_path / "other" / "final" / "model.safetensors")
    for name in full:
        torch.testing.assert_close(other[name], full[name], rtol=0, atol=0, msg=name)
    (tmp_path / "cut" / "checkpoint-3" / FILE).unlink()  # a damaged checkpoint (a changed setting is refused before)
    with pytest.raises(CheckpointError, match="has no weight_average.safetensors"):
        run_finetune(_cfg(tiny_dirs, tmp_path / "cut", *extra), resume=str(tmp_path / "cut" / "checkpoint-3"))
