"""Rendering of `spikelm energy` reports: rich tables, JSON, CSV, Markdown and PNG plots.

No computation here beyond formatting: every number comes from `EnergySweepReport`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from spikelm_core.energy import COMPONENTS, EnergySweepReport
from spikelm_core.io import atomic_output_dir

from .console import err, out

_KIND = {
    "spiking": "spiking checkpoint",
    "dense": "dense BERT, converted on the fly",
    "config-only": "config.json only: random weights",
}
NOT_MEANINGFUL = "random weights (config-only audit): firing rates and energies are NOT meaningful, MAC counts are"
CSV_COLUMNS = (
    "k", "timesteps", "scope", "component", "macs", "firing_rate", "spiking_acs", "spiking_macs",
    "energy_dense_mj", "energy_spiking_mj", "ratio", "ratio_ci_low", "ratio_ci_high", "firing_rates_meaningful",
)


# ---------------------------------------------------------------------------------------------
# small formatters


def _num(x: float | int | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, int) or float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.0f}" if abs(x) >= 1e3 else f"{x:.4g}"


def _mj(x: float) -> str:
    return f"{x:.2f}" if x >= 1 else f"{x:.3g}"


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _ratio(x: float | None) -> str:
    return "inf" if x is None else f"{x:.2f}x"


def _ci(ci: dict | None) -> str:
    if not ci:
        return "-"
    digits = 2 if ci["high"] - ci["low"] >= 0.05 else 3
    return f"{ci['low']:.{digits}f}-{ci['high']:.{digits}f}"


def _k(k: float | None) -> str:
    return "-" if k is None else f"{k:g}"


def _is_bart(data: dict) -> bool:
    return data.get("target_len") is not None


def _comp(row: dict) -> str:
    """A component's label: 'encoder q', 'decoder cross_k' for BART rows, 'q' for BERT."""
    return f"{row['stack']} {row['component']}" if row.get("stack") else row["component"]


def _kind_label(data: dict) -> str:
    kind = data["model"]["kind"]
    if kind == "dense" and _is_bart(data):
        return "dense BART, converted on the fly"
    return _KIND.get(kind, kind)


def _header_lines(data: dict) -> list[str]:
    m, c, d = data["model"], data["constants"], data["data"]
    if _is_bart(data):
        shape = (f"d={m['d_model']}, {m['encoder_layers']}+{m['decoder_layers']} layers, "
                 f"{m['encoder_attention_heads']}/{m['decoder_attention_heads']} heads, "
                 f"d_ff={m['encoder_ffn_dim']}/{m['decoder_ffn_dim']}, V={m['vocab_size']}")
        where = (f"per sample: {data['seq_len']} source tokens, {data['target_len']} summary tokens; firing rates "
                 "teacher-forced (decoder fed the shifted input)")
    else:
        shape = (f"d={m['hidden_size']}, {m['num_hidden_layers']} layers, {m['num_attention_heads']} heads, "
                 f"d_ff={m['intermediate_size']}")
        where = f"per sample at {data['seq_len']} tokens; firing rates"
    lines = [
        "arithmetic-only estimate, ignores data movement",
        f"model: {m['source']} ({_kind_label(data)}), {m['architecture']}, {shape}",
        f"profile: {c['profile']}: E_MAC {c['e_mac_pj']:g} pJ, E_AC {c['e_ac_pj']:g} pJ ({c['source']})",
        f"{where} from {d['sequences']} sequence(s), {d['tokens']:,} tokens "
        f"of {d['source']} ({d['batches']} batch(es)); pads excluded",
        f"dense twin {data['dense_twin']['class']}: {data['dense_twin']['macs']:,} MACs (fvcore, checked against "
        "the spiking model component by component)",
        "counted: " + "; ".join(data["included"]),
    ]
    return lines


# ---------------------------------------------------------------------------------------------
# rich table (stdout)


