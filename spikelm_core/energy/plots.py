"""The PNG plots of `spikelm energy --out`: firing rate per layer, and energy per component.

matplotlib (Agg back end, imported on first use) draws from the report's JSON form; nothing is shown
on screen.
"""

from __future__ import annotations

from pathlib import Path

from spikelm_core.energy.components import COMPONENTS
from spikelm_core.energy.report import EnergySweepReport
from spikelm_core.energy.tables import BOUND_LABELS, component_label, run_label


def plot_firing_rates(report: EnergySweepReport, path: Path) -> None:
    """Firing rate per layer, one panel per component, one line per (k, T)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    data = report.to_dict()
    comps = list(dict.fromkeys(
        (row.get("stack"), row["component"])
        for c in COMPONENTS for run in data["runs"] for row in run["layers"]
        if row["component"] == c and row["firing_rate"] is not None and row["layer"] is not None
    ))
    cols = min(4, max(1, len(comps)))
    rows = max(1, -(-len(comps) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    for ax, (stack, comp) in zip(axes.flat, comps):
        for run in data["runs"]:
            pts = sorted((row["layer"], row["firing_rate"]) for row in run["layers"]
                         if row["component"] == comp and row.get("stack") == stack and row["layer"] is not None
                         and row["firing_rate"] is not None)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=run_label(run))
        ax.set_title(f"{stack} {comp}" if stack else comp)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(comps):]:
        ax.axis("off")
    axes[0][0].set_ylabel("firing rate")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6) or 1)
    suffix = "" if data["firing_rates_meaningful"] else " (random weights: not meaningful)"
    fig.suptitle(f"firing rate per layer and component{suffix}")
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_energy_breakdown(report: EnergySweepReport, path: Path) -> None:
    """Energy per component: the dense twin against the spiking model at each (k, T)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = report.to_dict()
    runs = data["runs"]
    comps = [component_label(c) for c in runs[0]["components"]]
    series = [("dense", [c["energy_dense_mj"] for c in runs[0]["components"]])]
    for run in runs:
        by = {component_label(c): c["energy_spiking_mj"] for c in run["components"]}
        series.append((f"spiking {run_label(run)}", [by.get(c, 0.0) for c in comps]))
    width = 0.8 / len(series)
    # about an inch per component up to 16 inches (BART's encoder, decoder and cross-attention give 23;
    # wider than a screen helps nobody), the labels turned where they crowd
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 1.1 * len(comps) + 2)), 4.4))
    for i, (name, values) in enumerate(series):
        ax.bar([x + i * width for x in range(len(comps))], values, width, label=name)
    ax.set_xticks([x + width * (len(series) - 1) / 2 for x in range(len(comps))])
    ax.set_xticklabels(comps, rotation=60 if len(comps) > 12 else 0, fontsize="small" if len(comps) > 12 else None)
    ax.set_ylabel(f"energy per sample (mJ, {data['constants']['profile']})")
    suffix = "" if data["firing_rates_meaningful"] else " (random weights: not meaningful)"
    ax.set_title(f"energy per component, dense vs spiking{suffix}")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_energy_vs_firing_rate(report: EnergySweepReport, path: Path) -> None:
    """Energy (arithmetic + memory) against the mean firing rate, one panel per memory bound.

    Per run: the spiking energy as the rates scale in proportion (line), the measured point, the
    break-even rate (dotted vertical); the dense energy and the quantised ANN's are horizontal lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = report.to_dict()
    runs = [r for r in data["runs"] if r.get("memory")]
    bounds = [b for b in BOUND_LABELS if runs and b in runs[0]["memory"]]
    fig, axes = plt.subplots(1, max(1, len(bounds)), figsize=(5.5 * max(1, len(bounds)), 4.2), squeeze=False)
    for ax, bound in zip(axes[0], bounds):
        first = runs[0]["memory"][bound]
        ax.axhline(first["energy_dense_mj"], color="black", label="dense")
        anns: dict[int, tuple[float, list[int]]] = {}  # bits (they follow T) -> (energy, the T that use it)
        for run in runs:
            q = run["memory"][bound]["quantised_ann"]
            anns.setdefault(q["bits"], (q["energy_mj"], []))[1].append(run["timesteps"])
        for j, (bits, (energy, steps)) in enumerate(sorted(anns.items())):
            which = "" if len(anns) == 1 else f" (T={'/'.join(map(str, sorted(set(steps))))})"
            ax.axhline(energy, color="gray", linestyle=("--", "-.", ":")[j % 3], label=f"{bits}-bit ANN{which}")
        for i, run in enumerate(runs):
            m = run["memory"][bound]
            color = f"C{i % 10}"
            ax.plot(*_dense_curve(m), color=color, label=f"spiking {run_label(run)}")
            ax.plot([m["mean_firing_rate"]], [m["energy_spiking_mj"]], "o", color=color)
            if m["break_even_firing_rate"] is not None and m["break_even_firing_rate"] <= 1:
                ax.axvline(m["break_even_firing_rate"], color=color, linestyle=":")
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel("mean firing rate (rates scaled in proportion)")
        ax.set_ylabel(f"energy per sample (mJ, {data['constants']['profile']} + memory)")
        ax.set_title(f"{BOUND_LABELS[bound]}: dots measured, dotted break-even")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    suffix = "" if data["firing_rates_meaningful"] else " (random weights: not meaningful)"
    fig.suptitle(f"energy against firing rate, memory cost {data['memory_constants']['preset']}{suffix}"
                 if bounds else "no memory bound requested")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # a long title (the random-weights mark) is not cut off
    plt.close(fig)


def _dense_curve(m: dict) -> tuple[list[float], list[float]]:
    """The memory curve of one bound, drawn on a log axis: the report's 21 samples (energy affine in the rate
    between kinks) filled in linearly, with the measured point and the break-even point on it, so the drawn
    curve crosses the dense line where the dotted break-even line stands."""
    import numpy as np

    xs, ys = np.asarray(m["curve"]["firing_rate"], float), np.asarray(m["curve"]["energy_spiking_mj"], float)
    known = {float(x): float(y) for x, y in zip(xs, ys)}
    if m.get("mean_firing_rate") is not None and 0 <= m["mean_firing_rate"] <= 1:
        known[float(m["mean_firing_rate"])] = float(m["energy_spiking_mj"])
    be = m.get("break_even_firing_rate")
    if be is not None and 0 <= be <= 1:
        known[float(be)] = float(m["energy_dense_mj"])
    fine = np.union1d(np.linspace(0.0, 1.0, 401), np.asarray(sorted(known), float))
    values = np.interp(fine, xs, ys)
    for i, x in enumerate(fine):
        values[i] = known.get(float(x), values[i])
    return fine.tolist(), values.tolist()


__all__ = ["plot_energy_breakdown", "plot_energy_vs_firing_rate", "plot_firing_rates"]
