"""Every table of an energy report, built once as data (title, columns, rows, notes).

`report_blocks(report)` turns an `EnergySweepReport` into the sequence of text lines and tables that
`spikelm energy` shows; two small back ends draw it: `markdown(blocks)` here (report.md,
`--format markdown`) and the rich renderer of the CLI (`spikelm_cli/render_energy.py`). Every
number is formatted here, from the report's JSON form, so both back ends print the same strings.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any, Union

from spikelm_core.energy.components import COMPONENTS
from spikelm_core.energy.models import BART_TYPES, LLAMA_TYPES
from spikelm_core.energy.report import EnergySweepReport

TITLE = "spikelm energy: dense MACs vs spike-driven ACs"
NOT_MEANINGFUL = "random weights (config-only audit): firing rates and energies are NOT meaningful, MAC counts are"
MODES = {"kv_cache": "KV cache", "no_cache": "no cache"}
_KIND = {
    "spiking": "spiking checkpoint",
    "dense": "dense BERT, converted on the fly",
    "config-only": "config.json only: random weights",
}


@dataclass(frozen=True)
class Text:
    """A line of the report. `style`: title, lead, header, alert, note, warning or ok; `label`
    (e.g. 'caveat:') is emphasised apart from the text."""

    text: str
    style: str = "note"
    label: str = ""


@dataclass(frozen=True)
class Table:
    """One table: `level` is its heading depth in Markdown (2: the report's tables, 3: per run)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    left: frozenset[str] = frozenset()
    """Columns aligned left (the others right)."""
    level: int = 2
    total_row: bool = False
    """The last row is a total (drawn bold)."""


Block = Union[Text, Table]


# ---------------------------------------------------------------------------------------------
# formatters


def num(x: float | int | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, int) or float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.0f}" if abs(x) >= 1e3 else f"{x:.4g}"


def mj(x: float) -> str:
    return f"{x:.2f}" if x >= 1 else f"{x:.3g}"


def rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def break_even(x: float | None) -> str:
    """A break-even mean firing rate: '-' when spikes never break even; above 1 (no rate reaches
    it: spikes win at any rate), 'any (1.128)'."""
    return "-" if x is None else f"any ({x:.3f})" if x > 1 else f"{x:.3f}"


def ratio(x: float | None) -> str:
    return "inf" if x is None else f"{x:.2f}x"


def interval(ci: dict | None) -> str:
    if not ci:
        return "-"
    digits = 2 if ci["high"] - ci["low"] >= 0.05 else 3
    return f"{ci['low']:.{digits}f}-{ci['high']:.{digits}f}"


def k_label(k: float | None) -> str:
    return "-" if k is None else f"{k:g}"


def run_label(run: dict) -> str:
    return f"k={k_label(run['k'])}, T={run['timesteps']}"


def component_label(row: dict) -> str:
    """A component's label: 'encoder q', 'decoder cross_k' for BART rows, 'q' for BERT."""
    return f"{row['stack']} {row['component']}" if row.get("stack") else row["component"]


def is_bart(data: dict) -> bool:
    return data["model"].get("model_type") in BART_TYPES


def is_llama(data: dict) -> bool:
    """A decoder-only Llama report (dense or spiking)."""
    return data["model"].get("model_type") in LLAMA_TYPES


def generation_title(data: dict) -> str:
    """What one generation is: a BART summary, or a Llama continuation of the prompt."""
    if is_llama(data):
        return f"{data['target_len']} tokens generated after a prompt of {data['seq_len']} tokens (greedy, one sequence)"
    return (f"one summary of {data['target_len']} tokens from {data['seq_len']} source tokens (greedy: a beam search "
            "of b beams runs the decoder and LM-head lines about b times)")


# ---------------------------------------------------------------------------------------------
# the report