def _console() -> Console:
    """stdout; not a terminal (a pipe, a file, the README), wide enough that no column is cut."""
    return out if out.is_terminal else Console(highlight=False, width=150)


def print_table(report: EnergySweepReport, *, detail: bool = False) -> None:
    out = _console()
    data = report.to_dict()
    title = "spikelm energy: dense MACs vs spike-driven ACs"
    out.print(f"[bold]{title}[/]")
    for i, line in enumerate(_header_lines(data)):
        out.print(f"[bold yellow]{escape(line)}[/]" if i == 0 else f"[dim]{escape(line)}[/]", soft_wrap=True)
    if not data["firing_rates_meaningful"]:
        out.print(f"[bold red]{escape(NOT_MEANINGFUL)}[/]", soft_wrap=True)

    meaningful = data["firing_rates_meaningful"]
    star = "" if meaningful else "*"
    title = ("energy per sample: one teacher-forced forward "
             f"({data['seq_len']} source / {data['target_len']} summary tokens, LM head on every position)"
             if _is_bart(data) else "energy per sample")
    t = Table(title=title, title_justify="left")
    for name in ("k", "T", "mean fr", "dense MACs", "spiking ACs", "spiking MACs", "E_dense (mJ)",
                 "E_spiking (mJ)", "ratio"):
        t.add_column(name, justify="right")
    conf = next((r["ratio_ci"]["confidence"] for r in data["runs"] if r["ratio_ci"]), None)
    if conf is not None:
        t.add_column(f"{conf:.0%} CI", justify="right")
    for r in data["runs"]:
        row = [_k(r["k"]), str(r["timesteps"]), _rate(r["mean_firing_rate"]) + star, _num(r["dense_macs"]),
               _num(r["spiking_acs"]), _num(r["spiking_macs"]), _mj(r["energy_dense_mj"]),
               _mj(r["energy_spiking_mj"]) + star, _ratio(r["ratio"]) + star]
        if conf is not None:
            row.append(_ci(r["ratio_ci"]))
        t.add_row(*row)
    out.print(t)
    if not meaningful:
        out.print("[red]* random weights: not meaningful[/]")
    if conf is not None:
        first = next(r["ratio_ci"] for r in data["runs"] if r["ratio_ci"])
        out.print(f"[dim]CI: bootstrap percentile interval of the ratio, {first['resamples']} resamples of the "
                  f"calibration {first['unit']}s (seed {data['seed']})[/]")

    if _is_bart(data):
        _print_generation(data, star)
        for r in (data["runs"] if detail else data["runs"][:1]):
            _print_generation_lines(data, r, star)

    if detail:
        for r in data["runs"]:
            _print_components(r, star)
            _print_layers(r)

    _print_paper(data, star)
    _print_purity(data)
    out.print(f"[dim]assumptions: {escape(data['assumptions'])}[/]", soft_wrap=True)
    out.print(f"[yellow]caveat:[/] {escape(data['caveat'])}", soft_wrap=True)


def _print_components(run: dict, star: str) -> None:
    out = _console()
    t = Table(title=f"components at k={_k(run['k'])}, T={run['timesteps']} ({run['amplitudes']})", title_justify="left")
    for name in ("component", "MACs", "fr", "spiking ACs", "spiking MACs", "E_dense (mJ)", "E_spiking (mJ)",
                 "share of E_spiking"):
        t.add_column(name, justify="right" if name != "component" else "left")
    total = run["energy_spiking_mj"] or 1.0
    for c in run["components"]:
        t.add_row(_comp(c), _num(c["macs"]), _rate(c["firing_rate"]) + (star if c["firing_rate"] is not None else ""),
                  _num(c["spiking_acs"]), _num(c["spiking_macs"]), _mj(c["energy_dense_mj"]),
                  _mj(c["energy_spiking_mj"]), f"{c['energy_spiking_mj'] / total:.1%}")
    t.add_row("[bold]total[/]", _num(run["dense_macs"]), _rate(run["mean_firing_rate"]), _num(run["spiking_acs"]),
              _num(run["spiking_macs"]), _mj(run["energy_dense_mj"]), _mj(run["energy_spiking_mj"]), "100.0%")
    out.print(t)
    neg = [n for n in run["neurons"] if n["negative_rate"] > 0]
    pos_rate = sum(n["positive_rate"] * n["elements"] for n in run["neurons"])
    neg_rate = sum(n["negative_rate"] * n["elements"] for n in run["neurons"])
    elements = sum(n["elements"] for n in run["neurons"]) or 1
    out.print(f"[dim]spikes: +{pos_rate / elements:.3f} / -{neg_rate / elements:.3f} of all neuron outputs "
              f"({len(neg)} of {len(run['neurons'])} neurons emit -a spikes)[/]")


