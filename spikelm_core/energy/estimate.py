"""The energy model: dense MACs versus spiking ACs, per component and layer (energy-method.md).

    E_dense   = E_MAC · MACs
    E_spiking = E_AC · Σ_op T · fr_op · MACs_op  +  E_MAC · MACs_float

`MACs_op` is the per-step count of a spiking op (the same as its dense twin), `fr_op` the non-zero
fraction of its spiking operand (a -alpha spike is one AC, like +alpha), `MACs_float` the ops with
two float operands (pooler, heads). It is arithmetic only and ignores data movement (section 9).

`energy_from_counts` is the whole arithmetic on plain numbers; `estimate_energy` counts a model
first; `with_terms` adds the spiking side's membrane updates and rescalings by alpha when switched on
(`memory.SpikingTerms`: --count-neuron-updates, --count-alpha-scale). The report objects live in `report.py`; `paper.py` prices the paper's closed-form models.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

from torch import nn

from spikelm_core.energy.components import DEFAULT_SEQ_LEN, SPIKING_COMPONENTS
from spikelm_core.energy.costs import FP32, PJ_PER_MJ, CostProfile
from spikelm_core.energy.errors import EnergyAuditError
from spikelm_core.energy.macs import MacRow, count_macs
from spikelm_core.energy.memory import (MemOp, SpikingTerms, alpha_scales, forward_ops, linear_shapes,
                                        membrane_updates, shape_of, terms_not_billed)
from spikelm_core.energy.report import EnergyReport, EnergyRow, mac_weighted_rate
from spikelm_core.errors import ConfigError
from spikelm_core.firing import neuron_module_names


FiringRates = Union[float, Mapping[Any, float]]
"""One rate for every spiking op, or a mapping keyed by operand neuron name, (component, layer)
or component; lookups try them in that order."""


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
    components (q, k, v, o, ffn1, gate, up, ffn2, qk, av, cross_*) or with an `operand`, are billed as
    ACs: T · fr · macs · E_AC. All other rows are float: steps · macs · E_MAC. The
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
    return _assemble(rows, profile, timesteps, seq_len, tuple(included))


def _assemble(rows: Sequence[EnergyRow], profile: CostProfile, timesteps: int, seq_len: int | None,
              included: tuple[str, ...]) -> EnergyReport:
    """The report of priced rows: the one place its totals are summed."""
    total_macs = sum(r.macs for r in rows)
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
        mean_firing_rate=mac_weighted_rate(rows),
        seq_len=seq_len,
        included=included,
    )


def term_rows(ops: Iterable[MemOp], timesteps: int, profile: CostProfile, terms: SpikingTerms) -> tuple[EnergyRow, ...]:
    """The rows of the spiking side's terms that `terms` switches on, one per (stack, layer) and term:
    `neuron_updates` (membrane updates, ACs) and `alpha_scale` (rescalings by alpha, MACs). `ops` are the
    memory model's ops of what was priced (`memory.forward_ops`, or one line of `memory.generation_ops`).
    They have no dense twin: 0 dense MACs, 0 dense energy."""
    counts: dict[tuple[str | None, int | None, str], int] = {}
    for op in ops:
        for on, component, n in ((terms.neuron_updates, "neuron_updates", membrane_updates(op, timesteps)),
                                 (terms.alpha_scale, "alpha_scale", alpha_scales(op, timesteps))):
            if on and n:
                key = (op.stack, op.layer, component)
                counts[key] = counts.get(key, 0) + n
    rows = []
    for (stack, layer, component), n in counts.items():
        if component == "neuron_updates":
            rows.append(EnergyRow(component, layer, 0, None, float(n), 0, 0.0, profile.e_ac_pj * n / PJ_PER_MJ,
                                  op="membrane update", stack=stack))
        else:
            rows.append(EnergyRow(component, layer, 0, None, 0.0, n, 0.0, profile.e_mac_pj * n / PJ_PER_MJ,
                                  op="alpha scale", stack=stack))
    return tuple(rows)


def with_terms(report: EnergyReport, ops: Iterable[MemOp], terms: SpikingTerms) -> EnergyReport:
    """`report` with the rows of the terms `terms` switches on (`term_rows`) added to its rows and totals."""
    if not terms.any:
        return report
    extra = term_rows(ops, report.num_timesteps, report.profile, terms)
    return _assemble((*report.rows, *extra), report.profile, report.num_timesteps, report.seq_len, report.included)


def included_items(count_norm: bool, components: Iterable[str], terms: SpikingTerms = SpikingTerms(),
                   not_billed: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """What the arithmetic counts, in words; `not_billed` (`memory.terms_not_billed`): the terms switched on
    that bill nothing in this model, and why."""
    present = set(components)
    why = {key: f"; {text}" for key, text in (not_billed or {}).items()}
    items = ["Q/K/V/O projections, FFN1/FFN2, Q.K^T and probs.V (AC when spiking)"]
    if "pooler" in present:
        items.append("pooler (MAC)")
    if "head" in present:
        items.append("task head (MAC)")
    if count_norm:
        items.append("LayerNorm (MAC, fvcore's 5 per element)")
    if terms.neuron_updates:
        items.append("membrane updates (--count-neuron-updates: one AC per element of a stateful neuron per step "
                     "after the first, spiking side only" + why.get("neuron_updates", "") + ")")
    if terms.alpha_scale:
        items.append("rescaling by alpha (--count-alpha-scale: one MAC per output element of a spike-driven op per "
                     "step after the first, spiking side only" + why.get("alpha_scale", "") + ")")
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
    terms: SpikingTerms = SpikingTerms(),
) -> EnergyReport:
    """Count `model`'s MACs with fvcore (`count_macs`) and price them with `energy_from_counts`.

    `model` is the spiking model (T from its config; rates keyed by neuron module name, as
    `spikelm_core.firing.measure_firing` gives them) or a dense BERT of the same shape (then give
    `num_timesteps` and rates keyed by component or (component, layer)). `terms` adds the spiking
    side's membrane updates and rescalings by alpha (`with_terms`), at the model's own shapes.
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
    config = getattr(model, "_orig_mod", model).config.to_dict()  # a torch.compile'd model: its inner one's
    report = energy_from_counts(
        count.rows,
        firing_rates,
        timesteps,
        profile,
        seq_len=seq_len,
        included=included_items(count_norm, (r.component for r in count.rows), terms,
                                terms_not_billed(config) if terms.any else None),
    )
    if not terms.any:
        return report
    shape = shape_of(config, seq_len, count.decoder_len, linear_shapes(model))
    return with_terms(report, forward_ops(report.rows, shape), terms)


def implied_mean_firing_rate(ratio: float, timesteps: int, profile: CostProfile = FP32) -> float:
    """fr = E_MAC / (E_AC · T · ratio): the mean rate a claimed ratio implies when all matmuls are AC."""
    if ratio <= 0 or timesteps <= 0:
        raise ValueError("ratio and timesteps must be > 0")
    return profile.e_mac_pj / (profile.e_ac_pj * timesteps * ratio)
