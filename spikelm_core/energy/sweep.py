"""`run_energy`: the audited k x T energy sweep behind `spikelm energy` (issue 3, sections 4-5).

For every time-step count T the spiking model is built once (dense weights copied, or a spiking
checkpoint's weights) and its MACs are counted once with fvcore; the dense twin (the plain
Hugging Face BERT of the same shape, on the 'meta' device) is counted once and must agree with
the spiking model's per-step count component by component. For every k at that T the amplitudes
are calibrated on the first calibration batch (a_t = k * mean|u_t|), spikes are counted with
forward hooks over the calibration batches (pads masked), and the counts are priced by
`energy_from_counts`. Each (k, T) run also carries:

- the paper setting: the measured per-component rates applied to BERT-base at 128 tokens;
- the spike-purity listing: every float x float matmul the spiking model still runs;
- a bootstrap confidence interval of the energy ratio (and of the mean firing rate), resampling
  calibration sequences with replacement (seeded);
- per-layer, per-neuron, per-step (+/-) and per-token-position firing rates.

A BART (dense, spiking or config-only) runs the same sweep: the MAC count is one teacher-forced
forward (`--seq-len` source tokens, `--target-len` decoder tokens, `use_cache=False`), firing rates
are traced teacher-forced (decoder fed the shifted input, decoder neurons masked with the decoder's
padding), and each run adds `generation` (seq2seq.py): one summary with and without the KV cache,
per summary, per token and per line (encoder, cross K/V, decoder, LM head). The paper setting is
then BART-base at 128/128 tokens.

The sweep returns an `EnergySweepReport`; `EnergySweepReport.to_dict()` is the stable JSON schema
(`SCHEMA`, documented there and in docs/energy-report.md). Nothing here prints or exits.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spikelm_core.energy.costs import DEFAULT_PROFILE, CostProfile, get_profile
from spikelm_core.energy.errors import EnergyAuditError
from spikelm_core.energy.estimate import ASSUMPTIONS, CAVEAT, EnergyReport, EnergyRow, energy_from_counts, paper_setting
from spikelm_core.energy.firing import FiringRateRecorder, SpikeProfile, SpikeStats
from spikelm_core.energy.macs import COMPONENTS, DEFAULT_SEQ_LEN, ENCODER_COMPONENTS, SPIKING_COMPONENTS, MacCount, count_macs
from spikelm_core.energy.seq2seq import GenerationEnergy, bart_paper_setting, generation_energy
from spikelm_core.errors import CheckpointError, ConfigError
from spikelm_core.models.common import SPIKING_FIELDS

DEFAULT_TARGET_LEN = 64
"""Summary tokens generated per input when auditing a BART (--target-len)."""
BART_TYPES = ("bart", "spiking_bart")
SPIKING_TYPES = ("spiking_bert", "spiking_bart")

SCHEMA = "spikelm.energy/1"
"""Version tag of `EnergySweepReport.to_dict()`; bumped on any incompatible change."""

Progress = Callable[[str], None]

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
_NON_MATMUL_OPS = frozenset({"layer_norm", "group_norm", "instance_norm", "batch_norm"})


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class EnergyArgs:
    """Settings of one energy sweep (the flags of `spikelm energy`)."""

    model: str | None = None
    """Spiking checkpoint dir, dense BERT dir, alias or hub id, or a dir holding only config.json;
    None = the bundled pretrained MiniLM."""
    ks: tuple[float, ...] | None = None
    """Amplitude coefficients to sweep; None = the checkpoint's own k (spiking) or 2.0 (dense)."""
    timesteps: tuple[int, ...] | None = None
    """Time steps T to sweep; None = the checkpoint's own T (spiking) or 4 (dense)."""
    seq_len: int = DEFAULT_SEQ_LEN
    """Tokens per sequence, for the MAC count and the calibration text (BART: source tokens n_e)."""
    target_len: int | None = None
    """BART only: tokens generated per summary (m); None = DEFAULT_TARGET_LEN."""
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
    bootstrap: int = 1000
    """Bootstrap resamples of the calibration sequences for the ratio CI; 0 = none."""
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.ks is not None:
            if not self.ks:
                problems.append("--k needs at least one value")
            problems += [
                f"k must be a finite number > 0, got {k:g}"
                for k in self.ks
                if not (isinstance(k, (int, float)) and math.isfinite(k) and k > 0)
            ]
        if self.timesteps is not None:
            if not self.timesteps:
                problems.append("--timesteps needs at least one value")
            problems += [f"time steps must be >= 1, got {t}" for t in self.timesteps if t < 1]
        if self.seq_len < 3:
            problems.append(f"sequence length must be at least 3 ([CLS] x [SEP]), got {self.seq_len}")
        if self.target_len is not None and self.target_len < 1:
            problems.append(f"target length must be >= 1, got {self.target_len}")
        if self.batches < 1:
            problems.append(f"batches must be >= 1, got {self.batches}")
        if self.batch_size < 1:
            problems.append(f"batch size must be >= 1, got {self.batch_size}")
        if self.bootstrap < 0:
            problems.append(f"bootstrap resamples must be >= 0, got {self.bootstrap}")
        if not 0 < self.confidence < 1:
            problems.append(f"confidence must be in (0, 1), got {self.confidence}")
        if problems:
            raise ConfigError("invalid energy settings", details=problems)