def _print_layers(run: dict) -> None:
    out = _console()
    keys = list(dict.fromkeys((row.get("stack"), row["layer"]) for row in run["layers"] if row["layer"] is not None))
    comps = [c for c in COMPONENTS if any(row["component"] == c and row["firing_rate"] is not None for row in run["layers"])]
    if not keys or not comps:
        return
    rates = {(row.get("stack"), row["component"], row["layer"]): row["firing_rate"] for row in run["layers"]}
    t = Table(title=f"firing rate per layer at k={_k(run['k'])}, T={run['timesteps']}", title_justify="left")
    t.add_column("layer", justify="right")
    for c in comps:
        t.add_column(c, justify="right")
    for stack, layer in keys:
        t.add_row(f"{stack} {layer}" if stack else str(layer), *[_rate(rates.get((stack, c, layer))) for c in comps])
    out.print(t)


_MODE_LABEL = {"kv_cache": "KV cache", "no_cache": "no cache"}


def _print_generation(data: dict, star: str) -> None:
    out = _console()
    m = data["target_len"]
    t = Table(title=f"generation: one summary of {m} tokens from {data['seq_len']} source tokens "
                    "(encoder once, decoder per token)", title_justify="left")
    for name in ("k", "T", "decoding", "dense MACs", "E_dense (mJ)", "E_spiking (mJ)", "ratio",
                 "E_dense/token (mJ)", "E_spiking/token (mJ)", "last token E_spiking (mJ)"):
        t.add_column(name, justify="right")
    for r in data["runs"]:
        g = r["generation"]
        for mode in ("kv_cache", "no_cache"):
            s, tok, last = g[mode]["per_summary"], g[mode]["per_token"], g[mode]["last_token"]
            t.add_row(_k(r["k"]), str(r["timesteps"]), _MODE_LABEL[mode], _num(s["dense_macs"]),
                      _mj(s["energy_dense_mj"]), _mj(s["energy_spiking_mj"]) + star, _ratio(s["ratio"]) + star,
                      _mj(tok["energy_dense_mj"]), _mj(tok["energy_spiking_mj"]) + star,
                      _mj(last["energy_spiking_mj"]) + star)
    out.print(t)
    out.print("[dim]per token = per summary / summary tokens (encoder and cross K/V amortised); last token = the "
              "decoder step at the last position alone. Firing rates of the teacher-forced pass applied to every step.[/]")


def _print_generation_lines(data: dict, run: dict, star: str) -> None:
    out = _console()
    t = Table(title=f"summary lines at k={_k(run['k'])}, T={run['timesteps']}", title_justify="left")
    for name in ("decoding", "line", "charged", "dense MACs", "fr", "spiking ACs", "spiking MACs",
                 "E_dense (mJ)", "E_spiking (mJ)"):
        t.add_column(name, justify="left" if name in ("decoding", "line", "charged") else "right")
    for mode in ("kv_cache", "no_cache"):
        for line in run["generation"][mode]["lines"]:
            t.add_row(_MODE_LABEL[mode], line["line"], line["charged"], _num(line["dense_macs"]),
                      _rate(line["mean_firing_rate"]), _num(line["spiking_acs"]), _num(line["spiking_macs"]),
                      _mj(line["energy_dense_mj"]), _mj(line["energy_spiking_mj"]) + star)
    out.print(t)


