"""Neurons: fast paths against the reference loops, calibration, statistics, LIF semantics."""

import pytest
import torch

from spikelm_core.neurons import BiSpikeNeuron, LIFNeuron, TernarySpike
from spikelm_core.neurons import reference as R

CASES = [
    pytest.param(T, reset, k, levels, id=f"T{T}-{reset}-k{k}-{levels}")
    for T in (1, 4)
    for reset in ("official", "soft")
    for k in (2.0, 3.0, 4.0)
    for levels in ("ternary", "binary")
]


@pytest.mark.parametrize("impl", ["fast", "inline"])  # inline: the plain-op form compiled layers trace
@pytest.mark.parametrize("T,reset,k,levels", CASES)
def test_bi_spike_fast_equals_reference(T, reset, k, levels, impl):
    torch.manual_seed(T * 7 + int(k))
    x = torch.randn(T, 5, 7, 24) * 1.3 + 0.1
    n = BiSpikeNeuron(num_timesteps=T, k=k, reset=reset, levels=levels)
    n.impl = impl
    x1 = x.clone().requires_grad_()
    s = n(x1)
    assert n.is_calibrated
    assert torch.allclose(n.alpha, R.bi_spike_calibrate_reference(x, k, reset=reset, levels=levels))
    x2 = x.clone().requires_grad_()
    r = R.bi_spike_reference(x2, n.alpha, reset=reset, levels=levels)
    assert torch.equal(s, r)
    g = torch.randn_like(s)
    s.backward(g)
    r.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-6, rtol=0)
    # spikes take only the allowed levels
    alpha = n.alpha.view(T, 1, 1, 1)
    q = s / alpha
    allowed = {-1.0, 0.0, 1.0} if levels == "ternary" else {0.0, 1.0}
    assert set(torch.round(q).unique().tolist()) <= allowed
    torch.testing.assert_close(q, torch.round(q))


@pytest.mark.parametrize("impl", ["fast", "inline"])
@pytest.mark.parametrize("reset", ["official", "soft"])
@pytest.mark.parametrize("levels", ["ternary", "binary"])
def test_bf16_spikes_and_amplitudes_equal_reference(impl, reset, levels):
    """In bf16 (autocast's FFN2 / O / K-V inputs) the fast paths, the calibration and the reference
    compute with the amplitudes in bf16 alike: the same amplitudes, the same spikes (odd shapes, T=3)."""
    torch.manual_seed(3)
    x = (torch.randn(3, 64, 33, 37) * 1.3 + 0.1).to(torch.bfloat16)
    n = BiSpikeNeuron(num_timesteps=3, k=2.0, reset=reset, levels=levels)
    n.impl = impl
    n.calibrate(x)
    assert torch.equal(n.alpha, R.bi_spike_calibrate_reference(x, 2.0, reset=reset, levels=levels))
    s = n(x)
    assert s.dtype == torch.bfloat16 and torch.equal(s, R.bi_spike_reference(x, n.alpha, reset=reset, levels=levels))
    stateless = TernarySpike(num_timesteps=3, levels=levels)
    stateless.impl = impl
    s = stateless(x)
    assert torch.equal(s, R.ternary_spike_reference(x, stateless.alpha, levels))


@pytest.mark.parametrize("reset", ["official", "soft", "none"])
@pytest.mark.parametrize("levels", ["ternary", "binary"])
def test_eager_neuron_with_unit_amplitude_equals_reference(reset, levels):
    """The eager fast path with spikes of 1 (the ablation's unit amplitude) and with no reset."""
    torch.manual_seed(5)
    x = torch.randn(3, 4, 9, 10) * 0.8
    n = BiSpikeNeuron(num_timesteps=3, reset=reset, levels=levels, amplitude="unit", alpha_mode="fixed", fixed_alpha=0.6)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    s, r = n(x1), R.bi_spike_reference(x2, n.alpha, reset=reset, levels=levels, amplitude="unit")
    assert torch.equal(s, r)
    g = torch.randn_like(s)
    s.backward(g)
    r.backward(g)
    assert torch.equal(x1.grad, x2.grad)  # the eager path runs the reference's arithmetic


def test_calibrated_flag_is_read_again_after_load():
    """The host-side cache of the `calibrated` flag follows load_state_dict and mark_uncalibrated."""
    n = BiSpikeNeuron(2)
    n.calibrate(torch.randn(2, 3, 4))
    assert n.is_calibrated
    n.load_state_dict(BiSpikeNeuron(2).state_dict())
    assert not n.is_calibrated
    n.calibrate(torch.randn(2, 3, 4))
    n.mark_uncalibrated()
    assert not n.is_calibrated


