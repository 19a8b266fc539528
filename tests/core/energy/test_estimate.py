"""Energy arithmetic (spikelm_core.energy.estimate), cost profiles, the paper setting, and spikes billed as ACs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from spikelm_core.energy import (
    FP16,
    FP32,
    INT8,
    EnergyAuditError,
    MacRow,
    count_macs,
    energy_from_counts,
    estimate_energy,
    get_profile,
    implied_mean_firing_rate,
    paper_setting,
)
from spikelm_core.errors import ConfigError
from spikelm_core.firing import measure_firing, spike_stats

# --- cost profiles ----------------------------------------------------------------------------


def test_profiles_are_horowitz_45nm():
    assert (FP32.e_mac_pj, FP32.e_ac_pj) == (4.6, 0.9)
    assert (FP16.e_mac_pj, FP16.e_ac_pj) == (1.5, 0.4)
    assert (INT8.e_mac_pj, INT8.e_ac_pj) == (0.23, 0.03)
    assert all("Horowitz, ISSCC 2014, 45 nm" in p.source for p in (FP32, FP16, INT8))
    assert get_profile() is FP32 and get_profile("int8") is INT8
    with pytest.raises(Exception):  # frozen
        FP32.e_mac_pj = 1.0  # type: ignore[misc]


def test_profile_overrides_and_errors():
    custom = get_profile("fp32", e_ac_pj=0.5)
    assert (custom.e_mac_pj, custom.e_ac_pj, custom.name) == (4.6, 0.5, "fp32+custom")
    assert "E_AC=0.5 pJ" in custom.source and "Horowitz" in custom.source
    with pytest.raises(ConfigError) as info:
        get_profile("fp23")
    assert info.value.exit_code == 2 and "fp32" in info.value.hint
    with pytest.raises(ConfigError, match="e_mac_pj"):
        get_profile("fp16", e_mac_pj=-1.0)


# --- the arithmetic on a hand-built report ------------------------------------------------------

# q: 1e9 MACs at fr 0.5; qk: 2e8 MACs at fr 0.25; pooler: 5e7 float MACs; T = 4, fp32.
HAND_ROWS = (
    MacRow(component="q", layer=0, macs=1_000_000_000, module="l0.q", op="linear"),
    MacRow(component="qk", layer=0, macs=200_000_000, module="l0.qk", op="matmul"),
    MacRow(component="pooler", layer=None, macs=50_000_000, module="pooler.dense", op="linear"),
)


def test_energy_arithmetic_by_hand():
    report = energy_from_counts(HAND_ROWS, {"q": 0.5, "qk": 0.25}, 4, FP32)
    q, qk, pooler = report.rows
    # dense: 4.6 pJ x MACs
    assert q.energy_dense_mj == pytest.approx(4.6)
    assert qk.energy_dense_mj == pytest.approx(0.92)
    assert pooler.energy_dense_mj == pytest.approx(0.23)
    # spiking: 0.9 pJ x T x fr x MACs; the pooler stays a float MAC
    assert q.spiking_acs == pytest.approx(2e9) and q.energy_spiking_mj == pytest.approx(1.8)
    assert qk.spiking_acs == pytest.approx(2e8) and qk.energy_spiking_mj == pytest.approx(0.18)
    assert pooler.firing_rate is None and pooler.spiking_macs == 50_000_000
    assert pooler.energy_spiking_mj == pytest.approx(0.23)
    assert report.total_macs == 1_250_000_000
    assert report.energy_dense_mj == pytest.approx(5.75)
    assert report.energy_spiking_mj == pytest.approx(2.21)
    assert report.ratio == pytest.approx(5.75 / 2.21)
    assert report.mean_firing_rate == pytest.approx((0.5 * 1e9 + 0.25 * 2e8) / 1.2e9)
    assert report.total_spiking_acs == pytest.approx(2.2e9) and report.total_spiking_macs == 50_000_000
    assert report.num_timesteps == 4 and report.profile is FP32


def test_report_labels_and_json():
    report = energy_from_counts(HAND_ROWS, 0.3, 4, FP32, seq_len=128)
    assert report.assumptions.startswith("arithmetic-only estimate, ignores data movement")
    assert "2409.08290" in report.caveat and "6%" in report.caveat
    data = json.loads(json.dumps(report.to_dict()))
    assert data["profile"]["name"] == "fp32" and data["seq_len"] == 128
    assert [row["component"] for row in data["by_component"]] == ["q", "qk", "pooler"]


def test_firing_rate_lookup_order_and_errors():
    rows = HAND_ROWS[:2] + (MacRow(component="q", layer=1, macs=10, operand="l1.q.neuron"),)
    rates = {"l1.q.neuron": 0.1, ("q", 0): 0.2, "q": 0.9, "qk": 0.4}
    report = energy_from_counts(rows, rates, 2, FP32)
    assert [r.firing_rate for r in report.rows] == [0.2, 0.4, 0.1]
    with pytest.raises(EnergyAuditError) as info:
        energy_from_counts(HAND_ROWS, {"q": 0.5}, 4, FP32)
    assert "qk (layer 0" in info.value.details[0]
    with pytest.raises(EnergyAuditError, match="firing rate"):
        energy_from_counts(HAND_ROWS, 1.5, 4, FP32)
    with pytest.raises(EnergyAuditError, match="steps"):
        energy_from_counts([MacRow("q", 0, 10, steps=3, spiking=True)], 0.5, 4, FP32)


def test_float_rows_of_a_spiking_count_are_macs():
    rows = [MacRow("qk", 0, 100, spiking=False), MacRow("head", None, 10, steps=4, spiking=False)]
    report = energy_from_counts(rows, {}, 4, FP32)
    assert report.mean_firing_rate is None
    assert report.total_spiking_macs == 100 + 4 * 10  # a float op run at every step costs T times


def test_paper_setting_reproduces_the_claim():
    report = paper_setting(0.345)  # BERT-base, 128 tokens, T = 4, fp32
    assert report.total_macs == 11_174_215_680
    assert report.energy_dense_mj == pytest.approx(51.4014, abs=1e-4)
    assert report.energy_spiking_mj == pytest.approx(13.88, abs=0.01)
    assert report.ratio == pytest.approx(3.70, abs=0.01)
    assert implied_mean_firing_rate(3.7, 4) == pytest.approx(0.345, abs=1e-3)
    assert implied_mean_firing_rate(12.9, 1) == pytest.approx(0.396, abs=1e-3)
    # T = 1 at fr 0.396 is the SpikeLM-T1 figure (3.98 mJ)
    assert paper_setting(0.396, timesteps=1).energy_spiking_mj == pytest.approx(3.98, abs=0.01)
    per_component = paper_setting({"q": 0.2, "k": 0.2, "v": 0.2, "o": 0.3, "ffn1": 0.4, "ffn2": 0.1, "qk": 0.5, "av": 0.5})
    assert 0.1 < per_component.mean_firing_rate < 0.5
    by = {r.component: r for r in per_component.by_component()}
    assert by["ffn1"].firing_rate == pytest.approx(0.4) and by["pooler"].firing_rate is None


# --- spikes: ternary counted by non-zeros of either sign ----------------------------------------


def test_ternary_spikes_billed_as_acs():
    alpha = torch.tensor([0.7, 1.3]).view(2, 1, 1, 1)  # one amplitude per step
    levels = torch.tensor([[-1, 0, 1, 0], [1, 1, 0, -1], [0, 0, 1, -1]], dtype=torch.float32)
    x = alpha * levels.expand(2, 1, 3, 4)  # [T=2, B=1, L=3, D=4]
    stats = spike_stats(x)
    assert stats.kind == "ternary"
    assert (stats.nonzero, stats.positive, stats.negative, stats.total) == (14, 8, 6, 24)  # 7 non-zero per step, 3 of them -alpha
    assert stats.firing_rate == pytest.approx(14 / 24)
    report = energy_from_counts([MacRow("ffn1", 0, 1000)], {"ffn1": stats.firing_rate}, 2, FP32)
    assert report.rows[0].spiking_acs == pytest.approx(2 * 14 / 24 * 1000)
    assert report.energy_spiking_mj == pytest.approx(0.9 * 2 * 14 / 24 * 1000 / 1e9)


# --- end to end on the tiny spiking BERT --------------------------------------------------------


def tiny_spiking(**kwargs):
    from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertForSequenceClassification

    torch.manual_seed(0)
    config = SpikingBertConfig(
        hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37, vocab_size=99,
        num_timesteps=3, num_labels=2, **kwargs,
    )
    return SpikingBertForSequenceClassification(config).eval()


def test_firing_rates_join_the_spiking_count():
    model = tiny_spiking()
    ids = torch.randint(1, 99, (5, 7))
    mask = torch.ones(5, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[3, 4:] = 0
    stats = measure_firing(model, [{"input_ids": ids, "attention_mask": mask}] * 2).neurons
    count = count_macs(model, seq_len=7)
    operands = {r.operand for r in count.rows if r.spiking}
    assert operands == set(stats)  # every spiking op is paired with its neuron
    assert all(s.kind in ("ternary", "binary", "none") and s.total > 0 for s in stats.values())
    assert stats["bert.encoder.layer.0.intermediate.dense.neuron"].total == 2 * 3 * 30 * 24  # 2 batches, T=3, 30 real tokens

    report = estimate_energy(model, {n: s.firing_rate for n, s in stats.items()}, seq_len=7)
    assert report.total_macs == count.total and report.num_timesteps == 3
    spiking = [r for r in report.rows if r.firing_rate is not None]
    assert len(spiking) == 16 and all(r.spiking_acs == pytest.approx(3 * r.firing_rate * r.macs) for r in spiking)
    assert math.isfinite(report.ratio) and report.ratio > 0


def test_dense_model_needs_timesteps():
    from transformers import BertConfig, BertModel

    dense = BertModel(BertConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37, vocab_size=99))
    with pytest.raises(ConfigError, match="time steps"):
        estimate_energy(dense, 0.3, seq_len=7)
    report = estimate_energy(dense, 0.3, seq_len=7, num_timesteps=4)
    assert report.mean_firing_rate == pytest.approx(0.3)
    assert report.energy_spiking_mj == pytest.approx((0.9 * 4 * 0.3 * 61824 + 4.6 * 576) / 1e9)
    # the spiking side's terms at the model's own shapes (7 tokens, d 24, f 37, 3 heads, 2 layers, T 4)
    from spikelm_core.energy import SpikingTerms

    both = estimate_energy(dense, 0.3, seq_len=7, num_timesteps=4,
                           terms=SpikingTerms(neuron_updates=True, alpha_scale=True))
    updates, scales = 3 * 2 * (5 * 7 * 24 + 7 * 37), 3 * 2 * (6 * 7 * 24 + 7 * 37 + 3 * 7 * 7)
    assert both.total_spiking_acs == pytest.approx(report.total_spiking_acs + updates)
    assert both.energy_spiking_mj == pytest.approx(report.energy_spiking_mj + (0.9 * updates + 4.6 * scales) / 1e9)
