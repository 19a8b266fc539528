"""The benchmark harness runs (tiny shapes, eager layers): sections and JSON keys."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_quick_smoke_run(tmp_path):
    out = tmp_path / "bench.json"
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--quick", "--exec", "neurons", "--neuron-impl", "fast",
         "--only", "explicit", "--timesteps", "1", "3", "--repeat", "2", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    assert set(data["spiking"]) == {"1", "3"} and data["exec"] == "neurons"
    assert data["default_path"] is None and data["generation"] is None and data["energy_command_s"] is None
    assert data["neuron"] is None and data["train_step_ratio_over_T"]["3"] > 0
    point = data["spiking"]["3"]
    assert point["inference_throughput_ratio"] > 0 and point["dense_inference_tokens_per_s"] > 0
    assert point["activation_memory_ratio"] == pytest.approx(point["activation_memory_ratio_over_T"] * 3)


@pytest.mark.parametrize("args,needle", [(["--repeat", "0"], "--repeat: must be at least 1"),
                                         (["--timesteps", "0"], "--timesteps: must be at least 1"),
                                         (["--batch", "0"], "--batch: must be at least 1")])
def test_bench_refuses_counts_that_measure_nothing(tmp_path, args, needle):
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench.py"), "--quick", "--only", "explicit", *args,
                          "--out", str(tmp_path / "b.json")], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "b.json").exists()


def _glue_bench(tmp_path, script: str, *args: str) -> subprocess.CompletedProcess:
    """benchmarks/<script> on a tiny dense SST-2 teacher (made once per tmp_path) and tiny GLUE files:
    the teacher, --task sst2, --data-dir, then `args`."""
    from tests.training_fixtures import make_tiny_dense, write_glue

    teacher = tmp_path / "teacher"
    if not teacher.exists():
        make_tiny_dense(teacher, "cls", seed=1)
        write_glue(tmp_path / "glue", tasks=("sst2",))
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), str(teacher), "--task", "sst2", "--data-dir",
         str(tmp_path / "glue"), *args],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )


def test_spike_sites_scores_every_site_of_a_converted_model(tmp_path):
    out = tmp_path / "sites.json"
    res = _glue_bench(tmp_path, "spike_sites.py", "-T", "2", "--calib-rows", "8", "--batch-size", "4",
                      "--channel-scale", "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["dev_rows"] == 11 and data["metric"] == "accuracy" and data["channel_scale"] is True
    assert set(data["sites"]) == {"attention.self.qkv.neuron", "attention.self.qk.neuron", "attention.self.av.neuron",
                                  "attention.output.dense.neuron", "intermediate.dense.neuron", "output.dense.neuron"}
    for row in data["sites"].values():
        assert 0 <= row["only_this_site_spiking"] <= 100 and 0 <= row["all_but_this_site_spiking"] <= 100
    assert data["no_site_spiking"] == data["dense"]  # the float sites really pass their input on
    assert "all sites spiking" in res.stdout


def test_hidden_gap_compares_each_layer_with_the_teacher(tmp_path):
    out = tmp_path / "gap.json"
    res = _glue_bench(tmp_path, "hidden_gap.py", "--calib-rows", "8", "--batch-size", "4",
                      "--convert", "num_timesteps=2", "--convert", "num_timesteps=2,reset=soft,decay=1.0",
                      "--out", str(out))
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert list(rows) == ["teacher", "converted num_timesteps=2", "converted num_timesteps=2,reset=soft,decay=1.0"]
    assert rows["teacher"]["relative_error"] == [0.0, 0.0]  # two layers, the teacher against itself
    for name in list(rows)[1:]:
        assert len(rows[name]["relative_error"]) == 2 and all(0 < x < 10 for x in rows[name]["relative_error"])
        assert 0 <= rows[name]["metric"] <= 100
    assert rows["converted num_timesteps=2"] != rows["converted num_timesteps=2,reset=soft,decay=1.0"]
    bad = _glue_bench(tmp_path, "hidden_gap.py", "--convert", "reset")
    assert bad.returncode != 0 and "expected key=value" in bad.stderr


@pytest.mark.parametrize("script,args,code,needle", [
    ("hidden_gap.py", ["{tmp}/nope", "--task", "sst2", "--data-dir", "{tmp}", "--convert", ""], 3, "nope"),
    ("spike_sites.py", ["{tmp}/nope", "--task", "sst2", "--data-dir", "{tmp}"], 3, "nope"),
], ids=["hidden_gap missing teacher", "spike_sites missing model"])
def test_the_study_scripts_give_errors_not_tracebacks(tmp_path, script, args, code, needle):
    """The scripts run their main through spikelm_cli.errors.run_script: the CLI's `error:` lines and exit code."""
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *(a.format(tmp=tmp_path) for a in args)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert res.returncode == code, res.stderr[-2000:]
    assert res.stderr.startswith("error: ") and needle in res.stderr and "Traceback" not in res.stderr