def header_lines(data: dict) -> list[str]:
    m, c, d = data["model"], data["constants"], data["data"]
    if is_bart(data):
        shape = (f"d={m['d_model']}, {m['encoder_layers']}+{m['decoder_layers']} layers, "
                 f"{m['encoder_attention_heads']}/{m['decoder_attention_heads']} heads, "
                 f"d_ff={m['encoder_ffn_dim']}/{m['decoder_ffn_dim']}, V={m['vocab_size']}")
        where = (f"per sample: {data['seq_len']} source tokens, {data['target_len']} summary tokens; firing rates "
                 "teacher-forced (decoder fed the shifted input)")
        kind = "dense BART, converted on the fly" if m["kind"] == "dense" else _KIND.get(m["kind"], m["kind"])
    elif is_llama(data):
        shape = (f"d={m['hidden_size']}, {m['num_hidden_layers']} layers, {m['num_attention_heads']} heads "
                 f"({m['num_key_value_heads']} K/V heads, d_h={m['head_dim']}), d_ff={m['intermediate_size']}, "
                 f"V={m['vocab_size']}{', tied embeddings' if m.get('tie_word_embeddings') else ''}")
        where = (f"per sample: one forward over {data['seq_len']} tokens, and generation of {data['target_len']} "
                 f"tokens after a {data['seq_len']}-token prompt; firing rates")
        kind = "dense Llama, converted on the fly" if m["kind"] == "dense" else _KIND.get(m["kind"], m["kind"])
    else:
        shape = (f"d={m['hidden_size']}, {m['num_hidden_layers']} layers, {m['num_attention_heads']} heads, "
                 f"d_ff={m['intermediate_size']}")
        where = f"per sample at {data['seq_len']} tokens; firing rates"
        kind = _KIND.get(m["kind"], m["kind"])
    memory = data.get("memory_constants")
    cost = ([f"memory: {memory_cost_line(memory)}; {data['runs'][0]['memory']['value_bytes']:g} bytes per value, "
             f"spikes {data['runs'][0]['memory']['spike_bits']} bit(s) per element or events, whichever is smaller"]
            if memory and data["runs"] and data["runs"][0].get("memory") else [])
    return [
        (f"arithmetic estimate, with {_bounds_phrase(data)} beside it") if cost else
        "arithmetic-only estimate, ignores data movement",
        f"model: {m['source']} ({kind}), {m['architecture']}, {shape}",
        f"profile: {c['profile']}: E_MAC {c['e_mac_pj']:g} pJ, E_AC {c['e_ac_pj']:g} pJ ({c['source']})",
        f"{where} from {d['sequences']} sequence(s), {d['tokens']:,} tokens "
        f"of {d['source']} ({d['batches']} batch(es)); pads excluded",
        f"dense twin {data['dense_twin']['class']}: {data['dense_twin']['macs']:,} MACs (fvcore, checked against "
        "the spiking model component by component)",
        *cost,
        "counted: " + "; ".join(data["included"]),
    ]


def memory_cost_line(memory: dict) -> str:
    """One line for a memory cost: its name, its pJ per access (per buffer size) and its source."""
    pts = memory["points"]
    unit = "per byte" if memory["access_bits"] == 8 else f"per {memory['access_bits']:g}-bit access"
    if len(pts) == 1:
        cost = f"{pts[0]['pj_per_access']:g} pJ {unit}"
    else:
        cost = ", ".join(f"{p['pj_per_access']:g} pJ at {_size(p['buffer_bytes'])}" for p in pts) + f" {unit}"
    return f"{memory['preset']}: {cost} ({memory['source']})"


def _size(n: float) -> str:
    return f"{n / 2**20:g} MB" if n >= 2**20 else f"{n / 2**10:g} KB"


BOUND_LABELS = {"weight_stationary": "weight-stationary", "event_driven": "event-driven"}
BOUND_SHORT = {"weight_stationary": "WS", "event_driven": "ED"}


def report_blocks(report: EnergySweepReport | dict[str, Any], *, detail: bool = False) -> list[Block]:
    """The whole report, in print order; `detail` adds the per-run component and layer tables."""
    data = report.to_dict() if isinstance(report, EnergySweepReport) else report
    star = "" if data["firing_rates_meaningful"] else "*"
    lines = header_lines(data)
    blocks: list[Block] = [Text(TITLE, "title"), Text(lines[0], "lead"), *[Text(line, "header") for line in lines[1:]]]
    if star:
        blocks.append(Text(NOT_MEANINGFUL, "alert"))
    blocks += energy_table(data, star)
    blocks += memory_blocks(data, star)
    blocks += neurobench_blocks(data, star)
    if data.get("target_len") is not None:  # BART and Llama: energy per generated token
        blocks += generation_table(data, star)
        blocks += [generation_lines_table(run, star) for run in (data["runs"] if detail else data["runs"][:1])]
    if detail:
        for run in data["runs"]:
            blocks += components_table(run, star)
            blocks += memory_components_table(run, star)
            blocks += layers_table(run)
    blocks += paper_table(data, star)
    blocks += purity_blocks(data)
    blocks += [Text(data["assumptions"], "note", "assumptions:"), Text(data["caveat"], "warning", "caveat:")]
    return blocks


