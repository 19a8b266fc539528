"""Energy audit of (spiking) BART: exact MAC counts, the generation energy model and `spikelm energy`.

Hand formulas (energy-method.md, section 5), n_e source and n_d decoder tokens, d model width,
f FFN width, V vocabulary:

    encoder layer: 4·d²·n_e + 2·n_e²·d + 2·n_e·d·f
    decoder layer: 4·d²·n_d + 2·n_d²·d + 2·d²·n_d + 2·d²·n_e + 2·n_d·n_e·d + 2·n_d·d·f
    LM head:       n_d·d·V
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration, BartModel, BertTokenizerFast
from typer.testing import CliRunner

from spikelm_cli.main import app
from spikelm_core.energy import (
    FP32,
    bart_closed_form_macs,
    bart_layer_macs,
    count_macs,
    decoder_step_rows,
    generation_energy,
    generation_rows,
)
from spikelm_core.models.spiking_bart import SpikingBartConfig, SpikingBartForConditionalGeneration

from tests.conftest import write_tiny_vocab
from tests.core.models.test_spiking_bart import BART_TINY

runner = CliRunner()
D, F, V, LAYERS = BART_TINY["d_model"], BART_TINY["encoder_ffn_dim"], BART_TINY["vocab_size"], 2
NE, ND = 10, 7  # traced source / decoder tokens (odd, unequal)
BART_BASE = dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, vocab_size=50265)


def enc_layer(n):
    return {"q": n * D * D, "k": n * D * D, "v": n * D * D, "o": n * D * D,
            "qk": n * n * D, "av": n * n * D, "ffn1": n * D * F, "ffn2": n * F * D}


def dec_layer(n, ne):
    return {"q": n * D * D, "k": n * D * D, "v": n * D * D, "o": n * D * D, "qk": n * n * D, "av": n * n * D,
            "cross_q": n * D * D, "cross_k": ne * D * D, "cross_v": ne * D * D, "cross_o": n * D * D,
            "cross_qk": n * ne * D, "cross_av": n * ne * D, "ffn1": n * D * F, "ffn2": n * F * D}


def by_stack_component(count):
    out = {}
    for row in count.rows:
        out[(row.stack, row.component)] = out.get((row.stack, row.component), 0) + row.macs
    return out


@pytest.fixture(scope="module")
def dense_count():
    with torch.device("meta"):
        model = BartForConditionalGeneration(BartConfig(**BART_TINY))
    return count_macs(model, seq_len=NE, decoder_len=ND)


@pytest.fixture(scope="module")
def spiking_count():
    torch.manual_seed(0)
    model = SpikingBartForConditionalGeneration(SpikingBartConfig(**BART_TINY, num_timesteps=3)).eval()
    return count_macs(model, seq_len=NE, decoder_len=ND)


# --- MAC counts ---------------------------------------------------------------------------------


def test_closed_forms_reproduce_the_method_numbers():
    base = dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_ffn_dim=3072, decoder_ffn_dim=3072)
    assert sum(bart_layer_macs(768, 3072, 128, stack="encoder").values()) == 931_135_488
    assert sum(bart_layer_macs(768, 3072, 128, 128, stack="decoder").values()) == 1_258_291_200
    assert bart_closed_form_macs(**base, source_len=128, target_len=128) == 13_136_560_128
    assert bart_closed_form_macs(**base, source_len=128, target_len=128, vocab_size=50265) == 13_136_560_128 + 4_941_250_560
    large = dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_ffn_dim=4096, decoder_ffn_dim=4096)
    assert bart_closed_form_macs(**large, source_len=128, target_len=128) == 46_305_116_160
    with pytest.raises(ValueError):
        bart_layer_macs(768, 3072, 128, stack="decoder")  # no target length


def test_bart_base_from_config_on_meta():
    with torch.device("meta"):
        model = BartModel(BartConfig(**BART_BASE))
    count = count_macs(model)  # 128 source and 128 decoder tokens, shapes only
    assert count.total == count.closed_form_total == 13_136_560_128
    assert count.stack_total("encoder") == 6 * 931_135_488
    assert count.stack_total("decoder") == 6 * 1_258_291_200
    assert count.decoder_len == 128 and count.model_class == "BartModel"


def test_tiny_dense_bart_matches_the_hand_formula(dense_count):
    got = by_stack_component(dense_count)
    want = {("encoder", c): LAYERS * m for c, m in enc_layer(NE).items()}
    want |= {("decoder", c): LAYERS * m for c, m in dec_layer(ND, NE).items()}
    want[(None, "head")] = ND * D * V
    assert got == want
    assert dense_count.total == dense_count.closed_form_total == sum(want.values())
    assert {r.layer for r in dense_count.rows if r.stack} == {0, 1}
    assert dense_count.total == bart_closed_form_macs(D, 2, 2, F, F, NE, ND, vocab_size=V)


def test_eager_attention_and_a_model_without_lm_head(dense_count):
    config = BartConfig(**BART_TINY)
    config._attn_implementation = "eager"  # the attention matmuls run inline in self_attn / encoder_attn
    with torch.device("meta"):
        eager = BartForConditionalGeneration(config)
        base = BartModel(BartConfig(**BART_TINY))
    assert by_stack_component(count_macs(eager, seq_len=NE, decoder_len=ND)) == by_stack_component(dense_count)
    no_head = count_macs(base, seq_len=NE, decoder_len=ND)
    assert no_head.total == dense_count.total - ND * D * V
    assert list(generation_rows(no_head, 3, cache=True)) == ["encoder", "cross_kv", "decoder"]


def test_tiny_spiking_bart_counts_like_its_dense_twin(spiking_count, dense_count):
    assert by_stack_component(spiking_count) == by_stack_component(dense_count)
    assert spiking_count.num_timesteps == 3
    for row in spiking_count.rows:
        if row.component == "head":
            assert (row.module, row.spiking, row.steps, row.operand) == ("lm_head", False, 1, None)
        else:
            assert row.spiking and row.steps == 3 and row.operand == f"{row.module}.neuron", row
    cross_k = [r for r in spiking_count.rows if r.component == "cross_k"]
    assert [r.module for r in cross_k] == [f"model.decoder.layers.{i}.encoder_attn.k_proj" for i in range(2)]


# --- generation energy model --------------------------------------------------------------------


def line_totals(lines):
    return {line: sum(r.macs for r in rows) for line, rows in lines.items()}


@pytest.mark.parametrize("m", [1, 5, 9])
def test_generation_macs_match_the_hand_formula(dense_count, m):
    s1, s2 = m * (m + 1) // 2, m * (m + 1) * (2 * m + 1) // 6
    per_token = 6 * D * D + 2 * NE * D + 2 * D * F  # projections (self 4, cross Q/O), cross QK/AV, FFN
    encoder = LAYERS * sum(enc_layer(NE).values())
    cached = line_totals(generation_rows(dense_count, m, cache=True))
    assert cached == {
        "encoder": encoder,
        "cross_kv": LAYERS * 2 * NE * D * D,  # once per input
        "decoder": LAYERS * (m * per_token + 2 * D * s1),  # token i attends to i keys
        "lm_head": m * D * V,
    }
    uncached = line_totals(generation_rows(dense_count, m, cache=False))
    assert uncached == {
        "encoder": encoder,
        "cross_kv": LAYERS * 2 * NE * D * D * m,  # recomputed every step
        "decoder": LAYERS * (s1 * per_token + 2 * D * s2),  # step i recomputes the prefix of i tokens
        "lm_head": s1 * D * V,
    }
    # per-position steps add up to the lines
    steps_cached = sum(r.macs for i in range(1, m + 1) for r in decoder_step_rows(dense_count, i, cache=True))
    assert steps_cached == cached["decoder"] + cached["lm_head"]
    steps_uncached = sum(r.macs for i in range(1, m + 1) for r in decoder_step_rows(dense_count, i, cache=False))
    assert steps_uncached == uncached["decoder"] + uncached["cross_kv"] + uncached["lm_head"]


@pytest.mark.parametrize("i", [1, 4])
def test_uncached_step_equals_a_full_fvcore_forward_over_the_prefix(dense_count, i):
    with torch.device("meta"):
        model = BartForConditionalGeneration(BartConfig(**BART_TINY))
    prefix = count_macs(model, seq_len=NE, decoder_len=i)
    expected = prefix.total - prefix.stack_total("encoder")
    assert sum(r.macs for r in decoder_step_rows(dense_count, i, cache=False)) == expected
    cached = sum(r.macs for r in decoder_step_rows(dense_count, i, cache=True))
    assert cached == LAYERS * (6 * D * D + 2 * i * D + 2 * NE * D + 2 * D * F) + D * V


def test_generation_energy_matches_the_hand_formula(spiking_count):
    m, T, fr = 5, 3, 0.25
    energy = generation_energy(spiking_count, fr, T, FP32, target_len=m)
    e_mac, e_ac = FP32.e_mac_pj, FP32.e_ac_pj
    s1, s2 = m * (m + 1) // 2, m * (m + 1) * (2 * m + 1) // 6
    per_token = 6 * D * D + 2 * NE * D + 2 * D * F
    encoder = LAYERS * sum(enc_layer(NE).values())
    for mode, spiking_macs, head in (
        (energy.kv_cache, encoder + LAYERS * (2 * NE * D * D + m * per_token + 2 * D * s1), m * D * V),
        (energy.no_cache, encoder + LAYERS * (2 * NE * D * D * m + s1 * per_token + 2 * D * s2), s1 * D * V),
    ):
        summary = mode.to_dict()["per_summary"]
        assert summary["dense_macs"] == spiking_macs + head
        assert math.isclose(summary["energy_dense_mj"], e_mac * (spiking_macs + head) / 1e9, rel_tol=1e-12)
        e_spiking = (e_ac * T * fr * spiking_macs + e_mac * head) / 1e9
        assert math.isclose(summary["energy_spiking_mj"], e_spiking, rel_tol=1e-12)
        assert summary["spiking_macs"] == head and math.isclose(summary["spiking_acs"], T * fr * spiking_macs)
        token = mode.to_dict()["per_token"]
        assert math.isclose(token["energy_spiking_mj"], e_spiking / m, rel_tol=1e-12)
        assert math.isclose(token["dense_macs"], (spiking_macs + head) / m, rel_tol=1e-12)
        lines = mode.to_dict()["lines"]
        assert math.isclose(sum(x["energy_spiking_mj"] for x in lines), e_spiking, rel_tol=1e-12)
    last = energy.kv_cache.to_dict()["last_token"]
    assert last["dense_macs"] == LAYERS * (6 * D * D + 2 * m * D + 2 * NE * D + 2 * D * F) + D * V
    assert [x["charged"] for x in energy.no_cache.to_dict()["lines"]][1] == "per generated token"


# --- the command ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dense_bart(tmp_path_factory):
    d = tmp_path_factory.mktemp("energy_tiny_bart") / "dense_bart"
    torch.manual_seed(0)
    BartForConditionalGeneration(BartConfig(**BART_TINY)).save_pretrained(d)
    BertTokenizerFast(vocab=str(write_tiny_vocab(d.parent / "vocab.txt"))).save_pretrained(d)
    return d


def run(*args):
    return runner.invoke(app, ["energy", *[str(a) for a in args]])


SRC, TGT = 12, 5


@pytest.fixture(scope="module")
def bart_sweep(tiny_dense_bart, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("energy_bart_out") / "report"
    common = ("--model", tiny_dense_bart, "--k", 2, 3, "--seq-len", SRC, "--target-len", TGT, "--batches", 2,
              "--batch-size", 4, "--bootstrap", 50)
    res = run(*common, "--format", "json", "--out", out_dir)
    assert res.exit_code == 0, res.output
    table = run(*common, "--detail")
    assert table.exit_code == 0, table.output
    return json.loads(res.stdout), table.stdout, out_dir


def test_cli_bart_json(bart_sweep):
    data, _, out_dir = bart_sweep
    assert data["schema"] == "spikelm.energy/2" and data["seq_len"] == SRC and data["target_len"] == TGT
    assert data["model"]["model_type"] == "bart" and data["model"]["d_model"] == D
    forward = bart_closed_form_macs(D, 2, 2, F, F, SRC, TGT, vocab_size=V)
    assert data["dense_twin"]["macs"] == forward
    assert set(data["dense_twin"]["stacks"]) == {"encoder", "decoder", "other"}
    runs = data["runs"]
    assert [(r["k"], r["timesteps"]) for r in runs] == [(2.0, 4), (3.0, 4)]
    assert runs[0]["mean_firing_rate"] > runs[1]["mean_firing_rate"] > 0
    for r in runs:
        assert r["dense_macs"] == forward
        assert {c.get("stack") for c in r["components"]} == {"encoder", "decoder", None}
        assert math.isclose(sum(c["energy_spiking_mj"] for c in r["components"]), r["energy_spiking_mj"], rel_tol=1e-9)
        assert [f["module"] for f in r["float_matmuls"]] == ["lm_head"]
        assert r["paper_setting"]["dense_macs"] == 13_136_560_128 + 4_941_250_560
        g = r["generation"]
        assert (g["source_len"], g["target_len"]) == (SRC, TGT)
        for mode in ("kv_cache", "no_cache"):
            summary, token = g[mode]["per_summary"], g[mode]["per_token"]
            assert [x["line"] for x in g[mode]["lines"]] == ["encoder", "cross_kv", "decoder", "lm_head"]
            for key in ("dense_macs", "spiking_acs", "spiking_macs", "energy_dense_mj", "energy_spiking_mj"):
                assert math.isclose(sum(x[key] for x in g[mode]["lines"]), summary[key], rel_tol=1e-9), key
                assert math.isclose(token[key] * TGT, summary[key], rel_tol=1e-9), key
            assert math.isclose(summary["ratio"], summary["energy_dense_mj"] / summary["energy_spiking_mj"])
        assert g["kv_cache"]["per_summary"]["dense_macs"] < g["no_cache"]["per_summary"]["dense_macs"]
        lines = {x["line"]: x for x in g["kv_cache"]["lines"]}
        assert lines["encoder"]["dense_macs"] == 2 * sum(enc_layer(SRC).values())
        assert lines["lm_head"]["spiking_macs"] == TGT * D * V and lines["lm_head"]["mean_firing_rate"] is None
        assert r["neurons"] and all(n["kind"] == "ternary" for n in r["neurons"])
    assert len(runs[0]["neurons"]) == 2 * 8 + 2 * 14
    assert {p.name for p in out_dir.iterdir()} >= {"report.json", "report.csv", "report.md", "firing_rates.png"}
    assert "generation_kv_cache" in (out_dir / "report.csv").read_text()
    assert "Generation: one summary" in (out_dir / "report.md").read_text()
    # the breakdown's width is capped: BART's encoder, decoder and cross-attention components made it
    # 27 inches (3,000 pixels) wide before
    header = (out_dir / "energy_breakdown.png").read_bytes()[:24]
    assert len(data["runs"][0]["components"]) > 13 and int.from_bytes(header[16:20], "big") <= 16 * 110
    import csv  # the generation-with-memory figures are CSV rows too, equal to the JSON's

    rows = list(csv.DictReader((out_dir / "report.csv").open()))
    memory = runs[0]["memory"]["weight_stationary"]["generation"]["kv_cache"]
    for component, x in (("per_summary", memory["per_summary"]), ("line.decoder", memory["lines"][2]),
                         ("per_token.kv_cache", None)):
        (row,) = [r for r in rows if r["k"] == str(runs[0]["k"]) and r["component"] == component
                  and r["scope"] == "memory_weight_stationary_generation_kv_cache"]
        if x is None:
            assert float(row["bytes_dense"]) == memory["per_token"]["kv_cache_bytes_dense"]
        else:
            assert float(row["ratio"]) == pytest.approx(x["ratio"]) and float(row["bytes_spiking"]) == x["bytes_spiking"]


def test_cli_bart_table(bart_sweep):
    data, table, _ = bart_sweep
    assert "dense BART, converted on the fly" in table and "KV cache" in table and "no cache" in table
    assert "generation: one summary of 5 tokens from 12 source tokens (greedy: a beam search" in table
    assert "paper setting: BART-base" in table and "lm_head" in table and "caveat:" in table
    assert "summary lines at k=3, T=4" in table and "decoder 1" in table  # --detail: per run, per stack layer
    for r in data["runs"]:
        for mode in ("kv_cache", "no_cache"):
            assert f"{r['generation'][mode]['per_summary']['dense_macs']:,}" in table
            assert f"{r['generation'][mode]['per_summary']['ratio']:.2f}x" in table


def test_cli_spiking_bart_checkpoint_and_config_only(tiny_dense_bart, tmp_path):
    from spikelm_core.conversion import convert_model
    from spikelm_core.neurons.settings import NeuronSettings

    spiking = tmp_path / "spiking_bart"
    convert_model(str(tiny_dense_bart), spiking, NeuronSettings(num_timesteps=2), seq_len=SRC, batch_size=4,
                  calib_batches=1)
    res = run("--model", spiking, "--seq-len", SRC, "--target-len", TGT, "--batches", 1, "--batch-size", 4,
              "--bootstrap", 0, "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["model"]["kind"] == "spiking" and data["model"]["model_type"] == "spiking_bart"
    (run0,) = data["runs"]
    assert run0["amplitudes"] == "checkpoint" and run0["timesteps"] == 2 and "generation" in run0
    assert data["model"]["architecture"] == "SpikingBartForConditionalGeneration"

    config_only = tmp_path / "config_only"
    config_only.mkdir()
    cfg = json.loads((tiny_dense_bart / "config.json").read_text())
    cfg["architectures"] = ["BartModel"]  # as facebook/bart-base says: the audit of generation adds the LM head
    (config_only / "config.json").write_text(json.dumps(cfg))
    res = run("--model", config_only, "--seq-len", SRC, "--target-len", TGT, "--batches", 1, "--batch-size", 2,
              "--bootstrap", 0, "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["firing_rates_meaningful"] is False and data["data"]["source"].startswith("random token ids")
    assert data["model"]["architecture"] == "BartForConditionalGeneration"
    (run0,) = data["runs"]
    assert [line["line"] for line in run0["generation"]["kv_cache"]["lines"]][-1] == "lm_head"
    assert run0["spiking_macs"] > 0  # the LM head's float MACs


def test_cli_bart_bad_target_len(tiny_dense_bart, tiny_dense_bert_dir):
    res = run("--model", tiny_dense_bart, "--seq-len", SRC, "--target-len", 65)
    assert res.exit_code == 2 and "--target-len 65 exceeds" in res.stderr and "Traceback" not in res.output
    assert res.stdout == ""
    res = run("--model", tiny_dense_bart, "--target-len", 0)
    assert res.exit_code == 2 and "target length must be >= 1" in res.stderr and res.stdout == ""
    res = run("--model", tiny_dense_bert_dir, "--seq-len", SRC, "--target-len", 5)
    assert res.exit_code == 2 and "applies to generating models (BART, Llama)" in res.stderr and res.stdout == ""


def test_bart_per_position_keeps_source_and_target_positions_apart():
    """Encoder neurons index source tokens, decoder neurons target tokens: never pooled; the decoder's
    cross K/V read the source, so they stay in their own keys."""
    from types import SimpleNamespace

    from spikelm_core.energy.firing_pass import per_position

    def profile(nonzero):
        return SimpleNamespace(position_nonzero=torch.tensor(nonzero), position_total=torch.tensor([4, 4, 4]))

    rows = [SimpleNamespace(operand="enc.q", stack="encoder", component="q"),
            SimpleNamespace(operand="dec.q", stack="decoder", component="q"),
            SimpleNamespace(operand="dec.ck", stack="decoder", component="cross_k"),
            SimpleNamespace(operand="dec.cqk", stack="decoder", component="cross_qk")]  # spikes the source's K
    out = per_position({"enc.q": profile([4, 4, 0]), "dec.q": profile([0, 2, 0]), "dec.ck": profile([4, 0, 4]),
                        "dec.cqk": profile([4, 4, 4])}, SimpleNamespace(rows=rows))
    assert list(out) == ["encoder", "encoder.q", "decoder", "decoder.q", "decoder.cross_k", "decoder.cross_qk"]
    assert out["encoder"] == out["encoder.q"] == (1.0, 1.0, 0.0)
    assert out["decoder"] == out["decoder.q"] == (0.0, 0.5, 0.0)  # cross_k's and cross_qk's source positions left out
    assert out["decoder.cross_k"] == (1.0, 0.0, 1.0)
    bert = per_position({"q": profile([4, 0, 0]), "v": profile([0, 0, 4])},
                        SimpleNamespace(rows=[SimpleNamespace(operand="q", stack=None, component="q"),
                                              SimpleNamespace(operand="v", stack=None, component="v")]))
    assert bert == {"all": (0.5, 0.0, 0.5), "q": (1.0, 0.0, 0.0), "v": (0.0, 0.0, 1.0)}


def test_cli_bart_per_position_keys(bart_sweep):
    data, _, _ = bart_sweep
    keys = set(data["runs"][0]["per_position"])
    assert {"encoder", "decoder", "encoder.q", "decoder.cross_k"} <= keys and "all" not in keys