def _print_paper(data: dict, star: str) -> None:
    out = _console()
    bart = _is_bart(data)
    title = ("paper setting: BART-base, 128/128 tokens teacher-forced, LM head as MAC, measured rates" if bart
             else "paper setting: BERT-base, 128 tokens, measured rates")
    t = Table(title=title, title_justify="left")
    for name in ("k", "T", "mean fr", "dense MACs", "E_dense (mJ)", "E_spiking (mJ)", "ratio"):
        t.add_column(name, justify="right")
    for r in data["runs"]:
        p = r["paper_setting"]
        t.add_row(_k(r["k"]), str(p["timesteps"]), _rate(p["mean_firing_rate"]) + star, _num(p["dense_macs"]),
                  _mj(p["energy_dense_mj"]), _mj(p["energy_spiking_mj"]) + star, _ratio(p["ratio"]) + star)
    out.print(t)
    if bart:
        out.print("[dim]the measured per-(stack, component) firing rates applied to BART-base (closed form, "
                  "energy-method.md section 5); the paper reports no BART energy[/]")
        return
    out.print("[dim]the measured per-component firing rates applied to BERT-base (closed form, pooler as MAC); "
              "the paper (SpikeLM, ICML 2024) reports 3.7x at T=4 and 12.9x at T=1 (secondary sources)[/]")


def _print_purity(data: dict) -> None:
    out = _console()
    run = data["runs"][0]
    floats = run["float_matmuls"]
    share = run["spike_driven_share"]
    if not floats:
        out.print(f"[green]spike purity:[/] every counted matmul is spike-driven ({share:.2%} of dense MACs)")
        return
    t = Table(title=f"spike purity: float x float matmuls left in the model ({1 - share:.3%} of dense MACs)",
              title_justify="left")
    for name in ("module", "op", "MACs/step", "steps", "why float"):
        t.add_column(name, justify="right" if name in ("MACs/step", "steps") else "left")
    for f in floats:
        t.add_row(f["module"], f["op"], _num(f["macs"]), str(f["steps"]), f["reason"])
    out.print(t)


# ---------------------------------------------------------------------------------------------
# JSON, CSV, Markdown


def json_text(report: EnergySweepReport) -> str:
    return json.dumps(report.to_dict(), indent=2)