def energy_table(data: dict, star: str) -> list[Block]:
    conf = next((r["ratio_ci"]["confidence"] for r in data["runs"] if r["ratio_ci"]), None)
    columns = ["k", "T", "mean fr", "dense MACs", "spiking ACs", "spiking MACs", "E_dense (mJ)", "E_spiking (mJ)",
               "ratio"] + ([f"{conf:.0%} CI"] if conf is not None else [])
    rows = []
    for r in data["runs"]:
        row = [k_label(r["k"]), str(r["timesteps"]), rate(r["mean_firing_rate"]) + star, num(r["dense_macs"]),
               num(r["spiking_acs"]) + star, num(r["spiking_macs"]), mj(r["energy_dense_mj"]),
               mj(r["energy_spiking_mj"]) + star, ratio(r["ratio"]) + star]
        rows.append(tuple(row + ([interval(r["ratio_ci"]) + (star if r["ratio_ci"] else "")] if conf is not None
                                 else [])))
    if is_bart(data):
        title = ("energy per sample: one teacher-forced forward "
                 f"({data['seq_len']} source / {data['target_len']} summary tokens, LM head on every position)")
    elif is_llama(data):
        title = f"energy per sample: one forward over {data['seq_len']} tokens (LM head on every position)"
    else:
        title = "energy per sample"
    blocks: list[Block] = [Table(title, tuple(columns), tuple(rows))]
    if star:
        blocks.append(Text("* random weights: not meaningful", "alert"))
    blocks.append(Text("mean fr: the MAC-weighted mean firing rate (each spiking op weighted by the MACs its spikes "
                       "drive), which prices the energy; convert, eval and training report the plain mean over neurons"))
    if conf is not None:
        first = next(r["ratio_ci"] for r in data["runs"] if r["ratio_ci"])
        blocks.append(Text(f"CI: bootstrap percentile interval of the ratio, {first['resamples']} resamples of the "
                           f"calibration {first['unit']}s (seed {data['seed']})"))
    return blocks


def memory_blocks(data: dict, star: str) -> list[Block]:
    """Per (k, T): the arithmetic ratio, each bound's ratio and break-even rate, and one sentence."""
    runs = [r for r in data["runs"] if r.get("memory")]
    if not runs:
        return []
    bounds = [b for b in BOUND_LABELS if b in runs[0]["memory"]]
    columns = ["k", "T", "mean fr", "arithmetic"]
    for b in bounds:
        columns += [f"{BOUND_SHORT[b]} ratio", f"{BOUND_SHORT[b]} break-even fr"]
    bits = {r["memory"]["quantised_ann_bits"] for r in runs}  # the ANN's bits follow T: one column label
    one = next(iter(bits)) if len(bits) == 1 else None     # when every run shares them, else per cell
    columns += [f"{BOUND_SHORT[b]} vs {one}-bit ANN" if one else f"{BOUND_SHORT[b]} vs quantised ANN" for b in bounds]
    rows = []
    for r in runs:
        m = r["memory"]
        row = [k_label(r["k"]), str(r["timesteps"]), rate(r["mean_firing_rate"]) + star, ratio(r["ratio"]) + star]
        for b in bounds:
            row += [ratio(m[b]["ratio"]) + star, break_even(m[b]["break_even_firing_rate"]) + star]
        row += [ratio(m[b]["quantised_ann"]["ratio"]) + star + ("" if one else f" ({m['quantised_ann_bits']}-bit)")
                for b in bounds]
        rows.append(tuple(row))
    title = ("memory bounds: arithmetic + data movement, one teacher-forced forward" if is_bart(data) else
             "memory bounds: arithmetic + data movement, one forward" if is_llama(data) else
             "memory bounds: arithmetic + data movement per sample")
    blocks: list[Block] = [Table(title, tuple(columns), tuple(rows))]
    blocks += [Text(memory_sentence(r, bounds), "note", f"at {run_label(r)}:") for r in runs]
    blocks.append(Text(MEMORY_NOTE))
    blocks += memory_what_if_table(runs, bounds, star)
    if data.get("target_len") is not None and "generation" in runs[0]["memory"][bounds[0]]:
        blocks += memory_generation_table(data, runs, bounds, star)
    return blocks


MEMORY_NOTE = ("ratio = E_dense / E_spiking with memory traffic added to the arithmetic on both sides (arithmetic: "
               "the energy table's ratio); WS = weight-stationary: "
               "every weight read once per inference, only activations, spikes and membranes move; ED = event-driven: "
               "every non-zero spike fetches the weight row it drives (one weight per AC); the dense model reads each "
               "weight once in both. Break-even fr: the MAC-weighted mean firing rate (all rates scaled in proportion) "
               "at which spiking costs as much as dense ('any (x)': x > 1, spikes win at every rate; '-': at none). vs ANN: E_ANN / E_spiking for the dense model moving its activations at "
               "ceil(log2(2T+1)) bits (Yan et al., arXiv 2409.08290). docs/energy-report.md gives every formula.")


