"""The firing-rate target: the penalty and its gradient by hand, its rate equal to firing.py's on a
padded batch, and a tiny run that logs `loss_firing`, keeps its layers eager and reports the target."""

from __future__ import annotations

import json
import math

import pytest
import torch

from spikelm_core.calibration import calibrate
from spikelm_core.config import DistillConfig, FinetuneConfig, load_config
from spikelm_core.firing import measure_firing, record_firing
from spikelm_core.models.spiking_bart import SpikingBartConfig, SpikingBartForConditionalGeneration
from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification
from spikelm_core.neurons import BiSpikeNeuron, LIFNeuron, TernarySpike
from spikelm_core.training.firing_target import FiringTarget, LayerRateRecorder, fired_count
from tests.conftest import TINY
from tests.core.models.test_spiking_bart import BART_TINY
from tests.training_fixtures import finetune_overrides, tiny_dirs  # noqa: F401

T = 3


def _ternary(alpha, learn_alpha=False, impl="fast"):
    neuron = TernarySpike(num_timesteps=len(alpha), learn_alpha=learn_alpha)
    neuron.impl = impl
    with torch.no_grad():
        neuron.alpha.copy_(torch.tensor(alpha))
        neuron.calibrated.fill_(True)
    return neuron


# --- the penalty and its gradient, by hand --------------------------------------------------------

# T = 2 steps of 3 elements, amplitudes a = (1, 2): levels (1, 0, -1) at t = 0, (1, 0, 1) at t = 1;
# 2.5 > a_1 lies outside the straight-through window. 4 of 6 fired: rate 2/3.
X = [[[0.8, -0.3, -0.9]], [[1.5, 0.5, 2.5]]]


@pytest.mark.parametrize("impl", ["fast", "inline", "reference"])
@pytest.mark.parametrize("learn_alpha", [False, True], ids=["frozen-alpha", "learn-alpha"])
def test_hinge_penalty_and_its_gradient_by_hand(impl, learn_alpha):
    neuron = _ternary([1.0, 2.0], learn_alpha, impl)
    x = torch.tensor(X, requires_grad=True)
    fired, elements = fired_count(neuron, neuron(x))
    assert (fired.item(), elements.item()) == (4, 6)
    penalty = FiringTarget(rate=0.5).penalty({"layer.0": fired / elements})
    assert penalty.item() == pytest.approx((2 / 3 - 1 / 2) ** 2)  # 1/36
    wanted = [x] + ([neuron.alpha] if learn_alpha else [])
    grads = torch.autograd.grad(penalty, wanted)
    # dP/drate = 2 (2/3 - 1/2) = 1/3, drate/df = 1/6: dP/df = 1/18.
    # df/du = sign(s)/a inside the window: (1, 0, -1)/1 at t = 0, (1/2, 0, 0 outside) at t = 1
    torch.testing.assert_close(grads[0].squeeze(1), torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.0, 0.0]]) / 18)
    if learn_alpha:
        # df/da_t = -g |u| / a_t^2 for fired elements inside the window, g = 1/sqrt(3) (LSQ scale)
        g = 1 / math.sqrt(3)
        torch.testing.assert_close(grads[1], torch.tensor([-(0.8 + 0.9) / 1, -1.5 / 4]) * g / 18)


def test_hinge_is_silent_below_the_target_and_squared_is_not():
    rates = {"layer.0": torch.tensor(0.1, requires_grad=True), "layer.1": torch.tensor(0.4, requires_grad=True)}
    hinge = FiringTarget(rate=0.2).penalty(rates)
    assert hinge.item() == pytest.approx(0.2**2 / 2)
    assert [g.item() for g in torch.autograd.grad(hinge, list(rates.values()))] == [0.0, pytest.approx(0.2)]
    squared = FiringTarget(rate=0.2, form="squared").penalty(rates)
    assert squared.item() == pytest.approx((0.1**2 + 0.2**2) / 2)
    assert [g.item() for g in torch.autograd.grad(squared, list(rates.values()))] == [
        pytest.approx(-0.1), pytest.approx(0.2)]


def test_lif_and_binary_neurons_carry_gradient_to_silent_elements():
    # LIF, T = 1: h = x / tau = (1.5, 0.5), s = (1, 0); rate 1/2, target 0.2: dP/ds = 2 * 0.3 / 2 = 0.3,
    # ds/dx = surrogate 4 sig(4z)(1 - sig(4z)) / tau at z = h - 1 = (0.5, -0.5): the same for both
    x = torch.tensor([[[3.0, 1.0]]], requires_grad=True)
    lif = LIFNeuron(num_timesteps=1)
    fired, elements = fired_count(lif, lif(x))
    (grad,) = torch.autograd.grad(FiringTarget(rate=0.2).penalty({"l": fired / elements}), x)
    sig = torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(grad.flatten(), (0.3 * 4 * sig * (1 - sig) / 2).repeat(2))
    # binary elastic neuron, a = 2, T = 1: u = (1.5, 0.6) gives levels (1, 0); f = s / a has gradient
    # 1/a on the whole window 0 <= u <= a, the silent element included
    binary = BiSpikeNeuron(num_timesteps=1, levels="binary", alpha_mode="fixed", fixed_alpha=2.0)
    u = torch.tensor([[[1.5, 0.6]]], requires_grad=True)
    fired, elements = fired_count(binary, binary(u))
    (grad,) = torch.autograd.grad(FiringTarget(rate=0.2).penalty({"l": fired / elements}), u)
    torch.testing.assert_close(grad.flatten(), torch.tensor([0.3 / 2, 0.3 / 2]))


