"""`run_energy`: the audited k x T energy sweep behind `spikelm energy` (issue 3, sections 4-5).

For every time-step count T the spiking model is built once (dense weights copied, or a spiking
checkpoint's weights) and its MACs are counted once with fvcore; the dense twin (the plain
Hugging Face model of the same shape, on the 'meta' device) is counted once and must agree with
the spiking model's per-step count component by component. For every k at that T the amplitudes
are calibrated on the first calibration batch (a_t = k * mean|u_t|), spikes are counted over the
calibration batches (pads excluded), and the counts are priced by `energy_from_counts`. Each
(k, T) run also carries the paper setting (the measured per-component rates applied to BERT-base
at 128 tokens, `paper.py`), the spike-purity listing (every float x float matmul left), a
bootstrap interval of the ratio and of the mean rate, and per-neuron, per-step and per-position
rates (`firing_pass.py`).

A BART (dense, spiking or config-only) runs the same sweep: the MAC count is one teacher-forced
forward (`--seq-len` source tokens, `--target-len` decoder tokens, `use_cache=False`), firing rates
are traced teacher-forced, and each run adds `generation` (seq2seq.py): one summary with and
without the KV cache. The paper setting is then BART-base at 128/128 tokens.

A Llama (decoder-only, dense, spiking or config-only; 'smollm2') is counted over one forward of
`--seq-len` tokens (checked against the Llama closed form, grouped-query heads included), its firing
rates are traced on running text (`[BOS] ...`), and each run adds `generation`: a prompt of
`--seq-len` tokens, then `--target-len` generated tokens, with and without the KV cache. There is no
paper setting for it (the paper reports no decoder-only model): `paper` is None.

Each run also carries the memory bounds (`memory.py`: weight-stationary and event-driven, the
break-even firing rate, the quantised ANN; for BART and Llama per generated token with and without
the KV cache), for the audited model and for the paper setting, and, when asked, NeuroBench-compatible
metrics (`neurobench.py`).

Where things live: settings here (`EnergyArgs`); model, twin and text in `models.py`; the report
and its JSON schema in `report.py`. Nothing here prints or exits.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from spikelm_core.calibration import check_token_ids
from spikelm_core.energy import models
from spikelm_core.energy.components import DEFAULT_SEQ_LEN, ENCODER_COMPONENTS, SPIKING_COMPONENTS
from spikelm_core.energy.costs import DEFAULT_PROFILE, CostProfile, get_profile
from spikelm_core.energy.estimate import energy_from_counts, included_items, with_terms
from spikelm_core.energy.firing_pass import bootstrap, check_billable, neuron_rates, per_position, trace_firing
from spikelm_core.energy.macs import MacCount, count_macs
from spikelm_core.energy.memory import (
    Assumptions,
    MemOp,
    MemoryReport,
    MemorySettings,
    Shape,
    SpikingTerms,
    forward_ops,
    generation_ops,
    linear_shapes,
    load_memory_cost,
    memory_report,
    shape_of,
    terms_not_billed,
    value_bytes,
)
from spikelm_core.energy.neurobench import neurobench_metrics
from spikelm_core.energy.paper import PAPER_SHAPES, bart_paper_setting, paper_setting
from spikelm_core.energy.report import (MEMORY_CAVEAT, EnergyReport, EnergyRun, EnergySweepReport, FloatMatmul,
                                        assumptions_text, caveat_text)
from spikelm_core.energy.seq2seq import generation_energy
from spikelm_core.errors import ConfigError
from spikelm_core.models.common import reads_last_step
from spikelm_core.neurons import spiking_neurons

DEFAULT_TARGET_LEN = 64
"""Tokens generated per input when auditing a BART (summary tokens) or a Llama (after the prompt): --target-len."""

MAX_BOOTSTRAP = 1_000_000
"""The most bootstrap resamples --bootstrap takes (a percentile interval settles long before)."""

Progress = Callable[[str], None]

_NON_MATMUL_OPS = frozenset({"layer_norm", "group_norm", "instance_norm", "batch_norm"})


@dataclass(frozen=True)
class EnergyArgs:
    """Settings of one energy sweep (the flags of `spikelm energy`)."""

    model: str | None = None
    """Spiking checkpoint dir, dense BERT, BART or Llama dir, alias ('minilm', 'smollm2') or hub id, or a dir
    holding only config.json; None = the bundled pretrained MiniLM."""
    ks: tuple[float, ...] | None = None
    """Frequency coefficients k to sweep; None = the checkpoint's own k (spiking) or 2.0 (dense)."""
    timesteps: tuple[int, ...] | None = None
    """Time steps T to sweep; None = the checkpoint's own T (spiking) or 4 (dense)."""
    seq_len: int | None = None
    """Tokens per sequence, for the MAC count and the calibration text (BART: source tokens n_e; Llama:
    the prompt of generation); None = DEFAULT_SEQ_LEN, lowered to what the model's positions hold
    (`_default_lengths`)."""
    target_len: int | None = None
    """BART and Llama: tokens generated per input (m); None = DEFAULT_TARGET_LEN."""
    data: str | None = None
    """UTF-8 calibration text file; None = the packaged calibration text."""
    batches: int = 4
    """Calibration batches: the first calibrates the amplitudes, all are traced for firing rates."""
    batch_size: int = 8
    profile: str = DEFAULT_PROFILE
    e_mac_pj: float | None = None
    e_ac_pj: float | None = None
    count_norm: bool = False
    """Also count LayerNorm (fvcore's 5 per element) on both sides."""
    count_neuron_updates: bool = False
    """Also bill the membrane updates of the stateful neurons: one AC per element for each step after the
    first (spiking side)."""
    count_alpha_scale: bool = False
    """Also bill the rescaling by alpha: one MAC per output element of each spike-driven op for each step after
    the first, whose alpha folds into the weights."""
    bootstrap: int = 1000
    """Bootstrap resamples of the calibration sequences for the ratio CI; 0 = none."""
    confidence: float = 0.95
    seed: int = 0
    memory: str | None = None
    """Memory bounds: none, weight-stationary, event-driven or both; None = the cost file's, else both."""
    memory_cost: str | None = None
    """A memory cost preset (lemaire, flat, sram, dram) or a YAML cost file; None = lemaire."""
    neurobench: bool = False
    """Add NeuroBench-compatible metrics per run (neurobench.py)."""

    @property
    def terms(self) -> SpikingTerms:
        """The spiking side's terms billed beside its ACs (memory.SpikingTerms)."""
        return SpikingTerms(neuron_updates=self.count_neuron_updates, alpha_scale=self.count_alpha_scale)

    def __post_init__(self) -> None:
        problems = []
        if self.ks is not None:
            if not self.ks:
                problems.append("--k needs at least one value")
            problems += [
                f"k must be a finite number > 0, got {k!r}"
                for k in self.ks
                if not (_real(k) and math.isfinite(k) and k > 0)
            ]
        if self.timesteps is not None:
            if not self.timesteps:
                problems.append("--timesteps needs at least one value")
            problems += [f"time steps must be an integer >= 1, got {t!r}" for t in self.timesteps
                         if not _integer(t) or t < 1]
        not_integers = [f"{name} must be an integer, got {value!r}" for name, value in
                        (("seq_len", self.seq_len), ("target_len", self.target_len), ("batches", self.batches),
                         ("batch_size", self.batch_size), ("bootstrap", self.bootstrap))
                        if value is not None and not _integer(value)]
        if not_integers:  # before the ranges below compare them
            raise ConfigError("invalid energy settings", details=problems + not_integers)
        # numpy's numbers as Python's, from here on (an np.int64 T, a k from an array)
        for name in ("seq_len", "target_len", "batches", "batch_size", "bootstrap"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, int(getattr(self, name)))
        if self.ks is not None and not problems:
            object.__setattr__(self, "ks", tuple(float(k) for k in self.ks))
        if self.timesteps is not None and not problems:
            object.__setattr__(self, "timesteps", tuple(int(t) for t in self.timesteps))
        if self.seq_len is not None and self.seq_len < 3:
            problems.append(f"--seq-len must be at least 3 tokens, got {self.seq_len}")
        if self.target_len is not None and self.target_len < 1:
            problems.append(f"target length must be >= 1, got {self.target_len}")
        if self.batches < 1:
            problems.append(f"batches must be >= 1, got {self.batches}")
        if self.batch_size < 1:
            problems.append(f"batch size must be >= 1, got {self.batch_size}")
        if not 0 <= self.bootstrap <= MAX_BOOTSTRAP:
            problems.append(f"bootstrap resamples must be between 0 and {MAX_BOOTSTRAP:,}, got {self.bootstrap}")
        if not 0 < self.confidence < 1:
            problems.append(f"confidence must be in (0, 1), got {self.confidence}")
        if problems:
            raise ConfigError("invalid energy settings", details=problems)
        if self.memory == "none" and self.memory_cost is not None:
            raise ConfigError(
                f"--memory-cost {self.memory_cost} prices the memory bounds, and --memory none turns them off",
                hint="leave out --memory-cost, or drop --memory none to keep the memory bounds",
            )