def memory_what_if_table(runs: list[dict], bounds: list[str], star: str) -> list[Block]:
    """The memory cost file's what-if mean firing rates (`firing_rates:`): per (k, T) and rate, each
    bound's E_spiking and ratio, every rate scaled in proportion to the measured ones."""
    rates = max(([w["firing_rate"] for w in r["memory"][bounds[0]].get("what_if") or []] for r in runs), key=len)
    if not rates:  # none asked for (or no spike anywhere: nothing to scale)
        return []
    columns = ["k", "T", "measured fr", "what-if fr"]
    for b in bounds:
        columns += [f"{BOUND_SHORT[b]} E_spiking (mJ)", f"{BOUND_SHORT[b]} ratio"]
    rows = []
    for r in runs:
        for i, fr in enumerate(rates):
            row = [k_label(r["k"]), str(r["timesteps"]), rate(r["mean_firing_rate"]) + star, rate(fr)]
            for b in bounds:
                ws = r["memory"][b].get("what_if") or []
                row += [mj(ws[i]["energy_spiking_mj"]), ratio(ws[i]["ratio"])] if i < len(ws) else ["-", "-"]
            rows.append(tuple(row))
    return [Table("memory bounds at what-if mean firing rates (the cost file's firing_rates)", tuple(columns),
                  tuple(rows)),
            Text("what-if: every neuron's rate scaled in proportion so that the MAC-weighted mean is the what-if "
                 "rate; E_dense is unchanged")]


def _bounds_phrase(data: dict) -> str:
    """'two memory bounds' or 'the weight-stationary memory bound': the bounds the report holds."""
    bounds = [b for b in BOUND_LABELS if b in (data["runs"][0].get("memory") or {})]
    return "two memory bounds" if len(bounds) == 2 else f"the {BOUND_LABELS[bounds[0]]} memory bound"


def memory_sentence(run: dict, bounds: list[str]) -> str:
    """Under which assumption the spiking model's saving holds, in one sentence."""
    m, fr = run["memory"], run["mean_firing_rate"]
    holds = [b for b in bounds if (m[b]["ratio"] or 0) > 1]
    fails = [b for b in bounds if b not in holds]
    arith = "the arithmetic alone favours spikes" if (run["ratio"] or 0) > 1 else "even the arithmetic favours dense"

    def need(b: str) -> str:
        be = m[b]["break_even_firing_rate"]
        return ("it would not break even at any rate" if be is None else
                f"it would need a mean rate below {be:.3g} (measured {fr:.3f})")
    if holds and not fails:
        under = "both memory bounds" if len(holds) == 2 else "the memory bound asked for"
        return (f"{arith} ({ratio(run['ratio'])}), and the saving holds under {under} "
                f"({', '.join(BOUND_LABELS[b] + ' ' + ratio(m[b]['ratio']) for b in holds)}).")
    if not holds:
        return (f"{arith} ({ratio(run['ratio'])}), but the saving does not hold once data movement is counted: "
                + "; ".join(f"{BOUND_LABELS[b]} {ratio(m[b]['ratio'])}, {need(b)}" for b in fails) + ".")
    if holds != ["weight_stationary"]:  # not the usual order (weights reused win, per-spike fetches lose)
        return (f"{arith} ({ratio(run['ratio'])}); the saving holds under "
                f"{', '.join(BOUND_LABELS[b] + ' ' + ratio(m[b]['ratio']) for b in holds)}, not under "
                + "; ".join(f"{BOUND_LABELS[b]} {ratio(m[b]['ratio'])}, {need(b)}" for b in fails) + ".")
    return (f"{arith} ({ratio(run['ratio'])}); the saving holds only if weights stay on chip and are reused over "
            f"tokens and steps ({', '.join(BOUND_LABELS[b] + ' ' + ratio(m[b]['ratio']) for b in holds)}), not if "
            "every spike fetches its weights (" + "; ".join(f"{BOUND_LABELS[b]} {ratio(m[b]['ratio'])}, {need(b)}"
                                                               for b in fails) + ").")


def neurobench_blocks(data: dict, star: str) -> list[Block]:
    """NeuroBench's metrics per (k, T), per sample, and the attention matmuls it cannot see."""
    runs = [r for r in data["runs"] if r.get("neurobench")]
    if not runs:
        return []
    rows = []
    for r in runs:
        nb = r["neurobench"]
        syn, att = nb["SynapticOperations"], nb["attention_matmuls"]
        rows.append((k_label(r["k"]), str(r["timesteps"]), num(nb["Footprint"]), f"{nb['ConnectionSparsity']:.4f}",
                     f"{nb['ActivationSparsity']:.4f}" + star, num(syn["Effective_ACs"]) + star,
                     num(syn["Effective_MACs"]), num(syn["Dense"]), num(nb["MembraneUpdates"]),
                     # no spiking operand (spike_kv off): float MACs, fixed by the architecture, no random-weight mark
                     num(att["Effective_ACs"]) + (star if att["Effective_ACs"] else ""), num(att["Effective_MACs"]),
                     num(att["Dense"])))
    columns = ("k", "T", "Footprint (B)", "ConnectionSparsity", "ActivationSparsity", "Effective_ACs",
               "Effective_MACs", "Dense", "MembraneUpdates", "attention ACs", "attention MACs", "attention Dense")
    return [Table("NeuroBench metrics per sample (Linear layers; attention matmuls apart)", columns, tuple(rows)),
            Text(f"{runs[0]['neurobench']['source']}: Linear layers as NeuroBench's SynapticOperations counts them; "
                 "attention ACs / Dense: the Q.K^T and probs.V matmuls NeuroBench's layer hooks cannot see. Per real "
                 "sample (NeuroBench divides by the input's leading dimension, T times too many when T is folded "
                 "into the batch). attention MACs: those matmuls with no spiking operand (spike_kv off).")]