def test_module_reference_switch_gives_same_result():
    torch.manual_seed(1)
    x = torch.randn(4, 3, 11)
    n = BiSpikeNeuron(4)
    fast = n(x)
    n.impl = "reference"
    assert torch.equal(n(x), fast)


@pytest.mark.parametrize("impl", ["fast", "inline"])
@pytest.mark.parametrize("T", [1, 4])
@pytest.mark.parametrize("levels", ["ternary", "binary"])
def test_stateless_spike_fast_equals_reference(T, levels, impl):
    torch.manual_seed(T)
    x = torch.randn(T, 5, 3, 7, 8)
    n = TernarySpike(num_timesteps=T, levels=levels)
    n.impl = impl
    x1 = x.clone().requires_grad_()
    s = n(x1)
    torch.testing.assert_close(n.alpha, 2.0 * x.abs().mean(dim=(1, 2, 3, 4)))
    x2 = x.clone().requires_grad_()
    r = R.ternary_spike_reference(x2, n.alpha, levels)
    assert torch.equal(s, r)
    g = torch.randn_like(s)
    s.backward(g)
    r.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-6, rtol=0)


def test_calibrated_amplitudes_match_the_method_sanity_numbers():
    # the method's sanity numbers (spikelm-method.md section 6), official reset, k = 2; the per-step
    # firing rates of the same input are checked in tests/core/test_firing.py
    torch.manual_seed(0)
    x = torch.randn(100_000).expand(4, -1).contiguous()
    n = BiSpikeNeuron(4, k=2.0)
    n(x)
    torch.testing.assert_close(n.alpha, torch.tensor([1.60, 2.24, 3.20, 5.32]), atol=0, rtol=0.01)


def test_step_zero_amplitude_is_k_mean_abs():
    x = torch.randn(2, 1000)
    n = BiSpikeNeuron(2, k=3.0)
    n(x)
    torch.testing.assert_close(n.alpha[0], 3.0 * x[0].abs().mean())


def test_ties_round_half_to_even_and_ste_window_inclusive():
    n = BiSpikeNeuron(1, alpha_mode="fixed", fixed_alpha=2.0)
    x = torch.tensor([[1.0, 1.0001, -1.0, -1.0001, 2.0, 2.0001, -2.0]], requires_grad=True)
    s = n(x)
    assert s.tolist() == [[0.0, 2.0, 0.0, -2.0, 2.0, 2.0, -2.0]]
    s.sum().backward()
    assert x.grad.tolist() == [[1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0]]


def test_calibration_happens_once_and_survives_state_dict():
    torch.manual_seed(0)
    n = BiSpikeNeuron(3)
    n(torch.randn(3, 50))
    alpha = n.alpha.clone()
    n(torch.randn(3, 50) * 10)  # a second, very different batch does not recalibrate
    assert torch.equal(n.alpha, alpha)
    sd = n.state_dict()
    assert set(sd) == {"alpha", "calibrated"} and bool(sd["calibrated"])
    m = BiSpikeNeuron(3)
    m.load_state_dict(sd)
    m(torch.randn(3, 50) * 5)
    assert torch.equal(m.alpha, alpha)


def test_fixed_alpha_never_calibrates():
    n = BiSpikeNeuron(2, alpha_mode="fixed", fixed_alpha=0.5, amplitude="unit")
    s = n(torch.tensor([[0.3, -0.2, 0.1], [0.0, 0.0, 0.0]]))
    assert n.alpha.tolist() == [0.5, 0.5]
    assert s[0].tolist() == [1.0, 0.0, 0.0]  # unit amplitude, threshold 0.25


@pytest.mark.parametrize("bad", [dict(k=0.0), dict(num_timesteps=0), dict(reset="hard"), dict(levels="quaternary")])
def test_bad_neuron_arguments(bad):
    with pytest.raises(ValueError):
        BiSpikeNeuron(**bad)


def test_wrong_time_axis_is_reported():
    with pytest.raises(ValueError, match="T=4"):
        BiSpikeNeuron(4)(torch.randn(3, 2))


