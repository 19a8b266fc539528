"""Rendering of `spikelm energy` reports: the rich back end of `spikelm_core.energy.tables`, and output files.

No computation or formatting of numbers here: the tables come built from `report_blocks`; this
module only draws them (rich on stdout) and writes the files of `--out`.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table as RichTable

from spikelm_core.energy import EnergySweepReport
from spikelm_core.energy.plots import plot_energy_breakdown, plot_energy_vs_firing_rate, plot_firing_rates
from spikelm_core.energy.tables import Table, Text, csv_text, markdown_text, report_blocks
from spikelm_core.io import atomic_output_dir

from .console import err, out

_STYLES = {"title": "bold", "lead": "bold yellow", "header": "dim", "alert": "bold red", "note": "dim"}
_LABEL_STYLES = {"warning": "yellow", "ok": "green"}


def _rich_table(table: Table) -> RichTable:
    t = RichTable(title=table.title, title_justify="left")
    for name in table.columns:
        # folded, never cut, where even PIPE_WIDTH is too narrow (the generation-with-memory table)
        t.add_column(name, justify="left" if name in table.left else "right", overflow="fold")
    for i, row in enumerate(table.rows):
        cells = [escape(cell) for cell in row]
        if table.total_row and i == len(table.rows) - 1:
            cells[0] = f"[bold]{cells[0]}[/]"
        t.add_row(*cells)
    return t


def _rich_text(text: Text) -> str:
    if text.label and text.style in _LABEL_STYLES:
        style = _LABEL_STYLES[text.style]
        return f"[{style}]{escape(text.label)}[/] {escape(text.text)}"
    body = f"{text.label} {text.text}" if text.label else text.text
    style = _STYLES.get(text.style, "dim")
    return f"[{style}]{escape(body)}[/]"


def print_table(report: EnergySweepReport, *, detail: bool = False) -> None:
    # `out`: not a terminal (a pipe, a file, the README), PIPE_WIDTH wide, so no column is cut
    for block in report_blocks(report, detail=detail):
        if isinstance(block, Table):
            out.print(_rich_table(block))
        else:  # notes wrap at the console's width; header lines, warnings and labelled lines do not
            out.print(_rich_text(block), soft_wrap=block.style != "note" or bool(block.label))


def json_text(report: EnergySweepReport) -> str:
    return report.to_json(indent=2)


OUT_FILES = ("report.json", "report.csv", "report.md", "firing_rates.png", "energy_breakdown.png")
MEMORY_PLOT = "energy_vs_firing_rate.png"


def write_outputs(report: EnergySweepReport, out_dir: Path, *, force: bool = False) -> list[Path]:
    """Write every OUT_FILES entry (and MEMORY_PLOT with memory bounds) into `out_dir` atomically."""
    names = OUT_FILES + ((MEMORY_PLOT,) if report.memory_cost is not None else ())
    with atomic_output_dir(out_dir, force) as tmp:
        (tmp / "report.json").write_text(json_text(report) + "\n", encoding="utf-8")
        (tmp / "report.csv").write_text(csv_text(report), encoding="utf-8")
        (tmp / "report.md").write_text(markdown_text(report, detail=True), encoding="utf-8")
        plot_firing_rates(report, tmp / "firing_rates.png")
        plot_energy_breakdown(report, tmp / "energy_breakdown.png")
        if report.memory_cost is not None:
            plot_energy_vs_firing_rate(report, tmp / MEMORY_PLOT)
    return [Path(out_dir) / name for name in names]


def print_written(paths: list[Path]) -> None:
    err.print(f"wrote {len(paths)} file(s) to [bold]{escape(str(paths[0].parent))}[/]: "
              + ", ".join(p.name for p in paths))


def print_caveat_to_stderr(report: EnergySweepReport) -> None:
    err.print(f"[yellow]caveat:[/] {escape(report.caveat)}", soft_wrap=True)