def memory_generation_table(data: dict, runs: list[dict], bounds: list[str], star: str) -> list[Block]:
    rows = []
    for r in runs:
        for b in bounds:
            for mode, label in MODES.items():
                g = r["memory"][b]["generation"][mode]
                s, tok = g["per_summary"], g["per_token"]
                rows.append((k_label(r["k"]), str(r["timesteps"]), BOUND_LABELS[b], label, num(tok["bytes_dense"]),
                             num(tok["bytes_spiking"]), num(tok["kv_cache_bytes_dense"]),
                             num(tok["kv_cache_bytes_spiking"]), mj(tok["energy_dense_mj"]),
                             mj(tok["energy_spiking_mj"]) + star, ratio(s["ratio"]) + star))
    columns = ("k", "T", "bound", "decoding", "bytes/token dense", "bytes/token spiking", "KV bytes/token dense",
               "KV bytes/token spiking", "E_dense/token (mJ)", "E_spiking/token (mJ)", "ratio")
    amortised = "the prompt amortised" if is_llama(data) else "encoder and cross K/V amortised"
    return [Table(f"generation with memory: {generation_title(data)}, per token "
                  f"({amortised}; each decoder step reads its weights once)", columns, tuple(rows),
                  frozenset({"bound", "decoding"}))]


def memory_components_table(run: dict, star: str) -> list[Block]:
    if not run.get("memory"):
        return []
    blocks: list[Block] = []
    for b, label in BOUND_LABELS.items():
        m = run["memory"].get(b)
        if not m:
            continue
        rows = [(component_label(c), num(c["bytes_dense"]), num(c["bytes_spiking"]) + star,
                 num(c["spiking_bytes"]["weights"]), num(c["spiking_bytes"]["activations"]),
                 num(c["spiking_bytes"]["spikes"]) + star, num(c["spiking_bytes"]["membrane"]),
                 num(c["spiking_bytes"]["kv_cache"]), mj(c["energy_dense_mj"]), mj(c["energy_spiking_mj"]) + star,
                 c["spike_format"] or "-")
                for c in m["components"]]
        rows.append(("total", num(m["bytes_dense"]), num(m["bytes_spiking"]) + star, num(m["spiking_bytes"]["weights"]),
                     num(m["spiking_bytes"]["activations"]), num(m["spiking_bytes"]["spikes"]) + star,
                     num(m["spiking_bytes"]["membrane"]), num(m["spiking_bytes"]["kv_cache"]),
                     mj(m["energy_dense_mj"]), mj(m["energy_spiking_mj"]) + star, m["spike_format"] or "-"))
        columns = ("component", "bytes dense", "bytes spiking", "weights", "activations", "spikes", "membrane",
                   "KV cache", "E_dense (mJ)", "E_spiking (mJ)", "spike format")
        blocks.append(Table(f"memory per component at {run_label(run)}, {label} (spiking bytes by kind; energies "
                            "include the arithmetic)", columns, tuple(rows), frozenset({"component", "spike format"}),
                            3, total_row=True))
    return blocks


def generation_table(data: dict, star: str) -> list[Block]:
    rows = []
    for r in data["runs"]:
        for mode, label in MODES.items():
            g = r["generation"][mode]
            s, tok, last = g["per_summary"], g["per_token"], g["last_token"]
            rows.append((k_label(r["k"]), str(r["timesteps"]), label, num(s["dense_macs"]), mj(s["energy_dense_mj"]),
                         mj(s["energy_spiking_mj"]) + star, ratio(s["ratio"]) + star, mj(tok["energy_dense_mj"]),
                         mj(tok["energy_spiking_mj"]) + star, mj(last["energy_spiking_mj"]) + star))
    llama = is_llama(data)
    title = f"generation: {generation_title(data)} " + (
        "(the prompt once, then one decoder step per token)" if llama else "(encoder once, decoder per token)")
    columns = ("k", "T", "decoding", "dense MACs", "E_dense (mJ)", "E_spiking (mJ)", "ratio", "E_dense/token (mJ)",
               "E_spiking/token (mJ)", "last token E_spiking (mJ)")
    note = ("per token = the whole generation / generated tokens (the prompt's forward amortised); with the KV cache "
            "each later step feeds one token against every cached K/V, without it every step re-runs the prefix; the "
            "LM head scores the last position only (logits_to_keep=1); last token = the step that yields the last "
            "token alone. Firing rates of the teacher-forced pass applied to every step." if llama else
            "per token = per summary / summary tokens (encoder and cross K/V amortised); last token = the "
            "decoder step at the last position alone. Firing rates of the teacher-forced pass applied to every "
            "step.")
    return [Table(title, columns, tuple(rows)), Text(note)]