def _integer(value) -> bool:
    """An integer (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value) -> bool:
    """A real number (numpy's too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Plan:
    """What one sweep runs: the (k, T) grid, the lengths, and where the amplitudes come from."""

    source: models.AuditSource
    ks: tuple[float | None, ...]
    timesteps: tuple[int, ...]
    own_t: int
    target_len: int | None
    use_checkpoint_amplitudes: bool
    decoder_only: bool = False

    @property
    def seq2seq(self) -> bool:
        """An encoder-decoder (BART)."""
        return self.target_len is not None and not self.decoder_only

    @property
    def generates(self) -> bool:
        """A model audited per generated token (BART or a decoder-only Llama)."""
        return self.target_len is not None


def _default_lengths(args: EnergyArgs, cfg: dict) -> EnergyArgs:
    """Fill an unset --seq-len: DEFAULT_SEQ_LEN, or fewer where the model's positions hold fewer.

    A Llama's prompt and generation share its positions (seq_len + target_len - 1 of them): with both
    unset and too long, the prompt keeps two thirds and the generation the rest; with --target-len
    given, the prompt takes what it leaves. A length the user gave is never changed (`_plan` checks it).
    """
    if args.seq_len is not None:
        return args
    max_positions = int(cfg.get("max_position_embeddings", 512))
    seq_len = min(DEFAULT_SEQ_LEN, max_positions)
    if models.is_llama(cfg):
        target_len = args.target_len if args.target_len is not None else DEFAULT_TARGET_LEN
        if seq_len + target_len - 1 > max_positions:
            if args.target_len is None:
                seq_len = max(3, min(DEFAULT_SEQ_LEN, 2 * (max_positions + 1) // 3))
                target_len = max(1, min(DEFAULT_TARGET_LEN, max_positions - seq_len + 1))
                return replace(args, seq_len=seq_len, target_len=target_len)
            seq_len = max(3, max_positions - target_len + 1)
    return replace(args, seq_len=seq_len)


def _plan(args: EnergyArgs, source: models.AuditSource) -> _Plan:
    """Check the settings against the model (ConfigError naming the flag) and lay out the sweep."""
    cfg = source.config
    max_positions = int(cfg.get("max_position_embeddings", 512))
    assert args.seq_len is not None, "run_energy fills the default length first (_default_lengths)"
    if args.seq_len > max_positions and not models.is_llama(cfg):  # a Llama: with its target length, below
        raise ConfigError(
            f"--seq-len {args.seq_len} exceeds the model's maximum of {max_positions} positions",
            hint=f"use --seq-len {max_positions} or less",
        )
    target_len: int | None = None
    if models.is_bart(cfg):
        target_len = args.target_len if args.target_len is not None else min(DEFAULT_TARGET_LEN, max_positions)
        if target_len > max_positions:
            raise ConfigError(
                f"--target-len {target_len} exceeds the model's maximum of {max_positions} positions",
                hint=f"use --target-len {max_positions} or less",
            )
    elif models.is_llama(cfg):
        target_len = args.target_len if args.target_len is not None else DEFAULT_TARGET_LEN
        if args.seq_len + target_len - 1 > max_positions:
            if args.seq_len < max_positions:  # the prompt fits: a shorter generation does
                fix = f"use --target-len {max_positions - args.seq_len + 1} or less"
            else:  # both together, e.g. half the context each
                seq = max(3, max_positions // 2)
                fix = f"use e.g. --seq-len {seq} --target-len {max_positions - seq + 1} (seq_len + target_len - 1 <= {max_positions})"
            raise ConfigError(
                f"--seq-len {args.seq_len} + --target-len {target_len} - 1 exceeds the model's maximum of "
                f"{max_positions} positions (the last generation step attends to every earlier token)",
                hint=fix,
            )
    elif args.target_len is not None:
        raise ConfigError(
            f"--target-len applies to generating models (BART, Llama); '{source.name}' is a "
            f"{cfg.get('model_type')} model",
            hint="leave out --target-len for a BERT",
        )
    is_spiking = source.kind == "spiking" or cfg.get("model_type") in models.SPIKING_TYPES
    k_applies = models.k_applies(cfg) if is_spiking else True
    if args.ks is not None and not k_applies:
        raise ConfigError(
            f"'{source.name}' uses {cfg.get('neuron_kind')} neurons with alpha_mode={cfg.get('alpha_mode', 'calibrated')}: "
            "they have no frequency coefficient k",
            hint="leave out --k for this model",
        )
    own_t = int(cfg.get("num_timesteps", 4)) if is_spiking else 4
    own_k = float(cfg.get("k", 2.0)) if is_spiking else 2.0
    return _Plan(
        source=source,
        ks=tuple(dict.fromkeys(args.ks)) if args.ks else ((own_k,) if k_applies else (None,)),
        timesteps=tuple(dict.fromkeys(args.timesteps)) if args.timesteps else (own_t,),
        own_t=own_t,
        target_len=target_len,
        use_checkpoint_amplitudes=source.kind == "spiking" and args.ks is None,
        decoder_only=models.is_llama(cfg),
    )


def _read_out(model: torch.nn.Module | None) -> str:
    """What the heads read of the last layer's T steps, in words (`models.common.read_out`)."""
    return "the last of the T steps" if reads_last_step(getattr(model, "config", None)) else "the mean over T"


def _included(plan: _Plan, args: EnergyArgs, count: MacCount, model: torch.nn.Module | None = None) -> tuple[str, ...]:
    included = included_items(args.count_norm, (r.component for r in count.rows), args.terms,
                              terms_not_billed(plan.source.config))
    state = _read_out(model)
    if plan.decoder_only:
        llama = {"task head (MAC)": f"LM head (MAC: float x float, on {state} after the final RMSNorm)",
                 included[0]: "Q/K/V/O projections, gate/up/down (down = ffn2), Q.K^T and probs.V over grouped-query "
                 "heads (AC when spiking); RMSNorm, RoPE and SiLU(gate) x up are elementwise: not counted on either "
                 "side"}
        included = tuple(llama.get(item, item) for item in included)
        included += (f"Llama: one forward over {args.seq_len} tokens (LM head on every position); generation: a "
                     f"prompt of {args.seq_len} tokens, then {plan.target_len} tokens, with and without the KV cache",)
    if plan.seq2seq:
        included = tuple(f"LM head (MAC: float x float, on {state})" if item == "task head (MAC)" else item
                         for item in included)
        included += (f"BART: encoder once per input at {args.seq_len} tokens, decoder per generated token "
                     f"({plan.target_len} per summary), with and without the KV cache",)
    return included


def _float_matmuls(count: MacCount, model: torch.nn.Module | None = None) -> tuple[FloatMatmul, ...]:
    """Every float x float matmul left in the spiking model; for a decoder-only model also its
    embedding lookups (float, no MACs: listed so that the report names every float weight it reads)."""
    out = []
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    state = _read_out(model)
    if count.decoder_only and model is not None:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Embedding):
                out.append(FloatMatmul(name, "embedding", "embedding", None, 0, 1,
                                       "token embeddings: a float lookup, once per token, repeated over the T steps "
                                       "(direct encoding; no MACs, not counted on either side)"
                                       + ("; tied to the LM head" if tied else "")))
    for row in count.rows:
        if row.spiking or row.op in _NON_MATMUL_OPS or row.component == "norm" or row.macs == 0:
            continue
        if row.component == "pooler":
            reason = f"pooler: float input ({state} of the last layer)"
        elif row.component == "head" and row.module.endswith("lm_head") and count.decoder_only:
            reason = (f"LM head: float input ({state} of the last layer, after the final RMSNorm)"
                      + ("; its weight is the token embedding matrix (tied)" if tied else ""))
        elif row.component == "head" and row.module.endswith("lm_head"):
            reason = f"LM head: float input ({state} of the decoder output)"
        elif row.component == "head":
            reason = "task head: float input"
        elif row.component in ("qk", "av", "cross_qk", "cross_av"):
            reason = "K/V not spiked (spike_kv off): Q.K^T / probs.V with two float operands"
        elif row.component in SPIKING_COMPONENTS:
            reason = "no spiking neuron in front of this op"
        else:
            reason = "op outside the spiking encoder: float operands"
        out.append(FloatMatmul(row.module, row.op, row.component, row.layer, row.macs, row.steps, reason, row.stack))
    return tuple(out)


def _component_rates(report: EnergyReport) -> dict[Any, float]:
    """MAC-weighted rates per component, keyed (stack, component) for BART rows."""
    return {(r.stack, r.component) if r.stack is not None else r.component: r.firing_rate
            for r in report.by_component() if r.firing_rate is not None}


def run_energy(args: EnergyArgs, progress: Progress | None = None) -> EnergySweepReport:
    """Run the k x T energy sweep described in the module docstring.

    Raises:
        ConfigError (exit 2): bad settings, --seq-len beyond the model's positions, --k with
            neurons that have no k, --target-len for a BERT, salient channels (not billed yet).
        CheckpointError (exit 3): no such model, no config.json, not a BERT, BART or Llama, offline hub id.
        DataError (exit 4): missing, unreadable or empty --data.
        EnergyAuditError (exit 1): an uncounted matmul-class operator (named), a count that
            disagrees with the closed form or with the dense twin, spikes that are not spikes.
    """
    say = progress or (lambda message: None)
    start = time.perf_counter()
    profile = get_profile(args.profile, e_mac_pj=args.e_mac_pj, e_ac_pj=args.e_ac_pj)
    memory = load_memory_cost(args.memory_cost, args.memory)
    source = models.open_source(args.model)
    args = _default_lengths(args, source.config)
    plan = _plan(args, source)
    torch.manual_seed(args.seed)
    batches, data_info = models.calibration_batches(source, data=args.data, batches=args.batches,
                                                    batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed)
    runs: list[EnergyRun] = []
    twin: MacCount | None = None
    included: tuple[str, ...] = ()
    for T in plan.timesteps:
        say(f"building the spiking model at T={T} from {source.name} ({source.kind})")
        torch.manual_seed(args.seed)
        # a spiking checkpoint audited without --k keeps its own neuron settings (its per-layer k
        # candidates included) wherever it is recalibrated; --k replaces them
        own_settings = plan.use_checkpoint_amplitudes
        model = models.build_model(source, models.neuron_settings(source, T, None if own_settings else plan.ks[0]))
        model.eval()
        check_billable(model)  # before the MAC count and the firing pass, not after
        for batch in batches:  # a tokenizer that is not the model's: a named error, not an IndexError
            check_token_ids(model, batch)
        what = f"{args.seq_len} source / {plan.target_len} summary tokens" if plan.seq2seq else f"{args.seq_len} tokens"
        say(f"counting MACs at T={T}, {what} (fvcore)")
        count = count_macs(model, seq_len=args.seq_len, count_norm=args.count_norm, num_timesteps=T,
                           decoder_len=plan.target_len if plan.seq2seq else None)
        if twin is None:
            twin = models.dense_twin_count(source.config, type(model).__name__, args.seq_len, args.count_norm,
                                           plan.target_len)
            included = _included(plan, args, count, model)
        models.check_twin(count, twin)
        for k in plan.ks:
            runs.append(_run_point(model, plan, args, profile, memory, batches, count, included, k, T, say))
        del model
    assert twin is not None
    return EnergySweepReport(
        runs=tuple(runs),
        model=models.model_info(source),
        profile=profile,
        seq_len=args.seq_len,
        data=data_info,
        dense_twin={"class": twin.model_class, "macs": twin.total, "components": twin.by_component(),
                    **({"stacks": {(k or "other"): v for k, v in twin.by_stack().items()}} if plan.seq2seq else {})},
        count_norm=args.count_norm,
        count_neuron_updates=args.count_neuron_updates,
        count_alpha_scale=args.count_alpha_scale,
        seed=args.seed,
        seconds=time.perf_counter() - start,
        included=included,
        target_len=plan.target_len,
        decoder_only=plan.decoder_only,
        memory_cost=memory.cost if memory.bounds else None,
        assumptions=assumptions_text(count_norm=args.count_norm, memory=bool(memory.bounds), terms=args.terms,
                                     not_billed=terms_not_billed(plan.source.config)),
        caveat=MEMORY_CAVEAT if memory.bounds else caveat_text(profile, args.terms),
    )


def spikes_are_binary(model) -> bool:
    """Whether every spiking neuron of `model` emits binary spikes ({0, a}: LIF, the `levels: binary`
    ablation), as the neurons declare, not as a firing pass saw them (a ternary neuron that fired only
    positive spikes, a binary one that never fired): a binary spike is stored in 1 bit, a ternary in 2."""
    levels = [getattr(neuron, "levels", "ternary") for _, neuron in spiking_neurons(model)]
    return bool(levels) and all(level == "binary" for level in levels)


def _shape(model, plan: _Plan, args: EnergyArgs) -> Shape:
    """The audited model's shapes for the memory model's ops (its linear layers' sizes included)."""
    return shape_of(plan.source.config, args.seq_len, plan.target_len if plan.seq2seq else None,
                    linear_shapes(model))


def _neurons_of(shape: Shape | None) -> dict[str, bool]:
    """What the paper setting takes of the audited model's neurons: K/V membranes, per-step amplitudes,
    the other neurons' membranes."""
    return {} if shape is None else {"kv_stateful": shape.kv_stateful, "rescaled": shape.rescaled,
                                     "stateful": shape.stateful}


def _memory(model, plan: _Plan, args: EnergyArgs, profile: CostProfile, memory: MemorySettings,
            ops: Sequence[MemOp] | None, shape: Shape | None, paper: EnergyReport | None, neurons,
            T: int) -> tuple[MemoryReport | None, MemoryReport | None, dict[str, Any] | None]:
    """The memory bounds of one run (memory.py: the forward's `ops`, and for a BART one summary per mode), of
    its paper setting, and the NeuroBench-compatible metrics (neurobench.py), each when asked for."""
    if not memory.bounds and not args.neurobench:
        return None, None, None
    assert ops is not None and shape is not None, "_run_point builds the ops where the memory model needs them"
    bench = neurobench_metrics(model, ops, neurons, T) if args.neurobench else None
    if not memory.bounds:
        return None, None, bench
    binary = spikes_are_binary(model)
    assumptions = Assumptions(T, profile, memory.cost, value_bytes(profile), 1 if binary else 2, terms=args.terms)
    generation = None
    if plan.generates:
        assert plan.target_len is not None
        generation = {mode: generation_ops(ops, shape, plan.target_len, cache=mode == "kv_cache")
                      for mode in ("kv_cache", "no_cache")}
    paper_memory = None
    if paper is not None:
        paper_ops = forward_ops(paper.rows, replace(PAPER_SHAPES["bart" if plan.seq2seq else "bert"], **_neurons_of(shape)))
        paper_memory = memory_report(paper_ops, assumptions, memory.bounds)
    return (memory_report(ops, assumptions, memory.bounds, memory.what_if, generation, plan.target_len),
            paper_memory, bench)


def _run_point(model, plan: _Plan, args: EnergyArgs, profile: CostProfile, memory: MemorySettings,
               batches: Sequence[dict],
               count: MacCount, included: tuple[str, ...], k: float | None, T: int, say: Progress) -> EnergyRun:
    """One (k, T) point: amplitudes, the firing pass, the energy, the paper setting and the bootstrap."""
    checkpoint_amps = plan.use_checkpoint_amplitudes and T == plan.own_t
    if checkpoint_amps:
        checkpoint_amps = models.load_checkpoint_amplitudes(model, plan.source)
    if checkpoint_amps:
        amplitudes = "checkpoint"
    else:
        candidates = getattr(model.config, "k_candidates", None) if plan.use_checkpoint_amplitudes else None
        if k is not None and not plan.use_checkpoint_amplitudes:
            models.set_k(model, k)
        if candidates:  # the checkpoint's own per-layer k, recalibrated (another T, or no saved amplitudes)
            amplitudes = ("calibrated at the checkpoint's per-layer k (candidates "
                          + ", ".join(f"{c:g}" for c in candidates) + ")")
        else:
            amplitudes = f"calibrated at k={k:g}" if k is not None else "calibrated"
    label = f"k={k:g}, T={T}" if k is not None else f"T={T}"
    say(f"{label}: {'calibrating on batch 1, ' if not checkpoint_amps else ''}"
        f"tracing firing rates over {len(batches)} batch(es)")
    firing = trace_firing(model, batches, calibrate=not checkpoint_amps, seq2seq=plan.seq2seq)
    rates = {name: stats.firing_rate for name, stats in firing.neurons.items()}
    report = energy_from_counts(count.rows, rates, T, profile, seq_len=args.seq_len, included=included)
    shape, ops = None, None
    if args.terms.any or memory.bounds or args.neurobench:  # the memory model's ops: only where they are used
        shape = _shape(model, plan, args)
        ops = forward_ops(report.rows, shape)
        report = with_terms(report, ops, args.terms)
    floats = _float_matmuls(count, model)
    generation = None
    paper: EnergyReport | None
    if plan.generates:
        assert plan.target_len is not None
        generation = generation_energy(count, rates, T, profile, target_len=plan.target_len, included=included,
                                       terms=args.terms, ops=ops, shape=shape)
    if plan.decoder_only:
        paper = None  # the paper reports no decoder-only model; the count itself is the closed form's
    elif plan.seq2seq:
        paper = bart_paper_setting(_component_rates(report), timesteps=T, profile=profile,
                                   float_components={(f.stack, f.component) for f in floats
                                                     if f.component in SPIKING_COMPONENTS},
                                   terms=args.terms, **_neurons_of(shape))
    else:
        paper = paper_setting(_component_rates(report), timesteps=T, profile=profile,
                              float_components={f.component for f in floats if f.component in ENCODER_COMPONENTS},
                              terms=args.terms, **_neurons_of(shape))
    ratio_ci, rate_ci = bootstrap(report, firing.profiles, args.bootstrap, args.confidence, args.seed)
    neurons = neuron_rates(firing, count)
    run_memory, paper_memory, bench = _memory(model, plan, args, profile, memory, ops, shape, paper, neurons, T)
    return EnergyRun(
        k=k, timesteps=T, report=report, paper=paper,
        neurons=neurons,
        per_position=per_position(firing.profiles, count),
        float_matmuls=floats, amplitudes=amplitudes, firing_rates_meaningful=plan.source.kind != "config-only",
        ratio_ci=ratio_ci, mean_firing_rate_ci=rate_ci, generation=generation,
        memory=run_memory, paper_memory=paper_memory, neurobench=bench,
    )


def estimate_energy_sweep(
    model: str | None = None,
    ks: Sequence[float] | None = None,
    timesteps: Sequence[int] | None = None,
    *,
    progress: Progress | None = None,
    **settings: Any,
) -> EnergySweepReport:
    """Keyword form of `run_energy`: `estimate_energy_sweep("minilm", ks=[2, 3, 4])`.

    Other keywords are `EnergyArgs` fields (seq_len, data, batches, batch_size, profile, e_mac_pj,
    e_ac_pj, count_norm, count_neuron_updates, count_alpha_scale, bootstrap, confidence, seed, memory,
    memory_cost, neurobench).
    """
    unknown = sorted(set(settings) - set(EnergyArgs.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown energy setting(s): {', '.join(unknown)}",
                          details=[f"known: {', '.join(EnergyArgs.__dataclass_fields__)}"])
    args = EnergyArgs(
        model=model,
        ks=tuple(ks) if ks is not None else None,
        timesteps=tuple(timesteps) if timesteps is not None else None,
        **settings,
    )
    return run_energy(args, progress)


__all__ = ["DEFAULT_TARGET_LEN", "EnergyArgs", "estimate_energy_sweep", "run_energy"]
