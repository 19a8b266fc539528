"""What the energy audit runs on: the model source, the spiking model at each (k, T), its dense twin, the text.

Checkpoints are read with `spikelm_core.checkpoints` (`resolve_source`, `read_config`,
`build_model` + `copy_weights`, `read_state_dict`, `load_tokenizer`), the one loader of spikelm.

- `open_source(name)`: resolve a local dir, alias or hub id; 'spiking', 'dense' or 'config-only';
- `build_model(source, settings)`: the spiking model at the sweep's (k, T) (dense weights copied,
  a spiking checkpoint's weights, or random weights for a config-only directory);
- `load_checkpoint_amplitudes`, `set_k`, `neuron_settings`, `k_applies`: the amplitudes of a run;
- `dense_twin_count`, `check_twin`: the plain Hugging Face model of the same shape, counted on 'meta';
- `calibration_batches`: the packaged text, a --data file, or random token ids without a tokenizer
  (a causal LM: running text framed `[BOS] ...`, by default WikiText-2 validation when present, as
  `spikelm convert` calibrates it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spikelm_core import checkpoints
from spikelm_core.energy.components import COMPONENTS
from spikelm_core.energy.errors import EnergyAuditError
from spikelm_core.energy.macs import MacCount, count_macs
from spikelm_core.errors import CheckpointError
from spikelm_core.neurons.settings import SPIKING_FIELDS, NeuronSettings

BART_TYPES = ("bart", "spiking_bart")
LLAMA_TYPES = ("llama", "spiking_llama")
SPIKING_TYPES = ("spiking_bert", "spiking_bart", "spiking_llama")
AUDITED_TYPES = ("bert", "spiking_bert", *BART_TYPES, *LLAMA_TYPES)
BERT_SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                   "max_position_embeddings")
BART_SHAPE_KEYS = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
                   "encoder_ffn_dim", "decoder_ffn_dim", "vocab_size", "max_position_embeddings")
LLAMA_SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                    "intermediate_size", "vocab_size", "max_position_embeddings", "tie_word_embeddings")
_NOT_COPIED_KEYS = frozenset({"model_type", "architectures", "transformers_version", "auto_map", "_name_or_path"})


# ---------------------------------------------------------------------------------------------
# the model


@dataclass
class AuditSource:
    path: Path
    kind: str
    """'spiking', 'dense' or 'config-only' (no weights: an architecture audit with random weights)."""
    config: dict
    name: str


def open_source(model: str | None) -> AuditSource:
    """The model to audit (None: the bundled MiniLM); CheckpointError (exit 3) when unusable."""
    name = model or "minilm"
    path = checkpoints.resolve_source(name)
    config = checkpoints.read_config(path)
    if config.get("model_type") not in AUDITED_TYPES:
        raise CheckpointError(
            f"'{name}' holds a '{config.get('model_type')}' model; the energy sweep audits BERT, BART and Llama models",
            details=[f"audited model_type values: {', '.join(AUDITED_TYPES)}"],
            hint="give a BERT-, BART- or Llama-family model (dense or spiking)",
        )
    if config.get("model_type") in SPIKING_TYPES:  # its own neuron settings, checked before any use
        checkpoints.saved_neuron_settings(config, str(path / "config.json"))
    pickled = [p.name for p in (*path.glob("*.bin"), *path.glob("*.pt"))]
    if not checkpoints.has_weights(path) and not pickled:
        kind = "config-only"
    else:  # pickles alone are refused when the weights are read
        kind = "spiking" if config.get("model_type") in SPIKING_TYPES else "dense"
    return AuditSource(path=path, kind=kind, config=config, name=name)


def model_info(source: AuditSource) -> dict[str, Any]:
    """The report's model block: source, path, kind, architecture and the shape keys of its family."""
    cfg = source.config
    seq2seq = is_bart(cfg)
    if is_llama(cfg):
        return {
            "source": source.name,
            "path": str(source.path),
            "kind": source.kind,
            "architecture": (cfg.get("architectures") or ["LlamaForCausalLM"])[0],
            "model_type": cfg.get("model_type"),
            **llama_shape(cfg),
        }
    return {
        "source": source.name,
        "path": str(source.path),
        "kind": source.kind,
        # a BART is audited generating, with its LM head (`build_model`), whatever head its config names
        "architecture": (("Spiking" if cfg.get("model_type") in SPIKING_TYPES else "") + "BartForConditionalGeneration"
                         if seq2seq else (cfg.get("architectures") or ["BertModel"])[0]),
        **({"model_type": cfg.get("model_type")} if seq2seq else {}),
        **{key: cfg.get(key) for key in (BART_SHAPE_KEYS if seq2seq else BERT_SHAPE_KEYS)},
    }


