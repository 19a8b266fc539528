"""The energy model: dense MACs versus spiking ACs, per component and layer (energy-method.md).

    E_dense   = E_MAC · MACs
    E_spiking = E_AC · Σ_op T · fr_op · MACs_op  +  E_MAC · MACs_float

`MACs_op` is the per-step count of a spiking op (the same as its dense twin), `fr_op` the non-zero
fraction of its spiking operand (a -alpha spike is one AC, like +alpha), `MACs_float` the ops with
two float operands (pooler, heads). It is arithmetic only and ignores data movement (section 9).

`energy_from_counts` is the whole arithmetic on plain numbers; `estimate_energy` counts a model
first; `paper_setting` applies firing rates to the BERT-base closed form (the paper's setting).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Union

from torch import nn

from spikelm_core.energy.costs import FP32, CostProfile
from spikelm_core.energy.errors import EnergyAuditError
from spikelm_core.energy.firing import neuron_module_names
from spikelm_core.energy.macs import (
    COMPONENTS,
    DEFAULT_SEQ_LEN,
    ENCODER_COMPONENTS,
    SPIKING_COMPONENTS,
    STACKS,
    MacRow,
    bert_layer_macs,
    count_macs,
)
from spikelm_core.errors import ConfigError

PJ_PER_MJ = 1e9

ASSUMPTIONS = (
    "arithmetic-only estimate, ignores data movement. "
    "E_dense = E_MAC x MACs; E_spiking = E_AC x sum_op(T x fr_op x MACs_op) + E_MAC x MACs_float; "
    "per sample at a fixed sequence length; one AC per non-zero spike of either sign "
    "(ternary -alpha spikes are subtractions); alpha folded into the weights; "
    "excluded on both sides: embedding lookups, LayerNorm, softmax, GELU, residual and bias adds, "
    "the mean over T and neuron membrane updates"
)

CAVEAT = (
    "This estimate covers arithmetic only, at 45 nm and fp32: it leaves out memory access and data "
    "movement, addressing, control and state updates. Yan et al. (arXiv 2409.08290) count data "
    "movement and compare SNNs with equivalent quantised ANNs: under typical neuromorphic-hardware "
    "assumptions, SNNs with moderate T (5-10) then need average spike rates below about 6% to win "
    "(6.4% in v2-v3, 5.7% at T = 5 in v4). SpikeLM's ~33% is far above that."
)

FiringRates = Union[float, Mapping[Any, float]]
"""One rate for every spiking op, or a mapping keyed by operand neuron name, (component, layer)
or component; lookups try them in that order."""


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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the same numbers as the table)."""
        data = asdict(self)
        data["ratio"] = None if math.isinf(self.ratio) else self.ratio
        data["by_component"] = [asdict(r) for r in self.by_component()]
        return data