def generation_lines_table(run: dict, star: str) -> Table:
    rows = tuple(
        (label, line["line"], line["charged"], num(line["dense_macs"]),
         rate(line["mean_firing_rate"]) + (star if line["mean_firing_rate"] is not None else ""),
         num(line["spiking_acs"]) + (star if line["spiking_acs"] else ""), num(line["spiking_macs"]),
         mj(line["energy_dense_mj"]), mj(line["energy_spiking_mj"]) + star)
        for mode, label in MODES.items() for line in run["generation"][mode]["lines"]
    )
    columns = ("decoding", "line", "charged", "dense MACs", "fr", "spiking ACs", "spiking MACs", "E_dense (mJ)",
               "E_spiking (mJ)")
    what = "generation" if "prompt" in {x["line"] for x in run["generation"]["kv_cache"]["lines"]} else "summary"
    return Table(f"{what} lines at {run_label(run)}", columns, rows, frozenset({"decoding", "line", "charged"}), 3)


def components_table(run: dict, star: str) -> list[Block]:
    total = run["energy_spiking_mj"] or 1.0
    # membrane updates, like MACs, are fixed by the architecture: no random-weight mark
    acs_star = lambda c: star if c["spiking_acs"] and c["component"] != "neuron_updates" else ""  # noqa: E731
    rows = [
        (component_label(c), num(c["macs"]), rate(c["firing_rate"]) + (star if c["firing_rate"] is not None else ""),
         num(c["spiking_acs"]) + acs_star(c), num(c["spiking_macs"]), mj(c["energy_dense_mj"]),
         mj(c["energy_spiking_mj"]) + acs_star(c),
         f"{c['energy_spiking_mj'] / total:.1%}" + star)  # a share of the random weights' total
        for c in run["components"]
    ]
    rows.append(("total", num(run["dense_macs"]), rate(run["mean_firing_rate"]) + star,
                 num(run["spiking_acs"]) + star, num(run["spiking_macs"]), mj(run["energy_dense_mj"]),
                 mj(run["energy_spiking_mj"]) + star, "100.0%"))
    columns = ("component", "MACs", "fr", "spiking ACs", "spiking MACs", "E_dense (mJ)", "E_spiking (mJ)",
               "share of E_spiking")
    neurons = run["neurons"]
    negative = [n for n in neurons if n["negative_rate"] > 0]
    elements = sum(n["elements"] for n in neurons) or 1
    positive_rate = sum(n["positive_rate"] * n["elements"] for n in neurons) / elements
    negative_rate = sum(n["negative_rate"] * n["elements"] for n in neurons) / elements
    return [Table(f"components at {run_label(run)} ({run['amplitudes']})", columns, tuple(rows),
                  frozenset({"component"}), 3, total_row=True),
            Text(f"spikes: +{positive_rate:.3f} / -{negative_rate:.3f} of all neuron outputs "
                 f"({len(negative)} of {len(neurons)} neurons emit -a spikes)")]


def layers_table(run: dict) -> list[Block]:
    keys = list(dict.fromkeys((row.get("stack"), row["layer"]) for row in run["layers"] if row["layer"] is not None))
    comps = [c for c in COMPONENTS if any(row["component"] == c and row["firing_rate"] is not None
                                           for row in run["layers"])]
    if not keys or not comps:
        return []
    rates = {(row.get("stack"), row["component"], row["layer"]): row["firing_rate"] for row in run["layers"]}
    rows = tuple((f"{stack} {layer}" if stack else str(layer), *[rate(rates.get((stack, c, layer))) for c in comps])
                 for stack, layer in keys)
    return [Table(f"firing rate per layer at {run_label(run)}", ("layer", *comps), rows, level=3)]


PAPER_NOT_APPLICABLE = ("not applicable to a decoder-only model: SpikeLM (ICML 2024) reports BERT only (and no BART or "
                        "decoder energy), so there is no reference setting to price the measured rates on; the MAC "
                        "count above is already checked against the Llama closed form at the model's own shape "
                        "(energy-method.md, section 5a)")