def test_pads_are_left_out():
    neuron = _ternary([1.0])
    spikes = neuron(torch.tensor([[[[0.9, 0.1], [0.9, 0.9], [0.9, 0.9]]]]))  # [T=1, B=1, L=3, D=2]
    fired, elements = fired_count(neuron, spikes, torch.tensor([[1, 1, 0]]))
    assert (fired.item(), elements.item()) == (3, 4)


# --- the rate is firing.py's ----------------------------------------------------------------------


def _padded(batch=5, length=7, seed=1):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _bert(**neuron):
    torch.manual_seed(0)
    config = SpikingBertConfig(**TINY, num_timesteps=T, num_labels=2, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0, **neuron)
    return SpikingBertForSequenceClassification(config)


def _bart():
    torch.manual_seed(0)
    return SpikingBartForConditionalGeneration(SpikingBartConfig(**BART_TINY, num_timesteps=T, dropout=0.0))


@pytest.mark.parametrize("make, extra", [
    pytest.param(_bert, {"labels": torch.tensor([0, 1, 0, 1, 1])}, id="bert"),
    pytest.param(lambda: _bert(learn_alpha=True), {"labels": torch.tensor([0, 1, 0, 1, 1])}, id="bert-learn-alpha"),
    pytest.param(lambda: _bert(neuron_kind="lif"), {"labels": torch.tensor([0, 1, 0, 1, 1])}, id="lif-bert"),
    pytest.param(_bart, {"labels": torch.randint(5, 99, (5, 6), generator=torch.Generator().manual_seed(2))},
                 id="bart"),
])
def test_training_rates_equal_firing_py_on_a_padded_batch(make, extra):
    model = make()
    batch = _padded()
    calibrate(model, batch)
    model.train()
    recorder = LayerRateRecorder(model)
    with record_firing(model) as report, recorder:
        loss = model(**batch, **extra).loss
    rates = recorder.layer_rates()
    assert list(rates) == list(report.layer_rates())
    for key, rate in rates.items():
        assert rate.item() == pytest.approx(report.layer_rates()[key], rel=1e-12), key
    penalty = FiringTarget(rate=0.01).penalty(rates)
    penalty.backward()
    assert penalty.item() > 0 and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert loss.requires_grad
    if "bart" not in str(type(model)).lower():  # an eval-mode pass sees the same spikes (no dropout)
        measured = measure_firing(model, [batch]).layer_rates()
        assert {k: v.item() for k, v in rates.items()} == pytest.approx(measured, rel=1e-12)


# --- a run ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_finetune_with_a_target_logs_the_penalty_runs_eagerly_and_reports_the_target(tiny_dirs, tmp_path, caplog):
    from spikelm_core.training import run_finetune

    cfg = load_config(FinetuneConfig, "recipes/tiny/finetune.yaml", finetune_overrides(
        tiny_dirs, "train.target_firing_rate=0.05", "train.firing_rate_weight=2.0", "train.compile=layers",
        "train.eval_strategy=no", "train.keep_best=false"), out_dir=str(tmp_path / "run"))
    with caplog.at_level("INFO", logger="spikelm"):
        result = run_finetune(cfg)
    assert "train.target_firing_rate is set: spiking layers run eagerly" in caplog.text
    assert "compiled" not in caplog.text
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_logs = [x for x in logs if "loss" in x]
    assert len(train_logs) == 4 and all(x["loss_firing"] > 0 for x in train_logs)
    data = result.to_dict()
    assert data["target_firing_rate"] == 0.05 and data["schema"] == "spikelm.run/2"
    assert set(data["layer_firing_rates"]) == {"layer.0", "layer.1"}
    assert "target_firing_rate: 0.05" in (tmp_path / "run" / "run_config.yaml").read_text()


@pytest.mark.slow
def test_distill_adds_the_penalty_to_its_terms(tiny_dirs, tmp_path):
    from spikelm_core.training import run_distill

    overrides = [f"model={tiny_dirs['teacher']}", f"distill.teacher={tiny_dirs['teacher']}", "data.source=glue/sst2",
                 f"data.data_dir={tiny_dirs['glue']}", "data.max_length=16", "neuron.num_timesteps=3",
                 "train.batch_size=5", "train.max_steps=2", "train.eval_strategy=no", "train.keep_best=false",
                 "train.target_firing_rate=0.05"]
    cfg = load_config(DistillConfig, "recipes/tiny/distill.yaml", overrides, out_dir=str(tmp_path / "run"))
    result = run_distill(cfg)
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = next(x for x in logs if "loss" in x)
    assert {"loss_ce", "loss_kd", "loss_hidden", "loss_attn", "loss_firing"} <= set(first)
    assert first["loss_firing"] > 0 and result.target_firing_rate == 0.05
