"""Rendering of results: rich tables for people, JSON for programs. No computation here."""

from __future__ import annotations

import json

from rich.table import Table

from .console import err, out


def print_json(data) -> None:
    out.print_json(json.dumps(data))


def convert_summary(r) -> None:
    t = Table(title="spiking model", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    s = r.settings
    t.add_row("saved to", r.out_dir)
    t.add_row("source", r.source)
    t.add_row("architecture", r.architecture)
    t.add_row("parameters", f"{r.parameters:,}")
    t.add_row("weights copied", f"{r.copied_tensors} tensors")
    t.add_row("neurons inserted", ", ".join(f"{n} {k}" for k, n in r.neurons.items()))
    t.add_row(
        "neuron settings",
        f"{s['neuron_kind']}, T={s['num_timesteps']}, k={s['k']:g}, reset={s['reset']}, levels={s['levels']}",
    )
    if r.alpha_min is not None:
        t.add_row("amplitude range", f"{r.alpha_min:.4g} .. {r.alpha_max:.4g}")
    t.add_row("firing rate", f"{r.firing_rate:.3f} (mean over neurons and steps, {r.calibration_tokens:,} tokens)")
    t.add_row("per layer", " ".join(f"{x:.3f}" for x in r.layer_firing_rates))
    t.add_row("time", f"{r.seconds:.1f} s")
    out.print(t)
    if r.newly_initialised:
        err.print(f"[yellow]note:[/] {len(r.newly_initialised)} tensor(s) not in the checkpoint were initialised "
                  f"randomly, e.g. {r.newly_initialised[0]}")