def is_bart(config: dict) -> bool:
    return config.get("model_type") in BART_TYPES


def is_llama(config: dict) -> bool:
    """A decoder-only Llama-family causal LM (dense or spiking)."""
    return config.get("model_type") in LLAMA_TYPES


def llama_shape(config: dict) -> dict[str, Any]:
    """The Llama shape keys of a config.json, with transformers' defaults where a key is absent
    (head_dim = hidden / heads, num_key_value_heads = heads, untied embeddings)."""
    heads = config.get("num_attention_heads")
    hidden = config.get("hidden_size")
    defaults = {
        "num_key_value_heads": heads,
        "head_dim": hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else None,
        "tie_word_embeddings": False,
    }
    return {key: config.get(key) if config.get(key) is not None else defaults.get(key) for key in LLAMA_SHAPE_KEYS}


def k_applies(config: dict) -> bool:
    return config.get("neuron_kind", "elastic_bi") == "elastic_bi" and config.get("alpha_mode", "calibrated") == "calibrated"


def neuron_settings(source: AuditSource, timesteps: int, k: float | None) -> NeuronSettings:
    """A spiking checkpoint's own settings (else the defaults) at `timesteps` and `k`. An explicit `k`
    applies to every neuron: it replaces a checkpoint's per-layer k (`k_candidates`)."""
    base = (checkpoints.saved_neuron_settings(source.config) if source.config.get("model_type") in SPIKING_TYPES
            else NeuronSettings())
    explicit = {"k": float(k), "k_candidates": ()} if k is not None else {}
    return NeuronSettings(**{**base.model_dump(), "num_timesteps": timesteps, **explicit})


def build_model(source: AuditSource, settings: NeuronSettings) -> nn.Module:
    """The spiking model at `settings`, with the checkpoint's own head: weights copied key for key
    (saved amplitudes left out: `load_checkpoint_amplitudes` or calibration sets them), or random
    weights for a config-only directory. A spiking checkpoint is rebuilt at the sweep's T and k."""
    cfg = dict(source.config)
    neuron: NeuronSettings | None = settings
    if cfg.get("model_type") in SPIKING_TYPES:
        cfg.update(settings.model_fields_dict())
        neuron = None
    where = str(source.path / "config.json")
    # a BART is audited generating (per summary token): with its LM head, whatever head config.json
    # names (facebook/bart-base says BartModel; a bare BartConfig names none)
    head = "seq2seq_lm" if is_bart(cfg) else None
    model, _ = checkpoints.build_model(cfg, head=head, neuron=neuron, where=where)
    if source.kind != "config-only":
        family = checkpoints.family_of(cfg.get("model_type"))
        checkpoints.copy_weights(model, checkpoints.read_state_dict(source.path), family, neuron_state=False,
                                 where=str(source.path))
    return model


def load_checkpoint_amplitudes(model: nn.Module, source: AuditSource) -> bool:
    """Load the checkpoint's saved amplitudes; False if it holds none (the sweep then calibrates)."""
    from spikelm_core.calibration import is_calibrated

    state = checkpoints.read_state_dict(source.path)
    target = model.state_dict()
    prefix = getattr(model, "base_model_prefix", "bert") + "."
    neuron_state = {}
    for key, tensor in state.items():
        if not checkpoints.is_neuron_state(key):  # amplitudes, flags, salient masks, chosen k
            continue
        for cand in (key, prefix + key, key[len(prefix):] if key.startswith(prefix) else None):
            if cand is not None and cand in target and target[cand].shape == tensor.shape:
                neuron_state[cand] = tensor
                break
    model.load_state_dict(neuron_state, strict=False)
    checkpoints.check_saved_amplitudes(model, "model", str(source.path))
    return bool(neuron_state) and is_calibrated(model)


