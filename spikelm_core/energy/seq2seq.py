"""Energy of generating a summary with a (spiking) BART: encoder once, decoder per generated token.

`count_macs` gives one teacher-forced forward (n_e source tokens, n_d decoder tokens). Generation
runs the decoder once per new token, so each decoder op is rescheduled by how its MACs grow with
the decoder length (energy-method.md, section 5; the causal self-attention of a full forward is not
halved, the incremental one attends to exactly i keys at position i):

| op (per decoder layer) | MACs at n_d | with KV cache, token i | without cache, token i |
|---|---|---|---|
| Q, K, V, O, cross Q, cross O, FFN1, FFN2, LM head | ∝ n_d | one token | the whole prefix (i tokens) |
| self Q·Kᵀ, probs·V | n_d²·d | i·d (one query, i keys) | i²·d |
| cross Q·Kᵀ, probs·V | n_d·n_e·d | n_e·d | i·n_e·d |
| cross K, V projections | n_e·d² | 0 (computed once per input) | n_e·d² (recomputed) |

Summed over a summary of m tokens (positions i = 1..m, the start token first):

- **encoder** (line `encoder`): once per input, at n_e tokens;
- **cross K/V** (line `cross_kv`): the cross-attention K/V projections of every decoder layer over
  the encoder states. With the cache they run once per input (spikelm's choice: a line of their
  own, charged once per summary, not folded into the encoder); without the cache, at every step;
- **decoder** (line `decoder`): every other decoder op, summed over the m steps;
- **LM head** (line `lm_head`): float × float (MAC) on the mean over T; with the cache one
  position per step, without it every prefix position (as transformers' BART computes logits for
  the whole decoder input).

Per token = per summary / m (everything amortised, the encoder included). `last_token` is the cost
of the m-th step alone (no once-per-input work). Firing rates come from a teacher-forced pass on
real text and are applied unchanged to every generation step (spiked K/V in the cache keep their
rates; an assumption: the rates of free-running generation are not traced).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from spikelm_core.energy.costs import FP32, CostProfile
from spikelm_core.energy.errors import EnergyAuditError
from spikelm_core.energy.estimate import FiringRates, energy_from_counts
from spikelm_core.energy.macs import MacCount, MacRow
from spikelm_core.energy.report import CHARGED, GenerationEnergy, GenerationMode

LINES: tuple[str, ...] = ("encoder", "cross_kv", "decoder", "lm_head")
"""Lines of a summary's energy, in report order."""
MODES: tuple[str, ...] = ("kv_cache", "no_cache")

# How a decoder op's MACs grow with the decoder length n_d: linear, square, constant.
_SCALING = {
    "q": "lin", "k": "lin", "v": "lin", "o": "lin", "ffn1": "lin", "ffn2": "lin",
    "qk": "sq", "av": "sq",
    "cross_q": "lin", "cross_o": "lin", "cross_qk": "lin", "cross_av": "lin",
    "cross_k": "const", "cross_v": "const",
    "head": "lin", "norm": "lin",
}


