"""Per-channel amplitudes (`neuron.channel_scale`): the scales against hand-computed means, every
implementation against the written-out reference on the rescaled input, counting on the spike levels,
and the scales saved with the model."""

import pytest
import torch

from spikelm_core.checkpoints import load_model
from spikelm_core.conversion import convert_model
from spikelm_core.firing import measure_firing
from spikelm_core.neurons import BiSpikeNeuron
from spikelm_core.neurons import reference as R
from spikelm_core.neurons.base import set_neuron_impl
from spikelm_core.neurons.settings import CHANNEL_SCALE_RULE, NeuronSettings


def _inputs(T=3, C=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.3, 6.0, C, dtype=torch.float64)  # channels of very different widths
    return torch.randn(T, 4, 5, C, generator=g, dtype=torch.float64) * scale + 0.1


def _neuron(T=3, C=11, **kw) -> BiSpikeNeuron:
    n = BiSpikeNeuron(num_timesteps=T, channel_scale=True, **kw)
    n.set_input_width(C)  # as SpikeLinear does, before the model's dtype is set
    return n.double()


def test_scales_are_channel_means_over_the_overall_mean():
    x = _inputs(seed=1)
    n = _neuron()
    n.calibrate(x)
    rows = x.reshape(-1, 11)
    per_channel = [sum(abs(float(v)) for v in rows[:, c]) / rows.shape[0] for c in range(11)]
    overall = sum(per_channel) / 11
    torch.testing.assert_close(n.channel_scales, torch.tensor([p / overall for p in per_channel], dtype=torch.float64))
    # the amplitudes are those of the rescaled current
    torch.testing.assert_close(n.alpha, R.bi_spike_calibrate_reference(x / n.channel_scales, 2.0).to(n.alpha.dtype))


@pytest.mark.parametrize("impl", ["reference", "inline", "fast"])
@pytest.mark.parametrize("reset", ["official", "soft"])
@pytest.mark.parametrize("learn_alpha", [False, True])
def test_scaled_neuron_equals_reference_on_the_rescaled_input(impl, reset, learn_alpha):
    x = _inputs(seed=2)
    n = _neuron(reset=reset, learn_alpha=learn_alpha)
    n.calibrate(x)
    n.impl = impl
    c = n.channel_scales
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    s = n(x1)
    r = R.bi_spike_reference(x2 / c, n.alpha, reset=reset, learn_alpha=learn_alpha) * c
    torch.testing.assert_close(s, r, atol=1e-12, rtol=0)
    g = torch.randn_like(s)
    s.backward(g)
    r.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-10, rtol=0)
    # per step, the levels are ternary times a_t once the channel factor is taken out
    q = n.spike_levels(s.detach()) / n.alpha.detach().view(-1, 1, 1, 1)
    assert set(torch.round(q).unique().tolist()) <= {-1.0, 0.0, 1.0}
    torch.testing.assert_close(q, torch.round(q), atol=1e-9, rtol=0)


def test_scaled_channels_stay_in_the_weight_aware_calibration():
    """With per-layer k too, the candidates are scored on the rescaled current and weight W diag(c)."""
    x = _inputs(T=3, seed=5)
    w = torch.randn(6, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    n = _neuron(k_candidates=(1.0, 2.0, 4.0))
    n.calibrate(x, weight=w)
    c = n.channel_scales
    errors = {}
    for k in (1.0, 2.0, 4.0):
        alpha = R.bi_spike_calibrate_reference(x / c, k)
        errors[k] = float((((R.bi_spike_reference(x / c, alpha) - x / c) @ (w * c).t()) ** 2).sum())
    assert float(n.k_chosen) == min(errors, key=errors.get)


def test_channel_scale_is_validated():
    with pytest.raises(ValueError, match=CHANNEL_SCALE_RULE.split(" needs")[0]):
        NeuronSettings(kind="lif", channel_scale=True)
    with pytest.raises(ValueError, match="calibrated"):
        NeuronSettings(alpha_mode="fixed", channel_scale=True)
    off = BiSpikeNeuron(2)
    off.set_input_width(5)
    assert getattr(off, "channel_scales", None) is None  # no buffer, no state-dict key, without the option


def test_converted_model_saves_its_scales_and_counts_ternary_spikes(tiny_dense_bert_dir, tmp_path):
    out = tmp_path / "scaled"
    r = convert_model(str(tiny_dense_bert_dir), out, NeuronSettings(num_timesteps=2, channel_scale=True), seq_len=12,
                      batch_size=2)
    assert r.settings["channel_scale"] is True and 0 < r.firing_rate < 1
    loaded = load_model(out, head=None).model.eval()
    scales = {k: v for k, v in loaded.state_dict().items() if k.endswith(".channel_scales")}
    assert len(scales) == 12 and not any(torch.all(v == 1) for v in scales.values())  # calibrated, saved, reloaded
    ids = torch.randint(4, 99, (2, 9), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    report = measure_firing(loaded, [batch])
    kinds = {stats.kind for stats in report.neurons.values()}
    assert kinds <= {"ternary", "binary", "none"}  # spikes, not float values: the audit bills them as ACs


def test_impls_agree_inside_a_model(tiny_dense_bert_dir, tmp_path):
    out = tmp_path / "scaled"
    convert_model(str(tiny_dense_bert_dir), out, NeuronSettings(num_timesteps=3, channel_scale=True), seq_len=12,
                  batch_size=2)
    model = load_model(out, head=None).model.eval()
    ids = torch.randint(4, 99, (2, 7), generator=torch.Generator().manual_seed(1))
    outs = []
    for impl in ("reference", "fast"):
        set_neuron_impl(model, impl)
        with torch.no_grad():
            outs.append(model(input_ids=ids).last_hidden_state)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
