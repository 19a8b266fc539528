"""The spiking side's terms beside its ACs: --count-neuron-updates and --count-alpha-scale.

Hand formulas (energy-method.md, section 3), per sample, T steps, L tokens, width d, FFN width f, h heads:

- membrane updates: T - 1 per element of every stateful neuron (the first step's u = x carries no membrane). A BERT layer has six: in front of Q, K, V and
  O (L·d each), FFN1 (L·d) and FFN2 (L·f); SpikeLM's K/V spikes for Q·Kᵀ and probs·V are stateless.
- alpha rescalings: T - 1 per output element of every spike-driven op (the first step's alpha folds into the
  weights): Q, K, V, O (L·d each), FFN1 (L·f), FFN2 (L·d), Q·Kᵀ (h·L·L), probs·V (L·d). Float ops (pooler,
  heads) have none.

Membrane updates are priced at E_AC, rescalings at E_MAC, on the spiking side only.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration, BertTokenizerFast
from typer.testing import CliRunner

from spikelm_cli.main import app
from spikelm_core.energy import FP32, estimate_energy_sweep
from spikelm_core.energy.memory import MemOp, SpikingTerms, alpha_scales, membrane_updates

from tests.conftest import LLAMA_TINY, TINY, write_tiny_vocab
from tests.core.energy.test_seq2seq import tiny_dense_bart  # noqa: F401 (the fixture)
from tests.core.models.test_spiking_bart import BART_TINY

runner = CliRunner()
E_AC, E_MAC = FP32.e_ac_pj * 1e-9, FP32.e_mac_pj * 1e-9  # mJ per op
T = 4  # a dense model is audited at T=4


def test_terms_of_one_op():
    op = MemOp("ffn1", 0, macs=5 * 7 * 11, produced=5 * 7, read=5 * 7, weights=7 * 11, out=5 * 11, firing_rate=0.3)
    assert membrane_updates(op, 3) == 2 * 35 and alpha_scales(op, 3) == 2 * 55
    stateless = MemOp("qk", 0, macs=10, produced=6, read=6, out=9, firing_rate=0.2, stateful=False)
    assert membrane_updates(stateless, 3) == 0 and alpha_scales(stateless, 3) == 18
    dense = MemOp("head", None, macs=10, produced=0, read=5, weights=2, out=2, firing_rate=None)
    assert membrane_updates(dense, 3) == 0 and alpha_scales(dense, 3) == 0
    both = SpikingTerms(neuron_updates=True, alpha_scale=True)
    assert math.isclose(both.pj(op, 3, FP32), 0.9 * 70 + 4.6 * 110)
    assert SpikingTerms(alpha_scale=True).pj(op, 3, FP32) == pytest.approx(4.6 * 110)
    assert SpikingTerms().pj(op, 3, FP32) == 0 and not SpikingTerms().any
    # at T=1 the one alpha folds into the weights, and no membrane is carried
    assert membrane_updates(op, 1) == 0 and alpha_scales(op, 1) == 0


L = 11  # odd, below the tiny model's 64 positions
D, H, FF, LAYERS = TINY["hidden_size"], TINY["num_attention_heads"], TINY["intermediate_size"], TINY["num_hidden_layers"]


def bert_updates(t, layers, n, d, f):
    return (t - 1) * layers * (5 * n * d + n * f)


def bert_scales(t, layers, n, d, f, h):
    return (t - 1) * layers * (6 * n * d + n * f + h * n * n)


@pytest.fixture(scope="module")
def bert_pair(tiny_dense_bert_dir):
    common = dict(seq_len=L, batches=1, batch_size=3, bootstrap=40, neurobench=True)
    base = estimate_energy_sweep(str(tiny_dense_bert_dir), **common)
    both = estimate_energy_sweep(str(tiny_dense_bert_dir), count_neuron_updates=True, count_alpha_scale=True, **common)
    return base.runs[0], both.runs[0], both


def _component(report, name):
    rows = [r for r in report.by_component() if r.component == name]
    return rows[0] if rows else None


def test_bert_terms_by_hand(bert_pair):
    base, both, _ = bert_pair
    u, s = bert_updates(T, LAYERS, L, D, FF), bert_scales(T, LAYERS, L, D, FF, H)
    updates, scales = _component(both.report, "neuron_updates"), _component(both.report, "alpha_scale")
    assert updates.spiking_acs == u and updates.spiking_macs == 0 and updates.macs == 0
    assert scales.spiking_macs == s and scales.spiking_acs == 0 and scales.energy_dense_mj == 0
    assert _component(base.report, "neuron_updates") is None and _component(base.report, "alpha_scale") is None
    # per layer, as the layer table keys them
    assert {r.layer: r.spiking_acs for r in both.report.by_layer() if r.component == "neuron_updates"} == {
        i: u / LAYERS for i in range(LAYERS)}
    # the totals: the rows sum to them; the dense side and the rates do not move
    b, t = base.report, both.report
    assert t.energy_dense_mj == b.energy_dense_mj and t.total_macs == b.total_macs
    assert t.mean_firing_rate == b.mean_firing_rate
    assert t.total_spiking_acs == pytest.approx(b.total_spiking_acs + u)
    assert t.total_spiking_macs == b.total_spiking_macs + s
    assert t.energy_spiking_mj == pytest.approx(b.energy_spiking_mj + E_AC * u + E_MAC * s, rel=1e-12)
    assert t.ratio == pytest.approx(t.energy_dense_mj / t.energy_spiking_mj)
    assert math.isclose(sum(r.energy_spiking_mj for r in t.rows), t.energy_spiking_mj, rel_tol=1e-12)
    # the bootstrap resamples the same sequences: each resample costs more, so the interval moves down
    assert both.ratio_ci.high < base.ratio_ci.high and both.ratio_ci.low < base.ratio_ci.low
    assert both.mean_firing_rate_ci == base.mean_firing_rate_ci


def test_bert_terms_reach_paper_memory_and_neurobench(bert_pair):
    base, both, _ = bert_pair
    # the paper setting: BERT-base at 128 tokens
    u, s = bert_updates(T, 12, 128, 768, 3072), bert_scales(T, 12, 128, 768, 3072, 12)
    assert _component(both.paper, "neuron_updates").spiking_acs == u
    assert _component(both.paper, "alpha_scale").spiking_macs == s
    assert both.paper.energy_spiking_mj == pytest.approx(base.paper.energy_spiking_mj + E_AC * u + E_MAC * s)
    # the memory bounds bill the same arithmetic: the same difference, the same bytes
    delta = E_AC * bert_updates(T, LAYERS, L, D, FF) + E_MAC * bert_scales(T, LAYERS, L, D, FF, H)
    for bound in ("weight_stationary", "event_driven"):
        mb, mt = base.memory.bounds[bound].total, both.memory.bounds[bound].total
        assert mt.bytes_spiking == mb.bytes_spiking and mt.energy_dense_pj == mb.energy_dense_pj
        assert (mt.energy_spiking_pj - mb.energy_spiking_pj) * 1e-9 == pytest.approx(delta, rel=1e-9)
        pb, pt = base.paper_memory.bounds[bound].total, both.paper_memory.bounds[bound].total
        assert (pt.energy_spiking_pj - pb.energy_spiking_pj) * 1e-9 == pytest.approx(E_AC * u + E_MAC * s, rel=1e-9)
        # at BERT-base's shapes spikes break even at some rate: a lower one once the terms are billed
        be0, be1 = (p.bounds[bound].break_even_firing_rate for p in (base.paper_memory, both.paper_memory))
        assert be0 is not None and be1 is not None and be1 < be0
    # NeuroBench's MembraneUpdates is the same count (one definition), with or without the switch
    assert base.neurobench["MembraneUpdates"] == both.neurobench["MembraneUpdates"] == bert_updates(T, LAYERS, L, D, FF)


def test_report_says_what_is_in(bert_pair):
    _, _, report = bert_pair
    data = report.to_dict()
    assert data["count_neuron_updates"] is True and data["count_alpha_scale"] is True
    assert any("--count-neuron-updates" in item for item in data["included"])
    assert any("--count-alpha-scale" in item for item in data["included"])
    assert "membrane updates billed" in data["assumptions"] and "and neuron membrane updates" not in data["assumptions"]
    components = {c["component"]: c for c in data["runs"][0]["components"]}
    assert components["alpha_scale"]["spiking_macs"] == bert_scales(T, LAYERS, L, D, FF, H)


def test_one_switch_alone(tiny_dense_bert_dir):
    run = estimate_energy_sweep(str(tiny_dense_bert_dir), seq_len=L, batches=1, batch_size=2, bootstrap=0,
                                memory="none", count_alpha_scale=True)
    components = {r.component for r in run.runs[0].report.rows}
    assert "alpha_scale" in components and "neuron_updates" not in components
    assert "neuron membrane updates" in run.assumptions and run.count_neuron_updates is False


# --- generation: BART and Llama -------------------------------------------------------------------

SRC, TGT = 12, 5
BD, BF, BH = BART_TINY["d_model"], BART_TINY["encoder_ffn_dim"], BART_TINY["encoder_attention_heads"]


@pytest.fixture(scope="module")
def bart_pair(tiny_dense_bart):
    d = tiny_dense_bart
    common = dict(seq_len=SRC, target_len=TGT, batches=1, batch_size=2, bootstrap=0, memory="weight-stationary")
    base = estimate_energy_sweep(str(d), **common).runs[0]
    both = estimate_energy_sweep(str(d), count_neuron_updates=True, count_alpha_scale=True, **common).runs[0]
    return base, both


def _line(mode, name):
    return {x["line"]: x for x in mode["lines"]}.get(name)


def test_bart_generation_updates_by_hand(bart_pair):
    base, both = bart_pair
    g0, g = base.generation.to_dict(), both.generation.to_dict()
    token = 7 * BD + BF  # a decoder token's stateful neurons: self q, k, v, o; cross q, o; ffn1 (d); ffn2 (f)
    enc = (T - 1) * 2 * (5 * SRC * BD + SRC * BF)
    cross_kv = (T - 1) * 2 * 2 * SRC * BD  # the neurons in front of the cross K/V projections
    m = TGT
    expected = {
        "kv_cache": {"encoder": enc, "cross_kv": cross_kv, "decoder": (T - 1) * 2 * m * token, "lm_head": 0,
                     "last": (T - 1) * 2 * token},
        "no_cache": {"encoder": enc, "cross_kv": m * cross_kv, "decoder": (T - 1) * 2 * (m * (m + 1) // 2) * token,
                     "lm_head": 0, "last": (T - 1) * 2 * (m * token + 2 * SRC * BD)},
    }
    for mode, want in expected.items():
        for line in ("encoder", "cross_kv", "decoder", "lm_head"):
            got = _line(g[mode], line)["spiking_acs"] - _line(g0[mode], line)["spiking_acs"]
            assert got == pytest.approx(want[line]), (mode, line)
        last = g[mode]["last_token"]["spiking_acs"] - g0[mode]["last_token"]["spiking_acs"]
        assert last == pytest.approx(want["last"]), mode
        summary = g[mode]["per_summary"]
        for key in ("spiking_acs", "spiking_macs", "energy_spiking_mj"):
            assert sum(x[key] for x in g[mode]["lines"]) == pytest.approx(summary[key], rel=1e-12), (mode, key)


def test_bart_generation_alpha_last_token_by_hand(bart_pair):
    base, both = bart_pair
    g0, g = base.generation.to_dict(), both.generation.to_dict()
    # one token with the cache: self q, k, v, o (4d), Q.K^T over m keys (h·m), probs.V (d), cross q, o (2d),
    # cross Q.K^T over the source (h·n_e), cross probs.V (d), ffn1 (f), ffn2 (d)
    per_layer = 9 * BD + BF + BH * (TGT + SRC)
    got = g["kv_cache"]["last_token"]["spiking_macs"] - g0["kv_cache"]["last_token"]["spiking_macs"]
    assert got == (T - 1) * 2 * per_layer


def test_bart_generation_memory_bills_the_same_terms(bart_pair):
    base, both = bart_pair
    for mode in ("kv_cache", "no_cache"):
        arithmetic = (both.generation.to_dict()[mode]["per_summary"]["energy_spiking_mj"]
                      - base.generation.to_dict()[mode]["per_summary"]["energy_spiking_mj"])
        m0 = base.memory.to_dict()["weight_stationary"]["generation"][mode]["per_summary"]
        m1 = both.memory.to_dict()["weight_stationary"]["generation"][mode]["per_summary"]
        assert m1["bytes_spiking"] == m0["bytes_spiking"]
        assert m1["energy_spiking_mj"] - m0["energy_spiking_mj"] == pytest.approx(arithmetic, rel=1e-9)


def test_llama_generation_updates_by_hand(tiny_dense_llama_dir):
    n, m = 9, 4
    common = dict(seq_len=n, target_len=m, batches=1, batch_size=2, bootstrap=0, memory="none")
    base = estimate_energy_sweep(str(tiny_dense_llama_dir), **common).runs[0]
    both = estimate_energy_sweep(str(tiny_dense_llama_dir), count_neuron_updates=True, **common).runs[0]
    d, f, layers = LLAMA_TINY["hidden_size"], LLAMA_TINY["intermediate_size"], LLAMA_TINY["num_hidden_layers"]
    token = 6 * d + f  # q, k, v, o, gate, up read d (o: heads x d_h = d), down reads f; K/V spikes stateless
    forward = [r for r in both.report.by_component() if r.component == "neuron_updates"][0]
    assert forward.spiking_acs == (T - 1) * layers * n * token
    g0, g = base.generation.to_dict()["kv_cache"], both.generation.to_dict()["kv_cache"]
    prompt = _line(g, "prompt")["spiking_acs"] - _line(g0, "prompt")["spiking_acs"]
    decoder = _line(g, "decoder")["spiking_acs"] - _line(g0, "decoder")["spiking_acs"]
    assert prompt == (T - 1) * layers * n * token and decoder == (T - 1) * layers * (m - 1) * token
    assert g["last_token"]["spiking_acs"] - g0["last_token"]["spiking_acs"] == (T - 1) * layers * token


# --- the command ----------------------------------------------------------------------------------


def test_cli_flags(tiny_dense_bert_dir):
    args = ["energy", "--model", str(tiny_dense_bert_dir), "--seq-len", str(L), "--batches", "1", "--batch-size",
            "2", "--bootstrap", "0", "--memory", "none"]
    res = runner.invoke(app, [*args, "--count-neuron-updates", "--count-alpha-scale", "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["count_neuron_updates"] and data["count_alpha_scale"]
    components = {c["component"]: c for c in data["runs"][0]["components"]}
    assert components["neuron_updates"]["spiking_acs"] == bert_updates(T, LAYERS, L, D, FF)
    table = runner.invoke(app, [*args, "--count-neuron-updates", "--detail"])
    assert table.exit_code == 0, table.output
    assert "neuron_updates" in table.stdout and "membrane updates (--count-neuron-updates" in table.stdout
    assert "and control." in table.stdout  # the caveat no longer says that state updates are left out
    plain = runner.invoke(app, [*args, "--format", "json"])
    assert json.loads(plain.stdout)["count_neuron_updates"] is False


# --- neurons without a per-step amplitude, LIF's membranes, a BART decoder with its own heads -------


@pytest.fixture(scope="module")
def lif_bert(tiny_dense_bert_dir, tmp_path_factory):
    from spikelm_core.conversion import convert_model
    from spikelm_core.neurons.settings import NeuronSettings

    out = tmp_path_factory.mktemp("terms_lif") / "lif"
    convert_model(str(tiny_dense_bert_dir), out, NeuronSettings(kind="lif", num_timesteps=2), seq_len=L,
                  batch_size=2, calib_batches=1)
    return out


def test_lif_has_no_alpha_and_keeps_kv_membranes(lif_bert):
    sweep = estimate_energy_sweep(str(lif_bert), seq_len=L, batches=1, batch_size=2, bootstrap=0,
                                  count_neuron_updates=True, count_alpha_scale=True)
    run = sweep.runs[0]
    t = run.timesteps
    # the report says the switch bills nothing here, and why
    assert any("--count-alpha-scale" in i and "no per-step amplitude" in i for i in sweep.included)
    assert "none in this model: its spikes carry no per-step amplitude" in sweep.assumptions
    assert t == 2
    # LIF spikes are {0, 1}: no amplitude to rescale; K and V spike through neurons with a membrane
    assert _component(run.report, "alpha_scale") is None
    assert _component(run.report, "neuron_updates").spiking_acs == (t - 1) * LAYERS * (7 * L * D + L * FF)
    # the paper setting takes the same neurons, at BERT-base's shapes
    assert _component(run.paper, "neuron_updates").spiking_acs == (t - 1) * 12 * (7 * 128 * 768 + 128 * 3072)
    assert _component(run.paper, "alpha_scale") is None


def test_no_membrane_with_reset_none_and_no_alpha_at_T1(tiny_dense_bert_dir, tmp_path):
    from spikelm_core.conversion import convert_model
    from spikelm_core.neurons.settings import NeuronSettings

    out = tmp_path / "reset-none"
    convert_model(str(tiny_dense_bert_dir), out, NeuronSettings(reset="none", num_timesteps=3), seq_len=L,
                  batch_size=2, calib_batches=1)
    sweep = estimate_energy_sweep(str(out), seq_len=L, batches=1, batch_size=2, bootstrap=0, neurobench=True,
                                  count_neuron_updates=True, count_alpha_scale=True)
    run = sweep.runs[0]
    # u_t = x_t: no membrane to update or to move; the amplitudes still change from step to step
    assert _component(run.report, "neuron_updates") is None and run.neurobench["MembraneUpdates"] == 0
    assert _component(run.report, "alpha_scale").spiking_macs == bert_scales(3, LAYERS, L, D, FF, H)
    assert _component(run.paper, "neuron_updates") is None
    for bound in run.memory.bounds.values():
        assert bound.total.spiking["membrane"] == 0
    assert any("--count-neuron-updates" in i and "none in this model" in i for i in sweep.included)
    assert not any("--count-alpha-scale" in i and "none in this model" in i for i in sweep.included)
    assert "none in this model: with reset none" in sweep.assumptions
    # T=1 (the dense model converted on the fly): the one alpha folds into the weights and no membrane is
    # carried, in the model and the paper setting
    one = estimate_energy_sweep(str(tiny_dense_bert_dir), timesteps=[1], seq_len=L, batches=1, batch_size=2,
                                bootstrap=0, count_neuron_updates=True, count_alpha_scale=True).runs[0]
    for report in (one.report, one.paper):
        assert _component(report, "alpha_scale") is None and _component(report, "neuron_updates") is None
    from spikelm_core.energy.memory import keeps_membrane

    assert not keeps_membrane({"decay": 0.0}) and keeps_membrane({"neuron_kind": "lif", "decay": 0.0})
    assert not keeps_membrane({"reset": "none"}) and keeps_membrane({})


def test_lif_cross_kv_spikes_in_their_line_with_or_without_the_cache(tiny_dense_bart, tmp_path):  # noqa: F811
    from spikelm_core.conversion import convert_model
    from spikelm_core.neurons.settings import NeuronSettings

    out = tmp_path / "lif-bart"
    convert_model(str(tiny_dense_bart), out, NeuronSettings(kind="lif", num_timesteps=2), seq_len=SRC,
                  batch_size=2, calib_batches=1)
    common = dict(seq_len=SRC, target_len=TGT, batches=1, batch_size=2, bootstrap=0, memory="weight-stationary")
    base = estimate_energy_sweep(str(out), **common).runs[0]
    both = estimate_energy_sweep(str(out), count_neuron_updates=True, **common).runs[0]
    g0, g = base.generation.to_dict(), both.generation.to_dict()
    added = {mode: {line: _line(g[mode], line)["spiking_acs"] - _line(g0[mode], line)["spiking_acs"]
                    for line in ("cross_kv", "decoder")} for mode in ("kv_cache", "no_cache")}
    # the neurons in front of the cross K/V projections and the K/V spikes' own (LIF: with a membrane), made
    # once with the cache, every step without it; the decoder line the same per token either way
    per_summary = (2 - 1) * 2 * 4 * SRC * BD  # T - 1 = 1 step carries a membrane; 2 decoder layers
    assert added["kv_cache"]["cross_kv"] == per_summary and added["no_cache"]["cross_kv"] == TGT * per_summary
    token = (2 - 1) * 2 * (9 * BD + BF)  # self q, k, v, o, the K/V spikes, cross q, o; ffn1 (d), ffn2 (f)
    assert added["kv_cache"]["decoder"] == TGT * token
    # the memory bounds split the cross K/V spikes' bytes the same way: none left in the decoder line
    lines = {x["line"]: x for x in base.memory.to_dict()["weight_stationary"]["generation"]["no_cache"]["lines"]}
    cached = {x["line"]: x for x in base.memory.to_dict()["weight_stationary"]["generation"]["kv_cache"]["lines"]}
    assert lines["cross_kv"]["bytes_spiking"] == pytest.approx(TGT * cached["cross_kv"]["bytes_spiking"])


def test_a_compiled_model_counts_as_its_inner_model(tiny_dense_llama_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    from spikelm_core.energy import SpikingTerms, estimate_energy

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**LLAMA_TINY, "head_dim": 16}))  # 3 heads x 16 = 48, not 24
    terms = SpikingTerms(neuron_updates=True, alpha_scale=True)
    plain = estimate_energy(model, 0.3, seq_len=9, num_timesteps=2, terms=terms)
    compiled = estimate_energy(torch.compile(model), 0.3, seq_len=9, num_timesteps=2, terms=terms)
    assert compiled.total_spiking_acs == plain.total_spiking_acs
    assert compiled.total_spiking_macs == plain.total_spiking_macs


@pytest.mark.parametrize("settings, rescaled", [
    ({}, True), ({"neuron_kind": "lif"}, False), ({"amplitude": "unit"}, False), ({"alpha_mode": "fixed"}, False),
    ({"alpha_mode": "fixed", "learn_alpha": True}, True),
])
def test_which_spikes_are_rescaled(settings, rescaled):
    from spikelm_core.energy.memory import rescales_outputs

    assert rescales_outputs({"model_type": "spiking_bert", **settings}) is rescaled


def test_bart_decoder_heads_of_its_own(tmp_path):
    d = tmp_path / "dense_bart"
    torch.manual_seed(0)
    BartForConditionalGeneration(BartConfig(**{**BART_TINY, "decoder_attention_heads": 2})).save_pretrained(d)
    BertTokenizerFast(vocab=str(write_tiny_vocab(tmp_path / "vocab.txt"))).save_pretrained(d)
    common = dict(seq_len=SRC, target_len=TGT, batches=1, batch_size=2, bootstrap=0, memory="none")
    base = estimate_energy_sweep(str(d), **common).runs[0].generation.to_dict()["kv_cache"]["last_token"]
    both = estimate_energy_sweep(str(d), count_alpha_scale=True, **common).runs[0].generation.to_dict()
    got = both["kv_cache"]["last_token"]["spiking_macs"] - base["spiking_macs"]
    assert got == (T - 1) * 2 * (9 * BD + BF + 2 * (TGT + SRC))  # the decoder's 2 heads, not the encoder's 3


def test_config_only_marks_rates_not_updates(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**TINY, "model_type": "bert", "architectures": ["BertModel"]}))
    res = runner.invoke(app, ["energy", "--model", str(tmp_path), "--seq-len", str(L), "--batches", "1",
                              "--batch-size", "2", "--bootstrap", "0", "--memory", "none", "--count-neuron-updates",
                              "--detail"])
    assert res.exit_code == 0, res.output
    (line,) = [x for x in res.stdout.splitlines() if "neuron_updates" in x]
    cells = [c.strip() for c in line.split("│") if c.strip()]
    assert cells[3] == f"{bert_updates(T, LAYERS, L, D, FF):,}"  # spiking ACs: no random-weight mark
    assert not cells[6].endswith("*") and cells[7].endswith("*")  # its energy neither; its share of the total does