def _aggregate(rows: Iterable[EnergyRow], key: Any) -> tuple[EnergyRow, ...]:
    groups: dict[tuple[str | None, str, int | None], list[EnergyRow]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    out = []
    for (stack, component, layer), members in groups.items():
        macs = sum(r.macs for r in members)
        spiking = [r for r in members if r.firing_rate is not None]
        spiking_macs = sum(r.macs for r in spiking)
        rate = sum(r.firing_rate * r.macs for r in spiking) / spiking_macs if spiking_macs else None
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


def _is_spiking(row: MacRow) -> bool:
    if row.spiking is not None:
        return row.spiking
    return row.operand is not None or row.component in SPIKING_COMPONENTS


def _lookup_rate(row: MacRow, firing_rates: FiringRates) -> float | None:
    if not isinstance(firing_rates, Mapping):
        return firing_rates
    stacked = ((row.stack, row.component, row.layer), (row.stack, row.component)) if row.stack is not None else ()
    for key in (row.operand, *stacked, (row.component, row.layer), row.component):
        if key is not None and key in firing_rates:
            return firing_rates[key]
    return None


def _check_rate(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"not a number: {value!r}"
    if not 0.0 <= value <= 1.0:
        return f"outside [0, 1]: {value!r}"
    return None


def energy_from_counts(
    mac_rows: Iterable[MacRow],
    firing_rates: FiringRates,
    timesteps: int,
    profile: CostProfile = FP32,
    *,
    seq_len: int | None = None,
    included: Iterable[str] = (),
) -> EnergyReport:
    """The energy arithmetic on plain numbers: MAC rows, firing rates, T and a cost profile.

    Rows marked `spiking` (from a spiking model's count), or, when unmarked, rows of the spiking
    components (q, k, v, o, ffn1, ffn2, qk, av) or with an `operand`, are billed as ACs: T · fr · macs · E_AC. All other rows are float: steps · macs · E_MAC. The
    dense side is macs · E_MAC for every row.

    Args:
        mac_rows: per-sample, per-step MACs (e.g. `count_macs(model).rows`, or built by hand).
        firing_rates: a single rate, or a mapping keyed by the row's operand neuron name,
            (stack, component, layer), (stack, component) (BART rows), (component, layer) or
            component (tried in that order).
        timesteps: T of the spiking model.
        profile: E_MAC / E_AC in pJ.

    Raises:
        EnergyAuditError: a spiking row with no firing rate, a rate outside [0, 1], or a row that
            ran a number of steps other than 1 or T.
    """
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps <= 0:
        raise EnergyAuditError(f"timesteps must be a positive integer, got {timesteps!r}")
    problems: list[str] = []
    if not isinstance(firing_rates, Mapping):
        problem = _check_rate(firing_rates)
        if problem:
            problems.append(f"firing rate {problem}")
    else:
        problems += [f"firing rate for {k!r} {p}" for k, v in firing_rates.items() if (p := _check_rate(v))]
    if problems:
        raise EnergyAuditError("bad firing rate(s)", details=problems)

    rows: list[EnergyRow] = []
    missing: list[str] = []
    e_mac, e_ac = profile.e_mac_pj, profile.e_ac_pj
    for row in mac_rows:
        if row.steps not in (1, timesteps):
            raise EnergyAuditError(
                f"row '{row.module or row.component}' ran {row.steps} steps, but timesteps is {timesteps}",
                hint="count the spiking model with the same num_timesteps as the energy estimate",
            )
        dense_mj = e_mac * row.macs / PJ_PER_MJ
        if _is_spiking(row):
            rate = _lookup_rate(row, firing_rates)
            if rate is None:
                missing.append(row.operand or f"{row.component} (layer {row.layer}, module '{row.module}')")
                continue
            acs = timesteps * rate * row.macs
            rows.append(
                EnergyRow(row.component, row.layer, row.macs, float(rate), acs, 0, dense_mj, e_ac * acs / PJ_PER_MJ,
                          row.module, row.op, row.operand, row.stack)
            )
        else:
            float_macs = row.macs * row.steps
            rows.append(
                EnergyRow(row.component, row.layer, row.macs, None, 0.0, float_macs, dense_mj,
                          e_mac * float_macs / PJ_PER_MJ, row.module, row.op, row.operand, row.stack)
            )
    if missing:
        raise EnergyAuditError(
            "no firing rate for spiking op(s)",
            details=missing,
            hint="key firing rates by neuron module name, (component, layer) or component",
        )

    total_macs = sum(r.macs for r in rows)
    spiking_rows = [r for r in rows if r.firing_rate is not None]
    spiking_macs = sum(r.macs for r in spiking_rows)
    mean_rate = sum(r.firing_rate * r.macs for r in spiking_rows) / spiking_macs if spiking_macs else None
    energy_dense = sum(r.energy_dense_mj for r in rows)
    energy_spiking = sum(r.energy_spiking_mj for r in rows)
    return EnergyReport(
        rows=tuple(rows),
        profile=profile,
        num_timesteps=timesteps,
        total_macs=total_macs,
        total_spiking_acs=sum(r.spiking_acs for r in rows),
        total_spiking_macs=sum(r.spiking_macs for r in rows),
        energy_dense_mj=energy_dense,
        energy_spiking_mj=energy_spiking,
        ratio=energy_dense / energy_spiking if energy_spiking > 0 else math.inf,
        mean_firing_rate=mean_rate,
        seq_len=seq_len,
        included=tuple(included),
    )


def _included(count_norm: bool, components: Iterable[str]) -> tuple[str, ...]:
    present = set(components)
    items = ["Q/K/V/O projections, FFN1/FFN2, Q.K^T and probs.V (AC when spiking)"]
    if "pooler" in present:
        items.append("pooler (MAC)")
    if "head" in present:
        items.append("task head (MAC)")
    if count_norm:
        items.append("LayerNorm (MAC, fvcore's 5 per element)")
    if "other" in present:
        items.append("other counted ops (MAC)")
    return tuple(items)


def estimate_energy(
    model: nn.Module,
    firing_rates: FiringRates,
    *,
    profile: CostProfile = FP32,
    seq_len: int = DEFAULT_SEQ_LEN,
    num_timesteps: int | None = None,
    count_norm: bool = False,
) -> EnergyReport:
    """Count `model`'s MACs with fvcore (`count_macs`) and price them with `energy_from_counts`.

    `model` is the spiking model (T from its config; rates keyed by neuron module name, as from
    `collect_firing_rates`) or a dense BERT of the same shape (then give `num_timesteps` and rates
    keyed by component or (component, layer)).
    """
    if neuron_module_names(model):
        count = count_macs(model, seq_len=seq_len, count_norm=count_norm, num_timesteps=num_timesteps)
        timesteps = count.num_timesteps
    else:
        if num_timesteps is None:
            raise ConfigError(
                f"{type(model).__name__} has no spiking neurons, so the number of time steps is unknown",
                hint="give num_timesteps (--timesteps) for the spiking model the dense count stands for",
            )
        count = count_macs(model, seq_len=seq_len, count_norm=count_norm)
        timesteps = num_timesteps
    return energy_from_counts(
        count.rows,
        firing_rates,
        timesteps,
        profile,
        seq_len=seq_len,
        included=_included(count_norm, (r.component for r in count.rows)),
    )


def paper_setting(
    firing_rates: FiringRates,
    *,
    timesteps: int = 4,
    profile: CostProfile = FP32,
    seq_len: int = DEFAULT_SEQ_LEN,
    hidden: int = 768,
    layers: int = 12,
    heads: int = 12,
    intermediate: int = 3072,
    pooler: bool = True,
    float_components: Iterable[str] = (),
) -> EnergyReport:
    """Energy of BERT-base at 128 tokens (closed form, batch 1) under the given firing rates.

    Comparable to the paper's claim of 3.7x at T = 4 (which implies a MAC-weighted mean rate of
    about 0.345): all encoder matmuls are ACs, the pooler is a MAC. `firing_rates` is one rate or
    a mapping keyed by component or (component, layer). Encoder components named in
    `float_components` (e.g. qk and av of a model with spike_kv off) are billed as float MACs.
    """
    per_layer = bert_layer_macs(hidden, heads, intermediate, seq_len)
    floats = set(float_components)
    rows = [
        MacRow(component=c, layer=i, macs=per_layer[c], module=f"encoder.layer.{i}", op="closed form",
               steps=timesteps if c in floats else 1, spiking=False if c in floats else None)
        for i in range(layers)
        for c in ENCODER_COMPONENTS
    ]
    if pooler:
        rows.append(MacRow(component="pooler", layer=None, macs=hidden * hidden, module="pooler.dense", op="closed form"))
    return energy_from_counts(
        rows,
        firing_rates,
        timesteps,
        profile,
        seq_len=seq_len,
        included=_included(False, ["pooler"] if pooler else []) + (
            f"closed form: d={hidden}, {layers} layers, {heads} heads, d_ff={intermediate}",
        ),
    )


def implied_mean_firing_rate(ratio: float, timesteps: int, profile: CostProfile = FP32) -> float:
    """fr = E_MAC / (E_AC · T · ratio): the mean rate a claimed ratio implies when all matmuls are AC."""
    if ratio <= 0 or timesteps <= 0:
        raise ValueError("ratio and timesteps must be > 0")
    return profile.e_mac_pj / (profile.e_ac_pj * timesteps * ratio)
