"""Accuracy-energy sweeps: a finetune/distill recipe with a `sweep:` section (or `--grid`), one
ordinary run directory per point, one table.

    cfg = load_config(DistillConfig, "recipes/minilm/sst2_study.yaml")   # has a sweep: section
    report = run_sweep(cfg)
    report.rows[0].metric, report.rows[0].firing_rate, report.rows[0].energy_ratio

A point is the recipe with `sweep` removed and the point's values set on top (they beat the recipe,
`-s` and flags): an ordinary run in `<out_dir>/<point>/` (run_config.yaml, checkpoints, final/),
then the energy audit of its trained model (`spikelm energy` on final/, with its own amplitudes).
`<point>/sweep_point.json` marks a point as finished: a second call skips finished points,
continues an interrupted one from its last checkpoint (`--resume auto`) and runs the rest (or
only the points named with `--point`); a finished point run with other settings is refused (with
`--point`, one not named is left out of the table instead, and points that start from it are refused). Two
points whose resolved configs are equal run once (the second row says `same_as`). The table
(`sweep.json`, `sweep.csv`, `sweep.md`), `pareto.png` and `curves.png` (each point's dev metric at
every evaluation during training, the learning curve) are rewritten after every point, so an
interrupted sweep leaves the table of what is done.

The Pareto front is over (metric up, energy down): a point is on it when no other point has a
metric at least as high at an energy at most as low (one of the two strictly).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import hashlib
import io
import itertools
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import (EvalConfig, config_from_dict, config_to_dict, load_config, parse_overrides,
                     set_dotted)
from .config.schema import SWEEP_OWNED_NOTE, sweep_owned_key
from .errors import CheckpointError, ConfigError, SpikelmError, first_details
from .evaluation.metrics import display_name, display_scale, higher_is_better
from .io import atomic_write_bytes, atomic_write_text, check_output_location
from .training.callbacks import read_metrics
from .training.results import Timer
from .training.rundir import (FINAL, METRICS, RUN_CONFIG, changed_settings, continue_with, default_out_dir,
                               is_main_process, launcher)

SWEEP_SCHEMA = "spikelm.sweep/1"
POINT_FILE = "sweep_point.json"

Progress = Callable[[str], None]


# ----------------------------------------------------------------------------- points


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its name and the settings it changes."""

    name: str
    values: dict[str, Any]


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._=+-]+")


def _grid_name(values: dict[str, Any]) -> str:
    """`k2`, `lr0.0001`, `learn_alpha-true`: the point's run directory name, so a value's path
    separators (a grid over models or data paths) become '-' and never nest or leave the sweep's folder."""
    parts = []
    for key, value in values.items():
        leaf, raw = key.rsplit(".", 1)[-1], _show(value)
        shown = _UNSAFE_IN_NAME.sub("-", raw).replace("..", "-").strip(".").rstrip("-")
        if not raw.startswith("-"):  # a separator made '-', not a negative value's sign
            shown = shown.lstrip("-")
        parts.append(f"{leaf}{'-' if shown[:1].isalpha() else ''}{shown}")
    return "_".join(parts)