def _check_len(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise EnergyAuditError(f"{name} must be a positive integer, got {value!r}")


def _unit(row: MacRow, n_d: int) -> tuple[str, int]:
    """(scaling, MACs per unit): per decoder token (lin), per token² (sq) or once (const)."""
    scaling = _SCALING.get(row.component)
    if scaling is None:
        raise EnergyAuditError(
            f"cannot schedule '{row.module}' ({row.component}) over generation steps",
            hint="only BART's attention, FFN, LayerNorm and LM head ops are known to the generation model",
        )
    divisor = {"lin": n_d, "sq": n_d * n_d, "const": 1}[scaling]
    if row.macs % divisor:
        raise EnergyAuditError(
            f"MACs of '{row.module}' ({row.macs:,}) do not scale with the decoder length {n_d} as a "
            f"{row.component} op should"
        )
    return scaling, row.macs // divisor


def _line_of(row: MacRow) -> str:
    if row.stack == "encoder":
        return "encoder"
    if row.component == "head" and row.stack is None:
        return "lm_head"
    if row.stack == "decoder":
        return "cross_kv" if _SCALING.get(row.component) == "const" else "decoder"
    raise EnergyAuditError(
        f"'{row.module or row.component}' lies outside the encoder, the decoder and the LM head",
        hint="count a BART (dense or spiking) with count_macs",
    )


def _split(count: MacCount) -> list[tuple[MacRow, str]]:
    if count.decoder_len is None:
        raise EnergyAuditError("the MAC count has no decoder length: count an encoder-decoder model")
    return [(row, _line_of(row)) for row in count.rows if row.macs]


def generation_rows(count: MacCount, target_len: int, *, cache: bool) -> dict[str, tuple[MacRow, ...]]:
    """MAC rows of one summary of `target_len` generated tokens, per line (see the module docstring).

    `count` is a teacher-forced count of a BART (`count_macs(model, seq_len=n_e, decoder_len=...)`);
    the source length is its `seq_len`. Each row keeps its module, operand, steps and spiking flag,
    so `energy_from_counts` bills it exactly as in the forward.
    """
    _check_len("target_len", target_len)
    m, n_d = target_len, count.decoder_len or 0
    s1, s2 = m * (m + 1) // 2, m * (m + 1) * (2 * m + 1) // 6  # Σ i, Σ i² over i = 1..m
    lines: dict[str, list[MacRow]] = {line: [] for line in LINES}
    for row, line in _split(count):
        if line == "encoder":
            lines[line].append(row)
            continue
        scaling, unit = _unit(row, n_d)
        if cache:
            macs = {"lin": unit * m, "sq": unit * s1, "const": unit}[scaling]
        else:
            macs = {"lin": unit * s1, "sq": unit * s2, "const": unit * m}[scaling]
        lines[line].append(replace(row, macs=macs))
    return {line: tuple(rows) for line, rows in lines.items() if rows}


def decoder_step_rows(count: MacCount, position: int, *, cache: bool) -> tuple[MacRow, ...]:
    """MAC rows of generating the token at decoder position `position` (1 = the start token).

    With the cache: projections for the new token only, self-attention over `position` keys, cross
    attention over the cached encoder K/V. Without it: the full decoder forward over the prefix of
    `position` tokens (cross K/V recomputed). The encoder is not included.
    """
    _check_len("position", position)
    i, n_d = position, count.decoder_len or 0
    rows = []
    for row, line in _split(count):
        if line == "encoder":
            continue
        scaling, unit = _unit(row, n_d)
        if cache:
            macs = {"lin": unit, "sq": unit * i, "const": 0}[scaling]
        else:
            macs = {"lin": unit * i, "sq": unit * i * i, "const": unit}[scaling]
        if macs:
            rows.append(replace(row, macs=macs))
    return tuple(rows)


def _mode(count: MacCount, firing_rates: FiringRates, timesteps: int, profile: CostProfile, target_len: int,
          cache: bool, included: tuple[str, ...]) -> GenerationMode:
    lines = generation_rows(count, target_len, cache=cache)
    price = lambda rows: energy_from_counts(rows, firing_rates, timesteps, profile,  # noqa: E731
                                            seq_len=count.seq_len, included=included)
    return GenerationMode(
        cache=cache,
        target_len=target_len,
        lines={line: price(rows) for line, rows in lines.items()},
        per_summary=price([row for rows in lines.values() for row in rows]),
        last_token=price(decoder_step_rows(count, target_len, cache=cache)),
    )


def generation_energy(
    count: MacCount,
    firing_rates: FiringRates,
    timesteps: int,
    profile: CostProfile = FP32,
    *,
    target_len: int = 64,
    included: Iterable[str] = (),
) -> GenerationEnergy:
    """Dense versus spiking energy of one summary, with and without the KV cache.

    Args:
        count: `count_macs` of a BART (spiking: rows carry their operand neurons; dense: give rates
            keyed by (stack, component) or component).
        firing_rates: as for `energy_from_counts`.
        timesteps: T of the spiking model.
        target_len: tokens generated per summary (m); the source length is `count.seq_len`.
    """
    included = tuple(included)
    return GenerationEnergy(
        source_len=count.seq_len,
        target_len=target_len,
        kv_cache=_mode(count, firing_rates, timesteps, profile, target_len, True, included),
        no_cache=_mode(count, firing_rates, timesteps, profile, target_len, False, included),
    )


__all__ = [
    "CHARGED",
    "LINES",
    "MODES",
    "GenerationEnergy",
    "GenerationMode",
    "decoder_step_rows",
    "generation_energy",
    "generation_rows",
]
