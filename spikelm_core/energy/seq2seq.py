"""Energy of generation, with and without the KV cache: BART (encoder once, decoder per generated
token) and decoder-only models (Llama: the prompt once, then one step per generated token).

`count_macs` gives one teacher-forced forward (BART: n_e source and n_d decoder tokens; a Llama: L
tokens). Generation runs the decoder once per new token (`schedule.decoding_steps`), so each decoder
op is rescheduled by how its MACs grow with the decoder length (energy-method.md, sections 5 and 5a;
the causal self-attention of a full forward is not halved, an incremental step attends its one query
to every key):

| op (per decoder layer) | MACs at n | with KV cache, step | without cache, step |
|---|---|---|---|
| Q, K, V, O, FFN (BART: FFN1/2, cross Q/O; Llama: gate, up, ffn2) | ∝ n | the fed token | the whole prefix |
| self Q·Kᵀ, probs·V | n²·d | one query against every key | prefix² |
| BART cross Q·Kᵀ, probs·V | n_d·n_e·d | n_e·d | prefix·n_e·d |
| BART cross K, V projections | n_e·d² | 0 (computed once per input) | n_e·d² (recomputed) |
| LM head | n·d·V | one position | BART: every prefix position; Llama: the last one |

BART, a summary of m tokens (positions i = 1..m, the start token first), in lines:

- **encoder** (line `encoder`): once per input, at n_e tokens;
- **cross K/V** (line `cross_kv`): the cross-attention K/V projections of every decoder layer over
  the encoder states. With the cache they run once per input (spikelm's choice: a line of their
  own, charged once per summary, not folded into the encoder); without the cache, at every step;
- **decoder** (line `decoder`): every other decoder op, summed over the m steps;
- **LM head** (line `lm_head`): float × float (MAC) on the mean over T; with the cache one
  position per step, without it every prefix position (as transformers' BART computes logits for
  the whole decoder input).

Decoder-only (Llama), m tokens generated after a prompt of n tokens (`count.seq_len`):

- **prompt** (line `prompt`): step 1, the forward over the n prompt tokens that yields the first
  token; the same in both modes, once per input (it fills the cache);
- **decoder** (line `decoder`): steps 2..m. With the cache, step j feeds one token and attends to
  n + j - 1 cached keys; without it, it re-runs the prefix of n + j - 1 tokens;
- **LM head** (line `lm_head`): one position per step in both modes (`generate` asks for the last
  position's logits only: `logits_to_keep=1`).

Per token = per summary / m (everything amortised: the encoder, or the prompt). `last_token` is the
cost of the m-th step alone (BART: no once-per-input work; decoder-only with m = 1: the prompt).
Firing rates come from a teacher-forced pass on real text and are applied unchanged to every
generation step (spiked K/V in the cache keep their rates; an assumption: the rates of free-running
generation are not traced).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from spikelm_core.energy.costs import FP32, CostProfile
from spikelm_core.energy.errors import EnergyAuditError
from spikelm_core.energy.estimate import FiringRates, energy_from_counts, with_terms
from spikelm_core.energy.macs import MacCount, MacRow
from spikelm_core.energy.memory import MemOp, Shape, SpikingTerms, generation_ops
from spikelm_core.energy.report import CHARGED, GenerationEnergy, GenerationMode
from spikelm_core.energy.schedule import Step, decoding_steps

LINES: tuple[str, ...] = ("encoder", "prompt", "cross_kv", "decoder", "lm_head")
"""Lines of a summary's energy, in report order (BART: encoder, cross_kv, decoder, lm_head;
decoder-only: prompt, decoder, lm_head)."""
MODES: tuple[str, ...] = ("kv_cache", "no_cache")

# How a decoder op's MACs grow with the decoder length n: linear, square, constant.
_SCALING = {
    "q": "lin", "k": "lin", "v": "lin", "o": "lin", "ffn1": "lin", "gate": "lin", "up": "lin", "ffn2": "lin",
    "qk": "sq", "av": "sq",
    "cross_q": "lin", "cross_o": "lin", "cross_qk": "lin", "cross_av": "lin",
    "cross_k": "const", "cross_v": "const",
    "head": "lin", "norm": "lin",
}


def _check_len(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise EnergyAuditError(f"{name} must be a positive integer, got {value!r}")


def _unit(row: MacRow, n: int) -> tuple[str, int]:
    """(scaling, MACs per unit): per decoder token (lin), per token² (sq) or once (const)."""
    scaling = _SCALING.get(row.component)
    if scaling is None:
        raise EnergyAuditError(
            f"cannot schedule '{row.module}' ({row.component}) over generation steps",
            hint="only the attention, FFN, norm and LM head ops of BART and Llama are known to the generation model",
        )
    divisor = {"lin": n, "sq": n * n, "const": 1}[scaling]
    if row.macs % divisor:
        raise EnergyAuditError(
            f"MACs of '{row.module}' ({row.macs:,}) do not scale with the decoder length {n} as a "
            f"{row.component} op should"
        )
    return scaling, row.macs // divisor


def _line_of(row: MacRow, decoder_only: bool) -> str:
    if row.component == "head" and row.stack is None:
        return "lm_head"
    if decoder_only and row.stack is None:
        return "decoder"
    if row.stack == "encoder":
        return "encoder"
    if row.stack == "decoder":
        return "cross_kv" if _SCALING.get(row.component) == "const" else "decoder"
    raise EnergyAuditError(
        f"'{row.module or row.component}' lies outside the encoder, the decoder and the LM head",
        hint="count a BART or a Llama (dense or spiking) with count_macs",
    )


def _split(count: MacCount) -> list[tuple[MacRow, str]]:
    if count.decoder_len is None and not count.decoder_only:
        raise EnergyAuditError("the MAC count has no decoder: count an encoder-decoder or a decoder-only model")
    return [(row, _line_of(row, count.decoder_only)) for row in count.rows if row.macs]


def _length(count: MacCount) -> int:
    """The decoder length of the traced forward (BART: n_d; decoder-only: the traced tokens)."""
    return count.seq_len if count.decoder_only else count.decoder_len or 0


def _steps(count: MacCount, target_len: int, cache: bool) -> tuple[Step, ...]:
    return decoding_steps(target_len, cache=cache, prompt_len=count.seq_len if count.decoder_only else None)


def _step_macs(row: MacRow, scaling: str, unit: int, step: Step) -> int:
    if scaling == "sq":
        return unit * step.tokens * step.keys
    return unit * (step.logits if row.component == "head" else step.tokens)


def generation_rows(count: MacCount, target_len: int, *, cache: bool) -> dict[str, tuple[MacRow, ...]]:
    """MAC rows of one summary of `target_len` generated tokens, per line (see the module docstring).

    `count` is a teacher-forced count of a BART (`count_macs(model, seq_len=n_e, decoder_len=...)`;
    the source length is its `seq_len`) or of a decoder-only model (`count_macs(model, seq_len=n)`;
    the prompt length is its `seq_len`). Each row keeps its module, operand, steps and spiking flag,
    so `energy_from_counts` bills it exactly as in the forward.
    """
    _check_len("target_len", target_len)
    n = _length(count)
    steps = _steps(count, target_len, cache)
    lines: dict[str, list[MacRow]] = {line: [] for line in LINES}
    for row, line in _split(count):
        if line == "encoder":
            lines[line].append(row)
            continue
        scaling, unit = _unit(row, n)
        if scaling == "const":  # BART's cross K/V: once per input with the cache, every step without
            lines[line].append(replace(row, macs=unit * (1 if cache else target_len)))
            continue
        per_line: dict[str, int] = {}
        for step in steps:
            where = "prompt" if step.prompt and line == "decoder" else line
            per_line[where] = per_line.get(where, 0) + _step_macs(row, scaling, unit, step)
        for where, macs in per_line.items():
            if macs:
                lines[where].append(replace(row, macs=macs))
    return {line: tuple(rows) for line, rows in lines.items() if rows}


def decoder_step_rows(count: MacCount, position: int, *, cache: bool) -> tuple[MacRow, ...]:
    """MAC rows of the generation step at `position` (1 = the first generated token).

    BART (position = decoder position, 1 = the start token): with the cache, projections for the new
    token only, self-attention over `position` keys, cross attention over the cached encoder K/V;
    without it, the full decoder forward over the prefix of `position` tokens (cross K/V recomputed).
    The encoder is not included. Decoder-only: position 1 is the prompt's forward; later positions
    feed one token against n + position - 1 keys (cache) or re-run that prefix (no cache).
    """
    _check_len("position", position)
    n = _length(count)
    step = _steps(count, position, cache)[-1]
    rows = []
    for row, line in _split(count):
        if line == "encoder":
            continue
        scaling, unit = _unit(row, n)
        macs = (0 if cache else unit) if scaling == "const" else _step_macs(row, scaling, unit, step)
        if macs:
            rows.append(replace(row, macs=macs))
    return tuple(rows)


def _mode(count: MacCount, firing_rates: FiringRates, timesteps: int, profile: CostProfile, target_len: int,
          cache: bool, included: tuple[str, ...], terms: SpikingTerms, ops: Sequence[MemOp] | None,
          shape: Shape | None) -> GenerationMode:
    lines = generation_rows(count, target_len, cache=cache)
    line_ops: dict[str, list[MemOp]] = {}
    last_ops: list[MemOp] = []
    if terms.any:
        if ops is None or shape is None:
            raise EnergyAuditError("the spiking side's terms of a generation need the forward's ops and shape")
        line_ops = generation_ops(ops, shape, target_len, cache=cache)
        last_ops = [op for step_ops in generation_ops(ops, shape, target_len, cache=cache, last_only=True).values()
                    for op in step_ops]

    def price(rows: Iterable[MacRow], term_ops: Iterable[MemOp]):
        report = energy_from_counts(rows, firing_rates, timesteps, profile, seq_len=count.seq_len, included=included)
        return with_terms(report, term_ops, terms)

    return GenerationMode(
        cache=cache,
        target_len=target_len,
        lines={line: price(rows, line_ops.get(line, ())) for line, rows in lines.items()},
        per_summary=price([row for rows in lines.values() for row in rows],
                          [op for line in line_ops.values() for op in line]),
        last_token=price(decoder_step_rows(count, target_len, cache=cache), last_ops),
    )


def generation_energy(
    count: MacCount,
    firing_rates: FiringRates,
    timesteps: int,
    profile: CostProfile = FP32,
    *,
    target_len: int = 64,
    included: Iterable[str] = (),
    terms: SpikingTerms = SpikingTerms(),
    ops: Sequence[MemOp] | None = None,
    shape: Shape | None = None,
) -> GenerationEnergy:
    """Dense versus spiking energy of one generation of `target_len` tokens, with and without the KV cache.

    Args:
        count: `count_macs` of a BART or a decoder-only Llama (spiking: rows carry their operand
            neurons; dense: give rates keyed by (stack, component) or component).
        firing_rates: as for `energy_from_counts`.
        timesteps: T of the spiking model.
        target_len: tokens generated (m); the source (BART) or prompt (decoder-only) length is
            `count.seq_len`.
        terms: the spiking side's membrane updates and alpha rescalings to bill beside the ACs; they
            need `ops` (the forward's `memory.forward_ops`) and its `shape`, from which each line's ops
            are scheduled (`memory.generation_ops`).
    """
    included = tuple(included)
    modes = {cache: _mode(count, firing_rates, timesteps, profile, target_len, cache, included, terms, ops, shape)
             for cache in (True, False)}
    return GenerationEnergy(
        source_len=count.seq_len,
        target_len=target_len,
        decoder_only=count.decoder_only,
        kv_cache=modes[True],
        no_cache=modes[False],
    )


__all__ = [
    "CHARGED",
    "Step",
    "decoding_steps",
    "LINES",
    "MODES",
    "GenerationEnergy",
    "GenerationMode",
    "decoder_step_rows",
    "generation_energy",
    "generation_rows",
]