def expand_points(sweep) -> list[Point]:
    """The grid's combinations (the first key varies slowest), then the named points."""
    points = []
    if sweep.grid:
        keys = list(sweep.grid)
        for combo in itertools.product(*(sweep.grid[k] for k in keys)):
            values = dict(zip(keys, combo))
            points.append(Point(_grid_name(values), values))
    points += [Point(name, dict(values)) for name, values in sweep.points.items()]
    seen: set[str] = set()
    dupes = [p.name for p in points if p.name in seen or seen.add(p.name)]
    if dupes:
        raise ConfigError(
            f"two sweep points share the name {dupes[0]!r}",
            hint="rename the named point (grid points are named after their values)" if dupes[0] in sweep.points
            else "give each grid value once: two of them name the same point (e.g. 2 and 2.0, or two paths "
            "that differ only in their separators); named points (sweep.points) name them as you choose")
    return points


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`["neuron.k=2,3,4"]` -> `{"neuron.k": [2, 3, 4]}` (each value read as YAML, like -s). A key
    given twice takes the values of both, in order (`-g neuron.k=2 -g neuron.k=3` is `neuron.k=2,3`)."""
    grid: dict[str, list[Any]] = {}
    problems: list[str] = []
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not text.strip():
            problems.append(f"--grid {item!r}: expected key=v1,v2,... (e.g. neuron.k=2,3,4)")
            continue
        if sweep_owned_key(key.strip()):
            problems.append(f"--grid {key.strip()}: {SWEEP_OWNED_NOTE}")
            continue
        parsed = parse_overrides([f"{key.strip()}={v}" for v in text.split(",")], problems)
        grid.setdefault(key.strip(), []).extend(v for _, v in parsed)
    if problems:
        brackets = any(c in item.partition("=")[2] for item in items for c in "[]{}")
        raise ConfigError("invalid --grid", details=problems,
                          hint="--grid splits its values on commas, so a list or mapping cannot be one value there: "
                               "give such values in the recipe's sweep.grid (a YAML list of them)"
                          if brackets else None)
    return grid


def with_grid(cfg, grid: dict[str, list[Any]] | None):
    """`cfg` with `grid` added to its sweep (keys given here replace the recipe's); a recipe without
    a sweep section gets one."""
    if not grid:
        return cfg
    data = config_to_dict(cfg)
    sweep = data.get("sweep") or {}
    data["sweep"] = {**sweep, "grid": {**sweep.get("grid", {}), **grid}}
    return config_from_dict(type(cfg), data)


def sweep_dir(cfg) -> Path:
    """Where the points and the table go: out_dir, else runs/sweep-<command>-<task>."""
    return default_out_dir(cfg, f"sweep-{cfg.command}")


def point_config(cfg, point: Point, out_dir: Path, start_dir: str | None = None):
    """The finetune/distill config of `point`: the recipe without its sweep, the point's values on top;
    with `start_dir` (the run directory of the point it starts from, `sweep.start_from`) its `model` is
    that run's final/, reconverted."""
    data = config_to_dict(cfg)
    data["sweep"] = None
    for key, value in point.values.items():
        set_dotted(data, key, value)
    if start_dir is not None:
        # absolute, as the run's run_config.yaml reads back: a relative --out-dir then compares equal
        data["model"] = os.path.abspath(out_dir / start_dir / FINAL)
        data["reconvert"] = True
    data["out_dir"] = str(out_dir / point.name)
    try:
        return config_from_dict(type(cfg), data)
    except ConfigError as exc:
        raise ConfigError(f"sweep point {point.name!r}: {exc.message}", details=exc.details, hint=exc.hint) from None


def _comparable(run_cfg) -> dict[str, Any]:
    data = config_to_dict(run_cfg)
    data.pop("out_dir", None)
    return data


# ----------------------------------------------------------------------------- results


@dataclass
class SweepRow:
    """One point's line of the table."""

    name: str
    values: dict[str, Any]
    status: str
    """"done", "same_as" (equal config to an earlier point, not run again) or "reference"."""
    metric: float | None = None
    metric_name: str | None = None
    firing_rate: float | None = None
    """Mean firing rate of the trained model on the dev batches (the training summary's)."""
    layer_firing_rates: dict[str, float] = field(default_factory=dict)
    energy_ratio: float | None = None
    """Dense / spiking energy of the trained model at the audit's shape (`spikelm energy`)."""
    paper_energy_ratio: float | None = None
    """The same measured rates applied to BERT-base at 128 tokens (the paper setting)."""
    energy_firing_rate: float | None = None
    """MAC-weighted firing rate of the energy audit's firing pass (its calibration text): the rate that
    `energy_ratio` is priced from, so not `firing_rate` (a neuron mean on the dev examples)."""
    minutes: float | None = None
    """Wall minutes of the run of the call that finished this point (its energy audit not included): from its
    checkpoint on when it resumed."""
    resumed_from: str | None = None
    """The checkpoint an interrupted point continued from (so `minutes` counts only what followed)."""
    out_dir: str | None = None
    command: str | None = None
    """The command that replays (or resumes) this point."""
    same_as: str | None = None
    start_from: str | None = None
    """The point whose trained model this one started from (`sweep.start_from`)."""
    pareto: bool = False
    curve: list[list[float]] = field(default_factory=list)
    """The learning curve: [step, dev metric] of every evaluation during training (`curves.png`)."""

    @property
    def relative_energy(self) -> float | None:
        """Spiking energy as a share of the dense model's (1 / energy_ratio)."""
        if self.status == "reference":
            return 1.0
        return 1.0 / self.energy_ratio if self.energy_ratio else None


@dataclass
class SweepReport:
    """The table of a sweep: one row per point, the dense reference apart."""

    command: str
    task: str | None
    out_dir: str
    rows: list[SweepRow]
    reference: SweepRow | None = None
    schema: str = SWEEP_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for row, out in zip([*self.rows, self.reference], [*data["rows"], data["reference"]]):
            if row is not None:
                out["relative_energy"] = row.relative_energy
        return data


def mark_pareto(rows: list[SweepRow]) -> None:
    """Set `pareto` on the rows that no other row dominates in (metric better, relative energy down;
    a better metric is a higher one, a lower one for perplexity)."""
    scored = [r for r in rows if r.status == "done" and r.metric is not None and r.relative_energy is not None]
    for row in rows:
        row.pareto = False
    sign = {id(r): 1.0 if higher_is_better(r.metric_name) else -1.0 for r in scored}
    for row in scored:
        mine = sign[id(row)] * row.metric
        row.pareto = not any(
            o is not row and sign[id(o)] * o.metric >= mine and o.relative_energy <= row.relative_energy
            and (sign[id(o)] * o.metric > mine or o.relative_energy < row.relative_energy)
            for o in scored
        )


def shown(value: float, name: str | None) -> float:
    """A metric as the table and the plots show it (`evaluation.metrics.display_scale`)."""
    return display_scale(name) * value


def report_metric(report: SweepReport) -> str | None:
    """The sweep's metric name (its points share one)."""
    return next((r.metric_name for r in report.rows if r.metric_name), None)


COLUMNS = ("name", "status", "metric_name", "metric", "firing_rate", "energy_firing_rate", "energy_ratio",
           "paper_energy_ratio",
           "relative_energy", "pareto", "minutes", "resumed_from", "same_as", "start_from", "values", "command")


def table_rows(report: SweepReport) -> list[dict[str, Any]]:
    out = []
    for row in ([report.reference] if report.reference else []) + report.rows:
        line = {c: getattr(row, c) for c in COLUMNS}
        line["values"] = ", ".join(f"{k}={_show(v)}" for k, v in row.values.items())
        out.append(line)
    return out


def to_csv(report: SweepReport) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table_rows(report))
    return buf.getvalue()


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return str(value)


