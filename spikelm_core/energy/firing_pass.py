"""The energy audit's firing pass: spike counts over the calibration batches, joined to the MAC count.

Counting is `spikelm_core.firing.measure_firing` (pads excluded, the one definition of a firing
rate) with per-step, per-position and per-sequence profiles. This module adds what the audit
needs on top: the first batch calibrates the amplitudes, a neuron that never ran or whose output
is not spikes fails the audit, the per-neuron and per-position rates of the report, and a
bootstrap interval of the energy ratio that resamples calibration sequences.

This pass is separate from the MAC trace: hooks see values, fvcore handles see only shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from spikelm_core.calibration import spiking_neurons
from spikelm_core.energy.components import COMPONENTS
from spikelm_core.energy.costs import PJ_PER_MJ
from spikelm_core.energy.errors import EnergyAuditError
from spikelm_core.errors import ConfigError
from spikelm_core.energy.macs import MacCount
from spikelm_core.energy.report import EnergyReport, Interval, NeuronRates
from spikelm_core.calibration import check_finite_neurons
from spikelm_core.firing import FiringReport, SpikeProfile, measure_firing


def check_billable(model: nn.Module) -> None:
    """ConfigError (exit 2) for neurons whose output the audit cannot bill as ACs by construction:
    salient channels (outlier-aware allocation, `salient_fraction > 0`) emit multi-level spikes or
    floats. Checked on the settings, before any MAC count or firing pass."""
    salient = sorted(name for name, neuron in spiking_neurons(model) if getattr(neuron, "salient_fraction", 0) > 0)
    if salient:
        raise ConfigError(
            "the model's salient channels (outlier-aware allocation, neuron.salient_fraction > 0) emit multi-level "
            "spikes or float values, which the energy audit does not bill yet",
            details=[f"{len(salient)} neuron(s), e.g. {salient[0]}"],
            hint="audit the same model converted without --salient-fraction (per-layer k alone is billed as usual); "
            "a sweep: -s neuron.salient_fraction=0, or -s sweep.energy.enabled=false",
        )


def trace_firing(
    model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]], *, calibrate: bool, seq2seq: bool = False
) -> FiringReport:
    """Spike counts of every neuron over `batches` (eval mode, no grad, pads excluded, with profiles).

    With `calibrate`, every neuron is first marked uncalibrated, so the first batch sets
    a_t = k * mean|u_t| (as `spikelm_core.calibration.calibrate` does) and is counted with the
    amplitudes it has just set: each neuron calibrates on its input and then spikes, so these are
    the spikes a second pass over that batch would give, one forward cheaper.

    A BART (`seq2seq`) is traced teacher-forced: its decoder reads the shifted source
    (`shift_tokens_right`), so decoder position j is a real token when source token j - 1 is
    (position 0, the start token, always is); that is the `decoder_attention_mask` passed.

    Raises:
        EnergyAuditError: a neuron calibration did not reach, that never ran, or whose output is
            not spikes (more than one magnitude per step: it cannot be billed as ACs).
    """
    neurons = spiking_neurons(model)
    if calibrate:
        for _, neuron in neurons:
            neuron.mark_uncalibrated()
    if seq2seq:
        batches = [_with_decoder_mask(batch) for batch in batches]
    report = measure_firing(model, batches, detail=True)
    uncalibrated = [name for name, neuron in neurons if not neuron.is_calibrated]
    if uncalibrated:
        raise EnergyAuditError("calibration did not reach some neuron(s)", details=uncalibrated[:5])
    if calibrate:
        # amplitudes that drive no spike: no numbers from them
        check_finite_neurons(model, soft_reset="a model converted with soft resets (spikelm convert DENSE_MODEL "
                                               "--reset soft --out DIR, then spikelm energy DIR -T ...)")
    if report.missing:
        raise EnergyAuditError("neuron(s) never ran (or saw no real token) during the firing-rate pass",
                               details=list(report.missing))
    dense = [name for name, stats in report.neurons.items() if stats.kind == "dense"]
    if dense:
        raise EnergyAuditError(
            "neuron output(s) are not spikes (more than one magnitude per step): cannot bill them as ACs",
            details=dense,
        )
    return report


def _with_decoder_mask(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    mask = batch.get("attention_mask")
    out = {k: v for k, v in batch.items() if k != "token_type_ids"}
    if mask is not None and "decoder_input_ids" not in batch:
        # the decoder reads the text shifted right, so its token i predicts text token i: live where that is
        # real, as training's mask from the labels (`inputs.decoder_mask_from_labels`) and generation's
        # (the EOS fed back is past the end) count it
        out["decoder_attention_mask"] = mask.clone()
    return out


def neuron_rates(firing: FiringReport, count: MacCount) -> tuple[NeuronRates, ...]:
    """Per neuron: its rate, + and - rates, per-step rates, and the op it drives (component, layer)."""
    where = {r.operand: (r.component, r.layer) for r in count.rows if r.operand}
    out = []
    for name, s in firing.neurons.items():
        p = firing.profiles[name]
        step_total = p.step_total.double().clamp(min=1)
        component, layer = where.get(name, ("other", None))
        out.append(
            NeuronRates(
                name=name, component=component, layer=layer, kind=s.kind,
                firing_rate=s.firing_rate,
                positive_rate=s.positive / s.total if s.total else 0.0,
                negative_rate=s.negative / s.total if s.total else 0.0,
                step_rates=tuple(((p.step_positive + p.step_negative) / step_total).tolist()),
                step_positive=tuple((p.step_positive / step_total).tolist()),
                step_negative=tuple((p.step_negative / step_total).tolist()),
                elements=s.total,
            )
        )
    return tuple(out)


#: The decoder's components whose neurons spike the encoder's states (source positions): cross-attention's K and
#: V projections, and the spikes of the projected K and V that Q.K^T and probs.V read (`encoder_attn.qk` / `.av`).
SOURCE_SIDE = ("cross_k", "cross_v", "cross_qk", "cross_av")


def per_position(profiles: dict[str, SpikeProfile], count: MacCount) -> dict[str, tuple[float, ...]]:
    """Firing rate per token position (pads excluded), over 'all' neurons and per component; each a
    pooled rate (every element of the group's neurons at that position weighs the same). With stacks
    (BART) the encoder's source positions and the decoder's target positions are never pooled: the keys
    are `encoder`, `decoder` (all neurons of that stack at target positions) and `<stack>.<component>`;
    the decoder's `SOURCE_SIDE` components (`cross_k`, `cross_v`, `cross_qk`, `cross_av`) spike the encoder's
    states, so their positions are source positions and they count in their own keys only."""
    where = {r.operand: (r.stack, r.component) for r in count.rows if r.operand}
    stacked = any(stack is not None for stack, _ in where.values())
    groups: dict[str, list[SpikeProfile]] = {} if stacked else {"all": list(profiles.values())}
    for name, p in profiles.items():
        stack, component = where.get(name, (None, "other"))
        if stack is None:
            groups.setdefault(component, []).append(p)
            continue
        groups.setdefault(f"{stack}.{component}", []).append(p)
        if component not in SOURCE_SIDE:  # source positions: not pooled with target ones
            groups.setdefault(stack, []).append(p)
    order = ["all", *COMPONENTS] if not stacked else [
        *(f"{stack}{part}" for stack in ("encoder", "decoder") for part in ("", *(f".{c}" for c in COMPONENTS)))]
    out = {}
    for key in [k for k in order if k in groups]:
        members = [p for p in groups[key] if p.position_total.numel()]
        if not members:
            continue
        n = max(p.position_total.numel() for p in members)
        nz = sum(torch.nn.functional.pad(p.position_nonzero, (0, n - p.position_nonzero.numel())) for p in members)
        tot = sum(torch.nn.functional.pad(p.position_total, (0, n - p.position_total.numel())) for p in members)
        out[key] = tuple((nz.double() / tot.double().clamp(min=1)).tolist())
    return out


_BOOTSTRAP_BLOCK_ELEMENTS = 1 << 22
"""Elements of one block of bootstrap draws or rates (32 MiB of float64)."""


def bootstrap(
    report: EnergyReport, profiles: dict[str, SpikeProfile], resamples: int, confidence: float, seed: int
) -> tuple[Interval | None, Interval | None]:
    """Percentile intervals of the ratio and the mean rate, resampling calibration sequences."""
    spiking = [r for r in report.rows if r.firing_rate is not None]
    if resamples <= 0 or not spiking or any(r.operand not in profiles for r in spiking):
        return None, None
    names = sorted({r.operand for r in spiking})
    index = {n: i for i, n in enumerate(names)}
    nonzero = np.stack([profiles[n].sample_nonzero.numpy().astype(np.float64) for n in names])  # [N, S]
    total = np.stack([profiles[n].sample_total.numpy().astype(np.float64) for n in names])
    samples = nonzero.shape[1]
    if samples < 2:
        return None, None
    weights = np.zeros(len(names))  # pJ per unit firing rate: E_AC * T * MACs
    mac_weights = np.zeros(len(names))
    for r in spiking:
        weights[index[r.operand]] += report.profile.e_ac_pj * report.num_timesteps * r.macs
        mac_weights[index[r.operand]] += r.macs
    float_pj = sum(r.energy_spiking_mj for r in report.rows if r.firing_rate is None) * PJ_PER_MJ
    dense_pj = report.energy_dense_mj * PJ_PER_MJ
    rng = np.random.default_rng(seed)
    ratios, mean_rates = np.empty(resamples), np.zeros(resamples)
    # in blocks of resamples, so memory stays bounded whatever --bootstrap is (the same draws as one call)
    block = max(1, _BOOTSTRAP_BLOCK_ELEMENTS // max(samples, nonzero.shape[0]))
    for start in range(0, resamples, block):
        n = min(block, resamples - start)
        draws = rng.multinomial(samples, np.full(samples, 1.0 / samples), size=n).astype(np.float64)  # [n, S]
        rates = (nonzero @ draws.T) / np.maximum(total @ draws.T, 1.0)  # [N, n]
        spiking_pj = weights @ rates + float_pj
        ratios[start:start + n] = np.where(spiking_pj > 0, dense_pj / np.maximum(spiking_pj, 1e-300), np.inf)
        if mac_weights.sum():
            mean_rates[start:start + n] = (mac_weights @ rates) / mac_weights.sum()
    tail = (1 - confidence) / 2
    finite = ratios[np.isfinite(ratios)]
    ratio_ci = (
        Interval(float(np.quantile(finite, tail)), float(np.quantile(finite, 1 - tail)), confidence, resamples)
        if finite.size else None
    )
    rate_ci = Interval(float(np.quantile(mean_rates, tail)), float(np.quantile(mean_rates, 1 - tail)), confidence, resamples)
    return ratio_ci, rate_ci


__all__ = ["bootstrap", "neuron_rates", "per_position", "trace_firing"]