def paper_table(data: dict, star: str) -> list[Block]:
    if any(r["paper_setting"] is None for r in data["runs"]):
        return [Text(PAPER_NOT_APPLICABLE, "note", "paper setting:")]
    bart = is_bart(data)
    bounds = [b for b in BOUND_LABELS if data["runs"] and b in data["runs"][0]["paper_setting"].get("memory", {})]
    rows = tuple(
        (k_label(r["k"]), str(p["timesteps"]), rate(p["mean_firing_rate"]) + star, num(p["dense_macs"]),
         mj(p["energy_dense_mj"]), mj(p["energy_spiking_mj"]) + star, ratio(p["ratio"]) + star,
         *[ratio(p["memory"][b]["ratio"]) + star for b in bounds],
         *[break_even(p["memory"][b]["break_even_firing_rate"]) + star for b in bounds])
        for r in data["runs"] for p in [r["paper_setting"]]
    )
    title = ("paper setting: BART-base, 128/128 tokens teacher-forced, LM head as MAC, measured rates" if bart
             else "paper setting: BERT-base, 128 tokens, measured rates")
    note = ("the measured per-(stack, component) firing rates applied to BART-base (closed form, "
            "energy-method.md section 5); the paper reports no BART energy" if bart else
            "the measured per-component firing rates applied to BERT-base (closed form, pooler as MAC); "
            "the paper (SpikeLM, ICML 2024) reports 3.7x at T=4 and 12.9x at T=1 (secondary sources)")
    if bounds:
        note += "; WS / ED: the memory bounds at these shapes, with their break-even mean rates"
    columns = ("k", "T", "mean fr", "dense MACs", "E_dense (mJ)", "E_spiking (mJ)", "ratio",
               *[f"{BOUND_SHORT[b]} ratio" for b in bounds], *[f"{BOUND_SHORT[b]} break-even fr" for b in bounds])
    return [Table(title, columns, rows), Text(note)]


def purity_blocks(data: dict) -> list[Block]:
    run = data["runs"][0]
    floats, share = run["float_matmuls"], run["spike_driven_share"]
    if not floats:
        return [Text(f"every counted matmul is spike-driven ({share:.2%} of dense MACs)", "ok", "spike purity:")]
    rows = tuple((f["module"], f["op"], num(f["macs"]), str(f["steps"]), f["reason"]) for f in floats)
    lookups = any(f["op"] == "embedding" for f in floats)
    title = (f"spike purity: float ops left in the model (float x float matmuls: {1 - share:.3%} of dense MACs; "
             "embedding lookups: no MACs)" if lookups else
             f"spike purity: float x float matmuls left in the model ({1 - share:.3%} of dense MACs)")
    return [Table(title, ("module", "op", "MACs/step", "steps", "why float"), rows,
                  frozenset({"module", "op", "why float"}))]


# ---------------------------------------------------------------------------------------------
# the Markdown back end


def markdown(blocks: list[Block]) -> str:
    """The blocks as a Markdown document: headings for tables, bullets for the header lines."""
    parts: list[str] = []
    for i, block in enumerate(blocks):
        if isinstance(block, Table):
            heading = block.title[:1].upper() + block.title[1:]
            parts += [f"{'#' * block.level} {heading}", "", _md_table(block), ""]
        elif block.style == "title":
            parts += [f"# {block.text}", ""]
        elif block.style in ("lead", "header"):
            parts.append(f"- {block.text}")
            if i + 1 == len(blocks) or not _is_header(blocks[i + 1]):
                parts.append("")
        elif block.label:
            parts += [f"**{block.label[:1].upper()}{block.label[1:]}** {block.text}", ""]
        elif block.style == "alert":
            parts += [f"**{_md_escape(block.text)}**", ""]
        else:
            parts += [block.text, ""]
    return "\n".join(parts)


def _is_header(block: Block) -> bool:
    return isinstance(block, Text) and block.style in ("lead", "header")


def _md_escape(text: str) -> str:
    """Literal text in Markdown: the `*` that marks random-weight numbers, and table pipes."""
    return text.replace("*", "\\*").replace("|", "\\|")


def _md_table(table: Table) -> str:
    rows = [tuple(_md_escape(cell) for cell in row) for row in table.rows]
    if table.total_row:
        rows[-1] = (f"**{rows[-1][0]}**", *rows[-1][1:])
    align = ["---" if c in table.left else "--:" for c in table.columns]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_text(report: EnergySweepReport, *, detail: bool = True) -> str:
    """report.md / `--format markdown`: the same tables as the terminal, in Markdown."""
    return markdown(report_blocks(report, detail=detail))


# ---------------------------------------------------------------------------------------------
# the CSV form

