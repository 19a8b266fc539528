"""The memory model (spikelm_core/energy/memory.py), checked against bytes worked out by hand.

Every expected number below is written from the formulas of docs/energy-report.md ("Memory"), not by
calling the code under test: b bytes per value (fp32: 4), T steps, firing rate fr,

    dense:   W·b + X·b + A·b + O·b (+ C·b read from the KV cache)
    spiking: weights W·b (weight-stationary) or T·fr·MACs·b (event-driven)
             + T·X·b (neuron input) + 2·(T-1)·X·b (membrane, stateful neurons only)
             + 2·T·X·2/8 (ternary 2-bit map, written and read) + T·A·b or T·fr·MACs·b (matmul float operand)
             + T·O·b (output) + T·C·2/8 (cache)
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration, BertConfig, BertModel

from spikelm_core.energy import FP32, count_macs, energy_from_counts, generation_energy
from spikelm_core.energy.memory import (
    Assumptions,
    MemOp,
    MemoryCost,
    Shape,
    address_bits,
    bound_report,
    break_even_scale,
    forward_ops,
    generation_ops,
    load_memory_cost,
    op_traffic,
    parse_bounds,
    qann_bits,
    spike_bytes,
    total_traffic,
)
from spikelm_core.errors import ConfigError

from tests.conftest import TINY
from tests.core.models.test_spiking_bart import BART_TINY

UNIT = MemoryCost("unit", ((0, 1.0),), 1, "test: 1 pJ per byte")
"""1 pJ per byte: memory energies in pJ equal the bytes."""


def close(a, b, rel=1e-12):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


# --- the issue's worked example: BERT-base 768 -> 768 projection, 128 tokens, T = 4, fr = 0.35, fp32 ----------

N, D, T, FR = 128, 768, 4, 0.35
MACS = N * D * D  # 75,497,472
PROJ = MemOp("q", 0, MACS, produced=N * D, read=N * D, weights=D * D, out=N * D, firing_rate=FR)


def test_the_issues_768_projection():
    a = Assumptions(T, FP32, UNIT)
    ws, ed = op_traffic(PROJ, "weight_stationary", a), op_traffic(PROJ, "event_driven", a)
    # arithmetic: 75.5 M MACs = 347 uJ against 105.7 M ACs = 95 uJ, 3.65x
    assert MACS == 75_497_472
    assert close(ws.arithmetic_dense_pj, 4.6 * 75_497_472) and round(ws.arithmetic_dense_pj / 1e6) == 347
    assert round(4 * 0.35 * MACS / 1e5) / 10 == 105.7 and round(ws.arithmetic_spiking_pj / 1e6) == 95
    assert round(ws.arithmetic_dense_pj / ws.arithmetic_spiking_pj, 2) == 3.65
    # event-driven: every non-zero spike fetches its 768 weights: 4 x 0.35 x 128 x 768 x 768 x 4 bytes
    assert close(ed.spiking["weights"], 4 * 0.35 * 128 * 768 * 768 * 4) and round(ed.spiking["weights"] / 2**20, 1) == 403.2
    assert ed.dense["weights"] == 768 * 768 * 4 == 2_359_296  # 2.25 MB, read once
    assert round(ed.spiking["weights"] / ed.dense["weights"]) == 179
    # weight-stationary, by hand: the weights once, then per step the neuron's input, its membrane, the spikes
    x = N * D  # 98,304 inputs per step
    assert ws.spiking["weights"] == 2_359_296
    assert ws.spiking["activations"] == 4 * x * 4 + 4 * x * 4 == 3_145_728  # input current read + output written, 4 steps
    assert ws.spiking["membrane"] == 2 * 3 * x * 4 == 2_359_296  # read and written at steps 2..4 (steps 1..3)
    assert ws.spiking["spikes"] == 2 * 4 * x * 2 / 8 == 196_608  # a 2-bit map written and read each step
    assert ws.formats == {"ternary 2-bit map"}  # events: 0.35 x (17 + 1) bits = 6.3 > 2 bits per element
    assert ws.bytes_spiking == 8_060_928 and ws.dense == {"weights": 2_359_296, "activations": 2 * x * 4,
                                                          "spikes": 0, "membrane": 0, "kv_cache": 0}
    assert ed.bytes_spiking == 422_785_843.2 + 3_145_728 + 2_359_296 + 196_608


def test_break_even_of_the_768_projection_solved_by_hand():
    a = Assumptions(T, FP32, UNIT)
    dense = 4.6 * MACS + (D * D + 2 * N * D) * 4  # pJ: arithmetic + bytes at 1 pJ/B
    # weight-stationary: 0.9 x 4 x r x MACs + 8,060,928 (the map format holds above r = 2/18)
    r_ws = (dense - 8_060_928) / (0.9 * 4 * MACS)
    # event-driven: the weights add 4 x r x MACs x 4 bytes
    r_ed = (dense - (8_060_928 - D * D * 4)) / (0.9 * 4 * MACS + 4 * MACS * 4)
    assert r_ws > 2 / 18 and r_ed > 2 / 18
    for bound, expected in (("weight_stationary", r_ws), ("event_driven", r_ed)):
        report = bound_report([PROJ], bound, a)
        assert close(report.break_even_firing_rate, expected, 1e-9), bound
        at = op_traffic(PROJ, bound, a, expected / FR)
        assert close(at.memory_spiking_pj + at.arithmetic_spiking_pj, dense, 1e-9)
    assert round(r_ed, 3) == 0.233 and round(r_ws, 2) == 1.26  # above 1: weight-stationary wins at every rate


def test_break_even_across_the_switch_to_events():
    """At T = 1 with bytes priced very high, the break-even falls where the op stores events, not a map."""
    c = 20_000.0  # pJ per byte
    a = Assumptions(1, FP32, MemoryCost("dear", ((0, c),), 1, "test"))
    report = bound_report([PROJ], "weight_stationary", a)
    r = report.break_even_firing_rate
    assert r is not None and r < 2 / 18  # events: r x 18 bits < 2 bits
    t = op_traffic(PROJ, "weight_stationary", a, r / FR)
    assert t.formats == {"events"}
    # by hand on the events piece, T = 1 (no membrane): the dense side pays its weights, input and output,
    # the spiking side the same bytes plus its spikes (written and read, 18 bits per event) at r x X events
    x = N * D
    dense = 4.6 * MACS + c * (D * D + 2 * x) * 4
    const = c * (D * D + 2 * x) * 4
    slope = 0.9 * MACS + c * 2 * x * 18 / 8
    assert close(r, (dense - const) / slope, 1e-9) and round(r, 4) == 0.039
    assert close(t.memory_spiking_pj + t.arithmetic_spiking_pj, dense, 1e-9)


def test_spikes_at_their_real_size_and_the_quantised_ann():
    a = Assumptions(T, FP32, UNIT)
    assert address_bits(98_304) == 17 and address_bits(2) == 1
    assert spike_bytes(1000, 98_304, 0.35, a) == (250.0, "ternary 2-bit map")
    assert spike_bytes(1000, 98_304, 0.05, a) == (0.05 * 1000 * 18 / 8, "events")
    binary = Assumptions(T, FP32, UNIT, spike_bits=1)
    assert spike_bytes(1000, 98_304, 0.05, binary) == (0.05 * 1000 * 17 / 8, "events")
    assert spike_bytes(1000, 98_304, 0.1, binary) == (1000 / 8, "1-bit map")
    assert qann_bits(4) == 4 and qann_bits(1) == 2 and qann_bits(7) == 4 and qann_bits(8) == 5
    assert qann_bits(4, spike_bits=1) == 3
    q = bound_report([PROJ], "weight_stationary", a).qann
    # the dense layer with 4-bit activations: W x 4 + (X + O) x 0.5 bytes
    assert q["bits"] == 4 and q["bytes"] == D * D * 4 + 2 * N * D * 0.5


def test_lemaire_cost_is_piecewise_linear_and_clamped():
    cost = load_memory_cost("lemaire").cost
    assert cost.pj_per_byte(1024) == 10 / 4 and cost.pj_per_byte(8 * 1024) == 10 / 4
    assert cost.pj_per_byte(20 * 1024) == 15 / 4  # halfway from 8 KB to 32 KB
    assert cost.pj_per_byte(32 * 1024) == 20 / 4 and cost.pj_per_byte(2**20) == 100 / 4
    assert cost.pj_per_byte(50 * 2**20) == 100 / 4
    assert load_memory_cost("flat").cost.pj_per_byte(10**9) == 1.25
    assert load_memory_cost("dram").cost.pj_per_byte(1) == 1300 / 8


# --- a tiny BERT and a tiny BART, byte by byte ----------------------------------------------------------------

L, H, HEADS, FF = 7, TINY["hidden_size"], TINY["num_attention_heads"], TINY["intermediate_size"]


def bert_hand_bytes(T: int, fr: float) -> tuple[float, float, float]:
    """(dense, spiking weight-stationary, spiking event-driven) bytes of the tiny BERT at L tokens, by hand."""
    def linear(tokens, fan_in, fan_out, spiking=True):
        x, o, w = tokens * fan_in, tokens * fan_out, fan_in * fan_out
        dense = (w + x + o) * 4
        if not spiking:
            return dense, dense, dense
        rest = T * x * 4 + 2 * (T - 1) * x * 4 + 2 * T * x * 2 / 8 + T * o * 4
        return dense, w * 4 + rest, T * fr * tokens * w * 4 + rest

    def matmul(qk: bool):
        k, probs = L * H, HEADS * L * L
        other, out = (L * H, probs) if qk else (probs, L * H)
        macs = L * L * H
        dense = (k + other + out) * 4
        rest = T * k * 4 + 2 * T * k * 2 / 8 + T * out * 4  # stateless K / V spikes: no membrane
        return dense, rest + T * other * 4, rest + T * fr * macs * 4

    layer = [linear(L, H, H)] * 4 + [linear(L, H, FF), linear(L, FF, H), matmul(True), matmul(False)]
    total = [TINY["num_hidden_layers"] * sum(p[i] for p in layer) for i in range(3)]
    pooler = linear(1, H, H, spiking=False)
    return tuple(t + p for t, p in zip(total, pooler))


@pytest.fixture(scope="module")
def bert_rows():
    with torch.device("meta"):
        model = BertModel(BertConfig(**TINY))
    return count_macs(model, seq_len=L).rows


def test_tiny_bert_bytes_by_hand(bert_rows):
    T, fr = 3, 0.5  # 0.5 x (addr + 1) bits > 2: every tensor of more than 8 elements keeps the 2-bit map
    report = energy_from_counts(bert_rows, fr, T, FP32)
    ops = forward_ops(report.rows, Shape(hidden=H, heads=HEADS, ffn=FF, seq_len=L))
    a = Assumptions(T, FP32, UNIT)
    dense, ws, ed = bert_hand_bytes(T, fr)
    for bound, spiking in (("weight_stationary", ws), ("event_driven", ed)):
        r = bound_report(ops, bound, a)
        assert close(r.total.bytes_dense, dense) and close(r.total.bytes_spiking, spiking), bound
        # the arithmetic is the energy report's, and the component rows sum to the totals
        assert close(r.total.arithmetic_dense_pj / 1e9, report.energy_dense_mj)
        assert close(r.total.arithmetic_spiking_pj / 1e9, report.energy_spiking_mj)
        rows = [row.to_dict() for row in r.rows]
        for key in ("bytes_dense", "bytes_spiking", "energy_dense_mj", "energy_spiking_mj"):
            assert close(sum(x[key] for x in rows), r.to_dict()[key], 1e-9), key
        assert r.to_dict()["components"][0]["component"] == "q"
    # one op by hand: layer 0's K projection, dense and weight-stationary
    k0 = next(op for op in ops if op.component == "k" and op.layer == 0)
    t = op_traffic(k0, "weight_stationary", a)
    assert t.bytes_dense == (H * H + 2 * L * H) * 4
    assert t.bytes_spiking == H * H * 4 + T * L * H * 4 * 2 + 2 * 2 * L * H * 4 + 2 * T * L * H * 2 / 8


NE, ND, BD, BV, BF = 10, 7, BART_TINY["d_model"], BART_TINY["vocab_size"], BART_TINY["encoder_ffn_dim"]


@pytest.fixture(scope="module")
def bart():
    with torch.device("meta"):
        model = BartForConditionalGeneration(BartConfig(**BART_TINY))
    count = count_macs(model, seq_len=NE, decoder_len=ND)
    shape = Shape(hidden=BD, heads=BART_TINY["decoder_attention_heads"], ffn=BF, seq_len=NE, decoder_len=ND,
                  decoder_ffn=BF)
    return count, shape


def test_tiny_bart_forward_bytes_by_hand(bart):
    count, shape = bart
    T, fr = 3, 0.5
    report = energy_from_counts(count.rows, fr, T, FP32)
    ops = forward_ops(report.rows, shape)
    a = Assumptions(T, FP32, UNIT)
    by = {(op.stack, op.component, op.layer): op for op in ops}
    heads = shape.heads
    # decoder self Q.K^T: K (ND x d) spiked, Q (ND x d) float, scores heads x ND x ND
    qk = by[("decoder", "qk", 0)]
    assert (qk.read, qk.other, qk.out, qk.stateful) == (ND * BD, ND * BD, heads * ND * ND, False)
    # cross probs.V: V over the NE encoder tokens, probs heads x ND x NE
    av = by[("decoder", "cross_av", 1)]
    assert (av.read, av.other, av.out) == (NE * BD, heads * ND * NE, ND * BD)
    # cross K projection runs over the encoder tokens; the LM head over ND tokens with d x V weights
    ck = by[("decoder", "cross_k", 0)]
    assert (ck.read, ck.weights, ck.out) == (NE * BD, BD * BD, NE * BD)
    head = by[(None, "head", None)]
    assert (head.read, head.weights, head.out, head.firing_rate) == (ND * BD, BD * BV, ND * BV, None)
    t = op_traffic(av, "event_driven", a)
    assert t.bytes_dense == (NE * BD + heads * ND * NE + ND * BD) * 4
    assert close(t.spiking["activations"], T * NE * BD * 4 + T * fr * ND * NE * BD * 4 + T * ND * BD * 4)
    assert t.spiking["membrane"] == 0 and t.spiking["spikes"] == 2 * T * NE * BD * 2 / 8
    assert close(op_traffic(head, "event_driven", a).bytes_spiking, (BD * BV + ND * BD + ND * BV) * 4)


@pytest.mark.parametrize("cache", [True, False], ids=["kv_cache", "no_cache"])
def test_tiny_bart_generation_bytes_by_hand(bart, cache):
    count, shape = bart
    T, fr, m = 3, 0.5, 5
    report = energy_from_counts(count.rows, fr, T, FP32)
    ops = forward_ops(report.rows, shape)
    lines = generation_ops(ops, shape, m, cache=cache)
    a = Assumptions(T, FP32, UNIT)
    s1 = m * (m + 1) // 2
    layers = BART_TINY["decoder_layers"]
    t = total_traffic([op for line in lines.values() for op in line], "weight_stationary", a)
    # the arithmetic equals seq2seq's generation energy, line by line
    energy = generation_energy(count, fr, T, FP32, target_len=m)
    mode = energy.kv_cache if cache else energy.no_cache
    assert close(t.arithmetic_dense_pj / 1e9, mode.per_summary.energy_dense_mj, 1e-9)
    assert close(t.arithmetic_spiking_pj / 1e9, mode.per_summary.energy_spiking_mj, 1e-9)
    for line, rows in lines.items():
        assert close(total_traffic(rows, "weight_stationary", a).arithmetic_spiking_pj / 1e9,
                     mode.lines[line].energy_spiking_mj, 1e-9), line
    if cache:
        # every step reads its i cached self K and V and the NE cached cross K and V of each layer
        cached = layers * 2 * (s1 * BD + m * NE * BD)
        assert t.dense["kv_cache"] == cached * 4 and t.spiking["kv_cache"] == T * cached * 2 / 8
        # decoder weights once per generated token; encoder and cross K/V weights once per summary
        dec_w = layers * (6 * BD * BD + 2 * BD * BF)
        enc_w = BART_TINY["encoder_layers"] * (4 * BD * BD + 2 * BD * BF)
        assert t.dense["weights"] == (enc_w + layers * 2 * BD * BD + m * (dec_w + BD * BV)) * 4
        assert t.spiking["weights"] == t.dense["weights"]  # weight-stationary reads them as the dense model does
    else:
        assert t.dense["kv_cache"] == 0 and t.spiking["kv_cache"] == 0
        # the cross K / V projections run at every step, and their spikes are made again at every step
        cross = [op for op in lines["cross_kv"] if op.component in ("cross_k", "cross_v")]
        assert len(cross) == m * 2 * layers and all(op.read == NE * BD for op in cross)
        made = [op for op in lines["cross_kv"] if op.component not in ("cross_k", "cross_v")]
        assert len(made) == m * 2 * layers and all((op.produced, op.read, op.macs) == (NE * BD, 0, 0) for op in made)
        assert all(op.produced == 0 for op in lines["decoder"] if op.component in ("cross_qk", "cross_av"))


# --- cost files and bounds -------------------------------------------------------------------------------------


def test_cost_file_forms(tmp_path):
    f = tmp_path / "hbm.yaml"
    f.write_text("pj_per_byte: 0.5\nsource: my chip\nbounds: [event-driven]\nfiring_rates: [0.05, 0.1]\n")
    s = load_memory_cost(str(f))
    assert s.cost.pj_per_byte(123) == 0.5 and s.cost.name == "hbm" and s.bounds == ("event_driven",)
    assert s.what_if == (0.05, 0.1) and s.cost.source == "my chip"
    assert load_memory_cost(str(f), "both").bounds == ("weight_stationary", "event_driven")  # the flag wins
    f.write_text("pj_per_access: 64\naccess_bits: 64\n")
    assert load_memory_cost(str(f)).cost.pj_per_byte(1) == 8
    f.write_text("access_bits: 32\nbuffer_pj: {1024: 4, 3072: 8}\n")
    assert load_memory_cost(str(f)).cost.pj_per_byte(2048) == 6 / 4
    f.write_text("preset: sram\n")
    assert load_memory_cost(str(f)).cost.pj_per_byte(1) == 100 / 8
    f.write_text("preset: sram\nsource: measured on my chip\n")  # the file's source names a preset's too
    assert load_memory_cost(str(f)).cost.source == "measured on my chip"
    assert parse_bounds("none") == () and parse_bounds("weight-stationary") == ("weight_stationary",)
    # YAML 1.1 reads 5e-1 (no dot) as a string: a number all the same
    f.write_text("pj_per_byte: 5e-1\nfiring_rates: [1e-1]\n")
    assert load_memory_cost(str(f)).cost.pj_per_byte(1) == 0.5 and load_memory_cost(str(f)).what_if == (0.1,)


@pytest.mark.parametrize(
    "text, key",
    [
        pytest.param("source: nothing\n", "pj_per_byte", id="missing-constant"),
        pytest.param("pj_per_byte: -1\n", "pj_per_byte", id="negative"),
        pytest.param("pj_per_access: 5\n", "access_bits", id="missing-access-bits"),
        pytest.param("access_bits: 32\nbuffer_pj: {1024: -3}\n", "buffer_pj.1024", id="negative-point"),
        pytest.param("preset: sramm\n", "preset", id="unknown-preset"),
        pytest.param("pj_per_byte: 1\nbounds: [weight-stationery]\n", "bounds[0]", id="unknown-bound"),
        pytest.param("pj_per_byte: 1\nfiring_rates: [0.1, 1.5]\n", "firing_rates[1]", id="rate-above-1"),
        pytest.param("pj_per_byte: 1\nfiring_rates: -0.1\n", "firing_rates[0]", id="rate-below-0"),
        pytest.param("pj_per_bytes: 1\n", "pj_per_bytes", id="unknown-key"),
        pytest.param("pj_per_byte: one\n", "pj_per_byte", id="not-a-number"),
        pytest.param("access_bits: 32\nbuffer_pj: {.nan: 10, 8192: 20}\n", "buffer_pj.nan", id="nan-size"),
        pytest.param("access_bits: 32\nbuffer_pj: {.inf: 10}\n", "buffer_pj.inf", id="infinite-size"),
        pytest.param("pj_per_byte: 1\nbounds: []\n", "bounds", id="no-bound"),
        pytest.param("pj_per_byte: 10\naccess_bits: 64\n", "access_bits", id="access-bits-per-byte"),
        pytest.param("preset: sram\naccess_bits: 32\n", "access_bits", id="access-bits-preset"),
    ],
)
def test_bad_cost_files_name_the_key(tmp_path, text, key):
    f = tmp_path / "cost.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_memory_cost(str(f))
    assert err.value.exit_code == 2 and f"{key}:" in err.value.message


def test_a_cost_file_that_is_not_yaml_says_where(tmp_path):
    f = tmp_path / "cost.yaml"
    f.write_text("name: chip\npj_per_byte: {2\n")
    with pytest.raises(ConfigError, match="invalid YAML at line 3, column 1: expected ','") as err:
        load_memory_cost(str(f))
    assert err.value.exit_code == 2


def test_a_cost_file_that_is_not_utf8_is_named(tmp_path):
    f = tmp_path / "cost.yaml"
    f.write_bytes(b"\xff\xfe bad")
    with pytest.raises(ConfigError, match="is not UTF-8 text") as err:
        load_memory_cost(str(f))
    assert err.value.exit_code == 2


def test_unknown_preset_and_bound():
    with pytest.raises(ConfigError, match="--memory-cost: unknown preset 'lemair'"):
        load_memory_cost("lemair")
    with pytest.raises(ConfigError, match="--memory: unknown bound"):
        load_memory_cost(None, "all")


def test_no_break_even_when_spiking_costs_more_without_spikes():
    a = Assumptions(T, FP32, UNIT)
    heavy = MemOp("q", 0, 1, produced=10**6, read=10**6, weights=1, out=1, firing_rate=0.1)
    assert break_even_scale([heavy], "weight_stationary", a, 1.0) is None
    assert bound_report([heavy], "weight_stationary", a).break_even_firing_rate is None


def test_a_model_that_never_fired_still_gets_its_curve_what_if_rates_and_break_even():
    """With every traced rate 0 the profile cannot be scaled: a mean rate r is r at every spiking op,
    the same numbers as a model that fired evenly."""
    a = Assumptions(T, FP32, UNIT)
    ops = [MemOp("q", 0, 64, produced=64, read=64, weights=64 * 64, out=64, firing_rate=rate) for rate in (0.0, 0.0)]
    silent = bound_report(ops, "event_driven", a, what_if=(0.0, 0.25))
    even = bound_report([MemOp("q", 0, 64, produced=64, read=64, weights=64 * 64, out=64, firing_rate=0.5)] * 2,
                        "event_driven", a, what_if=(0.0, 0.25))
    assert silent.mean_firing_rate == 0.0 and len(silent.curve) == 21
    flat = lambda pairs: [x for pair in pairs for x in pair]  # noqa: E731
    assert flat(silent.curve) == pytest.approx(flat(even.curve)) and flat(silent.what_if) == pytest.approx(flat(even.what_if))
    assert silent.break_even_firing_rate == pytest.approx(even.break_even_firing_rate)
    assert silent.break_even_firing_rate is not None


def test_bert_base_paper_setting_dense_bytes_by_hand():
    """The paper setting's memory (BERT-base, 128 tokens): the dense bytes written out layer by layer."""
    from spikelm_core.energy import paper_setting
    from spikelm_core.energy.paper import PAPER_SHAPES

    n, d, f, h = 128, 768, 3072, 12
    ops = forward_ops(paper_setting(0.3, timesteps=4).rows, PAPER_SHAPES["bert"])
    r = bound_report(ops, "event_driven", Assumptions(4, FP32, UNIT))
    per_layer = (4 * d * d + 2 * d * f  # weights
                 + 4 * 2 * n * d + 2 * (n * d + n * f)  # Q, K, V, O, FFN1, FFN2: input + output
                 + 2 * (2 * n * d + h * n * n))  # Q.K^T: K, Q, scores; probs.V: V, probs, context
    pooler = d * d + 2 * d
    assert r.total.bytes_dense == 4 * (12 * per_layer + pooler)
    # event-driven weights: one per AC, T x fr x MACs x 4 bytes over the spike-driven ops
    linear_macs = 12 * (4 * n * d * d + 2 * n * d * f)
    assert close(r.total.spiking["weights"], 4 * 0.3 * linear_macs * 4 + d * d * 4)


def test_the_plotted_memory_curve_crosses_the_dense_line_at_the_break_even_rate():
    from spikelm_core.energy.plots import _dense_curve

    rates = [i / 20 for i in range(21)]
    m = {"curve": {"firing_rate": rates, "energy_spiking_mj": [4.89 + 936 * r for r in rates]},
         "mean_firing_rate": 0.33, "energy_spiking_mj": 4.89 + 936 * 0.33, "energy_dense_mj": 19.35,
         "break_even_firing_rate": (19.35 - 4.89) / 936}
    xs, ys = _dense_curve(m)
    assert len(xs) > 400 and xs == sorted(xs)
    at = dict(zip(xs, ys))
    assert at[m["break_even_firing_rate"]] == pytest.approx(19.35) and at[0.33] == pytest.approx(m["energy_spiking_mj"])
    # filled in linearly (the energy is affine in the rate): a straight line on a linear axis, not on the log axis
    assert at[0.025] == pytest.approx(4.89 + 936 * 0.025)