def set_k(model: nn.Module, k: float) -> None:
    from spikelm_core.neurons import SpikingNeuron

    if hasattr(model, "config"):
        model.config.k = float(k)
    for module in model.modules():
        if isinstance(module, SpikingNeuron) and hasattr(module, "k"):
            module.k = float(k)


def dense_twin_count(config: dict, spiking_class: str, seq_len: int, count_norm: bool, target_len: int | None = None) -> MacCount:
    """The plain HF BERT (BART, Llama) of the same shape and head, on 'meta' (shapes only), counted once."""
    import transformers
    from transformers import BartConfig, BertConfig, LlamaConfig

    data = {k: v for k, v in config.items() if k not in _NOT_COPIED_KEYS and k not in SPIKING_FIELDS}
    if is_bart(config):
        data.pop("encoder_readout", None)
        data["use_cache"] = False
        family, prefix, config_class, default = "BART", "Bart", BartConfig, transformers.BartModel
    elif is_llama(config):
        data["use_cache"] = False
        family, prefix, config_class, default = "Llama", "Llama", LlamaConfig, transformers.LlamaModel
    else:
        family, prefix, config_class, default = "BERT", "Bert", BertConfig, transformers.BertModel
    cls = getattr(transformers, spiking_class.replace(f"Spiking{prefix}", prefix), default)
    try:
        twin_config = config_class(**data)
    except Exception as exc:
        raise CheckpointError(f"config.json is not a valid {family} configuration: {exc}") from exc
    with torch.device("meta"):
        twin = cls(twin_config)
    return count_macs(twin, seq_len=seq_len, decoder_len=target_len if is_bart(config) else None, count_norm=count_norm)


def check_twin(spiking: MacCount, dense: MacCount) -> None:
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
# calibration text


def calibration_batches(
    source: AuditSource, *, data: str | None, batches: int, batch_size: int, seq_len: int, seed: int
) -> tuple[list[dict], dict[str, Any]]:
    """The audit's batches (`batches` of `batch_size` sequences of `seq_len` tokens) and their summary."""
    from spikelm_core.calibration import (
        PACKAGED,
        calibration_text,
        packaged_calibration_text,
        read_text_file,
        text_batches,
    )

    causal = is_llama(source.config)
    text = read_text_file(data) if data else None  # DataError: missing, empty, unreadable
    if source.kind == "config-only" and not checkpoints.has_tokenizer(source.path):
        tokenizer = None
    else:
        tokenizer = checkpoints.load_tokenizer(source.path)  # CheckpointError when unusable
    if tokenizer is None:
        if data:
            raise CheckpointError(
                f"'{source.path}' has no tokenizer, so --data cannot be tokenised",
                hint="copy tokenizer files (vocab.txt / tokenizer.json) next to config.json, or leave out --data",
            )
        gen = torch.Generator().manual_seed(seed)
        vocab_size = int(source.config.get("vocab_size", 2))
        out = []
        for _ in range(batches):
            ids = torch.randint(1, max(vocab_size, 2), (batch_size, seq_len), generator=gen)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            out.append(batch if causal else {**batch, "token_type_ids": torch.zeros_like(ids)})
        what = "random token ids (no tokenizer)"
    elif causal:  # running text [BOS] ..., WikiText-2 validation by default when present (as convert)
        text, where = (text, str(data)) if text is not None else calibration_text(None, causal=True)
        out = text_batches(tokenizer, text, seq_len=seq_len, batch_size=batch_size, causal=True, max_batches=batches,
                          source=None if where == PACKAGED else where)
        what = "packaged calibration text" if where == PACKAGED else where
    else:
        out = text_batches(tokenizer, text if text is not None else packaged_calibration_text(),
                           seq_len=seq_len, batch_size=batch_size, source=str(data) if data else None)[:batches]
        what = str(data) if data else "packaged calibration text"
    info = {
        "source": what,
        "batches": len(out),
        "sequences": sum(int(b["input_ids"].shape[0]) for b in out),
        "tokens": sum(int(b["attention_mask"].sum()) for b in out),
    }
    return out, info
