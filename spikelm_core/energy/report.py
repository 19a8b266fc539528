"""The energy report: dataclasses and the stable JSON schema `spikelm.energy/2` (docs/energy-report.md).

- `EnergyRow` / `EnergyReport`: the energy arithmetic's result for one model at one shape (rows,
  per-component and per-layer sums, `totals()`: the one place the totals of a report are written);
- `GenerationMode` / `GenerationEnergy`: one generation (a BART summary, or a Llama continuation of a
  prompt) with and without the KV cache (seq2seq.py);
- `EnergyRun` (one (k, T) point of the sweep, with `NeuronRates`, `Interval`, `FloatMatmul`) and
  `EnergySweepReport` (everything `spikelm energy` shows); `EnergySweepReport.to_dict()` is the schema.

Nothing here computes energies; `estimate.energy_from_counts` fills these objects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from spikelm_core.energy.components import COMPONENTS, STACKS
from spikelm_core.energy.costs import CostProfile
from spikelm_core.energy.memory import MemoryCost, MemoryReport, SpikingTerms

SCHEMA = "spikelm.energy/2"
"""Version tag of `EnergySweepReport.to_dict()`; bumped on any incompatible change."""

def assumptions_text(*, count_norm: bool = False, memory: bool = False, terms: SpikingTerms = SpikingTerms(),
                     not_billed: Mapping[str, str] | None = None) -> str:
    """The report's assumptions line: what the arithmetic counts (LayerNorm only with --count-norm, the
    spiking side's membrane updates and alpha rescalings only with their switches) and whether data
    movement is priced (the memory bounds) or left out; `not_billed` as for `estimate.included_items`."""
    why = {key: f"; {text}" for key, text in (not_billed or {}).items()}
    excluded = "embedding lookups, " + ("" if count_norm else "LayerNorm, ") + (
        "softmax, GELU, residual and bias adds, the mean over T"
        + ("" if terms.neuron_updates else " and neuron membrane updates"))
    return (
        ("arithmetic estimate, with data movement in the memory bounds beside it. " if memory else
         "arithmetic-only estimate, ignores data movement. ")
        + "E_dense = E_MAC x MACs; E_spiking = E_AC x sum_op(T x fr_op x MACs_op) + E_MAC x MACs_float"
        + (" + E_AC x membrane updates" if terms.neuron_updates else "")
        + (" + E_MAC x alpha rescalings" if terms.alpha_scale else "") + "; "
        "per sample at a fixed sequence length; one AC per non-zero spike of either sign "
        "(ternary -alpha spikes are subtractions); alpha folded into the weights"
        + ("; the rescaling by alpha this leaves billed as one MAC per output element of each spike-driven op "
           "for each step after the first, whose alpha folds in (--count-alpha-scale" + why.get("alpha_scale", "")
           + "); " if terms.alpha_scale else "; ")
        + ("membrane updates billed as one AC per element of a stateful neuron per step after the first, spiking "
           "side only "
           "(--count-neuron-updates" + why.get("neuron_updates", "") + "); " if terms.neuron_updates else "")
        + ("LayerNorm billed as MACs on both sides (--count-norm; every time step on the spiking side); " if count_norm
           else "")
        + f"excluded on both sides: {excluded}"
    )


def caveat_text(profile: CostProfile | None = None, terms: SpikingTerms = SpikingTerms()) -> str:
    """The caveat of an arithmetic-only report, naming its cost profile (fp32 at 45 nm by default)."""
    costs = "45 nm fp32 costs" if profile is None or profile.name == "fp32" else f"the {profile.name} costs"
    return (
        f"This estimate covers arithmetic only, at {costs}: it leaves out memory access and data "
        f"movement, addressing{' and control' if terms.neuron_updates else ', control and state updates'}. Yan et al. (arXiv 2409.08290) count data "
        "movement and compare SNNs with equivalent quantised ANNs: under typical neuromorphic-hardware "
        "assumptions, SNNs with moderate T (5-10) then need average spike rates below about 6% to win "
        "(6.4% in v2-v3, 5.7% at T = 5 in v4). SpikeLM's ~33% is far above that."
    )


ASSUMPTIONS = assumptions_text()
CAVEAT = caveat_text()

MEMORY_CAVEAT = (
    "The arithmetic ratio covers arithmetic only. The memory bounds add the bytes moved under the dataflow "
    "bounds asked for (weight-stationary: each weight read once per inference; event-driven: each spike fetches "
    "its weights), priced per byte by the chosen memory cost; they are bounds, not a simulation of any chip: no "
    "addressing, control or caching, batch 1. Yan et al. (arXiv 2409.08290) find that SNNs with moderate T "
    "need spike rates below about 6% to beat an equivalent quantised ANN once data movement counts (5.7% at "
    "T = 5 in v4)."
)


@dataclass(frozen=True)
class EnergyRow:
    """One op (module x operator) of the model, dense and spiking side by side."""

    component: str
    layer: int | None
    macs: int
    """Dense MACs per sample and per time step."""
    firing_rate: float | None
    """Non-zero fraction of the spiking operand; None for float ops (billed as MACs)."""
    spiking_acs: float
    """T · fr · macs for spiking ops, else 0."""
    spiking_macs: int
    """MACs the spiking model still does in float (steps · macs), else 0."""
    energy_dense_mj: float
    energy_spiking_mj: float
    module: str = ""
    op: str = ""
    operand: str | None = None
    stack: str | None = None
    """'encoder' / 'decoder' for an encoder-decoder model (BART), else None."""


@dataclass(frozen=True)
class EnergyReport:
    """Dense versus spiking energy of one model at one input shape, with its assumptions."""

    rows: tuple[EnergyRow, ...]
    profile: CostProfile
    num_timesteps: int
    total_macs: int
    """Dense MACs per sample (all rows)."""
    total_spiking_acs: float
    total_spiking_macs: int
    energy_dense_mj: float
    energy_spiking_mj: float
    ratio: float
    """energy_dense_mj / energy_spiking_mj (inf when the spiking side costs nothing)."""
    mean_firing_rate: float | None
    """MAC-weighted mean firing rate over the spiking ops (None if there are none)."""
    seq_len: int | None = None
    included: tuple[str, ...] = ()
    """What the counts include, for the report header."""
    assumptions: str = ASSUMPTIONS
    caveat: str = CAVEAT

    def by_component(self) -> tuple[EnergyRow, ...]:
        """Rows summed per (stack, component) over layers (layer None; firing rate MAC-weighted).

        A BERT has one stack (None), so this is per component."""
        return _aggregate(self.rows, lambda r: (r.stack, r.component, None))

    def by_layer(self) -> tuple[EnergyRow, ...]:
        """Rows summed per (stack, component, layer)."""
        return _aggregate(self.rows, lambda r: (r.stack, r.component, r.layer))

    def totals(self, per: int = 1) -> dict[str, Any]:
        """The report's totals, the keys every run, line and paper setting of the JSON carries.

        `per` divides the counts and energies (e.g. by the tokens of a summary); the mean firing
        rate and the ratio are unchanged by it. `ratio` is None when the spiking side costs nothing.
        """
        scale = (lambda x: x) if per == 1 else (lambda x: x / per)
        return {
            "mean_firing_rate": self.mean_firing_rate,
            "dense_macs": scale(self.total_macs),
            "spiking_acs": scale(self.total_spiking_acs),
            "spiking_macs": scale(self.total_spiking_macs),
            "energy_dense_mj": scale(self.energy_dense_mj),
            "energy_spiking_mj": scale(self.energy_spiking_mj),
            "ratio": None if math.isinf(self.ratio) or math.isnan(self.ratio) else self.ratio,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the same numbers as the table)."""
        data = asdict(self)
        data["ratio"] = None if math.isinf(self.ratio) else self.ratio
        data["by_component"] = [asdict(r) for r in self.by_component()]
        return data