# ---------------------------------------------------------------------------------------------
# Report


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
    """Amplitude coefficient (None for neurons without one: LIF, fixed amplitudes)."""
    timesteps: int
    report: EnergyReport
    paper: EnergyReport
    """The measured per-component rates applied to BERT-base at 128 tokens (closed form)."""
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
    """BART only: one summary generated with and without the KV cache (seq2seq.py)."""

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
    """BART only: tokens generated per summary (None for BERT)."""

    @property
    def is_seq2seq(self) -> bool:
        return self.target_len is not None

    @property
    def firing_rates_meaningful(self) -> bool:
        return all(r.firing_rates_meaningful for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form (schema `spikelm.energy/1`, docs/energy-report.md).

        Top level::

            schema            "spikelm.energy/1"
            model             {source, path, kind: spiking|dense|config-only, architecture,
                               hidden_size, num_hidden_layers, num_attention_heads,
                               intermediate_size, max_position_embeddings}
            constants         {profile, e_mac_pj, e_ac_pj, source}
            seq_len           tokens per sequence (MACs are per sample at this length; BART: source)
            target_len        BART only: summary tokens per input
            data              {source, batches, sequences, tokens}
            count_norm        LayerNorm counted on both sides
            dense_twin        {class, macs, components: {component: macs}}
            firing_rates_meaningful   false for a config-only (random weights) audit
            assumptions, included, caveat
            seed, seconds
            runs              one entry per (k, T), in sweep order (T outer, k inner)

        Each run::

            k, timesteps, amplitudes, firing_rates_meaningful
            mean_firing_rate  MAC-weighted over the spike-driven ops
            dense_macs        dense twin MACs per sample          (the table's "dense MACs")
            spiking_acs       sum over spike-driven ops of T * fr * MACs
            spiking_macs      float MACs the spiking model still runs (x steps)
            energy_dense_mj, energy_spiking_mj, ratio (null if the spiking side is 0)
            ratio_ci, mean_firing_rate_ci   {low, high, confidence, resamples, unit} or null
            spike_driven_share  fraction of dense MACs that are spike-driven
            components        [{component, macs, firing_rate, spiking_acs, spiking_macs,
                                energy_dense_mj, energy_spiking_mj}]  rows sum to the totals
            layers            the same per (component, layer)
            neurons           [{name, component, layer, kind, firing_rate, positive_rate,
                                negative_rate, step_rates, step_positive, step_negative, elements}]
            per_position      {"all": [L rates], "<component>": [L rates]}  pads excluded
            float_matmuls     [{module, op, component, layer, macs, steps, reason}]
            paper_setting     {model, seq_len, timesteps, dense_macs, spiking_acs, spiking_macs,
                               energy_dense_mj, energy_spiking_mj, ratio, mean_firing_rate,
                               components}
            generation        BART only: {source_len, target_len, kv_cache, no_cache}; each mode
                              {per_summary, per_token, last_token: totals, lines: [{line, charged,
                              totals}]} (GenerationEnergy.to_dict)

        BART rows of components / layers / float_matmuls also carry `stack`; the BART model block
        carries model_type and the BART shape keys instead of BERT's.
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
            "seq_len": self.seq_len,
            **({"target_len": self.target_len} if self.target_len is not None else {}),
            "data": dict(self.data),
            "count_norm": self.count_norm,
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


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) or math.isnan(x) else x


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


def _totals(report: EnergyReport) -> dict[str, Any]:
    return {
        "mean_firing_rate": report.mean_firing_rate,
        "dense_macs": report.total_macs,
        "spiking_acs": report.total_spiking_acs,
        "spiking_macs": report.total_spiking_macs,
        "energy_dense_mj": report.energy_dense_mj,
        "energy_spiking_mj": report.energy_spiking_mj,
        "ratio": _finite(report.ratio),
    }


BART_PAPER_MODEL = ("BART-base (closed form: d=768, 6+6 layers, 12 heads, d_ff=3072, V=50265), teacher-forced "
                    "at 128/128 tokens, LM head as MAC")


BART_SHAPE_KEYS = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
                   "encoder_ffn_dim", "decoder_ffn_dim", "vocab_size", "max_position_embeddings")


