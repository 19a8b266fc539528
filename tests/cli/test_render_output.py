"""What the commands print on stdout: `--format json` is plain JSON whatever rich thinks of the terminal, and a
table on a narrow stdout (a pipe or a log file: 80 columns) folds its names and paths, never cuts them."""

from __future__ import annotations

import io
import json

import pytest

from rich.console import Console


def test_json_is_plain_on_a_colour_terminal(monkeypatch):
    """FORCE_COLOR (or a terminal) made rich highlight `--format json`: ANSI codes in a file, invalid JSON."""
    from spikelm_cli import render

    buf = io.StringIO()
    monkeypatch.setattr(render, "out", Console(file=buf, force_terminal=True, color_system="truecolor", width=40))
    render.print_json({"model": "runs/" + "x" * 100, "ratio": float("inf"), "k": [2.0, 3.0], "text": "é [b]"})
    text = buf.getvalue()
    assert "\x1b" not in text
    assert json.loads(text) == {"model": "runs/" + "x" * 100, "ratio": None, "k": [2.0, 3.0], "text": "é [b]"}


def test_narrow_stdout_folds_sweep_settings_and_run_paths(monkeypatch):
    from spikelm_cli import render, render_sweep
    from spikelm_cli.params import OutputFormat
    from spikelm_core.sweep import SweepReport, SweepRow
    from spikelm_core.training import RunResult

    buf = io.StringIO()
    monkeypatch.setattr(render_sweep, "out", Console(file=buf, width=80, highlight=False))
    rows = [SweepRow(name="k2-T4", values={"neuron.k": 2, "neuron.num_timesteps": 4}, status="done", metric=0.8,
                     metric_name="accuracy", firing_rate=0.3, energy_firing_rate=0.3, energy_ratio=3.8)]
    render_sweep.sweep_result(SweepReport(command="finetune", task="sst2", out_dir="runs/sweep", rows=rows,
                                          reference=None), OutputFormat.table)
    assert "…" not in buf.getvalue()  # folded at 80 columns

    buf = io.StringIO()
    monkeypatch.setattr(render, "out", Console(file=buf, width=80, highlight=False))
    out_dir = "runs/" + "a-very-long-run-directory-name-" * 3
    render.training_result(RunResult(command="finetune", out_dir=out_dir, final_dir=out_dir + "/final", task="sst2",
                                     global_step=4, epochs=1.0, train_loss=0.5), "table")
    assert "…" not in buf.getvalue()


@pytest.mark.parametrize("force_color", [None, "1"])
def test_stdout_that_is_no_terminal_is_wide(force_color):
    """rich gives a pipe or a file 80 columns; the CLI's stdout there is PIPE_WIDTH wide (as energy's
    tables), in colour too (FORCE_COLOR, as a CI log sets it); COLUMNS still sets it."""
    import os
    import subprocess
    import sys

    from spikelm_cli.console import PIPE_WIDTH

    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")}
    if force_color:
        env["FORCE_COLOR"] = force_color

    def width(**extra):
        return int(subprocess.run([sys.executable, "-c", "from spikelm_cli.console import out; print(out.width)"],
                                  capture_output=True, text=True, check=True, env={**env, **extra}).stdout)

    assert width() == PIPE_WIDTH
    assert width(COLUMNS="100") == 100
    assert width(COLUMNS="wide") == PIPE_WIDTH  # rich ignores a width that is no number


def test_an_energy_table_wider_than_stdout_folds_its_cells():
    """Energy's widest table (generation with memory: eleven columns) exceeds even the piped 150
    columns: its cells fold ('weight-station' / 'ary'), never cut to 'weight-statio…'."""
    from spikelm_cli import render_energy
    from spikelm_core.energy.tables import Table

    columns = ("k", "T", "bound", "decoding", *(f"bytes/token column {i}" for i in range(7)))
    table = Table("generation with memory", columns, (("2", "4", "weight-stationary", "KV cache",
                                                        *("113,348" for _ in range(7))),),
                  left=frozenset({"bound", "decoding"}))
    buf = io.StringIO()
    Console(file=buf, width=100, highlight=False).print(render_energy._rich_table(table))
    assert "…" not in buf.getvalue() and "113,348" in buf.getvalue()