def csv_text(report: EnergySweepReport) -> str:
    """Long format: per run a 'total' row, one 'component' row each, and a 'paper_setting' row."""
    data = report.to_dict()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in data["runs"]:
        base = {"k": r["k"], "timesteps": r["timesteps"], "firing_rates_meaningful": r["firing_rates_meaningful"]}
        ci = r["ratio_ci"] or {}
        writer.writerow({
            **base, "scope": "total", "component": "", "macs": r["dense_macs"], "firing_rate": r["mean_firing_rate"],
            "spiking_acs": r["spiking_acs"], "spiking_macs": r["spiking_macs"],
            "energy_dense_mj": r["energy_dense_mj"], "energy_spiking_mj": r["energy_spiking_mj"], "ratio": r["ratio"],
            "ratio_ci_low": ci.get("low"), "ratio_ci_high": ci.get("high"),
        })
        for c in r["components"]:
            writer.writerow({**base, "scope": "component", **{k: c[k] for k in c if k in CSV_COLUMNS},
                             "component": _comp(c).replace(" ", ".")})
        for mode, g in (r.get("generation") or {}).items():
            if mode not in ("kv_cache", "no_cache"):
                continue
            for part in ("per_summary", "per_token", "last_token"):
                p = g[part]
                writer.writerow({
                    **base, "scope": f"generation_{mode}", "component": part, "macs": p["dense_macs"],
                    "firing_rate": p["mean_firing_rate"], "spiking_acs": p["spiking_acs"],
                    "spiking_macs": p["spiking_macs"], "energy_dense_mj": p["energy_dense_mj"],
                    "energy_spiking_mj": p["energy_spiking_mj"], "ratio": p["ratio"],
                })
        p = r["paper_setting"]
        writer.writerow({
            **base, "scope": "paper_setting", "component": "", "macs": p["dense_macs"],
            "firing_rate": p["mean_firing_rate"], "spiking_acs": p["spiking_acs"], "spiking_macs": p["spiking_macs"],
            "energy_dense_mj": p["energy_dense_mj"], "energy_spiking_mj": p["energy_spiking_mj"], "ratio": p["ratio"],
        })
    return buf.getvalue()


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_text(report: EnergySweepReport, *, detail: bool = True) -> str:
    data = report.to_dict()
    star = "" if data["firing_rates_meaningful"] else "*"
    parts = ["# spikelm energy report", "", *[f"- {line}" for line in _header_lines(data)], ""]
    if star:
        parts += [f"**{NOT_MEANINGFUL}** (values marked *)", ""]
    header = ["k", "T", "mean fr", "dense MACs", "spiking ACs", "spiking MACs", "E_dense (mJ)", "E_spiking (mJ)",
              "ratio", "ratio CI"]
    rows = [[_k(r["k"]), str(r["timesteps"]), _rate(r["mean_firing_rate"]) + star, _num(r["dense_macs"]),
             _num(r["spiking_acs"]), _num(r["spiking_macs"]), _mj(r["energy_dense_mj"]),
             _mj(r["energy_spiking_mj"]) + star, _ratio(r["ratio"]) + star, _ci(r["ratio_ci"])] for r in data["runs"]]
    parts += ["## Energy per sample" + (" (one teacher-forced forward)" if _is_bart(data) else ""), "",
              _md_table(header, rows), ""]
    if _is_bart(data):
        parts += [f"## Generation: one summary of {data['target_len']} tokens from {data['seq_len']} source tokens", ""]
        gen_rows = []
        for r in data["runs"]:
            for mode in ("kv_cache", "no_cache"):
                g = r["generation"][mode]
                s_, tok = g["per_summary"], g["per_token"]
                gen_rows.append([_k(r["k"]), str(r["timesteps"]), _MODE_LABEL[mode], _num(s_["dense_macs"]),
                                 _mj(s_["energy_dense_mj"]), _mj(s_["energy_spiking_mj"]) + star,
                                 _ratio(s_["ratio"]) + star, _mj(tok["energy_dense_mj"]),
                                 _mj(tok["energy_spiking_mj"]) + star])
        parts += [_md_table(["k", "T", "decoding", "dense MACs", "E_dense (mJ)", "E_spiking (mJ)", "ratio",
                             "E_dense/token (mJ)", "E_spiking/token (mJ)"], gen_rows), ""]
        if detail:
            for r in data["runs"]:
                parts += [f"### Summary lines at k={_k(r['k'])}, T={r['timesteps']}", ""]
                parts.append(_md_table(
                    ["decoding", "line", "charged", "dense MACs", "fr", "E_dense (mJ)", "E_spiking (mJ)"],
                    [[_MODE_LABEL[mode], x["line"], x["charged"], _num(x["dense_macs"]), _rate(x["mean_firing_rate"]),
                      _mj(x["energy_dense_mj"]), _mj(x["energy_spiking_mj"])]
                     for mode in ("kv_cache", "no_cache") for x in r["generation"][mode]["lines"]],
                ))
                parts.append("")
    if detail:
        for r in data["runs"]:
            parts += [f"### Components at k={_k(r['k'])}, T={r['timesteps']} ({r['amplitudes']})", ""]
            parts.append(_md_table(
                ["component", "MACs", "fr", "spiking ACs", "spiking MACs", "E_dense (mJ)", "E_spiking (mJ)"],
                [[_comp(c), _num(c["macs"]), _rate(c["firing_rate"]), _num(c["spiking_acs"]),
                  _num(c["spiking_macs"]), _mj(c["energy_dense_mj"]), _mj(c["energy_spiking_mj"])]
                 for c in r["components"]],
            ))
            parts.append("")
    paper_rows = [[_k(r["k"]), str(r["paper_setting"]["timesteps"]), _rate(r["paper_setting"]["mean_firing_rate"]),
                   _mj(r["paper_setting"]["energy_dense_mj"]), _mj(r["paper_setting"]["energy_spiking_mj"]),
                   _ratio(r["paper_setting"]["ratio"])] for r in data["runs"]]
    if _is_bart(data):
        parts += ["## Paper setting (BART-base, 128/128 tokens teacher-forced, LM head as MAC, measured rates)", "",
                  _md_table(["k", "T", "mean fr", "E_dense (mJ)", "E_spiking (mJ)", "ratio"], paper_rows), "",
                  "The paper reports no BART energy.", ""]
    else:
        parts += ["## Paper setting (BERT-base, 128 tokens, measured per-component rates)", "",
                  _md_table(["k", "T", "mean fr", "E_dense (mJ)", "E_spiking (mJ)", "ratio"], paper_rows), "",
                  "The paper reports 3.7x at T=4 (secondary sources).", ""]
    floats = data["runs"][0]["float_matmuls"] if data["runs"] else []
    parts += ["## Spike purity: float x float matmuls", ""]
    if floats:
        parts.append(_md_table(["module", "op", "MACs/step", "steps", "why float"],
                               [[f["module"], f["op"], _num(f["macs"]), str(f["steps"]), f["reason"]] for f in floats]))
    else:
        parts.append("None: every counted matmul is spike-driven.")
    parts += ["", f"**Assumptions:** {data['assumptions']}", "", f"**Caveat:** {data['caveat']}", ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# plots and --out


def _label(run: dict) -> str:
    return f"k={_k(run['k'])}, T={run['timesteps']}"


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
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=_label(run))
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
    comps = [_comp(c) for c in runs[0]["components"]]
    series = [("dense", [c["energy_dense_mj"] for c in runs[0]["components"]])]
    for run in runs:
        by = {_comp(c): c["energy_spiking_mj"] for c in run["components"]}
        series.append((f"spiking {_label(run)}", [by.get(c, 0.0) for c in comps]))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(comps) + 2), 4))
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