def _float_dict(f: FloatMatmul) -> dict[str, Any]:
    data = asdict(f)
    if data["stack"] is None:
        del data["stack"]  # BERT's schema is unchanged
    return data


def _run_dict(run: EnergyRun) -> dict[str, Any]:
    paper = run.paper
    return {
        "k": run.k,
        "timesteps": run.timesteps,
        "amplitudes": run.amplitudes,
        "firing_rates_meaningful": run.firing_rates_meaningful,
        **_totals(run.report),
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
        "paper_setting": {
            "model": BART_PAPER_MODEL if run.generation is not None else
            "BERT-base (closed form: d=768, 12 layers, 12 heads, d_ff=3072, pooler)",
            "seq_len": paper.seq_len,
            "timesteps": paper.num_timesteps,
            **_totals(paper),
            "components": [_row_dict(r, layer=False) for r in paper.by_component()],
        },
    }


# ---------------------------------------------------------------------------------------------
# Model loading


@dataclass
class _Source:
    path: Path
    kind: str  # 'spiking' | 'dense' | 'config-only'
    config: dict
    name: str


def _resolve(model: str | None) -> _Source:
    from spikelm_core.convert import read_config
    from spikelm_core.hub import resolve_model_source

    name = model or "minilm"
    path = resolve_model_source(name)
    config = read_config(path)  # CheckpointError: no config.json, unsupported model type
    if config.get("model_type") not in ("bert", "spiking_bert", *BART_TYPES):
        raise CheckpointError(
            f"'{name}' holds a '{config.get('model_type')}' model; the energy sweep audits BERT and BART models",
            hint="give a BERT- or BART-family model (dense or spiking)",
        )
    has_weights = any((path / f).is_file() for f in _WEIGHT_FILES)
    pickled = [p.name for p in (*path.glob("*.bin"), *path.glob("*.pt"))]
    if not has_weights and not pickled:
        kind = "config-only"
    else:
        kind = "spiking" if config.get("model_type") in SPIKING_TYPES else "dense"
    return _Source(path=path, kind=kind, config=config, name=name)


def _k_applies(config: dict) -> bool:
    return config.get("neuron_kind", "elastic_bi") == "elastic_bi" and config.get("alpha_mode", "calibrated") == "calibrated"


def _settings(source: _Source, timesteps: int, k: float | None):
    from spikelm_core.convert import NeuronSettings

    base = NeuronSettings()
    if source.config.get("model_type") in SPIKING_TYPES:
        known = {f: source.config[f] for f in asdict(base) if f in source.config}
        base = NeuronSettings(**known)
    return replace(base, num_timesteps=timesteps, k=float(k) if k is not None else base.k)


_NOT_COPIED_KEYS = frozenset({"model_type", "architectures", "transformers_version", "auto_map", "_name_or_path"})


def _is_bart(config: dict) -> bool:
    return config.get("model_type") in BART_TYPES


