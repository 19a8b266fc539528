"""Turn a dense Hugging Face BERT or BART checkpoint into a calibrated spiking model.

The spiking models keep Hugging Face's parameter names, so conversion is a key-for-key copy of the
dense weights (checked: every embedding, encoder and decoder weight must find its place) plus the
neurons' amplitudes, calibrated on a few batches of text. Weights are read from safetensors only.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..calibration import calibrate, measure_firing, packaged_calibration_text, read_text_file, text_batches
from ..errors import CheckpointError, ConfigError
from ..hub import resolve_model_source
from ..io import atomic_output_dir, check_output_dir
from ..models.spiking_bart import SpikingBartConfig, SpikingBartForConditionalGeneration, SpikingBartModel
from ..models.spiking_bert import (
    SpikingBertConfig,
    SpikingBertForMaskedLM,
    SpikingBertForPreTraining,
    SpikingBertForSequenceClassification,
    SpikingBertModel,
)
from ..models.common import LEVELS, NEURON_KINDS, RESETS

@dataclass(frozen=True)
class Family:
    """How one dense architecture family maps onto its spiking twin."""

    config_class: type
    base_class: type
    heads: dict  # dense architecture suffix -> spiking class
    essential: tuple[str, ...]  # key fragments that must all come from the checkpoint


_BERT = Family(
    SpikingBertConfig,
    SpikingBertModel,
    {
        "ForSequenceClassification": SpikingBertForSequenceClassification,
        "ForMaskedLM": SpikingBertForMaskedLM,
        "ForPreTraining": SpikingBertForPreTraining,
    },
    (".embeddings.", ".encoder."),
)
_BART = Family(
    SpikingBartConfig,
    SpikingBartModel,
    {"ForConditionalGeneration": SpikingBartForConditionalGeneration},
    (".shared.", ".encoder.", ".decoder."),
)
FAMILIES = {"bert": _BERT, "spiking_bert": _BERT, "bart": _BART, "spiking_bart": _BART}
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)
_NOT_COPIED_CONFIG_KEYS = {"model_type", "architectures", "transformers_version", "auto_map", "_name_or_path"}


@dataclass(frozen=True)
class NeuronSettings:
    """Spiking fields set on conversion (see `SpikingBertConfig` for their meaning)."""

    neuron_kind: str = "elastic_bi"
    num_timesteps: int = 4
    k: float = 2.0
    decay: float = 0.25
    reset: str = "official"
    levels: str = "ternary"
    amplitude: str = "elastic"
    alpha_mode: str = "calibrated"
    fixed_alpha: float = 1.0
    spike_kv: bool = True
    learn_alpha: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.num_timesteps < 1:
            problems.append(f"time steps must be >= 1, got {self.num_timesteps}")
        if not self.k > 0:
            problems.append(f"k must be > 0, got {self.k}")
        if not 0 <= self.decay <= 1:
            problems.append(f"decay must be in [0, 1], got {self.decay}")
        if self.reset not in RESETS:
            problems.append(f"reset must be one of {', '.join(RESETS)}, got {self.reset!r}")
        if self.neuron_kind not in NEURON_KINDS:
            problems.append(f"neuron kind must be one of {', '.join(NEURON_KINDS)}, got {self.neuron_kind!r}")
        if self.levels not in LEVELS:
            problems.append(f"levels must be one of {', '.join(LEVELS)}, got {self.levels!r}")
        if problems:
            raise ConfigError("invalid neuron settings", details=problems)


@dataclass
class ConvertResult:
    """What `convert_model` did, for the CLI summary and `--format json`."""

    out_dir: str
    source: str
    architecture: str
    parameters: int
    neurons: dict[str, int]
    settings: dict
    alpha_min: float | None
    alpha_max: float | None
    firing_rate: float
    layer_firing_rates: dict[str, float]
    calibration_tokens: int
    copied_tensors: int
    newly_initialised: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# -- reading the dense checkpoint ------------------------------------------------------------------

def read_config(model_dir: Path) -> dict:
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(
            f"'{model_dir}' has no config.json",
            hint="point at a Hugging Face model directory (saved with save_pretrained)",
        )
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read '{cfg_path}': {exc}") from exc
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"'{model_dir}' holds a '{model_type}' model; spikelm converts BERT and BART models",
            details=[f"supported model_type values: {', '.join(SUPPORTED_MODEL_TYPES)}"],
            hint="BERT-family checkpoints (bert-base-uncased, MiniLM, ...) convert to spiking BERT, "
            "BART checkpoints (facebook/bart-base, ...) to spiking BART",
        )
    return cfg


def load_dense_state_dict(model_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors checkpoint (single file or sharded with an index)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"cannot read the shard index '{index}': {exc}") from exc
        files = [model_dir / n for n in names]
    else:
        pickled = [p.name for p in model_dir.glob("*.bin")] + [p.name for p in model_dir.glob("*.pt")]
        raise CheckpointError(
            f"'{model_dir}' has no model.safetensors",
            details=[f"found pickled weights: {', '.join(pickled)}"] if pickled else [],
            hint="spikelm loads weights from safetensors only (pickles can run code); re-save the model "
            "with save_pretrained(..., safe_serialization=True)",
        )
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"shard '{f}' named in the index is missing")
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"'{f}' is corrupt or truncated: {exc}", hint="re-download or re-save the checkpoint"
            ) from exc
    return state


def _spiking_class(cfg: dict, family: Family | None = None):
    family = family or FAMILIES[cfg["model_type"]]
    for arch in cfg.get("architectures") or []:
        for suffix, cls in family.heads.items():
            if arch.endswith(suffix):
                return cls
    return family.base_class


def _canonical_key(key: str) -> str:
    # Old TF-converted checkpoints name LayerNorm parameters gamma/beta.
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def _is_neuron_state(key: str) -> bool:
    return key.endswith((".alpha", ".calibrated"))


def spiking_model_from_dense(model_dir: Path, settings: NeuronSettings, num_labels: int | None = None):
    """Build the spiking twin of the dense checkpoint in `model_dir` and copy its weights.

    Returns (model, copied, newly_initialised, dropped). Every embedding, encoder and decoder weight
    of the spiking model must come from the checkpoint (directly or through weight tying), else the
    checkpoint is not a model of that shape.
    """
    cfg = read_config(model_dir)
    family = FAMILIES[cfg["model_type"]]
    fields = {k: v for k, v in cfg.items() if k not in _NOT_COPIED_CONFIG_KEYS}
    fields.update(asdict(settings))
    if num_labels is not None:
        fields["num_labels"] = num_labels
        fields.pop("id2label", None)
        fields.pop("label2id", None)
    cls = _spiking_class(cfg, family)
    try:
        config = family.config_class(**fields)
    except Exception as exc:  # strict validation of the dense config's values
        raise CheckpointError(f"'{model_dir}/config.json' is not a valid {cfg['model_type']} configuration: {exc}") from exc
    config.architectures = [cls.__name__]
    model = cls(config)
    source = load_dense_state_dict(model_dir)
    target = model.state_dict()
    prefix = model.base_model_prefix + "."
    mapped: dict[str, torch.Tensor] = {}
    dropped = []
    for key, tensor in source.items():
        k = _canonical_key(key)
        for cand in (k, prefix + k, k[len(prefix):] if k.startswith(prefix) else None):
            if cand is not None and cand in target:
                if _is_neuron_state(cand):
                    break  # a spiking source's amplitudes: conversion always recalibrates
                if target[cand].shape != tensor.shape:
                    raise CheckpointError(
                        f"weight '{key}' has shape {tuple(tensor.shape)}, the model expects {tuple(target[cand].shape)}",
                        hint="config.json and model.safetensors disagree; the checkpoint may be damaged",
                    )
                mapped[cand] = tensor
                break
        else:
            if not _is_neuron_state(key) and not key.endswith("position_ids"):  # a non-persistent buffer
                dropped.append(key)
    model.load_state_dict(mapped, strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    state = model.state_dict()
    loaded = {state[k].data_ptr() for k in mapped}
    missing = [k for k in target if k not in mapped and not _is_neuron_state(k)]
    newly = [k for k in missing if state[k].data_ptr() not in loaded]  # tied copies of loaded weights are fine
    essential = [k for k in newly if any(f in f".{k}" for f in family.essential)]
    if essential:
        raise CheckpointError(
            f"the checkpoint lacks {len(essential)} {cfg['model_type']} weight(s)",
            details=[f"first missing: {essential[0]}", f"checkpoint keys look like: {next(iter(source), '(none)')}"],
            hint=f"is this a {cfg['model_type']} checkpoint of the shape config.json describes?",
        )
    return model, len(mapped), newly, dropped


def load_tokenizer(model_dir: Path, tokenizer: str | None = None):
    from transformers import AutoTokenizer

    where = resolve_model_source(tokenizer) if tokenizer else model_dir
    try:
        return AutoTokenizer.from_pretrained(str(where))
    except Exception as exc:
        raise CheckpointError(
            f"no usable tokenizer in '{where}': {exc}",
            hint="copy the tokenizer files (tokenizer.json / vocab.txt) there, or pass --tokenizer DIR",
        ) from exc


_LAYER = re.compile(r"(encoder|decoder)\.layers?\.(\d+)\.")


def layer_firing_rates(report) -> dict[str, float]:
    """Mean firing rate of the neurons of each layer, keyed 'encoder.0', 'decoder.3', ..."""
    groups: dict[str, list[float]] = {}
    for name in report.neurons:
        m = _LAYER.search(name)
        if m:
            groups.setdefault(f"{m.group(1)}.{m.group(2)}", []).append(report.rate(name))
    return {k: sum(v) / len(v) for k, v in groups.items()}


def convert_model(
    source: str,
    out_dir: str | Path,
    settings: NeuronSettings = NeuronSettings(),
    *,
    calib_data: str | Path | None = None,
    calib_batches: int = 4,
    batch_size: int = 8,
    seq_len: int = 128,
    tokenizer: str | None = None,
    force: bool = False,
    seed: int = 0,
) -> ConvertResult:
    """Convert a dense BERT or BART (local dir, alias or hub id) into a calibrated spiking model in `out_dir`.

    The first text batch calibrates the amplitudes; the firing rate is then measured on up to
    `calib_batches` batches. The output appears atomically (temporary directory + rename).
    """
    start = time.perf_counter()
    check_output_dir(out_dir, force)  # fail before any work
    if calib_batches < 1:
        raise ConfigError(f"calibration batches must be >= 1, got {calib_batches}")
    model_dir = resolve_model_source(source)
    text = read_text_file(calib_data) if calib_data else packaged_calibration_text()
    torch.manual_seed(seed)
    model, copied, newly, dropped = spiking_model_from_dense(model_dir, settings)
    max_pos = model.config.max_position_embeddings
    if seq_len > max_pos:
        raise ConfigError(f"sequence length {seq_len} exceeds the model's {max_pos} positions")
    tok = load_tokenizer(model_dir, tokenizer)
    batches = text_batches(tok, text, seq_len=seq_len, batch_size=batch_size)[:calib_batches]
    calibrate(model, batches[0])
    report = measure_firing(model, batches)
    alphas = [n.alpha for _, n in model.spiking_neurons() if hasattr(n, "alpha")]
    kinds: dict[str, int] = {}
    for _, n in model.spiking_neurons():
        kinds[type(n).__name__] = kinds.get(type(n).__name__, 0) + 1
    with atomic_output_dir(out_dir, force) as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
    return ConvertResult(
        out_dir=str(out_dir),
        source=str(model_dir) if str(model_dir) != source else source,
        architecture=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        neurons=kinds,
        settings=asdict(settings),
        alpha_min=float(torch.cat(alphas).min()) if alphas else None,
        alpha_max=float(torch.cat(alphas).max()) if alphas else None,
        firing_rate=report.mean_rate,
        layer_firing_rates=layer_firing_rates(report),
        calibration_tokens=int(sum(int(b["attention_mask"].sum()) for b in batches)),
        copied_tensors=copied,
        newly_initialised=newly,
        dropped=dropped,
        seconds=time.perf_counter() - start,
    )
