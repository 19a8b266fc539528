"""Energy audit of (spiking) Llama: the MAC closed form, energy per generated token with and without the
KV cache, and `spikelm energy` on a tiny decoder.

Hand formulas (energy-method.md, section 5a), per layer and time step, L tokens attending to S keys,
D hidden, H heads of d_h, H_kv K/V heads (grouped-query attention), I intermediate, V vocabulary:

    q = L·D·H·d_h    k = v = L·D·H_kv·d_h    o = L·H·d_h·D
    qk = av = H·L·S·d_h    gate = up = L·D·I    ffn2 (down) = L·I·D    LM head = L·D·V (float)

Generation of m tokens after a prompt of n tokens: step 1 runs the prompt (n tokens, n keys); step
j >= 2 feeds one token against P = n + j - 1 keys with the cache, or re-runs the prefix of P tokens
without it; the LM head scores one position per step.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from spikelm_cli.main import app
from spikelm_core.energy import (
    FP32,
    count_macs,
    decoder_step_rows,
    energy_from_counts,
    generation_energy,
    generation_rows,
    llama_closed_form_macs,
    llama_layer_macs,
)
from spikelm_core.energy.memory import Assumptions, MemoryCost, forward_ops, generation_ops, shape_of, total_traffic
from spikelm_core.energy.schedule import decoding_steps
from spikelm_core.models.spiking_llama import SpikingLlamaConfig, SpikingLlamaForCausalLM

from tests.conftest import LLAMA_TINY

runner = CliRunner()

#: A second odd shape: 6 query heads over 2 K/V heads, head_dim 10 (H·d_h = 60 != hidden 30; RoPE needs an
#: even head_dim and transformers a hidden size that the heads divide).
LLAMA_ODD = dict(vocab_size=53, hidden_size=30, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                 head_dim=10, intermediate_size=37, max_position_embeddings=64, bos_token_id=1, eos_token_id=2,
                 pad_token_id=0)
SHAPES = {"tiny-gqa3to1": LLAMA_TINY, "odd-gqa6to2-dh10": LLAMA_ODD,
          "tiny-mha": {**LLAMA_TINY, "num_key_value_heads": 3}}


def dims(cfg):
    h = cfg["num_attention_heads"]
    return dict(D=cfg["hidden_size"], H=h, KV=cfg.get("num_key_value_heads", h),
                DH=cfg.get("head_dim") or cfg["hidden_size"] // h, I=cfg["intermediate_size"], V=cfg["vocab_size"],
                N=cfg["num_hidden_layers"])


def hand_layer(cfg, L, S=None):
    """The closed form, written out by hand (not through the code under test)."""
    d = dims(cfg)
    S = L if S is None else S
    D, H, KV, DH, I = d["D"], d["H"], d["KV"], d["DH"], d["I"]
    return {"q": L * D * H * DH, "k": L * D * KV * DH, "v": L * D * KV * DH, "o": L * H * DH * D,
            "gate": L * D * I, "up": L * D * I, "ffn2": L * I * D, "qk": H * L * S * DH, "av": H * L * S * DH}


def per_token_costs(cfg):
    """(linear MACs per token per layer, attention MACs per query-key pair per layer)."""
    d = dims(cfg)
    D, H, KV, DH, I = d["D"], d["H"], d["KV"], d["DH"], d["I"]
    return D * H * DH + 2 * D * KV * DH + H * DH * D + 3 * D * I, 2 * H * DH


def by_component(count):
    out = {}
    for row in count.rows:
        out[row.component] = out.get(row.component, 0) + row.macs
    return out


def dense(cfg, **kw):
    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**cfg, **kw))


def spiking(cfg, T):
    torch.manual_seed(0)
    return SpikingLlamaForCausalLM(SpikingLlamaConfig(**cfg, num_timesteps=T)).eval()


# --- the MAC closed form ------------------------------------------------------------------------------


def test_closed_form_by_hand():
    layer = llama_layer_macs(hidden=30, heads=6, kv_heads=2, head_dim=7, intermediate=37, seq_len=5, keys=9)
    assert layer == {"q": 5 * 30 * 42, "k": 5 * 30 * 14, "v": 5 * 30 * 14, "o": 5 * 42 * 30, "gate": 5 * 30 * 37,
                     "up": 5 * 30 * 37, "ffn2": 5 * 37 * 30, "qk": 6 * 5 * 9 * 7, "av": 6 * 5 * 9 * 7}
    # SmolLM2-135M at 128 tokens: d 576, 30 layers, 9 heads over 3 K/V heads of 64, d_ff 1536, V 49152
    smol = llama_layer_macs(576, 9, 3, 64, 1536, 128)
    assert sum(smol.values()) == 471_859_200
    assert llama_closed_form_macs(576, 30, 9, 3, 64, 1536, 128) == 14_155_776_000
    assert llama_closed_form_macs(576, 30, 9, 3, 64, 1536, 128, vocab_size=49152) == 14_155_776_000 + 3_623_878_656
    with pytest.raises(ValueError, match="must divide"):
        llama_layer_macs(24, 3, 2, 8, 40, 7)


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("T", [1, 3], ids=["T1", "T3"])
def test_fvcore_count_equals_the_closed_form_every_component(name, T):
    cfg, L = SHAPES[name], 7
    d = dims(cfg)
    want = {c: d["N"] * m for c, m in hand_layer(cfg, L).items()}
    want["head"] = L * d["D"] * d["V"]
    count = count_macs(spiking(cfg, T), seq_len=L)
    assert by_component(count) == want
    assert count.total == count.closed_form_total == sum(want.values())
    assert count.decoder_only and count.decoder_len is None and {r.stack for r in count.rows} == {None}
    for row in count.rows:
        if row.component == "head":
            assert (row.module, row.spiking, row.steps, row.operand) == ("lm_head", False, 1, None)
        else:
            assert row.spiking and row.steps == T and row.operand == f"{row.module}.neuron", row
    # the dense twin counts the same, with sdpa (the default) or eager attention
    assert by_component(count_macs(dense(cfg), seq_len=L)) == want
    assert by_component(count_macs(dense(cfg, attn_implementation="eager"), seq_len=L)) == want


def test_smollm2_shape_on_meta():
    cfg = dict(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
               head_dim=64, intermediate_size=1536, max_position_embeddings=8192, tie_word_embeddings=True)
    count = count_macs(dense(cfg))  # 128 tokens, shapes only
    assert count.total == count.closed_form_total == 14_155_776_000 + 3_623_878_656
    # energy-method.md 5a: the 128-token step with the LM head on one position; a cached step at 129 keys
    assert sum(r.macs for r in decoder_step_rows(count, 1, cache=False)) == 14_184_087_552
    assert sum(r.macs for r in decoder_step_rows(count, 2, cache=True)) == 30 * (3_538_944 + 129 * 1_152) + 28_311_552


# --- generation -----------------------------------------------------------------------------------------

N_PROMPT = 7


@pytest.fixture(scope="module")
def dense_count():
    return count_macs(dense(LLAMA_TINY), seq_len=N_PROMPT)


@pytest.fixture(scope="module")
def spiking_count():
    return count_macs(spiking(LLAMA_TINY, 3), seq_len=N_PROMPT)


def hand_generation(cfg, n, m, cache):
    """(prompt, decoder, lm_head) MACs of m tokens after an n-token prompt, by hand."""
    d = dims(cfg)
    lin, att = per_token_costs(cfg)
    prompt = d["N"] * (n * lin + n * n * att)
    prefixes = [n + j - 1 for j in range(2, m + 1)]
    if cache:
        decoder = d["N"] * sum(lin + p * att for p in prefixes)
    else:
        decoder = d["N"] * sum(p * lin + p * p * att for p in prefixes)
    return prompt, decoder, m * d["D"] * d["V"]


def test_decoding_schedule():
    assert [(s.tokens, s.keys, s.logits, s.prompt) for s in decoding_steps(3, cache=True, prompt_len=5)] == [
        (5, 5, 1, True), (1, 6, 1, False), (1, 7, 1, False)]
    assert [(s.tokens, s.keys, s.logits) for s in decoding_steps(3, cache=False, prompt_len=5)] == [
        (5, 5, 1), (6, 6, 1), (7, 7, 1)]
    assert [(s.tokens, s.keys, s.logits) for s in decoding_steps(2, cache=False)] == [(1, 1, 1), (2, 2, 2)]  # BART


@pytest.mark.parametrize("m", [1, 4, 9])
@pytest.mark.parametrize("cache", [True, False], ids=["kv_cache", "no_cache"])
def test_generation_macs_match_the_hand_formula(dense_count, m, cache):
    prompt, decoder, head = hand_generation(LLAMA_TINY, N_PROMPT, m, cache)
    lines = {line: sum(r.macs for r in rows) for line, rows in generation_rows(dense_count, m, cache=cache).items()}
    assert lines == {"prompt": prompt, **({"decoder": decoder} if m > 1 else {}), "lm_head": head}
    steps = sum(r.macs for j in range(1, m + 1) for r in decoder_step_rows(dense_count, j, cache=cache))
    assert steps == prompt + decoder + head


@pytest.mark.parametrize("j", [1, 3])
def test_uncached_step_equals_a_full_fvcore_forward_over_the_prefix(dense_count, j):
    d = dims(LLAMA_TINY)
    p = N_PROMPT + j - 1
    prefix = count_macs(dense(LLAMA_TINY), seq_len=p)
    head_unused = (p - 1) * d["D"] * d["V"]  # generate scores the last position only
    assert sum(r.macs for r in decoder_step_rows(dense_count, j, cache=False)) == prefix.total - head_unused
    lin, att = per_token_costs(LLAMA_TINY)
    cached = sum(r.macs for r in decoder_step_rows(dense_count, j, cache=True))
    if j == 1:
        assert cached == prefix.total - head_unused  # the prompt: the same in both modes
    else:
        assert cached == d["N"] * (lin + p * att) + d["D"] * d["V"]


def test_generation_energy_per_token_matches_the_hand_formula(spiking_count):
    m, T, fr = 5, 3, 0.25
    e_mac, e_ac = FP32.e_mac_pj, FP32.e_ac_pj
    energy = generation_energy(spiking_count, fr, T, FP32, target_len=m)
    data = energy.to_dict()
    assert (data["prompt_len"], data["target_len"]) == (N_PROMPT, m) and "source_len" not in data
    for mode, cache in (("kv_cache", True), ("no_cache", False)):
        prompt, decoder, head = hand_generation(LLAMA_TINY, N_PROMPT, m, cache)
        spike = prompt + decoder
        g = data[mode]
        e_spiking = (e_ac * T * fr * spike + e_mac * head) / 1e9
        e_dense = e_mac * (spike + head) / 1e9
        assert g["per_summary"]["dense_macs"] == spike + head
        assert math.isclose(g["per_summary"]["energy_spiking_mj"], e_spiking, rel_tol=1e-12)
        assert math.isclose(g["per_token"]["energy_spiking_mj"], e_spiking / m, rel_tol=1e-12)
        assert math.isclose(g["per_token"]["energy_dense_mj"], e_dense / m, rel_tol=1e-12)
        assert math.isclose(g["per_token"]["spiking_acs"], T * fr * spike / m, rel_tol=1e-12)
        assert g["per_summary"]["spiking_macs"] == head
        assert [(x["line"], x["charged"]) for x in g["lines"]] == [
            ("prompt", "once per input"), ("decoder", "per generated token after the first"),
            ("lm_head", "per generated token")]
        lin, att = per_token_costs(LLAMA_TINY)
        p = N_PROMPT + m - 1
        last = LLAMA_TINY["num_hidden_layers"] * ((lin + p * att) if cache else (p * lin + p * p * att))
        assert g["last_token"]["dense_macs"] == last + dims(LLAMA_TINY)["D"] * dims(LLAMA_TINY)["V"]
    assert data["kv_cache"]["per_token"]["energy_spiking_mj"] < data["no_cache"]["per_token"]["energy_spiking_mj"]


@pytest.mark.parametrize("cache", [True, False], ids=["kv_cache", "no_cache"])
def test_generation_memory_reads_the_grouped_kv_cache(spiking_count, cache):
    T, fr, m = 3, 0.5, 4
    d = dims(LLAMA_TINY)
    report = energy_from_counts(spiking_count.rows, fr, T, FP32)
    linear = {name: (mod.in_features, mod.out_features) for name, mod in spiking(LLAMA_TINY, T).named_modules()
              if isinstance(mod, torch.nn.Linear)}
    shape = shape_of({**LLAMA_TINY, "model_type": "spiking_llama"}, N_PROMPT, None, linear)
    ops = forward_ops(report.rows, shape)
    qk = next(op for op in ops if op.component == "qk" and op.layer == 0)
    kv_width, q_width = d["KV"] * d["DH"], d["H"] * d["DH"]
    # the spiked K holds the H_kv heads only; Q and the scores all H heads
    assert (qk.produced, qk.read, qk.other, qk.out) == (N_PROMPT * kv_width, N_PROMPT * kv_width,
                                                       N_PROMPT * q_width, d["H"] * N_PROMPT * N_PROMPT)
    lines = generation_ops(ops, shape, m, cache=cache)
    a = Assumptions(T, FP32, MemoryCost("unit", ((0, 1.0),), 1, "test"))
    energy = generation_energy(spiking_count, fr, T, FP32, target_len=m)
    mode = energy.kv_cache if cache else energy.no_cache
    assert set(lines) == set(mode.lines) == {"prompt", "decoder", "lm_head"}
    for line, line_ops in lines.items():  # the arithmetic equals seq2seq's generation energy, line by line
        assert math.isclose(total_traffic(line_ops, "weight_stationary", a).arithmetic_spiking_pj / 1e9,
                            mode.lines[line].energy_spiking_mj, rel_tol=1e-9), line
    t = total_traffic([op for line_ops in lines.values() for op in line_ops], "weight_stationary", a)
    if cache:  # steps 2..m read the n + j - 1 cached K and V of every layer, H_kv heads wide
        cached = d["N"] * 2 * sum(N_PROMPT + j - 1 for j in range(2, m + 1)) * kv_width
        assert t.dense["kv_cache"] == cached * 4 and t.spiking["kv_cache"] == T * cached * 2 / 8
    else:
        assert t.dense["kv_cache"] == 0 and t.spiking["kv_cache"] == 0


# --- the command ----------------------------------------------------------------------------------------

SEQ, TGT = 9, 4
WORDS = "the a of and to in is was it for on that with as at by river rose bridge farmers".split()


def run(*args):
    return runner.invoke(app, ["energy", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    import random

    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS + list("abcdefgh")) for _ in range(rng.randint(4, 12))) for _ in range(60)]
    path = tmp_path_factory.mktemp("llama_text") / "calib.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def llama_sweep(tiny_dense_llama_dir, text_file, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("energy_llama_out") / "report"
    common = ("--seq-len", SEQ, "--target-len", TGT, "--data", text_file, "--batches", 2, "--batch-size", 3,
              "--bootstrap", 20, "-T", 2)
    res = run(tiny_dense_llama_dir, *common, "--format", "json", "--out", out_dir)  # the model as the argument
    assert res.exit_code == 0, res.output
    table = run("--model", tiny_dense_llama_dir, *common, "--detail")
    assert table.exit_code == 0, table.output
    return json.loads(res.stdout), table.stdout, out_dir


def test_cli_llama_json(llama_sweep):
    data, _, out_dir = llama_sweep
    d = dims(LLAMA_TINY)
    m = data["model"]
    assert (m["model_type"], m["kind"], m["architecture"]) == ("llama", "dense", "LlamaForCausalLM")
    assert (m["num_key_value_heads"], m["head_dim"], m["vocab_size"], m["tie_word_embeddings"]) == (1, 8, 101, False)
    assert data["seq_len"] == SEQ and data["target_len"] == TGT
    forward = llama_closed_form_macs(d["D"], d["N"], d["H"], d["KV"], d["DH"], d["I"], SEQ, vocab_size=d["V"])
    assert data["dense_twin"]["macs"] == forward and "stacks" not in data["dense_twin"]
    (r,) = data["runs"]
    assert r["timesteps"] == 2 and r["dense_macs"] == forward and r["paper_setting"] is None
    assert [c["component"] for c in r["components"]] == ["q", "k", "v", "o", "gate", "up", "ffn2", "qk", "av", "head"]
    assert all("stack" not in c for c in r["components"])
    # spike purity: the embeddings (a lookup, no MACs) and the LM head (float x float) are float
    floats = {f["module"]: f for f in r["float_matmuls"]}
    assert list(floats) == ["model.embed_tokens", "lm_head"]
    assert floats["model.embed_tokens"]["macs"] == 0 and floats["lm_head"]["macs"] == SEQ * d["D"] * d["V"]
    assert "LM head" in floats["lm_head"]["reason"]
    assert len(r["neurons"]) == 9 * d["N"] and all(n["kind"] == "ternary" for n in r["neurons"])
    assert r["ratio_ci"] is not None and 0 < r["mean_firing_rate"] < 1
    g = r["generation"]
    assert (g["prompt_len"], g["target_len"]) == (SEQ, TGT)
    for mode in ("kv_cache", "no_cache"):
        summary, token = g[mode]["per_summary"], g[mode]["per_token"]
        prompt, decoder, head = hand_generation(LLAMA_TINY, SEQ, TGT, mode == "kv_cache")
        assert summary["dense_macs"] == prompt + decoder + head
        for key in ("dense_macs", "spiking_acs", "spiking_macs", "energy_dense_mj", "energy_spiking_mj"):
            assert math.isclose(sum(x[key] for x in g[mode]["lines"]), summary[key], rel_tol=1e-9), key
            assert math.isclose(token[key] * TGT, summary[key], rel_tol=1e-9), key
    memory = r["memory"]["weight_stationary"]["generation"]
    assert memory["kv_cache"]["per_token"]["kv_cache_bytes_dense"] > 0
    assert memory["no_cache"]["per_token"]["kv_cache_bytes_dense"] == 0
    files = {p.name for p in out_dir.iterdir()}
    assert files >= {"report.json", "report.csv", "report.md", "firing_rates.png", "energy_breakdown.png"}
    csv_text = (out_dir / "report.csv").read_text()
    assert "generation_kv_cache" in csv_text and "paper_setting" not in csv_text


def test_cli_llama_table(llama_sweep):
    data, table, _ = llama_sweep
    assert "dense Llama, converted on the fly" in table and "1 K/V heads, d_h=8" in table
    assert f"generation: {TGT} tokens generated after a prompt of {SEQ} tokens (greedy, one sequence)" in table
    assert "paper setting: not applicable to a decoder-only model" in table
    assert "model.embed_tokens" in table and "lm_head" in table and "spike purity: float ops" in table
    assert "generation lines at k=2, T=2" in table and "prompt" in table
    for mode in ("kv_cache", "no_cache"):
        assert f"{data['runs'][0]['generation'][mode]['per_summary']['dense_macs']:,}" in table


def test_cli_spiking_llama_checkpoint_and_config_only(tiny_dense_llama_dir, text_file, tmp_path):
    from spikelm_core.conversion import convert_model
    from spikelm_core.neurons.settings import NeuronSettings

    spiking_dir = tmp_path / "spiking_llama"
    convert_model(str(tiny_dense_llama_dir), spiking_dir, NeuronSettings(num_timesteps=2), seq_len=SEQ, batch_size=3,
                  calib_batches=1, calib_data=str(text_file))
    res = run(spiking_dir, "--seq-len", SEQ, "--target-len", TGT, "--data", text_file, "--batches", 1,
              "--batch-size", 3, "--bootstrap", 0, "--memory", "none", "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["model"]["kind"] == "spiking" and data["model"]["model_type"] == "spiking_llama"
    (r,) = data["runs"]
    assert r["amplitudes"] == "checkpoint" and r["timesteps"] == 2 and "generation" in r and "memory" not in r

    config_only = tmp_path / "config_only"
    config_only.mkdir()
    (config_only / "config.json").write_text((tiny_dense_llama_dir / "config.json").read_text())
    res = run("--model", config_only, "--seq-len", SEQ, "--target-len", TGT, "--batches", 1, "--batch-size", 2,
              "--bootstrap", 0, "--memory", "none", "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["firing_rates_meaningful"] is False and data["data"]["source"].startswith("random token ids")


def test_cli_llama_bad_lengths_and_two_models(tiny_dense_llama_dir, tiny_dense_bert_dir):
    res = run(tiny_dense_llama_dir, "--seq-len", 60, "--target-len", 6)  # 60 + 6 - 1 > 64 positions
    assert res.exit_code == 2 and "exceeds the model's maximum of 64 positions" in res.stderr and res.stdout == ""
    assert "Traceback" not in res.output and "use --target-len 5 or less" in res.stderr
    res = run(tiny_dense_llama_dir, "--seq-len", 128, "--target-len", 64)  # both given, too long: one hint for both
    assert res.exit_code == 2 and "use e.g. --seq-len 32 --target-len 33" in res.stderr
    res = run(tiny_dense_llama_dir, "--model", tiny_dense_bert_dir)
    assert res.exit_code == 2 and "two models given" in res.stderr and res.stdout == ""


@pytest.mark.parametrize("args, lengths", [
    pytest.param([], (43, 22), id="both-unset"),  # 128 + 64 - 1 > 64 positions: two thirds for the prompt
    pytest.param(["--target-len", 6], (59, 6), id="target-given"),  # the prompt takes what it leaves
])
def test_cli_llama_default_lengths_fit_a_small_context(tiny_dense_llama_dir, text_file, args, lengths):
    res = run(tiny_dense_llama_dir, *args, "--data", text_file, "--batches", 1, "--batch-size", 2, "--bootstrap", 0,
              "--memory", "none", "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert (data["seq_len"], data["target_len"]) == lengths
    assert lengths[0] + lengths[1] - 1 <= 64