def test_lif_hand_worked_sequence():
    # tau 2, V_th 1, V_reset 0: H_t = V + (X - V)/2, spike iff H >= 1, hard reset to 0.
    # X = 1.5 -> H 0.75; 0.8 -> 0.775; 0.8 -> 0.7875; 3.0 -> 1.89375 (spike, V=0); 2.0 -> 1.0 (spike)
    x = torch.tensor([1.5, 0.8, 0.8, 3.0, 2.0]).view(5, 1)
    s = LIFNeuron()(x)
    assert s.view(-1).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_lif_fast_equals_reference_with_surrogate_gradient():
    torch.manual_seed(3)
    x = torch.randn(4, 5, 9) * 1.5 + 0.5
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    s, r = LIFNeuron()(x1), R.lif_reference(x2)
    assert torch.equal(s, r)
    g = torch.randn_like(s)
    s.backward(g)
    r.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-6, rtol=0)
    # single step: dS/dX = (1/tau) * a * sig(a z) (1 - sig(a z)), z = X/tau - 1
    x0 = torch.tensor([[0.6]], requires_grad=True)
    LIFNeuron()(x0).sum().backward()
    sig = torch.sigmoid(torch.tensor(4 * (0.3 - 1.0)))
    torch.testing.assert_close(x0.grad, (0.5 * 4 * sig * (1 - sig)).view(1, 1))


@pytest.mark.slow
@pytest.mark.parametrize("reset", ["official", "soft"])
def test_compiled_kernels_equal_reference(reset):
    from spikelm_core.neurons import functional as F

    if F.compiled_kernels() is None:
        pytest.skip("torch.compile is unavailable here")
    torch.manual_seed(5)
    x = torch.randn(4, 3, 5, 16)
    n = BiSpikeNeuron(4, reset=reset)
    n.impl = "compiled"
    x1 = x.clone().requires_grad_()
    s = n(x1)
    x2 = x.clone().requires_grad_()
    r = R.bi_spike_reference(x2, n.alpha, reset=reset)
    assert torch.equal(s, r)
    g = torch.randn_like(s)
    s.backward(g)
    r.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("reset", ["official", "none"])
def test_compiled_kernels_in_bf16_differ_from_reference_only_at_the_threshold(reset):
    """bf16 input: inductor keeps the compiled kernels' intermediates in float32, so round(u / a) reads a
    finer quotient than the eager paths' bf16 one (docs/spikelm-method.md, section 2): a few levels near
    a/2 differ, by one level, and nothing else (in float32 the kernels equal the reference exactly)."""
    from spikelm_core.neurons import functional as F

    if F.compiled_kernels() is None:
        pytest.skip("torch.compile is unavailable here")
    torch.manual_seed(5)
    x = (torch.randn(4, 8, 16, 64) * 3).to(torch.bfloat16)
    n = BiSpikeNeuron(4, reset=reset)
    n.calibrate(x)
    n.impl = "compiled"
    got = n(x.clone().requires_grad_()).detach().float()
    ref = R.bi_spike_reference(x, n.alpha, reset=reset).float()
    differ = got != ref
    assert differ.float().mean() < 0.005
    steps = (got - ref).abs() / n.alpha.float().reshape(-1, 1, 1, 1)
    assert torch.allclose(steps[differ], torch.ones(int(differ.sum())), rtol=0.02)
    assert torch.equal(n(x.float()).detach(), R.bi_spike_reference(x.float(), n.alpha, reset=reset))


@pytest.mark.parametrize("T,reset", [(1, "official"), (4, "official"), (4, "soft")])
@pytest.mark.parametrize("levels", ["ternary", "binary"])
def test_learn_alpha_lsq_gradient_equals_reference(T, reset, levels):
    """learn_alpha: the autograd form gives the method doc's LSQ amplitude gradient (the reference's
    explicit -1 / +1 / round(v) - v rule times 1/sqrt(numel)), and the same input gradient."""
    torch.manual_seed(11 + T)
    x = torch.randn(T, 5, 7, 24) * 1.3 + 0.1
    n = BiSpikeNeuron(num_timesteps=T, reset=reset, levels=levels, learn_alpha=True)
    n.calibrate(x)
    assert isinstance(n.alpha, torch.nn.Parameter) and n.alpha.requires_grad
    x1 = x.clone().requires_grad_()
    s = n(x1)
    alpha2 = n.alpha.detach().clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    r = R.bi_spike_reference(x2, alpha2, reset=reset, levels=levels, learn_alpha=True)
    assert torch.equal(s, r)
    g = torch.randn_like(s)
    s.backward(g)
    r.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-6, rtol=0)
    torch.testing.assert_close(n.alpha.grad, alpha2.grad, atol=1e-6, rtol=1e-5)
    assert n.alpha.grad.abs().sum() > 0
    # the stateless K/V spike
    k = TernarySpike(num_timesteps=T, levels=levels, learn_alpha=True)
    k.calibrate(x)
    x3 = x.clone().requires_grad_()
    sk = k(x3)
    alpha4 = k.alpha.detach().clone().requires_grad_()
    rk = R.ternary_spike_reference(x.clone(), alpha4, levels, learn_alpha=True)
    assert torch.equal(sk, rk)
    sk.backward(g)
    rk.backward(g)
    torch.testing.assert_close(k.alpha.grad, alpha4.grad, atol=1e-6, rtol=1e-5)


