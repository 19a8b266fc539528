"""The benchmark harness runs (tiny shapes, eager layers): sections and JSON keys."""

import json
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