CSV_COLUMNS = (
    "k", "timesteps", "scope", "component", "macs", "firing_rate", "spiking_acs", "spiking_macs",
    "energy_dense_mj", "energy_spiking_mj", "ratio", "ratio_ci_low", "ratio_ci_high", "firing_rates_meaningful",
    "bytes_dense", "bytes_spiking", "break_even_firing_rate", "value",
)
"""`value` holds the NeuroBench metrics (`--neurobench`): one row each, scope 'neurobench', the
metric's name in `component` (e.g. `SynapticOperations.Effective_ACs`). Generation with memory (BART,
causal LMs): scope `memory_<bound>_generation_<mode>`, components `per_summary` / `per_token` (and their
`.kv_cache` bytes) and `line.<part>` per part of the model."""


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
                             "component": component_label(c).replace(" ", ".")})
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
        for bound, m in (r.get("memory") or {}).items():
            if bound not in BOUND_LABELS:
                continue
            for c in [None, *m["components"]]:
                row = m if c is None else c
                writer.writerow({
                    **base, "scope": f"memory_{bound}", "component": "" if c is None else component_label(c).replace(" ", "."),
                    "firing_rate": m["mean_firing_rate"] if c is None else None,
                    "energy_dense_mj": row["energy_dense_mj"], "energy_spiking_mj": row["energy_spiking_mj"],
                    "ratio": m["ratio"] if c is None else None, "bytes_dense": row["bytes_dense"],
                    "bytes_spiking": row["bytes_spiking"],
                    "break_even_firing_rate": m["break_even_firing_rate"] if c is None else None,
                })
            for w in m.get("what_if") or []:  # the cost file's what-if mean firing rates
                writer.writerow({**base, "scope": f"memory_{bound}", "component": "what_if",
                                 "firing_rate": w["firing_rate"], "energy_dense_mj": m["energy_dense_mj"],
                                 "energy_spiking_mj": w["energy_spiking_mj"], "ratio": w["ratio"]})
            for mode, g in (m.get("generation") or {}).items():  # encoder-decoder / causal generation, bytes included
                parts = [(part, g[part]) for part in ("per_summary", "per_token") if isinstance(g.get(part), dict)]
                parts += [(f"line.{x['line']}", x) for x in g.get("lines") or []]
                for part, x in parts:
                    writer.writerow({**base, "scope": f"memory_{bound}_generation_{mode}", "component": part,
                                     "energy_dense_mj": x["energy_dense_mj"], "energy_spiking_mj": x["energy_spiking_mj"],
                                     "ratio": x["ratio"], "bytes_dense": x["bytes_dense"],
                                     "bytes_spiking": x["bytes_spiking"]})
                    if x.get("kv_cache_bytes_dense") is not None and not part.startswith("line."):
                        writer.writerow({**base, "scope": f"memory_{bound}_generation_{mode}",
                                         "component": f"{part}.kv_cache", "bytes_dense": x["kv_cache_bytes_dense"],
                                         "bytes_spiking": x["kv_cache_bytes_spiking"]})
            q = m.get("quantised_ann")
            if q:  # the dense model at ceil(log2(2T+1))-bit activations: its energy and E_ANN / E_spiking
                writer.writerow({**base, "scope": f"memory_{bound}", "component": f"vs_{q['bits']}bit_ann",
                                 "energy_dense_mj": q["energy_mj"], "ratio": q["ratio"], "bytes_dense": q["bytes"]})
        nb = r.get("neurobench") or {}
        for name, value in nb.items():
            for metric, v in (value.items() if isinstance(value, dict) else [(None, value)]):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    writer.writerow({**base, "scope": "neurobench", "component": name if metric is None else f"{name}.{metric}",
                                     "value": v})
        p = r["paper_setting"]
        if p is None:  # a decoder-only model: no paper setting
            continue
        writer.writerow({
            **base, "scope": "paper_setting", "component": "", "macs": p["dense_macs"],
            "firing_rate": p["mean_firing_rate"], "spiking_acs": p["spiking_acs"], "spiking_macs": p["spiking_macs"],
            "energy_dense_mj": p["energy_dense_mj"], "energy_spiking_mj": p["energy_spiking_mj"], "ratio": p["ratio"],
        })
        for bound, m in (p.get("memory") or {}).items():
            if bound in BOUND_LABELS:
                writer.writerow({
                    **base, "scope": f"paper_setting_memory_{bound}", "component": "",
                    "firing_rate": p["mean_firing_rate"], "energy_dense_mj": m["energy_dense_mj"],
                    "energy_spiking_mj": m["energy_spiking_mj"], "ratio": m["ratio"], "bytes_dense": m["bytes_dense"],
                    "bytes_spiking": m["bytes_spiking"], "break_even_firing_rate": m["break_even_firing_rate"],
                })
    return buf.getvalue()


__all__ = ["CSV_COLUMNS", "Block", "csv_text", "NOT_MEANINGFUL", "TITLE", "Table", "Text", "header_lines", "markdown", "markdown_text",
           "report_blocks"]