def _curve_text(curve: list[list[float]], name: str | None) -> str:
    return " / ".join(f"{shown(value, name):.1f}" for _, value in curve) if curve else "–"


def minutes_text(row: SweepRow) -> str:
    """The minutes column: "16.6", or "16.6 (from checkpoint-600)" for a point resumed from there."""
    minutes = _fmt(row.minutes, 1)
    return f"{minutes} (from {Path(row.resumed_from).name})" if row.resumed_from else minutes


def to_markdown(report: SweepReport) -> str:
    head = ("| point | settings | metric | firing rate | audit rate | energy ratio | paper-setting ratio | Pareto "
            "| minutes | dev curve (each evaluation) |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
    for line, row in zip(table_rows(report), ([report.reference] if report.reference else []) + report.rows):
        metric = "–" if row.metric is None else f"{shown(row.metric, row.metric_name):.1f}"
        status = f" (= {row.same_as})" if row.same_as else ""
        settings = ", ".join(filter(None, [line["values"], row.start_from and f"from {row.start_from}'s model"]))
        lines.append(f"| {row.name}{status} | {settings or '–'} | {metric} | {_fmt(row.firing_rate)} | "
                     f"{_fmt(row.energy_firing_rate)} | {_fmt(row.energy_ratio, 2)} | {_fmt(row.paper_energy_ratio, 2)} | {_fmt(row.pareto)} | "
                     f"{minutes_text(row)} | {_curve_text(row.curve, row.metric_name)} |")
    return (f"Sweep ({report.command}, {report.task or 'masked-LM on text'}); metric: {display_name(report_metric(report))} on the dev "
            "split.\n\n"
            + "\n".join(lines) + "\n\n" + RATES_NOTE + "\n")


#: what the two firing-rate columns of a sweep's table hold
RATES_NOTE = ("firing rate: the trained model's mean over its neurons on the dev examples (the run's summary); "
              "audit rate: the MAC-weighted mean of the energy audit's pass over its calibration text, the rate "
              "the energy ratio is priced from.")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _dress(ax, report: SweepReport, xlabel: str, title: str) -> bool:
    """The dense reference as a dashed line, the axis labels, title and grid of a sweep plot;
    whether there is a reference line."""
    ref = report.reference
    name = report_metric(report)
    has_ref = ref is not None and ref.metric is not None
    if has_ref:
        value = shown(ref.metric, name)
        ax.axhline(value, color="grey", linestyle="--", label=f"dense reference ({value:.1f})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"dev {display_name(name)}")
    ax.set_title(f"{title}: {report.command} {report.task or ''}")
    ax.grid(alpha=0.3)
    return has_ref


def _save(plt, fig, path: Path, dpi: int) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def plot_pareto(report: SweepReport, path: Path) -> None:
    """Metric against spiking energy (share of dense), the Pareto front joined, the reference dashed."""
    plt = _pyplot()
    rows = [r for r in report.rows if r.status == "done" and r.metric is not None and r.relative_energy is not None]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for row in rows:
        ax.scatter(row.relative_energy, shown(row.metric, row.metric_name), s=40, zorder=3,
                   color="tab:red" if row.pareto else "tab:blue")
    front = sorted((r.relative_energy, shown(r.metric, r.metric_name)) for r in rows if r.pareto)
    if front:  # better lies up (higher is better) or down (lower): the step follows the front either way
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:red", alpha=0.6,
                label="Pareto front")
    has_ref = _dress(ax, report, "spiking energy / dense energy (arithmetic, lower is better)", "accuracy-energy sweep")
    if front or has_ref:
        ax.legend(fontsize=8)
    fig.tight_layout()
    place_labels(ax, [(r.name, r.relative_energy, shown(r.metric, r.metric_name)) for r in rows])
    _save(plt, fig, path, 110)


#: where a point's label may go, in points from the point: tried in order, the first free one is
#: taken (right of the point, then left, ever further up and down)
LABEL_OFFSETS = tuple((dx, dy) for step in range(8) for dy in (4 + 10 * step, -10 - 10 * step) for dx in (4, -4))


def place_labels(ax, points: list[tuple[str, float, float]], fontsize: int = 7) -> list:
    """Label each (name, x, y) of `ax` at the first offset of `LABEL_OFFSETS` whose text stays inside
    the axes and overlaps no label placed before (left of the point for the negative x offsets); a
    point with no free place keeps the first. Returns the text artists (set the final layout first,
    e.g. tight_layout: positions are measured in display space)."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed, texts = [], []
    for name, x, y in points:
        chosen = None
        for dx, dy in LABEL_OFFSETS:
            text = ax.annotate(name, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize,
                               ha="left" if dx >= 0 else "right")
            box = text.get_window_extent(renderer).expanded(1.02, 1.1)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in placed):
                chosen = (text, box)
                break
            text.remove()
        if chosen is None:
            dx, dy = LABEL_OFFSETS[0]
            text = ax.annotate(name, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=fontsize)
            chosen = (text, text.get_window_extent(renderer))
        texts.append(chosen[0])
        placed.append(chosen[1])
    return texts


def plot_curves(report: SweepReport, path: Path) -> None:
    """The learning curve of every point (dev metric at each evaluation), the reference dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for row in report.rows:
        if row.status == "done" and row.curve:
            steps, values = zip(*row.curve)
            ax.plot(steps, [shown(v, row.metric_name) for v in values], marker="o", markersize=3, label=row.name)
    _dress(ax, report, "training step", "learning curves")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(plt, fig, path, 100)


def write_report(report: SweepReport, out_dir: Path, *, plot: bool = True) -> None:
    mark_pareto(report.rows)
    atomic_write_text(out_dir / "sweep.json", json.dumps(report.to_dict(), indent=2) + "\n")
    atomic_write_text(out_dir / "sweep.csv", to_csv(report))
    atomic_write_text(out_dir / "sweep.md", to_markdown(report))
    if not plot:
        return
    for name, draw, drawn in (("pareto.png", plot_pareto, any(r.status == "done" and r.relative_energy is not None
                                                               for r in report.rows)),
                              ("curves.png", plot_curves, any(r.status == "done" and r.curve for r in report.rows))):
        if drawn:
            draw(report, out_dir / name)
        else:  # an earlier call's plot would show points this table no longer has
            (out_dir / name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- running


def _primary(metrics: dict[str, dict[str, float]], name: str | None) -> float | None:
    for split in metrics.values():
        if name in split:
            return float(split[name])
    return None


def _energy_settings(run_cfg, settings) -> dict[str, Any]:
    """What a point's energy audit ran with (its record keeps them: an audit with others is run again)."""
    return {"seq_len": settings.seq_len or run_cfg.data.max_length, "data": settings.data,
            "batches": settings.batches, "count_neuron_updates": settings.count_neuron_updates,
            "count_alpha_scale": settings.count_alpha_scale}


def _energy(final_dir: Path, run_cfg, settings) -> dict[str, Any]:
    from .energy import EnergyArgs, run_energy

    audit = _energy_settings(run_cfg, settings)
    args = EnergyArgs(model=str(final_dir), bootstrap=0, memory="none", **audit)
    report = run_energy(args)
    run = report.runs[0]
    return {"ratio": run.report.totals()["ratio"],
            "paper_ratio": run.paper.totals()["ratio"] if run.paper is not None else None,  # none for a decoder
            "mean_firing_rate": run.report.mean_firing_rate, "seq_len": args.seq_len,
            "data": report.data, "amplitudes": run.amplitudes, "settings": audit}


def _replay(command: str, run_dir: Path) -> str:
    return f"{launcher()} {command} {run_dir / RUN_CONFIG} --resume auto"  # torchrun's, under torchrun


def learning_curve(run_dir: Path, metric: str | None) -> list[list[float]]:
    """[step, value] of each dev evaluation during a run (`eval_<metric>` records of its
    metrics.jsonl; a step logged twice, as after a resume, keeps its last value)."""
    if metric is None:
        return []
    by_step: dict[int, float] = {}
    for record in read_metrics(run_dir / METRICS):
        value = record.get(f"eval_{metric}")
        if isinstance(value, (int, float)) and "step" in record:
            by_step[int(record["step"])] = float(value)
    return [[step, by_step[step]] for step in sorted(by_step)]


def _row_from(point: Point, record: dict[str, Any], start_from: str | None = None,
              run_dir: Path | None = None) -> SweepRow:
    """`run_dir`: where the point's run is now (a sweep folder moved since keeps its curves and commands)."""
    run, energy = record["run"], record.get("energy") or {}
    command = record.get("command")
    if run_dir is not None and command and str(run_dir) != run["out_dir"]:
        command = command.replace(str(Path(run["out_dir"]) / RUN_CONFIG), str(run_dir / RUN_CONFIG))
    run_dir = run_dir or Path(run["out_dir"])
    return SweepRow(start_from=start_from,
        curve=learning_curve(run_dir, run.get("primary_metric")),
        name=point.name, values=point.values, status="done",
        metric=_primary(run["metrics"], run.get("primary_metric")), metric_name=run.get("primary_metric"),
        firing_rate=run.get("firing_rate"), layer_firing_rates=run.get("layer_firing_rates") or {},
        energy_ratio=energy.get("ratio"), paper_energy_ratio=energy.get("paper_ratio"),
        energy_firing_rate=energy.get("mean_firing_rate"), minutes=record.get("minutes"),
        resumed_from=run.get("resumed_from"), out_dir=str(run_dir), command=command,
    )


def _read_record(path: Path) -> dict[str, Any]:
    """A finished point's sweep_point.json; ConfigError (exit 2) naming it when it cannot be read."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("run"), dict) or "out_dir" not in record["run"]:
            raise ValueError("no 'run' record with its out_dir")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the record of a finished sweep point: '{path}'", details=[str(exc)],
                          hint="delete that file to run the point again (its run directory continues from its "
                          "last checkpoint)") from None
    return record


def _check_start_from(sweep, points: list[Point]) -> None:
    """Each `sweep.start_from` entry names two points, the second one earlier than the first."""
    order = {p.name: i for i, p in enumerate(points)}
    names = ", ".join(order)
    for name, source in sweep.start_from.items():
        for which in (name, source):
            if which not in order:
                raise ConfigError(f"sweep.start_from: this sweep has no point {which!r}",
                                  details=[f"its points: {names}"], hint="give point names from the list above")
        if order[source] > order[name]:
            raise ConfigError(f"sweep.start_from: point {name!r} starts from {source!r}, which runs after it",
                              details=[f"the order of the points: {names}"],
                              hint="list the point it starts from first (grid points run before named ones)")


def _changed(run_cfg, run_dir: Path) -> list[tuple[str, object, object]]:
    """The settings a finished point was run with that differ from what the sweep now asks for. The start
    model of a point started from another (`<sweep>/<point>/final`, `sweep.start_from`) compares by its place in
    the sweep, so a sweep folder moved or copied elsewhere keeps its points (`_stale_start` checks the weights)."""
    try:
        earlier = load_config(type(run_cfg), run_dir / RUN_CONFIG, [])
    except ConfigError as exc:  # run by the other command, or a file that no longer loads
        raise ConfigError(f"sweep point {run_dir.name!r} in '{run_dir}' was not run by this sweep's command "
                          f"({run_cfg.command}), or its run_config.yaml no longer loads",
                          details=[exc.message, *exc.details],
                          hint="use another --out-dir for this sweep") from None
    sweep_dir_now = Path(os.path.abspath(run_dir.parent))
    moved = lambda a, b: (run_cfg.reconvert and isinstance(a, str) and isinstance(b, str)  # noqa: E731
                          and Path(b).parent.parent == sweep_dir_now and Path(a).parts[-2:] == Path(b).parts[-2:])
    return [(k, a, b) for k, a, b in changed_settings(earlier, run_cfg) if not (k == "model" and moved(a, b))]


def weights_fingerprint(final_dir: Path) -> str | None:
    """sha256 over the safetensors weights in `final_dir` (None when there are none): what a point started
    from another's trained model (`sweep.start_from`) records, so that a later run of that point is seen."""
    files = sorted(Path(final_dir).glob("*.safetensors")) if Path(final_dir).is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _stale_start(run_cfg, run_dir: Path, source_dir: Path) -> str | None:
    """Why the finished run in `run_dir`, started from the trained model of the point in `source_dir`, no longer
    matches that model (the point ran again since, or is to run again: its record is gone); None when it does
    or cannot be told (a record from before start models were recorded, a model deleted after it finished)."""
    try:
        was = json.loads((run_dir / POINT_FILE).read_text(encoding="utf-8")).get("start_weights")
    except (OSError, ValueError, AttributeError):
        return None
    if not was:
        return None
    now = weights_fingerprint(Path(run_cfg.model))
    if now == was or (now is None and (source_dir / POINT_FILE).is_file()):
        return None
    return (f"trained from an earlier run of point {source_dir.name!r}"
            + (" (whose model has changed since)" if now else f" (which is to run again: {run_cfg.model} is not there)"))


def _check_sources(points: list[Point], configs: list, home: dict[str, str], out_dir: Path,
                   start_from: dict[str, str], selected: set[str] | None) -> None:
    """The model (and a distillation's teacher) of each point still to run must be there before the
    first point trains, not found missing after the points ahead of it have trained. Points that start
    from another point's model (`sweep.start_from`) are checked when their turn comes."""
    from .checkpoints import resolve_source

    for point, run_cfg in zip(points, configs):
        if (home[point.name] != point.name or (out_dir / point.name / POINT_FILE).is_file()
                or (selected is not None and point.name not in selected) or point.name in start_from):
            continue
        teacher = getattr(getattr(run_cfg, "distill", None), "teacher", None)
        for role, source in (("model", run_cfg.model), ("distill.teacher", teacher)):
            if source:
                try:
                    resolve_source(source)
                except CheckpointError as exc:
                    raise CheckpointError(f"sweep point {point.name!r} ({role}): {exc.message}", details=exc.details,
                                          hint=exc.hint) from None


@contextlib.contextmanager
def _naming_the_point(name: str):
    """A spikelm error raised inside says which point it stopped (a bad data file found by the third point)."""
    try:
        yield
    except SpikelmError as exc:
        if not exc.message.startswith("sweep point "):
            exc.message = f"sweep point {name!r}: {exc.message}"
            exc.args = (exc.message,)
        raise


def _check_unchanged(point: Point, run_cfg, run_dir: Path) -> None:
    """A finished point must have been run with the settings the sweep now asks for."""
    changed = _changed(run_cfg, run_dir)
    if changed:
        raise ConfigError(
            f"sweep point {point.name!r} in '{run_dir}' was run with other settings",
            details=[f"{k}: {a!r} there, now {b!r}" for k, a, b in changed],
            hint="use another --out-dir for the changed sweep, or delete that point's directory to run it again",
        )


def _reference_row(cfg, out_dir: Path, say: Progress) -> SweepRow | None:
    ref = cfg.sweep.reference
    if ref is None and cfg.command == "distill":
        ref = cfg.distill.teacher
    if ref is None:
        return None
    if cfg.task is None:  # masked-LM distillation on text: eval scores a benchmark task, not the points' held-out text
        say(f"reference: none for a masked-LM sweep on text (its points' held-out masked-LM scores have no dense "
            f"counterpart here; score {ref} with spikelm eval --task wikitext2 --data-dir <the held-out text>)")
        return None
    ref_dir = out_dir / "reference"
    results = ref_dir / "eval_results.json"
    eval_cfg = config_from_dict(EvalConfig, {
        "command": "eval", "model": ref, "out_dir": str(ref_dir), "data": config_to_dict(cfg.data),
        "neuron": {"kind": "dense"}, "batch_size": cfg.train.eval_batch_size, "device": cfg.train.device})
    if results.is_file() and _scored_otherwise(eval_cfg, ref_dir / "eval_config.yaml"):
        say(f"reference: scored earlier with another model or data; scoring {ref} again")
        results.unlink(missing_ok=True)  # every rank comes here
    if not results.is_file():
        from .checkpoints import is_spiking_type, read_config, resolve_source
        from .training import run_eval

        model_type = read_config(resolve_source(ref)).get("model_type")
        if is_spiking_type(model_type):  # before its evaluation as a dense model names neuron settings instead
            what = "the teacher (distill.teacher)" if ref == getattr(getattr(cfg, "distill", None), "teacher", None) \
                else "sweep.reference"
            raise CheckpointError(f"{what} '{ref}' is a spiking model ('{model_type}'); the sweep's reference, and a "
                                  "teacher, must be dense",
                                  hint="give the dense model the student was converted from, fine-tuned on the task")
        say(f"reference: evaluating the dense model {ref}")
        data = run_eval(eval_cfg).to_dict()  # the main process alone writes eval_results.json
    else:
        data = json.loads(results.read_text(encoding="utf-8"))
    return SweepRow(name="reference", values={"model": ref}, status="reference",
                    metric=_primary(data["metrics"], data.get("primary_metric")),
                    metric_name=data.get("primary_metric"), out_dir=str(ref_dir),
                    # the resolved config it was scored with: the sweep's input lengths and eval subset, dense
                    command=f"spikelm eval {ref_dir / 'eval_config.yaml'}")


def _scored_otherwise(eval_cfg, saved: Path) -> bool:
    """Whether the reference's saved evaluation (its eval_config.yaml) scored another model or other data
    than `eval_cfg` asks for now (or cannot be read)."""
    import yaml

    try:  # the values as written (a load would read its relative paths from reference/ again)
        earlier = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return True
    if not isinstance(earlier, dict):
        return True
    now = config_to_dict(eval_cfg)
    same = lambda a, b: json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)  # noqa: E731
    # where the data lies (data.data_dir) may move, as for the points it scores beside (RESUME_MAY_CHANGE)
    data = lambda d: {k: v for k, v in d.items() if k != "data_dir"} if isinstance(d, dict) else d  # noqa: E731
    return not (same(earlier.get("model"), now.get("model")) and same(data(earlier.get("data")), data(now.get("data"))))


def masked_settings(cfg, given: Sequence[tuple[str, Any]], only: Sequence[str] | None = None) -> list[str]:
    """One line per setting given on the command line (`given`: dotted key, value, as `-s` parses
    them) that the sweep's points set themselves, so it does not reach them: 'neuron.num_timesteps=2
    does not reach points T2, T1, which set their own neuron.num_timesteps'. Points outside `only` are not counted."""
    points = [p for p in expand_points(cfg.sweep) if not only or p.name in only]
    lines = []
    for key, value in given:
        inside = [p.name for p in points if any(k == key or k.startswith(f"{key}.") for k in p.values)]
        if inside:
            several = len(inside) > 1
            lines.append(f"{key}={_show(value)} does not reach point{'s' if several else ''} {', '.join(inside)}, "
                         f"which set{'' if several else 's'} {'their' if several else 'its'} own {key}")
    return lines


def plan_sweep(cfg, only: Sequence[str] | None = None) -> tuple[Path, list[Point], list, dict[str, str]]:
    """Check the sweep as it would start, before anything runs (`--print-config` checks it too):
    (its directory, its points, each point's run config, point -> the point whose run directory holds
    its run: itself, unless an earlier point has the same settings). ConfigError (exit 2) for no sweep,
    an unknown name in `only`, a bad `start_from` entry or a point whose values make an invalid config."""
    if cfg.sweep is None:
        raise ConfigError("this recipe has no sweep section", hint="add sweep: {grid: ...} or pass --grid")
    out_dir = sweep_dir(cfg)
    points = expand_points(cfg.sweep)
    names = [p.name for p in points]
    unknown = [name for name in (only or []) if name not in names]
    if unknown:
        raise ConfigError(f"--point {unknown[0]!r}: this sweep has no such point",
                          details=[f"its points: {', '.join(names)}"], hint="give one of the names above")
    _check_start_from(cfg.sweep, points)
    home: dict[str, str] = {}
    homes: dict[str, str] = {}
    configs = []
    for p in points:
        source = cfg.sweep.start_from.get(p.name)
        run_cfg = point_config(cfg, p, out_dir, home[source] if source else None)
        key = json.dumps(_comparable(run_cfg), sort_keys=True, default=str)
        home[p.name] = homes.setdefault(key, p.name)
        configs.append(run_cfg)
    tasks = {p.name: c.task for p, c in zip(points, configs)}
    if len(set(tasks.values())) > 1:
        raise ConfigError("the points of one sweep must share a task: its table and plots compare them on one metric",
                          details=[f"{name}: {task or 'masked-LM on text'}" for name, task in tasks.items()],
                          hint="run one sweep per task (each with its own --out-dir)")
    _check_auditable(cfg, points, configs)
    return out_dir, points, configs, home


def _check_auditable(cfg, points: list[Point], configs: list) -> None:
    """ConfigError before anything trains when the energy audit would refuse a point after its training:
    salient channels (`neuron.salient_fraction > 0`), which the audit does not bill yet."""
    if not cfg.sweep.energy.enabled:
        return
    if cfg.sweep.energy.data is not None:
        from .calibration import read_text_file

        read_text_file(cfg.sweep.energy.data)  # DataError now (missing, empty, unreadable), not after a point trained
    salient = [f"{p.name}: neuron.salient_fraction {c.neuron.salient_fraction}" for p, c in zip(points, configs)
               if c.neuron.spiking and c.neuron.salient_fraction > 0]
    if salient:
        raise ConfigError(
            "the sweep audits each trained point's energy, and the audit does not bill salient channels "
            "(outlier-aware allocation) yet",
            details=first_details(salient),
            hint="-s neuron.salient_fraction=0 (as the grid's points need), or -s sweep.energy.enabled=false "
            "to train and score the points without the audit",
        )


def run_sweep(cfg, *, progress: Progress | None = None, callbacks=None,
              only: Sequence[str] | None = None) -> SweepReport:
    """Run every point of `cfg.sweep` not yet finished, audit its energy, and write the table
    after each point. `callbacks` go to each point's Trainer (progress bars). `only` (point names,
    `--point`) runs just those now: the other points' finished runs stay in the table, their
    unfinished ones, and finished ones run with other settings, are left out of it until a later
    call runs them.

    Raises ConfigError (exit 2) for a bad point, an unknown name in `only`, a finished point run
    with other settings (among `only`, if given) or a point to run that starts from such a point,
    and whatever a run raises; CheckpointError (exit 3), before anything runs, for a point to run whose
    model or teacher is missing.
    """
    from .training import run_distill, run_finetune

    # under torchrun every rank trains each point (DDP); the main process alone reports, audits the
    # energy and writes the records and the table (final/ is whole on every rank once run_training
    # returns: it waits for the main process to put it in place)
    main = is_main_process()
    say = (progress or (lambda message: None)) if main else (lambda message: None)
    out_dir, points, configs, home = plan_sweep(cfg, only)
    check_output_location(out_dir)
    # a selected point equal to an earlier one runs as that one (then shows as same_as), never twice
    selected = {home[name] for name in only or []}
    runner = {"finetune": run_finetune, "distill": run_distill}[cfg.command]
    for point, run_cfg in zip(points, configs):  # before anything trains: a selected point's start must be there
        source = cfg.sweep.start_from.get(point.name)
        if (only and point.name in selected and source and home[source] not in selected
                and not (out_dir / point.name / POINT_FILE).is_file() and not Path(run_cfg.model).is_dir()):
            raise ConfigError(
                f"sweep point {point.name!r} starts from point {source!r}'s trained model, which is not there "
                "and not among --point",
                details=[f"expected: {run_cfg.model}"],
                hint=f"add --point {source}, or run the whole sweep")
    # before the reference's scoring and before any point trains: a point run by the other command, a finished
    # point to keep whose settings changed (refused now, not after the points ahead of it have trained), and
    # the finished points left out of the table (not among --point, run with other settings)
    left_out: set[str] = set()
    for point, run_cfg in zip(points, configs):
        run_dir = out_dir / point.name
        if not (run_dir / POINT_FILE).is_file():
            continue
        source = cfg.sweep.start_from.get(point.name)
        stale_start = source is not None and home[point.name] == point.name and _stale_start(
            run_cfg, run_dir, out_dir / home[source])
        if home[point.name] != point.name:
            _changed(run_cfg, run_dir)
        elif only and point.name not in selected:
            if _changed(run_cfg, run_dir) or stale_start or (source is not None and home[source] in left_out):
                left_out.add(point.name)
        else:
            _check_unchanged(point, run_cfg, run_dir)
            if stale_start:
                later = [p for p, s in cfg.sweep.start_from.items() if s == point.name]
                raise ConfigError(
                    f"sweep point {point.name!r} in '{run_dir}' was {stale_start}",
                    details=[f"its start model: {run_cfg.model}"],
                    hint=f"delete '{run_dir}'" + (f" (and the points started from it: {', '.join(later)})" if later else "")
                    + " to train it again from the new model, or use another --out-dir")
    _check_sources(points, configs, home, out_dir, cfg.sweep.start_from, selected if only else None)
    report = SweepReport(command=cfg.command, task=cfg.task, out_dir=str(out_dir), rows=[])
    # every rank: a GLUE reference is scored by the Trainer's predict, which splits the data across ranks
    report.reference = _reference_row(cfg, out_dir, say)
    energy = cfg.sweep.energy
    seen: dict[str, str] = {}
    stale: set[str] = set()  # finished points not among --point whose settings changed since

    earlier: dict[str, SweepRow] = {}  # the rows of points finished in an earlier call, read once
    for p in points:
        path = out_dir / p.name / POINT_FILE
        if path.is_file() and p.name not in left_out:
            try:
                earlier[p.name] = _row_from(p, json.loads(path.read_text(encoding="utf-8")),
                                            cfg.sweep.start_from.get(p.name), out_dir / p.name)
            except (OSError, ValueError, KeyError):
                continue

    def so_far() -> SweepReport:
        """The table mid-sweep: the rows so far, then those of the points ahead that finished in an
        earlier call (a call stopped part-way, by an error or Ctrl-C, leaves them in the table)."""
        done = {row.name for row in report.rows} | stale
        return replace(report, rows=[*report.rows, *(row for name, row in earlier.items() if name not in done)])

    for i, (point, run_cfg) in enumerate(zip(points, configs), 1):
        key = json.dumps(_comparable(run_cfg), sort_keys=True, default=str)
        run_dir = out_dir / point.name
        record_path = run_dir / POINT_FILE
        where = f"point {i}/{len(points)} {point.name}"
        if only and point.name not in selected and key not in seen and not record_path.is_file():
            say(f"{where}: not among --point, left for later")
            continue
        if key in seen:
            report.rows.append(SweepRow(name=point.name, values=point.values, status="same_as", same_as=seen[key]))
            continue
        seen[key] = point.name
        source = cfg.sweep.start_from.get(point.name)
        source_stale = source is not None and home[source] in stale
        if record_path.is_file():
            if only and point.name not in selected:
                # not asked for now: a stale run (its settings changed, or those of the point it started
                # from) is left out of the table instead of stopping the points asked for
                why = None
                if changed := _changed(run_cfg, run_dir):
                    setting, was, now = changed[0]
                    why = f"run with other settings ({setting}: {was!r} there, now {now!r})"
                elif source_stale:
                    why = f"trained from point {source!r}, whose run has other settings"
                elif source is not None and (start_gone := _stale_start(run_cfg, run_dir, out_dir / home[source])):
                    why = start_gone
                if why:
                    say(f"{where}: not among --point and {why}, left out of the table until it runs again")
                    stale.add(point.name)
                    seen.pop(key)
                    continue
            _check_unchanged(point, run_cfg, run_dir)
            if source_stale:
                raise ConfigError(
                    f"sweep point {point.name!r} was trained from point {source!r}'s model, whose run has other settings",
                    details=[f"its run: {run_dir}"],
                    hint=f"run both again: delete their directories and add --point {source} --point {point.name}")
            record = _read_record(record_path)
            say(f"{where}: finished earlier, skipped")
        else:
            if source_stale:
                raise ConfigError(
                    f"sweep point {point.name!r} starts from point {source!r}'s trained model, whose run has other settings",
                    details=[f"its run: {out_dir / source}"],
                    hint=f"run that point again first: delete its directory and add --point {source}")
            if source and not Path(run_cfg.model).is_dir():
                raise ConfigError(
                    f"sweep point {point.name!r} starts from point {source!r}'s trained model, which is not there",
                    details=[f"expected: {run_cfg.model}"],
                    hint=f"run that point first (--point {source}), or the whole sweep")
            say(f"{where}: {cfg.command} ({', '.join(f'{k}={_show(v)}' for k, v in point.values.items())}"
                + (f"; from {source}'s model" if source else "") + ")")
            start_weights = weights_fingerprint(Path(run_cfg.model)) if source else None
            timer = Timer()
            with continue_with(f"the same sweep command again (finished points are skipped; {point.name} "
                               "continues)"), _naming_the_point(point.name):
                result = runner(run_cfg, resume="auto", callbacks=list(callbacks or []))
            record = {"point": point.name, "values": point.values, "run": result.to_dict(),
                      "minutes": timer.seconds / 60, "command": _replay(cfg.command, run_dir), "energy": None}
            if start_weights is not None:
                record["start_weights"] = start_weights
            if main:
                atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
        audited = (record.get("energy") or {}).get("settings")
        reaudit = main and energy.enabled and run_cfg.neuron.spiking and audited != _energy_settings(run_cfg, energy)
        if reaudit and record.get("energy") and not (run_dir / FINAL).is_dir():
            say(f"{where}: audited earlier with other or unrecorded settings, and its model ({run_dir / FINAL}) is "
                "gone: that audit stays in the table")
        elif reaudit:
            say(f"{where}: energy audit of {run_dir / FINAL}"
                + (" (audited earlier with other or unrecorded settings)" if record.get("energy") else ""))
            try:
                with _naming_the_point(point.name):
                    record["energy"] = _energy(run_dir / FINAL, run_cfg, energy)
            except KeyboardInterrupt:
                say(f"{where}: stopped during its energy audit; its training is kept: the same sweep command "
                    "again audits it (finished points are skipped)")
                raise
            atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
        elif main and energy.enabled and not run_cfg.neuron.spiking and not record.get("energy"):
            # a dense point (neuron.kind: dense) costs what the dense model costs: no audit, ratio 1
            record["energy"] = {"ratio": 1.0, "paper_ratio": 1.0, "mean_firing_rate": None, "dense": True}
            atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
        report.rows.append(_row_from(point, record, cfg.sweep.start_from.get(point.name), run_dir))
        if main:
            write_report(so_far(), out_dir)
        gc.collect()
    if main:
        write_report(report, out_dir)
    return report