def mac_weighted_rate(rows: Iterable[EnergyRow]) -> float | None:
    """The mean firing rate of the spike-driven rows, each weighted by its MACs (None when they have none):
    the report's `mean_firing_rate` and each aggregated row's rate."""
    spiking = [r for r in rows if r.firing_rate is not None]
    macs = sum(r.macs for r in spiking)
    return sum(r.firing_rate * r.macs for r in spiking) / macs if macs else None


def _aggregate(rows: Iterable[EnergyRow], key: Any) -> tuple[EnergyRow, ...]:
    groups: dict[tuple[str | None, str, int | None], list[EnergyRow]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    out = []
    for (stack, component, layer), members in groups.items():
        macs = sum(r.macs for r in members)
        spiking = [r for r in members if r.firing_rate is not None]
        rate = mac_weighted_rate(spiking)
        if rate is None and spiking:
            rate = sum(r.firing_rate for r in spiking) / len(spiking)
        out.append(
            EnergyRow(
                component=component,
                layer=layer,
                macs=macs,
                firing_rate=rate,
                spiking_acs=sum(r.spiking_acs for r in members),
                spiking_macs=sum(r.spiking_macs for r in members),
                energy_dense_mj=sum(r.energy_dense_mj for r in members),
                energy_spiking_mj=sum(r.energy_spiking_mj for r in members),
                module=members[0].module if len(members) == 1 else "",
                op=members[0].op if len({r.op for r in members}) == 1 else "",
                operand=members[0].operand if len(members) == 1 else None,
                stack=stack,
            )
        )
    out.sort(key=lambda r: (STACKS.index(r.stack) if r.stack in STACKS else len(STACKS), r.layer is None, r.layer or 0,
                            COMPONENTS.index(r.component) if r.component in COMPONENTS else len(COMPONENTS)))
    return tuple(out)


CHARGED = {
    "encoder": "once per input",
    "prompt": "once per input",  # decoder-only: the prompt's forward (step 1), both modes
    "cross_kv": "once per input",  # with the KV cache; per generated token without it
    "decoder": "per generated token",
    "lm_head": "per generated token",
}
"""How each line of a summary is charged (seq2seq.py); cross K/V: per generated token without the cache."""


@dataclass(frozen=True)
class GenerationMode:
    """The energy of one summary, with or without the KV cache."""

    cache: bool
    target_len: int
    lines: dict[str, EnergyReport]
    """Per line (LINES order; lines with no ops left out), each summed over the summary."""
    per_summary: EnergyReport
    """All lines together."""
    last_token: EnergyReport
    """The decoder step at position target_len alone (decoder + LM head, no once-per-input work)."""

    def _charged(self, line: str) -> str:
        if line == "cross_kv" and not self.cache:
            return "per generated token"
        if line == "decoder" and "prompt" in self.lines:  # decoder-only: step 1 is the prompt's line
            return "per generated token after the first"
        return CHARGED[line]

    def to_dict(self) -> dict[str, Any]:
        m = self.target_len
        return {
            "per_summary": self.per_summary.totals(),
            "per_token": self.per_summary.totals(per=m),
            "last_token": self.last_token.totals(),
            "lines": [
                {"line": line, "charged": self._charged(line), **report.totals()}
                for line, report in self.lines.items()
            ],
        }


@dataclass(frozen=True)
class GenerationEnergy:
    """Energy of generating `target_len` tokens: a BART summary from `source_len` source tokens, or a
    decoder-only continuation of a prompt of `source_len` tokens (JSON `prompt_len`)."""

    source_len: int
    target_len: int
    kv_cache: GenerationMode
    no_cache: GenerationMode
    decoder_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            ("prompt_len" if self.decoder_only else "source_len"): self.source_len,
            "target_len": self.target_len,
            "kv_cache": self.kv_cache.to_dict(),
            "no_cache": self.no_cache.to_dict(),
        }