def test_learn_alpha_state_dict_loads_across_frozen_and_learnt():
    frozen = BiSpikeNeuron(2)
    frozen.calibrate(torch.randn(2, 3, 4))
    learnt = BiSpikeNeuron(2, learn_alpha=True)
    learnt.load_state_dict(frozen.state_dict())
    assert torch.equal(learnt.alpha.detach(), frozen.alpha) and learnt.is_calibrated
    with pytest.raises(ValueError, match="learn_alpha needs"):
        BiSpikeNeuron(2, learn_alpha=True, amplitude="unit")


def test_fast_neuron_saves_compact_state():
    """The backward state of the fused neuron: the amplitudes, a bool window per step and int8 levels
    of the steps whose reset the backward reads (all but the last; none at T = 1 or without the
    official reset)."""
    for T, reset, levels in ((4, "official", 3), (1, "official", 0), (4, "soft", 0)):
        saved = []
        n = BiSpikeNeuron(T, reset=reset)
        x = torch.randn(T, 3, 5, 8, requires_grad=True)
        n.calibrate(x.detach())
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
            n(x)
        step = x.numel() // T
        expected = [("torch.bool", x.numel()), ("torch.float32", T)] + ([("torch.int8", levels * step)] if levels else [])
        assert sorted((str(t.dtype), t.numel()) for t in saved) == expected


def test_packed_state_round_trips():
    from spikelm_core.neurons.functional import decode_state, encode_state

    a = torch.tensor(2.0)
    for lo in (-1, 0):
        u = torch.tensor([-5.0, -2.0, -1.5, -1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.0001, 7.0])
        q = torch.clamp(torch.round(u / a), lo, 1)
        code = encode_state(q, u, a, lo)
        assert code.dtype == torch.int8
        level, window = decode_state(code, torch.float32)
        assert torch.equal(level, q)
        assert torch.equal(window, ((u >= lo * a) & (u <= a)).float())


def test_learn_alpha_with_a_fixed_amplitude_starts_there_and_learns():
    """The '+ elastic amplitude' ablation row: alpha_mode fixed + learn_alpha."""
    n = BiSpikeNeuron(3, alpha_mode="fixed", fixed_alpha=0.7, learn_alpha=True)
    assert isinstance(n.alpha, torch.nn.Parameter) and torch.equal(n.alpha.detach(), torch.full((3,), 0.7))
    assert n.is_calibrated  # never calibrates
    x = torch.randn(3, 4, 6, requires_grad=True)
    s = n(x)
    r = R.bi_spike_reference(x, n.alpha, levels="ternary", learn_alpha=True)
    assert torch.equal(s, r)
    s.sum().backward()
    assert n.alpha.grad is not None and n.alpha.grad.abs().sum() > 0
    n.mark_uncalibrated()  # a fixed amplitude is never recalibrated: it keeps what it learnt
    assert n.is_calibrated


def test_model_config_lif_constants_are_checked():
    from spikelm_core.neurons.settings import check_model_neuron_fields

    check_model_neuron_fields({"neuron_kind": "lif", "lif_tau": 2.0})
    for bad, message in ((0, "lif_tau must be positive, got 0"), (-1.5, "lif_tau must be positive"),
                         (float("inf"), "lif_tau must be a finite number")):
        with pytest.raises(ValueError, match=message):
            check_model_neuron_fields({"neuron_kind": "lif", "lif_tau": bad})


def test_a_bad_neuron_impl_variable_is_a_config_error_naming_it(monkeypatch):
    """SPIKELM_NEURON_IMPL is read when a neuron is built: a wrong value is named as the variable's fault
    (exit 2), not blamed on the model's config.json."""
    from spikelm_core.errors import ConfigError
    from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification
    from spikelm_core.checkpoints import instantiate

    monkeypatch.setenv("SPIKELM_NEURON_IMPL", "bogus")
    with pytest.raises(ConfigError, match="SPIKELM_NEURON_IMPL='bogus'"):
        BiSpikeNeuron(2)
    cfg = SpikingBertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=16, num_timesteps=2)
    with pytest.raises(ConfigError, match="SPIKELM_NEURON_IMPL"):
        instantiate(SpikingBertForSequenceClassification, cfg, "config.json")