def _spiking_class(config: dict) -> type:
    from spikelm_core.models import spiking_bart, spiking_bert

    if _is_bart(config):
        archs = config.get("architectures") or []
        if any(a.endswith("ForConditionalGeneration") for a in archs):
            return spiking_bart.SpikingBartForConditionalGeneration
        return spiking_bart.SpikingBartModel

    for arch in config.get("architectures") or []:
        for suffix in ("ForSequenceClassification", "ForMaskedLM", "ForPreTraining"):
            if arch.endswith(suffix):
                return getattr(spiking_bert, f"SpikingBert{suffix}")
    return spiking_bert.SpikingBertModel


def _build(source: _Source, settings) -> nn.Module:
    """The spiking model at `settings`: weights from the checkpoint, or random (config-only)."""
    from spikelm_core.convert import spiking_model_from_dense
    from spikelm_core.models.spiking_bart import SpikingBartConfig
    from spikelm_core.models.spiking_bert import SpikingBertConfig

    if source.kind != "config-only":
        model, _, _, _ = spiking_model_from_dense(source.path, settings)
        return model
    fields = {k: v for k, v in source.config.items() if k not in _NOT_COPIED_KEYS}
    fields.update(asdict(settings))
    family, config_class = ("BART", SpikingBartConfig) if _is_bart(source.config) else ("BERT", SpikingBertConfig)
    try:
        config = config_class(**fields)
    except Exception as exc:
        raise CheckpointError(f"'{source.path}/config.json' is not a valid {family} configuration: {exc}") from exc
    return _spiking_class(source.config)(config)


def _load_checkpoint_amplitudes(model: nn.Module, source: _Source) -> bool:
    """Load the checkpoint's saved amplitudes; False if it holds none (the sweep then calibrates)."""
    from spikelm_core.calibration import is_calibrated
    from spikelm_core.convert import load_dense_state_dict

    state = load_dense_state_dict(source.path)
    target = model.state_dict()
    prefix = getattr(model, "base_model_prefix", "bert") + "."
    neuron_state = {}
    for key, tensor in state.items():
        if not key.endswith((".alpha", ".calibrated")):
            continue
        for cand in (key, prefix + key, key[len(prefix):] if key.startswith(prefix) else None):
            if cand is not None and cand in target and target[cand].shape == tensor.shape:
                neuron_state[cand] = tensor
                break
    model.load_state_dict(neuron_state, strict=False)
    return bool(neuron_state) and is_calibrated(model)


def _set_k(model: nn.Module, k: float) -> None:
    from spikelm_core.neurons import SpikingNeuron

    if hasattr(model, "config"):
        model.config.k = float(k)
    for module in model.modules():
        if isinstance(module, SpikingNeuron) and hasattr(module, "k"):
            module.k = float(k)


_SPIKING_FIELDS = SPIKING_FIELDS


def _dense_twin(config: dict, spiking_class: str, seq_len: int, count_norm: bool, target_len: int | None = None) -> MacCount:
    """The plain HF BERT (or BART) of the same shape and head, on 'meta' (shapes only), counted once."""
    import transformers
    from transformers import BartConfig, BertConfig

    data = {k: v for k, v in config.items() if k not in _NOT_COPIED_KEYS and k not in _SPIKING_FIELDS}
    if _is_bart(config):
        data.pop("encoder_readout", None)
        cls = getattr(transformers, spiking_class.replace("SpikingBart", "Bart"), transformers.BartModel)
        try:
            bart_config = BartConfig(**{**data, "use_cache": False})
        except Exception as exc:
            raise CheckpointError(f"config.json is not a valid BART configuration: {exc}") from exc
        with torch.device("meta"):
            twin = cls(bart_config)
        return count_macs(twin, seq_len=seq_len, decoder_len=target_len, count_norm=count_norm)
    cls = getattr(transformers, spiking_class.replace("SpikingBert", "Bert"), transformers.BertModel)
    try:
        bert_config = BertConfig(**data)
    except Exception as exc:
        raise CheckpointError(f"config.json is not a valid BERT configuration: {exc}") from exc
    with torch.device("meta"):
        twin = cls(bert_config)
    return count_macs(twin, seq_len=seq_len, count_norm=count_norm)


