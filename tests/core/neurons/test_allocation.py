"""Outlier-aware spike allocation: salient channels with sub-steps or float, per-layer k.

Each path is held against the written-out reference (`reference.bi_spike_allocated_reference`,
sub-steps spiking the residual), the calibration against hand-computed saliency scores and errors."""

import pytest
import torch

from spikelm_core.neurons import BiSpikeNeuron
from spikelm_core.neurons import reference as R
from spikelm_core.neurons.elastic import salient_count
from spikelm_core.neurons.settings import NeuronSettings


def _inputs(T=3, C=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.3, 6.0, C, dtype=torch.float64)  # a few large (outlier) channels
    return torch.randn(T, 4, 5, C, generator=g, dtype=torch.float64) * scale + 0.1


def _neuron(T=3, C=11, **kw) -> BiSpikeNeuron:
    n = BiSpikeNeuron(num_timesteps=T, **kw).double()
    n.set_input_width(C)
    return n


@pytest.mark.parametrize("mode,steps", [("steps", 2), ("steps", 3), ("float", 2)])
@pytest.mark.parametrize("reset", ["official", "soft"])
@pytest.mark.parametrize("levels", ["ternary", "binary"])
@pytest.mark.parametrize("learn_alpha", [False, True])
def test_allocated_neuron_equals_reference(mode, steps, reset, levels, learn_alpha):
    x = _inputs()
    w = torch.randn(7, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    n = _neuron(reset=reset, levels=levels, salient_fraction=0.25, salient_mode=mode, salient_steps=steps,
                learn_alpha=learn_alpha)
    n.calibrate(x, weight=w)
    assert int(n.salient.sum()) == salient_count(0.25, 11) == 3
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    s = n(x1)
    r = R.bi_spike_allocated_reference(x2, n.alpha, n.salient, mode, steps, reset=reset, levels=levels,
                                       learn_alpha=learn_alpha)
    assert torch.equal(s, r)
    g = torch.randn_like(s)
    alpha_grads = []
    for out in (s, r):
        if learn_alpha:
            n.alpha.grad = None
        out.backward(g)
        alpha_grads.append(n.alpha.grad.clone() if learn_alpha else None)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-10, rtol=0)
    if learn_alpha:
        torch.testing.assert_close(alpha_grads[0], alpha_grads[1], atol=1e-10, rtol=0)
    # the levels: ordinary channels ternary (binary), salient ones up to `steps` each side, or float
    q = s.detach() / n.alpha.detach().view(-1, 1, 1, 1)
    plain = torch.round(q[..., ~n.salient]).unique().tolist()
    assert set(plain) <= ({-1.0, 0.0, 1.0} if levels == "ternary" else {0.0, 1.0})
    if mode == "float":
        assert torch.equal(s.detach()[..., n.salient], x[..., n.salient])
    else:
        levels_seen = set(torch.round(q[..., n.salient]).unique().tolist())
        top = set(range(-steps if levels == "ternary" else 0, steps + 1))
        assert levels_seen <= top and max(levels_seen) == steps  # the outlier channels use the extra range


def test_salient_channels_are_the_top_scores_and_stay_out_of_the_amplitudes():
    x = _inputs(T=2, seed=3)
    w = torch.randn(5, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    n = _neuron(T=2, salient_fraction=0.2)
    n.calibrate(x, weight=w)
    rows = x.reshape(-1, 11)
    # mean over rows of (x W^T W)_c * x_c, written out channel by channel
    score = torch.tensor([
        sum(float(rows[r] @ w.t() @ w[:, c] * rows[r, c]) for r in range(rows.shape[0])) / rows.shape[0]
        for c in range(11)
    ], dtype=torch.float64)
    expected = torch.zeros(11, dtype=torch.bool)
    expected[score.argsort(descending=True)[:2]] = True
    assert torch.equal(n.salient, expected)
    keep = x[..., ~expected]
    torch.testing.assert_close(n.alpha, R.bi_spike_calibrate_reference(keep, 2.0).to(n.alpha.dtype))


def test_per_layer_k_picks_the_least_output_error():
    x = _inputs(T=3, seed=5)
    w = torch.randn(6, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    candidates = (1.0, 1.5, 2.0, 3.0, 4.0)
    n = _neuron(k_candidates=candidates)
    n.calibrate(x, weight=w)
    errors = {}
    for k in candidates:
        alpha = R.bi_spike_calibrate_reference(x, k)
        s = R.bi_spike_reference(x, alpha)
        errors[k] = float((((s - x) @ w.t()) ** 2).sum())
    best = min(errors, key=errors.get)
    assert float(n.k_chosen) == best
    torch.testing.assert_close(n.alpha, R.bi_spike_calibrate_reference(x, best))
    assert len(set(errors.values())) == len(candidates)  # the choice is not a tie


def test_without_allocation_the_neuron_is_unchanged():
    x = _inputs(seed=7).float()
    plain = BiSpikeNeuron(3)
    one_k = BiSpikeNeuron(3, k_candidates=(2.0,))
    assert torch.equal(plain(x), one_k(x)) and torch.equal(plain.alpha, one_k.alpha)
    assert float(one_k.k_chosen) == 2.0


def test_salient_count():
    assert salient_count(0.0, 100) == 0
    assert salient_count(0.001, 100) == 1  # at least one channel once allocation is on
    assert salient_count(0.02, 576) == 12
    assert salient_count(0.995, 64) == 63  # never every channel: the spiking ones' amplitudes average over them


def test_a_fraction_near_one_keeps_a_spiking_channel_with_finite_amplitudes():
    n = _neuron(salient_fraction=0.99)
    n.calibrate(_inputs())
    assert int(n.salient.sum()) == 10 and torch.isfinite(n.alpha).all()


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"kind": "lif", "salient_fraction": 0.1}, "elastic_bi"),
        ({"alpha_mode": "fixed", "k_candidates": (2.0,)}, "calibrated"),
        ({"salient_fraction": 1.0}, "less than 1"),
        ({"salient_steps": 1}, "greater than or equal to 2"),
        ({"k_candidates": (2.0, -1.0)}, "positive"),
        ({"salient_mode": "half"}, "steps"),
    ],
)
def test_allocation_settings_are_validated(kw, needle):
    with pytest.raises(ValueError, match=needle):
        NeuronSettings(**kw)
