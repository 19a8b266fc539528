"""Rendering of a sweep (`finetune`/`distill` with --grid or a sweep: section): the table of points
for people, the report as JSON for programs."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from spikelm_core.evaluation.metrics import display_name
from spikelm_core.sweep import RATES_NOTE, minutes_text, report_metric, shown

from .console import out
from .render import print_json


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def sweep_result(report, fmt) -> None:
    """The sweep's table (stdout), or its JSON; printed by the main process alone under torchrun."""
    from spikelm_core.training.rundir import is_main_process

    if not is_main_process():
        return
    if fmt.value == "json":
        print_json(report.to_dict())
        return
    metric = display_name(report_metric(report))
    t = Table(title=f"sweep: {escape(str(report.out_dir))}", title_justify="left")
    numbers = (metric, "firing rate", "audit rate", "energy ratio", "min")
    for col in ("point", "settings", metric, "firing rate", "audit rate", "energy ratio", "Pareto", "min"):
        # names and settings fold, never cut to 'neuron.…' (stdout in a file or log is 80 columns)
        t.add_column(col, justify="right" if col in numbers else "left",
                     overflow="fold" if col in ("point", "settings") else "ellipsis")
    for row in ([report.reference] if report.reference else []) + report.rows:
        settings = ", ".join(f"{k}={v}" for k, v in row.values.items())
        if row.same_as:
            settings += f" (= {row.same_as}, not run again)"
        t.add_row(escape(row.name), escape(settings), "–" if row.metric is None else f"{shown(row.metric, row.metric_name):.1f}",
                  _num(row.firing_rate), _num(row.energy_firing_rate), _num(row.energy_ratio, 2),
                  "*" if row.pareto else "", minutes_text(row))
    out.print(t)
    if any(row.energy_firing_rate is not None for row in report.rows):
        out.print(RATES_NOTE, soft_wrap=True)
    plots = [name for name in ("pareto.png", "curves.png") if (Path(report.out_dir) / name).is_file()]
    out.print(f"table: {report.out_dir}/sweep.csv, sweep.json, sweep.md"
              + (f"; plots: {', '.join(f'{report.out_dir}/{name}' for name in plots)}" if plots else ""),
              soft_wrap=True, markup=False)
