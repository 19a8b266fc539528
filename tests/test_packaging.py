"""The wheel installs into a fresh environment and works there: `--version`, and `--task`, which
needs the recipes shipped inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, **kw):
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert res.returncode == 0, (cmd, res.stdout[-2000:], res.stderr[-2000:])
    return res


@pytest.mark.slow
def test_wheel_in_a_fresh_environment_has_version_recipes_and_task(tmp_path):
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, REPO])
    (wheel,) = wheels.glob("spikelm-*.whl")

    env = tmp_path / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", env])
    site = Path(_run([env / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
                .stdout.strip())
    # the fresh environment sees this environment's dependencies (torch, transformers, ...) but not
    # its spikelm: a plain path entry, so the editable install's finder is not loaded
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([env / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", wheel])

    work = tmp_path / "elsewhere"  # no recipes/ and no checkout here
    work.mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPIKELM_RECIPES")}
    spikelm = env / "bin" / "spikelm"
    assert _run([spikelm, "--version"], cwd=work, env=clean).stdout.strip() == "spikelm 0.2.0.dev0"
    where = _run([env / "bin" / "python", "-c", "import spikelm_core, spikelm_core.training.recipes as r; "
                  "print(spikelm_core.__file__); print(r.recipes_dir())"], cwd=work, env=clean).stdout.split()
    assert where[0].startswith(str(site)) and where[1].startswith(str(site))  # the installed copy, its recipes
    shown = _run([spikelm, "finetune", "--task", "sst2", "--print-config"], cwd=work, env=clean).stdout
    assert "command: finetune" in shown and "task: sst2" in shown and "lr: 2.0e-05" in shown
    for task in ("mnli", "xsum"):
        assert "command: finetune" in _run([spikelm, "finetune", "--task", task, "--print-config"], cwd=work,
                                           env=clean).stdout
    assert "--task" in _run([spikelm, "finetune", "--help"], cwd=work, env=clean).stdout