@dataclass(frozen=True)
class Interval:
    """A bootstrap percentile interval."""

    low: float
    high: float
    confidence: float
    resamples: int
    unit: str = "sequence"
    """What was resampled with replacement: calibration sequences."""


@dataclass(frozen=True)
class NeuronRates:
    """Firing of one neuron (the spiking operand of one op) over the traced batches."""

    name: str
    component: str
    layer: int | None
    kind: str
    """'binary', 'ternary', 'dense' or 'none'."""
    firing_rate: float
    positive_rate: float
    negative_rate: float
    step_rates: tuple[float, ...]
    step_positive: tuple[float, ...]
    step_negative: tuple[float, ...]
    elements: int
    """Elements counted (pads excluded), all steps."""


@dataclass(frozen=True)
class FloatMatmul:
    """A float x float matmul left in the spiking model (no spiking operand): billed as MACs."""

    module: str
    op: str
    component: str
    layer: int | None
    macs: int
    """Per sample and per step."""
    steps: int
    """How many times it runs per forward (T when it sits inside the time loop)."""
    reason: str
    stack: str | None = None
    """BART: 'encoder' / 'decoder' (None for BERT and the LM head; not in the JSON when None)."""


@dataclass(frozen=True)
class EnergyRun:
    """One (k, T) point of the sweep."""

    k: float | None
    """Frequency coefficient k (None for neurons without one: LIF, fixed amplitudes)."""
    timesteps: int
    report: EnergyReport
    paper: EnergyReport | None
    """The measured per-component rates applied to BERT-base at 128 tokens (BART-base at 128/128 for a
    BART; closed form); None for a decoder-only model (the paper reports none)."""
    neurons: tuple[NeuronRates, ...]
    per_position: dict[str, tuple[float, ...]]
    """Firing rate per token position: 'all' neurons and per component."""
    float_matmuls: tuple[FloatMatmul, ...]
    amplitudes: str
    """'calibrated at k' (recalibrated on the first batch) or 'checkpoint' (its saved amplitudes)."""
    firing_rates_meaningful: bool
    ratio_ci: Interval | None = None
    mean_firing_rate_ci: Interval | None = None
    generation: GenerationEnergy | None = None
    """BART and Llama: one generation with and without the KV cache (seq2seq.py)."""
    memory: MemoryReport | None = None
    """The memory bounds (memory.py); None with --memory none."""
    neurobench: dict[str, Any] | None = None
    """NeuroBench-compatible metrics per sample (neurobench.py); None unless asked for."""
    paper_memory: MemoryReport | None = None
    """The memory bounds of the paper setting (BERT-base / BART-base closed-form shapes)."""

    @property
    def spike_driven_share(self) -> float:
        """Fraction of the dense twin's MACs that the spiking model runs as spike-driven ACs."""
        total = self.report.total_macs
        return sum(r.macs for r in self.report.rows if r.firing_rate is not None) / total if total else 0.0


