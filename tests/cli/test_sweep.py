"""Sweeps through the CLI (`distill`/`finetune` with --grid or a sweep: section): a tiny k sweep end to
end with its energy audit, table and plot; a second call runs nothing; bad grids are exit 2."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from spikelm_cli.main import app
from tests.training_fixtures import tiny_dirs  # noqa: F401

runner = CliRunner()

TINY_SETS = ["data.max_length=16", "neuron.num_timesteps=3", "train.batch_size=5", "train.eval_batch_size=11",
             "train.max_steps=2", "train.eval_strategy=no",
             "train.keep_best=false"]


def _args(dirs, out, *extra):
    sets = []
    for item in (f"model={dirs['teacher']}", "data.source=glue/sst2", *TINY_SETS):
        sets += ["-s", item]
    return ["distill", "recipes/tiny/distill.yaml", "--teacher", str(dirs["teacher"]), "--data-dir",
            str(dirs["glue"]), "--out-dir", str(out), *sets, *extra]


@pytest.mark.slow
def test_k_sweep_end_to_end_then_nothing_to_do(tiny_dirs, tmp_path):
    out = tmp_path / "sweep"
    res = runner.invoke(app, _args(tiny_dirs, out, "-g", "neuron.k=2,3", "--format", "json"))
    assert res.exit_code == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "sweep: point 1/2 k2: distill (neuron.k=2)" in res.stderr and "energy audit" in res.stderr
    report = json.loads(res.stdout)
    assert report["schema"] == "spikelm.sweep/1" and report["reference"]["status"] == "reference"
    k2, k3 = report["rows"]
    assert (k2["name"], k3["name"]) == ("k2", "k3")
    # a higher k fires less and costs less: the trend the sweep exists to show
    assert k3["firing_rate"] < k2["firing_rate"] and k3["energy_ratio"] > k2["energy_ratio"] > 1
    assert k3["energy_firing_rate"] < k2["energy_firing_rate"]  # the rate the ratio is priced from
    assert k3["relative_energy"] == pytest.approx(1 / k3["energy_ratio"])
    assert any(r["pareto"] for r in report["rows"])
    run_config = (out / "k3" / "run_config.yaml").read_text()
    assert "k: 3.0" in run_config and "sweep: null" in run_config  # each point is an ordinary run
    assert (out / "k3" / "final" / "model.safetensors").is_file()
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["name"] for r in rows] == ["reference", "k2", "k3"]
    assert float(rows[2]["energy_firing_rate"]) == pytest.approx(k3["energy_firing_rate"])
    assert "audit rate: the MAC-weighted mean" in (out / "sweep.md").read_text()
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the reference's command replays its evaluation: the sweep's length, dense, the same score
    ref = report["reference"]
    assert ref["command"] == f"spikelm eval {out / 'reference' / 'eval_config.yaml'}"
    replay = runner.invoke(app, ["eval", str(out / "reference" / "eval_config.yaml"), "--format", "json"])
    assert replay.exit_code == 0, replay.stderr
    replayed = json.loads(replay.stdout)
    assert replayed["primary_metric"] == ref["metric_name"] == "accuracy"
    (scores,) = replayed["metrics"].values()
    assert scores["accuracy"] == pytest.approx(ref["metric"])
    assert "max_length: 16" in (out / "reference" / "eval_config.yaml").read_text()

    res = runner.invoke(app, _args(tiny_dirs, out, "-g", "neuron.k=2,3"))
    assert res.exit_code == 0, res.stderr
    assert res.stderr.count("finished earlier, skipped") == 2 and "step 1/" not in res.stderr
    assert "energy audit" not in res.stderr  # each record keeps the settings it was audited with
    assert "reference:" not in res.stderr  # scored once, by the first call
    assert "k3" in res.stdout and "pareto.png" in res.stdout
    assert ("curves.png" in res.stdout) == (out / "curves.png").is_file()  # the plots written, each named


@pytest.mark.parametrize("grid, needle", [
    ("neuron.k", "expected key=v1,v2"),
    ("neuron.k=2,-1", "neuron.k"),
    ("neuron.bogus=1,2", "bogus"),
    ("neuron.salient_fraction=0,0.05", "salient_fraction0.05: neuron.salient_fraction 0.05"),  # the audit would refuse it after training
])
def test_bad_grid_is_exit_2_without_traceback(tiny_dirs, tmp_path, grid, needle):
    res = runner.invoke(app, _args(tiny_dirs, tmp_path / "s", "-g", grid))
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert res.stderr.startswith("error:") and "Traceback" not in res.stderr and needle in res.stderr
    assert not (tmp_path / "s").exists()


def test_print_config_shows_the_grid(tiny_dirs, tmp_path):
    res = runner.invoke(app, _args(tiny_dirs, tmp_path / "s", "-g", "neuron.k=2,3", "--print-config"))
    assert res.exit_code == 0, res.stderr
    assert "grid: {neuron.k: [2, 3]}" in res.stdout


def test_point_names_a_point_of_the_sweep_or_is_exit_2(tiny_dirs, tmp_path):
    res = runner.invoke(app, _args(tiny_dirs, tmp_path / "s", "-g", "neuron.k=2,3", "-p", "k5"))
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert "--point 'k5': this sweep has no such point" in res.stderr and "its points: k2, k3" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "s" / "k2").exists()

    res = runner.invoke(app, _args(tiny_dirs, tmp_path / "one", "--point", "k2"))
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert "this run has no sweep" in res.stderr and not (tmp_path / "one").exists()


def test_grid_with_sweep_settings_on_a_recipe_without_a_sweep_and_no_resume_flag(tiny_dirs, tmp_path):
    """-s sweep.* on a recipe without a sweep section holds once --grid makes one (the grid is part of the
    config that is checked); --resume is for one run and a sweep continues its points itself."""
    res = runner.invoke(app, _args(tiny_dirs, tmp_path / "s", "-g", "neuron.k=2,3", "-s", "sweep.energy.enabled=false",
                                   "--print-config"))
    assert res.exit_code == 0, res.stderr
    assert "grid: {neuron.k: [2, 3]}" in res.stdout and "enabled: false" in res.stdout
    # --teacher with a recipe whose student is its teacher's twin: still the twin with -s sweep.* and -g
    twin = runner.invoke(app, ["distill", "recipes/tiny/distill.yaml", "--teacher", str(tiny_dirs["teacher"]),
                               "--data-dir", str(tiny_dirs["glue"]), "-s", "data.source=glue/sst2", "-g", "neuron.k=2",
                               "-s", "sweep.energy.enabled=false", "--print-config"])
    assert twin.exit_code == 0, twin.stderr
    assert f"model: {tiny_dirs['teacher']}" in twin.stdout
    res = runner.invoke(app, _args(tiny_dirs, tmp_path / "s", "-g", "neuron.k=2", "--resume", "auto"))
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert "--resume auto is for one run" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "s").exists()


def test_sweep_table_shows_settings_and_names_as_text(monkeypatch):
    """A path with brackets in a point's settings or the reference's model reaches rich as text: '[/b]' was
    a MarkupError traceback and '[v2]' vanished."""
    from spikelm_cli import render_sweep
    from spikelm_cli.params import OutputFormat
    from spikelm_core.sweep import SweepReport, SweepRow

    ref = SweepRow(name="reference", values={"model": "runs/t[v2]"}, status="reference", metric=0.9,
                   metric_name="accuracy")
    rows = [SweepRow(name="p[/b]", values={"model": "runs/a[/b]"}, status="done", metric=0.8, metric_name="accuracy")]
    import io

    from rich.console import Console

    buffer = io.StringIO()
    monkeypatch.setattr(render_sweep, "out", Console(file=buffer, width=200, highlight=False))
    render_sweep.sweep_result(SweepReport(command="finetune", task="sst2", out_dir="/tmp/x", rows=rows, reference=ref),
                              OutputFormat.table)
    shown = buffer.getvalue()
    assert "model=runs/t[v2]" in shown and "model=runs/a[/b]" in shown and "p[/b]" in shown