def _check_twin(spiking: MacCount, dense: MacCount) -> None:
    got, want = spiking.by_stack(), dense.by_stack()
    diffs = [
        f"{(stack + ' ') if stack else ''}{c}: spiking model {got.get(stack, {}).get(c, 0):,} "
        f"vs dense twin {want.get(stack, {}).get(c, 0):,}"
        for stack in dict.fromkeys([*got, *want])
        for c in COMPONENTS
        if got.get(stack, {}).get(c, 0) != want.get(stack, {}).get(c, 0)
    ]
    if diffs:
        raise EnergyAuditError(
            f"the spiking {spiking.model_class} and its dense twin {dense.model_class} disagree on the MAC count",
            details=diffs,
            hint="an operator is probably uncounted or charged to the wrong component in one of them",
        )


# ---------------------------------------------------------------------------------------------
# Calibration data


def _batches(source: _Source, args: EnergyArgs, max_positions: int, vocab_size: int) -> tuple[list[dict], dict]:
    from spikelm_core.calibration import packaged_calibration_text, read_text_file, text_batches
    from spikelm_core.convert import load_tokenizer

    text = read_text_file(args.data) if args.data else None  # DataError: missing, empty, unreadable
    has_tokenizer = any((source.path / f).is_file() for f in _TOKENIZER_FILES)
    if source.kind == "config-only" and not has_tokenizer:
        tokenizer = None
    else:
        tokenizer = load_tokenizer(source.path)  # CheckpointError when unusable
    if tokenizer is None:
        if args.data:
            raise CheckpointError(
                f"'{source.path}' has no tokenizer, so --data cannot be tokenised",
                hint="copy tokenizer files (vocab.txt / tokenizer.json) next to config.json, or leave out --data",
            )
        gen = torch.Generator().manual_seed(args.seed)
        batches = []
        for _ in range(args.batches):
            ids = torch.randint(1, max(vocab_size, 2), (args.batch_size, args.seq_len), generator=gen)
            batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)})
        what = "random token ids (no tokenizer)"
    else:
        batches = text_batches(tokenizer, text if text is not None else packaged_calibration_text(),
                               seq_len=args.seq_len, batch_size=args.batch_size)[: args.batches]
        what = str(args.data) if args.data else "packaged calibration text"
    info = {
        "source": what,
        "batches": len(batches),
        "sequences": sum(int(b["input_ids"].shape[0]) for b in batches),
        "tokens": sum(int(b["attention_mask"].sum()) for b in batches),
    }
    return batches, info


# ---------------------------------------------------------------------------------------------
# Firing pass, join, bootstrap


_ENCODER_SIDE = (".encoder_attn.k_proj.neuron", ".encoder_attn.v_proj.neuron", ".encoder_attn.qk.neuron",
                 ".encoder_attn.av.neuron")


def _encoder_side(name: str) -> bool:
    """A BART neuron that sees source tokens: the encoder's, and cross-attention K/V (encoder states)."""
    return name.startswith("encoder.") or ".encoder." in name or name.endswith(_ENCODER_SIDE)


def _trace(
    model: nn.Module, batches: Sequence[dict], *, calibrate: bool, seq2seq: bool = False
) -> tuple[dict[str, SpikeStats], dict[str, SpikeProfile]]:
    """Spike counts of every neuron over `batches` (eval mode, no grad, pads masked).

    With `calibrate`, every neuron is first marked uncalibrated, so the first batch sets
    a_t = k * mean|u_t| (as `spikelm_core.calibration.calibrate` does) and is counted with the
    amplitudes it has just set: each neuron calibrates on its input and then spikes, so these are
    the spikes a second pass over that batch would give, one forward cheaper.
    """
    from spikelm_core.calibration import spiking_neurons

    was_training = model.training
    model.eval()
    neurons = spiking_neurons(model)
    if calibrate:
        for _, neuron in neurons:
            neuron.mark_uncalibrated()
    keys = ("input_ids", "attention_mask") if seq2seq else ("input_ids", "attention_mask", "token_type_ids")
    extra = {"use_cache": False} if seq2seq else {}
    try:
        with torch.no_grad(), FiringRateRecorder(model, detail=True) as recorder:
            for batch in batches:
                mask = batch.get("attention_mask")
                recorder.token_mask = mask
                if seq2seq and mask is not None:
                    # the decoder reads shift_tokens_right(input_ids): the start token, then tokens 0..L-2
                    dec_mask = torch.cat([torch.ones_like(mask[:, :1]), mask[:, :-1]], dim=1)
                    recorder.mask_for = lambda name, m=mask, d=dec_mask: m if _encoder_side(name) else d
                model(**{k: v for k, v in batch.items() if k in keys}, **extra)
    finally:
        model.train(was_training)
    uncalibrated = [name for name, neuron in neurons if not neuron.is_calibrated]
    if uncalibrated:
        raise EnergyAuditError("calibration did not reach some neuron(s)", details=uncalibrated[:5])
    never = [n for n, s in recorder.stats.items() if s.total == 0]
    if never:
        raise EnergyAuditError("neuron(s) never ran during the firing-rate pass", details=never)
    return dict(recorder.stats), dict(recorder.profiles)