OUT_FILES = ("report.json", "report.csv", "report.md", "firing_rates.png", "energy_breakdown.png")


def write_outputs(report: EnergySweepReport, out_dir: Path, *, force: bool = False) -> list[Path]:
    """Write every OUT_FILES entry into `out_dir` atomically (all or nothing)."""
    with atomic_output_dir(out_dir, force) as tmp:
        (tmp / "report.json").write_text(json_text(report) + "\n", encoding="utf-8")
        (tmp / "report.csv").write_text(csv_text(report), encoding="utf-8")
        (tmp / "report.md").write_text(markdown_text(report, detail=True), encoding="utf-8")
        plot_firing_rates(report, tmp / "firing_rates.png")
        plot_energy_breakdown(report, tmp / "energy_breakdown.png")
    return [Path(out_dir) / name for name in OUT_FILES]


def print_written(paths: list[Path]) -> None:
    err.print(f"wrote {len(paths)} file(s) to [bold]{escape(str(paths[0].parent))}[/]: "
              + ", ".join(p.name for p in paths))


def print_text(text: str) -> None:
    """Machine-readable text to stdout, untouched by rich."""
    out.file.write(text if text.endswith("\n") else text + "\n")
    out.file.flush()


def print_caveat_to_stderr(report: EnergySweepReport) -> None:
    err.print(f"[yellow]caveat:[/] {escape(report.caveat)}", soft_wrap=True)
