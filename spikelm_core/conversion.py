"""`spikelm convert`: a dense BERT, BART or Llama-family checkpoint becomes a calibrated spiking model on disk.

The spiking models keep Hugging Face's parameter names, so the conversion itself is
`checkpoints.load_model` (a key-for-key copy into the spiking twin, every essential weight checked);
this module adds what makes the result usable on its own: the amplitudes are calibrated on the
first batch of text (`calibration.calibrate`; a causal LM reads `[BOS]`-framed running text, by
default WikiText-2 validation when the shared data are present), the firing rates are measured on a few batches
(`firing.measure_firing`: pads excluded, per layer keyed by `firing.layer_key`), and
the model and its tokenizer are saved atomically (`checkpoints.save_model`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import torch

from .calibration import (CALIBRATION_BATCH_SIZE, CALIBRATION_SEQ_LEN, CONVERT_AMPLITUDES, calibrate, calibration_text,
                          check_token_ids, text_batches)
from .checkpoints import (MODEL_TYPES, head_weights_missing, is_spiking_type, load_model, read_config, resolve_source,
                          save_model)
from .errors import CheckpointError, ConfigError
from .firing import measure_firing
from .io import check_output_dir
from .log import get_logger
from .neurons.settings import ELASTIC_ONLY, LIF_CONSTANTS, NeuronSettings

log = get_logger("conversion")

CONVERT_SCHEMA = "spikelm.convert/2"
"""The `schema` key of `ConvertResult.to_dict()` (`spikelm convert --format json`)."""


@dataclass
class ConvertResult:
    """What `convert_model` did, for the CLI summary and `--format json`.

    `settings` holds the neuron settings under their model-config names (`neuron_kind`,
    `num_timesteps`, `k`, ...), as saved in config.json.
    """

    out_dir: str
    source: str
    architecture: str
    parameters: int
    neurons: dict[str, int]
    settings: dict
    alpha_min: float | None
    alpha_max: float | None
    firing_rate: float
    firing_rate_mean: str
    layer_firing_rates: dict[str, float]
    firing_tokens: int
    """Real tokens the firing rates were measured on (every --calib-batches batch; the amplitudes
    calibrate on the first). Schema 1 called it calibration_tokens."""
    copied_tensors: int
    calibration_text: str = "packaged"  # the file the amplitudes were calibrated on, or "packaged"
    newly_initialised: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What the conversion left out (e.g. a task head spiking models do not have)."""
    seconds: float = 0.0
    allocation: dict | None = None
    """With outlier-aware allocation: `salient_channels` / `input_channels` over all neurons before
    linear layers, and `k_chosen` ({k: how many neurons chose it}) with per-layer k."""
    schema: str = CONVERT_SCHEMA

    def to_dict(self) -> dict:
        return asdict(self)