def _float_matmuls(count: MacCount) -> tuple[FloatMatmul, ...]:
    out = []
    for row in count.rows:
        if row.spiking or row.op in _NON_MATMUL_OPS or row.component == "norm" or row.macs == 0:
            continue
        if row.component == "pooler":
            reason = "pooler: float input (the mean over T of the last layer)"
        elif row.component == "head" and row.module.endswith("lm_head"):
            reason = "LM head: float input (the mean over T of the decoder output)"
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


def _neuron_rates(stats: dict[str, SpikeStats], profiles: dict[str, SpikeProfile], count: MacCount) -> tuple[NeuronRates, ...]:
    where = {r.operand: (r.component, r.layer) for r in count.rows if r.operand}
    out = []
    for name, s in stats.items():
        p = profiles[name]
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


def _per_position(profiles: dict[str, SpikeProfile], count: MacCount) -> dict[str, tuple[float, ...]]:
    where = {r.operand: r.component for r in count.rows if r.operand}
    groups: dict[str, list[SpikeProfile]] = {"all": list(profiles.values())}
    for name, p in profiles.items():
        groups.setdefault(where.get(name, "other"), []).append(p)
    out = {}
    for key in ["all", *[c for c in COMPONENTS if c in groups]]:
        members = [p for p in groups[key] if p.position_total.numel()]
        if not members:
            continue
        n = max(p.position_total.numel() for p in members)
        nz = sum(torch.nn.functional.pad(p.position_nonzero, (0, n - p.position_nonzero.numel())) for p in members)
        tot = sum(torch.nn.functional.pad(p.position_total, (0, n - p.position_total.numel())) for p in members)
        out[key] = tuple((nz.double() / tot.double().clamp(min=1)).tolist())
    return out