@dataclass(frozen=True)
class EnergySweepReport:
    """Everything `spikelm energy` shows; `to_dict()` is the documented JSON schema."""

    runs: tuple[EnergyRun, ...]
    model: dict[str, Any]
    """source, resolved path, kind ('spiking', 'dense', 'config-only'), architecture, shape."""
    profile: CostProfile
    seq_len: int
    data: dict[str, Any]
    """source ('packaged calibration text', a file, or 'random token ids'), batches, sequences, tokens."""
    dense_twin: dict[str, Any]
    """The dense Hugging Face twin's own MAC count: class, total and per component."""
    count_norm: bool
    seed: int
    seconds: float
    assumptions: str = ASSUMPTIONS
    caveat: str = CAVEAT
    included: tuple[str, ...] = ()
    target_len: int | None = None
    """BART and Llama: tokens generated per input (None for BERT)."""
    memory_cost: MemoryCost | None = None
    """The cost of a byte moved (memory.py); None with --memory none."""
    decoder_only: bool = False
    """A decoder-only model (Llama): `seq_len` is the forward's length and the prompt of generation."""
    count_neuron_updates: bool = False
    """Membrane updates billed on the spiking side (--count-neuron-updates)."""
    count_alpha_scale: bool = False
    """The rescaling by alpha billed on the spiking side (--count-alpha-scale)."""

    @property
    def is_seq2seq(self) -> bool:
        return self.target_len is not None and not self.decoder_only

    @property
    def firing_rates_meaningful(self) -> bool:
        return all(r.firing_rates_meaningful for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form (schema `spikelm.energy/2`, docs/energy-report.md).

        Top level::

            schema            "spikelm.energy/2"
            model             {source, path, kind: spiking|dense|config-only, architecture,
                               hidden_size, num_hidden_layers, num_attention_heads,
                               intermediate_size, max_position_embeddings}
            constants         {profile, e_mac_pj, e_ac_pj, source}
            memory_constants  with a memory bound: {preset, access_bits, points, source}
            seq_len           tokens per sequence (MACs are per sample at this length; BART: source;
                              Llama: the forward's length and the prompt of generation)
            target_len        BART: summary tokens per input; Llama: tokens generated after the prompt
            data              {source, batches, sequences, tokens}
            count_norm        LayerNorm counted on both sides
            count_neuron_updates, count_alpha_scale   the spiking side's membrane updates (ACs) and
                              rescalings by alpha (MACs) billed: rows `neuron_updates` / `alpha_scale`
            dense_twin        {class, macs, components: {component: macs}}
            firing_rates_meaningful   false for a config-only (random weights) audit
            assumptions, included, caveat
            seed, seconds
            runs              one entry per (k, T), in sweep order (T outer, k inner)

        Each run::

            k, timesteps, amplitudes, firing_rates_meaningful
            mean_firing_rate  MAC-weighted over the spike-driven ops
            dense_macs        dense twin MACs per sample          (the table's "dense MACs")
            spiking_acs       sum over spike-driven ops of T * fr * MACs (+ membrane updates when counted)
            spiking_macs      float MACs the spiking model still runs (x steps; + alpha rescalings when counted)
            energy_dense_mj, energy_spiking_mj, ratio (null if the spiking side is 0)
            ratio_ci, mean_firing_rate_ci   {low, high, confidence, resamples, unit} or null
            spike_driven_share  fraction of dense MACs that are spike-driven
            components        [{component, macs, firing_rate, spiking_acs, spiking_macs,
                                energy_dense_mj, energy_spiking_mj}]  rows sum to the totals
            layers            the same per (component, layer)
            neurons           [{name, component, layer, kind, firing_rate, positive_rate,
                                negative_rate, step_rates, step_positive, step_negative, elements}]
            per_position      {"all": [L rates], "<component>": [L rates]}  pads excluded (BART: "encoder",
                              "decoder", "<stack>.<component>"; firing_pass.per_position)
            float_matmuls     [{module, op, component, layer, macs, steps, reason}]
            paper_setting     {model, seq_len, timesteps, dense_macs, spiking_acs, spiking_macs,
                               energy_dense_mj, energy_spiking_mj, ratio, mean_firing_rate,
                               components, memory (per bound: totals, ratio, break-even)};
                              null for a decoder-only model (the paper reports none)
            memory            with a memory bound: {value_bytes, spike_bits, quantised_ann_bits,
                              weight_stationary, event_driven} (memory.MemoryReport.to_dict)
            neurobench        with --neurobench: NeuroBench-compatible metrics (neurobench.py)
            generation        BART and Llama: {source_len (Llama: prompt_len), target_len, kv_cache,
                              no_cache}; each mode {per_summary, per_token, last_token: totals,
                              lines: [{line, charged, totals}]} (GenerationEnergy.to_dict)

        BART rows of components / layers / float_matmuls also carry `stack`; the BART model block
        carries model_type and the BART shape keys instead of BERT's, the Llama block model_type and
        the Llama shape keys (num_key_value_heads, head_dim, vocab_size, tie_word_embeddings, ...).
        """
        return {
            "schema": SCHEMA,
            "model": dict(self.model),
            "constants": {
                "profile": self.profile.name,
                "e_mac_pj": self.profile.e_mac_pj,
                "e_ac_pj": self.profile.e_ac_pj,
                "source": self.profile.source,
            },
            **({"memory_constants": self.memory_cost.to_dict()} if self.memory_cost is not None else {}),
            "seq_len": self.seq_len,
            **({"target_len": self.target_len} if self.target_len is not None else {}),
            "data": dict(self.data),
            "count_norm": self.count_norm,
            "count_neuron_updates": self.count_neuron_updates,
            "count_alpha_scale": self.count_alpha_scale,
            "dense_twin": dict(self.dense_twin),
            "firing_rates_meaningful": self.firing_rates_meaningful,
            "assumptions": self.assumptions,
            "included": list(self.included),
            "caveat": self.caveat,
            "seed": self.seed,
            "seconds": round(self.seconds, 3),
            "runs": [_run_dict(run) for run in self.runs],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def _row_dict(row: EnergyRow, *, layer: bool) -> dict[str, Any]:
    stack = {"stack": row.stack} if row.stack is not None else {}  # BART rows only: BERT's schema is unchanged
    data = {
        **stack,
        "component": row.component,
        "macs": row.macs,
        "firing_rate": row.firing_rate,
        "spiking_acs": row.spiking_acs,
        "spiking_macs": row.spiking_macs,
        "energy_dense_mj": row.energy_dense_mj,
        "energy_spiking_mj": row.energy_spiking_mj,
    }
    if layer:
        data = {**stack, "component": row.component, "layer": row.layer,
                **{k: v for k, v in data.items() if k not in ("component", "stack")}}
    return data


BART_PAPER_MODEL = ("BART-base (closed form: d=768, 6+6 layers, 12 heads, d_ff=3072, V=50265), teacher-forced "
                    "at 128/128 tokens, LM head as MAC")


def _float_dict(f: FloatMatmul) -> dict[str, Any]:
    data = asdict(f)
    if data["stack"] is None:
        del data["stack"]  # BERT's schema is unchanged
    return data


def _paper_dict(run: EnergyRun) -> dict[str, Any] | None:
    paper = run.paper
    if paper is None:
        return None
    return {
        "model": BART_PAPER_MODEL if run.generation is not None else
        "BERT-base (closed form: d=768, 12 layers, 12 heads, d_ff=3072, pooler)",
        "seq_len": paper.seq_len,
        "timesteps": paper.num_timesteps,
        **paper.totals(),
        "components": [_row_dict(r, layer=False) for r in paper.by_component()],
        **({"memory": run.paper_memory.summary()} if run.paper_memory is not None else {}),
    }


def _run_dict(run: EnergyRun) -> dict[str, Any]:
    return {
        "k": run.k,
        "timesteps": run.timesteps,
        "amplitudes": run.amplitudes,
        "firing_rates_meaningful": run.firing_rates_meaningful,
        **run.report.totals(),
        "ratio_ci": asdict(run.ratio_ci) if run.ratio_ci else None,
        "mean_firing_rate_ci": asdict(run.mean_firing_rate_ci) if run.mean_firing_rate_ci else None,
        "spike_driven_share": run.spike_driven_share,
        "components": [_row_dict(r, layer=False) for r in run.report.by_component()],
        "layers": [_row_dict(r, layer=True) for r in run.report.by_layer()],
        "neurons": [
            {**asdict(n), "step_rates": list(n.step_rates), "step_positive": list(n.step_positive),
             "step_negative": list(n.step_negative)}
            for n in run.neurons
        ],
        "per_position": {k: list(v) for k, v in run.per_position.items()},
        "float_matmuls": [_float_dict(f) for f in run.float_matmuls],
        **({"generation": run.generation.to_dict()} if run.generation is not None else {}),
        **({"memory": run.memory.to_dict()} if run.memory is not None else {}),
        **({"neurobench": dict(run.neurobench)} if run.neurobench is not None else {}),
        "paper_setting": _paper_dict(run),
    }