def convert_model(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: NeuronSettings | None = None,
    *,
    calib_data: str | os.PathLike | None = None,
    calib_batches: int = 4,
    batch_size: int = CALIBRATION_BATCH_SIZE,
    seq_len: int | None = None,
    tokenizer: str | os.PathLike | None = None,
    force: bool = False,
    seed: int = 0,
) -> ConvertResult:
    """Convert a dense BERT, BART or Llama-family model (local dir, GGUF file, alias or hub id) into a
    calibrated spiking model in `out_dir`.

    The model keeps the checkpoint's head (one spiking models lack, e.g. question answering, is left
    out with a warning in `ConvertResult.warnings`). The first text batch of `calib_data` (default:
    `calibration.calibration_text`) calibrates the amplitudes; the firing rate is then measured on
    up to `calib_batches` batches, of `seq_len` tokens each (None: `CALIBRATION_SEQ_LEN`, or the
    model's positions when fewer; a length given beyond them is an error). The output appears atomically.
    Errors: ConfigError (exit 2) for settings and options, CheckpointError (exit 3) for the source
    (a spiking source included: it is converted already), DataError (exit 4) for the text.
    """
    start = time.perf_counter()
    settings = settings if settings is not None else NeuronSettings()
    if not settings.spiking:
        raise ConfigError("neuron kind 'dense' has no neurons; convert builds a spiking model",
                          hint="choose --neuron elastic_bi (SpikeLM) or lif (LIF-BERT baseline)")
    if calib_batches < 1:
        raise ConfigError(f"calibration batches must be >= 1, got {calib_batches}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if seq_len is not None and seq_len < 3:
        raise ConfigError(f"--seq-len must be at least 3 tokens, got {seq_len}")
    check_output_dir(out_dir, force, inputs=[source, calib_data, tokenizer])  # fail before any work
    name = os.fspath(source)
    model_dir = resolve_source(name)
    model_type = read_config(model_dir)["model_type"]
    causal = MODEL_TYPES[model_type].causal
    if is_spiking_type(model_type):
        raise CheckpointError(
            f"'{name}' is a spiking model already ('{model_type}')",
            hint="convert the dense model it came from; a spiking checkpoint keeps the neuron settings it was saved with",
        )
    text, text_source = calibration_text(calib_data, causal=causal)
    torch.manual_seed(seed)
    loaded = load_model(model_dir, head=None, neuron=settings, tokenizer=tokenizer)
    model, tok = loaded.model, loaded.tokenizer
    check_head_loaded(loaded, name)
    head_warned = bool(loaded.weights.warnings)  # load_model named a foreign architecture's head already
    fresh_pooler = [k for k in loaded.weights.newly_initialised if k.split(".")[-3:-2] == ["pooler"]]
    if fresh_pooler and getattr(model, "pooler", None) is not None:  # e.g. a BertForTokenClassification / QA checkpoint
        model.pooler = None  # not saved: a later load reports it as newly initialised instead of trusting random values
        loaded.weights.newly_initialised = [k for k in loaded.weights.newly_initialised if k not in fresh_pooler]
        loaded.weights.warnings.append(f"'{name}' has no pooler weights: the spiking model is saved without a pooler "
                                       "(a classifier fine-tuned from it starts one afresh)")
        log.warning("%s", loaded.weights.warnings[-1])
    head_dropped = [k for k in loaded.weights.dropped if not k.startswith(model.base_model_prefix + ".")
                    and k.split(".", 1)[0] not in dict(model.named_children())]
    if head_dropped and not head_warned:
        loaded.weights.warnings.append(f"'{name}' holds {len(head_dropped)} weight(s) of a head spiking "
                                       f"{MODEL_TYPES[model_type].label} models lack, not converted (e.g. {head_dropped[0]}); "
                                       "the model is its base model alone")
        log.warning("%s", loaded.weights.warnings[-1])
    max_pos = model.config.max_position_embeddings
    if seq_len is None:
        seq_len = min(CALIBRATION_SEQ_LEN, max_pos)
    elif seq_len > max_pos:
        raise ConfigError(f"--seq-len {seq_len} exceeds the model's {max_pos} positions",
                          hint=f"use --seq-len {max_pos} or less")
    batches = text_batches(tok, text, seq_len=seq_len, batch_size=batch_size, causal=causal, max_batches=calib_batches,
                           source=None if text_source == "packaged" else text_source)
    for batch in batches:  # every batch the firing is measured on, not the first alone (calibrate checks that)
        check_token_ids(model, batch)
    calibrate(model, batches[0])
    report = measure_firing(model, batches)
    neurons = [n for _, n in model.spiking_neurons()]
    alphas = [n.alpha.detach() for n in neurons if hasattr(n, "alpha")]
    kinds: dict[str, int] = {}
    for n in neurons:
        kinds[type(n).__name__] = kinds.get(type(n).__name__, 0) + 1
    key, value = CONVERT_AMPLITUDES
    setattr(model.config, key, value)  # training recalibrates on task data (calibration.CONVERT_AMPLITUDES)
    save_model(model, tok, out_dir, force=force)
    return ConvertResult(
        allocation=allocation_summary(neurons) if settings.allocates else None,
        out_dir=str(out_dir),
        source=str(model_dir),
        architecture=type(model).__name__,
        parameters=sum(p.numel() for p in model.parameters()),
        neurons=kinds,
        settings={"neuron_kind": settings.kind,
                  **{k: v for k, v in settings.model_fields_dict().items()
                     if not (settings.kind == "lif" and k in ELASTIC_ONLY)},
                  **{name: getattr(model.config, name) for name in LIF_CONSTANTS
                     if settings.kind == "lif" and hasattr(model.config, name)}},
        alpha_min=float(torch.cat(alphas).min()) if alphas else None,
        alpha_max=float(torch.cat(alphas).max()) if alphas else None,
        firing_rate=report.mean_rate,
        firing_rate_mean=report.description,
        layer_firing_rates=report.layer_rates(),
        firing_tokens=int(sum(int(b["attention_mask"].sum()) for b in batches)),
        copied_tensors=loaded.weights.copied,
        calibration_text=text_source,
        newly_initialised=loaded.weights.newly_initialised,
        dropped=loaded.weights.dropped,
        warnings=loaded.weights.warnings,
        seconds=time.perf_counter() - start,
    )


def check_head_loaded(loaded, name: str) -> None:
    """CheckpointError (exit 3) when the head the checkpoint's config.json names (an LM head, an MLM head, a
    classifier) has weights the checkpoint lacks: a converted causal LM with a random LM head scores and
    generates noise, which a 'note' under the summary does not make clear. Buffers (BART's
    final_logits_bias, zeros) and the base model's own tensors (a pooler) are not head weights."""
    missing = [] if loaded.head == "base" else head_weights_missing(loaded)
    if not missing:
        return
    archs = ", ".join(loaded.config.get("architectures") or []) or "none"
    head = {"causal_lm": "LM", "seq2seq_lm": "LM", "masked_lm": "masked-LM", "pretraining": "pretraining",
            "sequence_classification": "classifier"}.get(loaded.head, loaded.head)
    raise CheckpointError(
        f"'{name}' is a {archs} but holds no weights for its {head} head: converting it would start that head "
        "from random values",
        details=[f"missing: {', '.join(missing[:3])}" + (", ..." if len(missing) > 3 else "")],
        hint="give the complete checkpoint" + ("; if its output layer shares the token embeddings, set "
                                               "\"tie_word_embeddings\": true in config.json"
                                               if any(k.endswith("lm_head.weight") or ".decoder.weight" in k for k in missing)
                                               else ""),
    )


def allocation_summary(neurons) -> dict:
    """What outlier-aware allocation chose, over `neurons`: salient channels among input channels,
    and how many neurons chose each candidate k."""
    masks = [n.salient for n in neurons if getattr(n, "allocating", False)]
    chosen: dict[str, int] = {}
    for n in neurons:
        if getattr(n, "k_candidates", ()):
            key = f"{float(n.k_chosen):g}"
            chosen[key] = chosen.get(key, 0) + 1
    return {
        "salient_channels": int(sum(int(m.sum()) for m in masks)),
        "input_channels": int(sum(m.numel() for m in masks)),
        "k_chosen": dict(sorted(chosen.items(), key=lambda kv: float(kv[0]))),
    }


__all__ = ["ConvertResult", "allocation_summary", "check_head_loaded", "convert_model"]