def _bootstrap(
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
    float_pj = sum(r.energy_spiking_mj for r in report.rows if r.firing_rate is None) * 1e9
    dense_pj = report.energy_dense_mj * 1e9
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(samples, np.full(samples, 1.0 / samples), size=resamples).astype(np.float64)  # [R, S]
    rates = (nonzero @ draws.T) / np.maximum(total @ draws.T, 1.0)  # [N, R]
    spiking_pj = weights @ rates + float_pj
    ratios = np.where(spiking_pj > 0, dense_pj / np.maximum(spiking_pj, 1e-300), np.inf)
    mean_rates = (mac_weights @ rates) / mac_weights.sum() if mac_weights.sum() else np.zeros(resamples)
    tail = (1 - confidence) / 2
    finite = ratios[np.isfinite(ratios)]
    ratio_ci = (
        Interval(float(np.quantile(finite, tail)), float(np.quantile(finite, 1 - tail)), confidence, resamples)
        if finite.size else None
    )
    rate_ci = Interval(float(np.quantile(mean_rates, tail)), float(np.quantile(mean_rates, 1 - tail)), confidence, resamples)
    return ratio_ci, rate_ci


def _component_rates(report: EnergyReport) -> dict[Any, float]:
    """MAC-weighted rates per component, keyed (stack, component) for BART rows."""
    return {(r.stack, r.component) if r.stack is not None else r.component: r.firing_rate
            for r in report.by_component() if r.firing_rate is not None}


def _included(count_norm: bool, count: MacCount) -> tuple[str, ...]:
    from spikelm_core.energy.estimate import _included as included

    return included(count_norm, (r.component for r in count.rows))


# ---------------------------------------------------------------------------------------------
# Entry point


def run_energy(args: EnergyArgs, progress: Progress | None = None) -> EnergySweepReport:
    """Run the k x T energy sweep described in the module docstring.

    Raises:
        ConfigError (exit 2): bad settings, --seq-len beyond the model's positions, --k with
            neurons that have no k.
        CheckpointError (exit 3): no such model, no config.json, not a BERT or BART, offline hub id.
        DataError (exit 4): missing, unreadable or empty --data.
        EnergyAuditError (exit 1): an uncounted matmul-class operator (named), a count that
            disagrees with the closed form or with the dense twin, spikes that are not spikes.
    """
    say = progress or (lambda message: None)
    start = time.perf_counter()
    profile = get_profile(args.profile, e_mac_pj=args.e_mac_pj, e_ac_pj=args.e_ac_pj)
    source = _resolve(args.model)
    cfg = source.config
    max_positions = int(cfg.get("max_position_embeddings", 512))
    if args.seq_len > max_positions:
        raise ConfigError(
            f"--seq-len {args.seq_len} exceeds the model's maximum of {max_positions} positions",
            hint=f"use --seq-len {min(DEFAULT_SEQ_LEN, max_positions)} or less",
        )
    seq2seq = _is_bart(cfg)
    target_len: int | None = None
    if seq2seq:
        target_len = args.target_len if args.target_len is not None else min(DEFAULT_TARGET_LEN, max_positions)
        if target_len > max_positions:
            raise ConfigError(
                f"--target-len {target_len} exceeds the model's maximum of {max_positions} positions",
                hint=f"use --target-len {min(DEFAULT_TARGET_LEN, max_positions)} or less",
            )
    elif args.target_len is not None:
        raise ConfigError(
            f"--target-len applies to encoder-decoder (BART) models; '{source.name}' is a "
            f"{cfg.get('model_type')} model",
            hint="leave out --target-len for a BERT",
        )
    is_spiking = source.kind == "spiking" or cfg.get("model_type") in SPIKING_TYPES
    k_applies = _k_applies(cfg) if is_spiking else True
    if args.ks is not None and not k_applies:
        raise ConfigError(
            f"'{source.name}' uses {cfg.get('neuron_kind')} neurons with alpha_mode={cfg.get('alpha_mode', 'calibrated')}: "
            "they have no amplitude coefficient k",
            hint="leave out --k for this model",
        )
    own_t = int(cfg.get("num_timesteps", 4)) if is_spiking else 4
    own_k = float(cfg.get("k", 2.0)) if is_spiking else 2.0
    ks: tuple[float | None, ...] = tuple(dict.fromkeys(args.ks)) if args.ks else ((own_k,) if k_applies else (None,))
    timesteps = tuple(dict.fromkeys(args.timesteps)) if args.timesteps else (own_t,)
    use_checkpoint_amplitudes = source.kind == "spiking" and args.ks is None
    meaningful = source.kind != "config-only"

    torch.manual_seed(args.seed)
    batches, data_info = _batches(source, args, max_positions, int(cfg.get("vocab_size", 2)))

    runs: list[EnergyRun] = []
    twin: MacCount | None = None
    included: tuple[str, ...] = ()
    for T in timesteps:
        say(f"building the spiking model at T={T} from {source.name} ({source.kind})")
        torch.manual_seed(args.seed)
        model = _build(source, _settings(source, T, ks[0]))
        model.eval()
        what = f"{args.seq_len} source / {target_len} summary tokens" if seq2seq else f"{args.seq_len} tokens"
        say(f"counting MACs at T={T}, {what} (fvcore)")
        count = count_macs(model, seq_len=args.seq_len, count_norm=args.count_norm, num_timesteps=T,
                           decoder_len=target_len)
        if twin is None:
            twin = _dense_twin(cfg, type(model).__name__, args.seq_len, args.count_norm, target_len)
            included = _included(args.count_norm, count)
            if seq2seq:
                included = tuple("LM head (MAC: float x float, on the mean over T)" if item == "task head (MAC)" else item
                                 for item in included)
                included += (f"BART: encoder once per input at {args.seq_len} tokens, decoder per generated token "
                             f"({target_len} per summary), with and without the KV cache",)
        _check_twin(count, twin)
        floats = _float_matmuls(count)
        float_components = {f.component for f in floats if f.component in ENCODER_COMPONENTS}
        float_pairs = {(f.stack, f.component) for f in floats if f.component in SPIKING_COMPONENTS}
        for k in ks:
            checkpoint_amps = use_checkpoint_amplitudes and T == own_t
            if checkpoint_amps:
                checkpoint_amps = _load_checkpoint_amplitudes(model, source)
            if checkpoint_amps:
                amplitudes = "checkpoint"
            else:
                if k is not None:
                    _set_k(model, k)
                amplitudes = f"calibrated at k={k:g}" if k is not None else "calibrated"
            label = f"k={k:g}, T={T}" if k is not None else f"T={T}"
            say(f"{label}: {'calibrating on batch 1, ' if not checkpoint_amps else ''}"
                f"tracing firing rates over {len(batches)} batch(es)")
            stats, profiles = _trace(model, batches, calibrate=not checkpoint_amps, seq2seq=seq2seq)
            dense = [n for n, s in stats.items() if s.kind == "dense"]
            if dense:
                raise EnergyAuditError(
                    "neuron output(s) are not spikes (more than one magnitude per step): cannot bill them as ACs",
                    details=dense,
                )
            rates = {n: s.firing_rate for n, s in stats.items()}
            report = energy_from_counts(count.rows, rates, T, profile, seq_len=args.seq_len, included=included)
            generation = None
            if seq2seq:
                assert target_len is not None
                generation = generation_energy(count, rates, T, profile, target_len=target_len, included=included)
                paper = bart_paper_setting(_component_rates(report), timesteps=T, profile=profile,
                                           float_components=float_pairs)
            else:
                paper = paper_setting(_component_rates(report), timesteps=T, profile=profile,
                                      float_components=float_components)
            ratio_ci, rate_ci = _bootstrap(report, profiles, args.bootstrap, args.confidence, args.seed)
            runs.append(
                EnergyRun(
                    k=k, timesteps=T, report=report, paper=paper,
                    neurons=_neuron_rates(stats, profiles, count),
                    per_position=_per_position(profiles, count),
                    float_matmuls=floats, amplitudes=amplitudes, firing_rates_meaningful=meaningful,
                    ratio_ci=ratio_ci, mean_firing_rate_ci=rate_ci, generation=generation,
                )
            )
        del model

    assert twin is not None
    shape_keys = (BART_SHAPE_KEYS if seq2seq else
                  ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings"))
    model_info = {
        "source": source.name,
        "path": str(source.path),
        "kind": source.kind,
        "architecture": (cfg.get("architectures") or ["BartModel" if seq2seq else "BertModel"])[0],
        **({"model_type": cfg.get("model_type")} if seq2seq else {}),
        **{key: cfg.get(key) for key in shape_keys},
    }
    return EnergySweepReport(
        runs=tuple(runs),
        model=model_info,
        profile=profile,
        seq_len=args.seq_len,
        data=data_info,
        dense_twin={"class": twin.model_class, "macs": twin.total, "components": twin.by_component(),
                    **({"stacks": {(k or "other"): v for k, v in twin.by_stack().items()}} if seq2seq else {})},
        count_norm=args.count_norm,
        seed=args.seed,
        seconds=time.perf_counter() - start,
        included=included,
        target_len=target_len,
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
    e_ac_pj, count_norm, bootstrap, confidence, seed).
    """
    unknown = sorted(set(settings) - set(EnergyArgs.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown energy setting(s): {', '.join(unknown)}",
                          details=[f"known: {', '.join(EnergyArgs.__dataclass_fields__)}"])
    args = EnergyArgs(
        model=model,
        ks=tuple(float(k) for k in ks) if ks is not None else None,
        timesteps=tuple(int(t) for t in timesteps) if timesteps is not None else None,
        **settings,
    )
    return run_energy(args, progress)


__all__ = [
    "SCHEMA",
    "EnergyArgs",
    "EnergyRun",
    "EnergySweepReport",
    "FloatMatmul",
    "Interval",
    "NeuronRates",
    "estimate_energy_sweep",
    "run_energy",
]
