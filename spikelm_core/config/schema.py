"""The recipe schema: frozen pydantic models, one per recipe section.

Design:

- A recipe key is a dotted model path (`train.lr`, `neuron.k`, `data.task`); there are no other
  spellings and no import-path strings. Every choice is a `Literal` field, and each field's
  docstring (the string right below it) is its description (`use_attribute_docstrings`).
- Models are frozen, refuse unknown keys and are strict about types. The few coercions a YAML
  recipe needs are applied by `_Section` before validation: a numeric string is a float (PyYAML
  reads `2e-5` as a string), an integral number is an int (`save_steps: 5e4`), a YAML boolean
  maps back to a Literal choice spelled like it (`eval_strategy: no`), a single string is a
  one-element list. Non-finite floats are refused.
- Single-field bounds are `Field` constraints; rules over several fields are `model_validator`s
  that report every broken rule of their model together (`_Rules`), so that a recipe's problems
  all come out in one `ValidationError` (turned into one `ConfigError` by `loading.py`).
- The neuron section *is* `spikelm_core.neurons.settings.NeuronSettings` (exported here as
  `NeuronArgs` too): its fields, choices and the learn_alpha rule are defined there only.
- The benchmark task is one field, `data.task` (GLUE: cola, sst2, ...; summarisation: xsum,
  cnn_dm; language modelling: wikitext2, for causal LMs), normalised ('SST-2' -> 'sst2') and
  inferred from `data.source` when unset. Task configs expose it as `cfg.task`, with
  `cfg.task_family` ('glue', 'summarization', 'lm' or 'mlm').
- Shared fields are declared once, on `_TaskConfig` (command, model, out_dir, neuron, data) and
  the bases below it; each task config's `command` names the CLI command it is for.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from spikelm_core.calibration import CalibrationMode, CalibrationTokens
from spikelm_core.data.glue import (
    GLUE_TASK_NAMES,
    GLUE_TASKS,
    infer_glue_task,
    normalize_glue_split,
    normalize_glue_task,
    unsupported_glue_task,
)
from spikelm_core.data.lm import LM_SPLITS, LM_TASKS, normalize_lm_split, normalize_lm_task
from spikelm_core.data.summarization import SPLITS as SUMMARIZATION_SPLITS
from spikelm_core.data.summarization import SUMMARIZATION_TASKS
from spikelm_core.neurons.settings import NeuronSettings

__all__ = [
    "NeuronArgs",
    "NeuronSettings",
    "DataArgs",
    "TrainArgs",
    "DistillArgs",
    "GenerateArgs",
    "MlmArgs",
    "PromptArgs",
    "FinetuneConfig",
    "DistillConfig",
    "PretrainConfig",
    "EvalConfig",
    "TASK_CONFIGS",
    "TASK_NAMES",
    "TaskFamily",
    "infer_task",
    "normalize_task",
    "task_family",
]

NeuronArgs = NeuronSettings
"""The recipe's `neuron:` section (the name spikelm 0.1 used)."""

# ------------------------------------------------------------------------------ benchmark tasks

SUMMARIZATION_TASK_NAMES: tuple[str, ...] = tuple(SUMMARIZATION_TASKS)
LM_TASK_NAMES: tuple[str, ...] = tuple(LM_TASKS)
TASK_NAMES: tuple[str, ...] = GLUE_TASK_NAMES + SUMMARIZATION_TASK_NAMES + LM_TASK_NAMES
"""Every benchmark task `data.task` accepts: the eight GLUE tasks, the summarisation ones, then the
language-modelling ones (causal LMs: perplexity in eval, next-token training in finetune/distill)."""
TaskName = Literal[TASK_NAMES]  # type: ignore[valid-type]
TaskFamily = Literal["glue", "summarization", "lm", "mlm"]
FiringPenalty = Literal["hinge", "squared"]
"""Forms of the firing-rate penalty (`train.firing_rate_penalty`, `training.firing_target`)."""

_SUMMARIZATION_ALIASES = {"cnndm": "cnn_dm", "cnn_dailymail": "cnn_dm"}


def _summarization_task(name: str) -> str | None:
    key = name.strip().lower().replace("-", "_").removeprefix("summarization/")
    key = _SUMMARIZATION_ALIASES.get(key, key)
    return key if key in SUMMARIZATION_TASKS else None


def normalize_task(name: str) -> str | None:
    """'SST-2', 'glue/sst2', 'mnli-mm' -> the GLUE task id; 'XSum', 'cnndm', 'cnn-dm' -> the
    summarisation task id; 'WikiText-2' -> 'wikitext2'; None when `name` is no benchmark task."""
    return normalize_glue_task(name) or _summarization_task(name) or normalize_lm_task(name)


def infer_task(source: str | None) -> str | None:
    """The benchmark task a `data.source` names: 'glue/<task>', a GLUE task directory
    ('../glue/SST-2'), a summarisation dataset ('xsum') or a language-modelling one by name
    ('wikitext2'); None for anything else (a GLUE root, a text corpus or file: masked-LM text, or
    the text of `--task wikitext2`). ValueError for 'glue/<unknown>'. Pure string work: nothing is read."""
    if source is None:
        return None
    return _summarization_task(source) or normalize_lm_task(source) or infer_glue_task(source)


def task_family(task: str | None) -> TaskFamily:
    """'glue', 'summarization' or 'lm' (perplexity) for a benchmark task; 'mlm' for none (masked-LM on text)."""
    if task in GLUE_TASKS:
        return "glue"
    if task in LM_TASKS:
        return "lm"
    return "summarization" if task in SUMMARIZATION_TASKS else "mlm"


# ------------------------------------------------------------------------------ base and rules

_NUMBER = re.compile(r"[-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _bare(annotation: Any) -> Any:
    """`X` for `X | None`; anything else unchanged."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, type(int | None)) and len(args) == 1:
        return args[0]
    return annotation


def _coerce(annotation: Any, value: Any) -> Any:
    """The documented YAML coercions for one value of a field typed `annotation`; a value that
    does not fit is returned unchanged, for validation to report."""
    tp = _bare(annotation)
    numeric = float(value.strip().replace("_", "")) if isinstance(value, str) and _NUMBER.fullmatch(value.strip()) else value
    if tp is float and not isinstance(numeric, bool) and isinstance(numeric, (int, float)):
        return float(numeric)
    if tp is int and isinstance(numeric, float) and math.isfinite(numeric) and numeric.is_integer():
        return int(numeric)
    if typing.get_origin(tp) is Literal and isinstance(value, bool):
        choices = typing.get_args(tp)
        spellings = ("yes", "on", "true") if value else ("no", "off", "false")
        return next((s for s in spellings if s in choices), value)
    if typing.get_origin(tp) is tuple and isinstance(value, (str, list)):
        items = [value] if isinstance(value, str) else value
        return tuple(_coerce(typing.get_args(tp)[0], item) for item in items)
    return value


def coerce_fields(model: type[BaseModel], data: Any) -> Any:
    """`data` (a recipe mapping for `model`) with `_coerce` applied to every known key."""
    if not isinstance(data, Mapping):
        return data
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    return {key: _coerce(fields[key].annotation, value) if key in fields else value for key, value in data.items()}


class _Section(BaseModel):
    """Base of every recipe model: frozen, strict, unknown keys refused, docstrings as descriptions."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, allow_inf_nan=False, use_attribute_docstrings=True
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_coercions(cls, data: Any) -> Any:
        return coerce_fields(cls, data)


_NEURON_COERCIONS = BeforeValidator(lambda data: coerce_fields(NeuronSettings, data))
"""The YAML coercions for the `neuron` section (NeuronSettings is not a `_Section`)."""


class _Rules:
    """Collects `(field, message)` problems of one model; `done()` raises them together as one
    pydantic error of type 'config_rules' whose ctx holds the pairs (`loading.py` spreads them
    into dotted lines); its message reads `field: message; field: message`."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def require(self, ok: bool, field: str, message: str) -> None:
        if not ok:
            self.problems.append((field, message))

    def done(self) -> None:
        if self.problems:
            summary = "; ".join(f"{field}: {message}" for field, message in self.problems)
            raise PydanticCustomError("config_rules", "{summary}", {"summary": summary, "problems": self.problems})


class _RuledSection(_Section):
    """A section with rules over several fields: subclasses fill `_check`."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> _RuledSection:
        rules = _Rules()
        self._check(rules)
        rules.done()
        return self

    def _check(self, rules: _Rules) -> None:
        raise NotImplementedError


def _not_blank(rules: _Rules, value: str | None, field: str, note: str = "") -> None:
    rules.require(value is None or value.strip() != "", field, "must not be empty" + note)


# ----------------------------------------------------------------------------------- sections


class DataArgs(_RuledSection):
    """Which benchmark task, where its data comes from and how it is cut.

    For GLUE, `source` is 'glue/<task>' (files from `data_dir`, else $GLUE_DIR, else the hub
    when online), a GLUE task directory such as ../shared/data/glue/SST-2, or a GLUE root
    directory together with `task`. For summarisation it names the dataset (xsum, cnn_dm); for
    pretraining and MLM distillation it is a text file or directory. For language modelling (task
    wikitext2, causal LMs) it is 'wikitext2' (the hub's wikitext-2-raw-v1), a plain-text
    file, or a folder holding wikitext-2/<split>.txt; `--data-dir` (a folder or a file) beats it.

    The `--data-dir` flag beats a recipe's `source` path: when it is given and `source` is a local
    GLUE directory path (not 'glue/<task>'), `task` is first inferred from that path (if unset) and
    `source` is then dropped, so that the data comes from the flag's directory. Likewise a `--task`
    flag (the `data.task` flag) drops a `source` that names another task ('glue/<task>', 'xsum'), and
    for a summarisation or language-modelling task the `--data-dir` flag drops the recipe's
    `train_file` / `validation_file` (those set with `-s` stay). The resolved config
    (run_config.yaml) shows the result.

    Relative paths in a recipe (`source`, `data_dir`, `train_file`, `validation_file`) are read
    from the recipe file's folder; in `-s` overrides and flags, from the current directory.
    """

    task: TaskName | None = None
    """Benchmark task: a GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte), a summarisation
    task (xsum, cnn_dm) or the language-modelling task wikitext2 (a causal LM: perplexity in eval,
    next-token training in finetune and distill; a masked LM: masked-token scores in eval); any usual spelling ('SST-2', 'cnndm', 'wikitext-2'). None = inferred from `source`; none
    at all = masked-LM on text (distill, pretrain)."""
    source: str | None = None
    """'glue/<task>', a local directory or file, a summarisation dataset name, or None (the task
    config says what is needed)."""
    data_dir: str | None = None
    """Local GLUE root (holding SST-2/, MRPC/, ...) for 'glue/<task>' sources, overriding $GLUE_DIR;
    for summarisation, a directory holding train.jsonl / validation.jsonl."""
    max_length: int = Field(128, ge=2)
    """Maximum tokens per example after truncation; batches are padded dynamically."""
    train_subset: int | None = Field(None, ge=1)
    """Use only the first N training examples (deterministic); None = all."""
    eval_subset: int | None = Field(None, ge=1)
    """Use only the first N examples of each evaluation split; None = all."""
    train_file: str | None = None
    """Summarisation: a jsonl/json/csv training file (overrides data_dir). Language modelling: a
    plain-text file to train on (overrides source and data_dir). A `--data-dir` flag drops a recipe's."""
    validation_file: str | None = None
    """Summarisation: a jsonl/json/csv validation file (overrides data_dir; a `--data-dir` flag drops a
    recipe's). Language modelling: the plain-text file a training run's final perplexity reads (likewise). Masked-LM training on text (pretrain,
    distill without a task): held-out text (a file or a folder of .txt files) scored after training:
    the masked tokens' loss, accuracy and perplexity, with masks fixed for every run
    (`evaluation.masked_lm`); None = nothing held out."""
    text_column: str | None = None
    """Summarisation: the document column; None = the dataset's (document for XSUM, article for CNN/DM)."""
    summary_column: str | None = None
    """Summarisation: the summary column; None = the dataset's (summary for XSUM, highlights for CNN/DM)."""
    max_target_length: int = Field(64, ge=2)
    """Summarisation: maximum summary tokens for training (labels are truncated)."""
    seq_len: int = Field(256, ge=2)
    """Language modelling: positions per window, the BOS token included ([BOS] + seq_len - 1 text
    tokens; seq_len text tokens for a tokenizer without BOS). At most the model's
    max_position_embeddings: the default is lowered to it for a smaller model, a larger value set
    explicitly is an error."""
    stride: int | None = Field(None, ge=1)
    """Language modelling: text tokens between the starts of consecutive windows; None = seq_len - 1,
    every token scored exactly once in non-overlapping windows. Smaller = sliding windows: each
    window re-reads the end of the previous one as context and scores only its new tokens."""
    max_tokens: int | None = Field(None, ge=2)
    """Language modelling: keep only the first N tokens of the text (quick runs); None = all of it."""

    @field_validator("task", mode="before")
    @classmethod
    def _task_spelling(cls, value: Any) -> Any:
        if isinstance(value, str) and (why := unsupported_glue_task(value)):
            raise ValueError(why)
        return (normalize_task(value) or value) if isinstance(value, str) else value

    def _check(self, rules: _Rules) -> None:
        """Infer `task` from `source` when unset (the model is frozen: set once, here)."""
        _not_blank(rules, self.source, "source")
        try:
            inferred = infer_task(self.source) if self.source and self.source.strip() else None
        except ValueError as exc:
            rules.require(False, "source", str(exc))
            return
        if self.task is None:
            object.__setattr__(self, "task", inferred)
        rules.require(
            inferred is None or inferred == self.task,
            "task",
            f"{self.task!r} disagrees with data.source {self.source!r} (task {inferred!r})",
        )
        # a summarisation task reads its files from data_dir / train_file / validation_file: a source that
        # is no dataset name (a local path) would be ignored in silence
        rules.require(
            self.task not in SUMMARIZATION_TASKS or not self.source or inferred is not None,
            "source",
            f"{self.source!r} is not read by summarisation task {self.task!r}: data.source names the dataset "
            "(xsum, cnn_dm); give a local directory as data.data_dir (--data-dir, holding train.jsonl / "
            "validation.jsonl) or files as data.train_file / data.validation_file",
        )


class TrainArgs(_RuledSection):
    """Optimisation, schedule, evaluation and checkpointing; mapped to `TrainingArguments`
    in `training/args.py`. Defaults follow the released GLUE fine-tuning code (method doc 7.2)."""

    lr: float = Field(2e-5, gt=0)
    """Peak learning rate of AdamW."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """'constant' (after warmup) or 'linear' decay to 0 at `schedule_steps` (or the run's end)."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warmup steps from 0 to `lr`."""
    schedule_steps: int | None = Field(None, ge=1)
    """Horizon of the linear schedule when it differs from the run length (pretraining: 500000
    while stopping at 100000); None = the run length."""
    mismatched_model: Literal["last", "kept"] = "last"
    """MNLI: the model that scores the mismatched dev set, once: 'last', the model of the run's last
    evaluation (the released code and docs/spikelm-method.md 7.2: the final epoch's, whichever epoch
    the matched set selects); 'kept', the model keep_best keeps, which final/ holds (both numbers from
    one model). The same model without keep_best or evaluations."""
    batch_size: int = Field(32, ge=1)
    """Training batch size per device."""
    eval_batch_size: int = Field(64, ge=1)
    """Evaluation batch size per device."""
    grad_accum_steps: int = Field(1, ge=1)
    """Gradient accumulation steps per optimiser step."""
    epochs: float = Field(3.0, gt=0)
    """Training epochs (fractions allowed); ignored when max_steps > 0."""
    max_steps: int = -1
    """Stop after this many optimiser steps; -1 = use `epochs`."""
    max_epochs: float | None = Field(None, gt=0)
    """With `max_steps`: stop after `max_steps` steps or this many passes over the training data,
    whichever comes first (a schedule that scales down with the data, so that a small task is not
    repeated until it overfits); the linear schedule then ends at the earlier stop. None = `max_steps`."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    seed: int = Field(42, ge=0)
    """Random seed (set inside run_<verb>(), never at import)."""
    grad_clip: float | None = Field(None, gt=0)
    """Clip the gradient norm at this value; None = no clipping (the released code)."""
    save_steps: int = Field(500, ge=1)
    """Save a checkpoint-<step>/ every N steps (when eval_strategy is 'steps' or 'no')."""
    save_total_limit: int | None = Field(None, ge=1)
    """Keep at most N checkpoints (the best one is always kept); None = keep all."""
    eval_strategy: Literal["epoch", "steps", "no"] = "epoch"
    """When to evaluate on the dev split(s)."""
    eval_steps: int | None = Field(None, ge=1)
    """Evaluate every N steps; required when eval_strategy is 'steps'."""
    logging_steps: int = Field(50, ge=1)
    """Log training metrics every N steps."""
    bf16: bool | Literal["auto"] = False
    """Train in bfloat16 mixed precision (autocast): on a CPU with native bf16 matmuls (AMX,
    AVX512-BF16) about half the float32 step time of a spiking MiniLM, on one without them 26 times
    it (torch emulates bf16; README, Performance). 'auto': bf16 where the run's device computes it
    natively (those CPUs, CUDA GPUs with bf16), float32 elsewhere; decided and logged when the run
    starts (`training/precision.py`), and recorded as the run's `precision`."""
    fp16: bool = False
    """Train in float16 mixed precision."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto' = CUDA when available, else CPU."""
    report_to: tuple[Literal["none", "tensorboard", "wandb"], ...] = ("none",)
    """Extra metric sinks besides metrics.jsonl: a list of 'none', 'tensorboard', 'wandb'."""
    keep_best: bool = True
    """Keep the best evaluated checkpoint as the final model: by the task's primary metric (GLUE), by
    the teacher-forced dev loss (summarisation: ROUGE needs generation, which runs once, at the end)."""
    num_workers: int = Field(0, ge=0)
    """DataLoader worker processes."""
    compile: Literal["auto", "none", "layers"] = "auto"
    """'layers': after calibration, run each spiking layer (BERT; BART encoder and decoder) as one
    torch.compile'd graph that fuses the neurons with their neighbours (faster steps after a one-off
    compile, about a minute on CPU, cached by torch (TORCHINDUCTOR_CACHE_DIR) for later runs; steps
    that record firing rates run eagerly); 'none': eager layers; 'auto' (default): 'layers' when the
    run has at least 300 optimizer steps left to train (a resumed run counts from its checkpoint), so
    that the compile pays for itself, else 'none'. Same spikes either way."""
    sampling: Literal["random", "group_by_length"] = "random"
    """Order of training examples: 'random' (shuffled) or 'group_by_length' (shuffled, then batches
    of similar length, so that dynamic padding wastes little: faster on short, varied texts such as
    SST-2; the Trainer's `train_sampling_strategy`)."""
    calibration_examples: int | None = Field(None, ge=1)
    """Training examples in the batch that calibrates the spiking neurons' amplitudes before training
    (alpha_t = k * mean|u_t| over the whole batch, method doc 2.3); None = one training batch
    (`batch_size`; under torchrun or accelerate the global batch, `batch_size` times the processes, on
    every rank, in one no-grad forward: set a count here where that does not fit), as the released
    code. Only runs that convert a dense model calibrate; causal LMs calibrate on the calibration text
    instead (and refuse this setting)."""
    calibration_order: Literal["first", "random"] = "first"
    """Which training examples calibrate: 'first' in file order (the released code: the first batch),
    or 'random', drawn over the whole training set under `seed`, so that a file ordered by genre or
    label (STS-B's begins with 2,000 image captions) calibrates on a mix of it."""
    calibration_tokens: CalibrationTokens = "all"
    """What the calibration means average over: 'all' positions of the calibration batch, pads
    included (the released code, which pads every batch to 128; spikelm pads each batch to its
    longest example), or its 'real' tokens only (pads excluded, as firing rates count them), so that
    the amplitudes do not depend on how the batch was padded."""
    calibration_mode: CalibrationMode = "eval"
    """The model's mode in the calibration forward: 'eval' (spikelm's default: no dropout, so the amplitudes
    depend on the calibration batch alone) or 'train' (dropout on, as the released code calibrates inside
    its first pretraining step, method doc 2.3; the paper's pretraining recipes set it). With BERT's
    dropout 0.1 at random initialisation the two put amplitudes up to about 15 % apart; a model without
    dropout calibrates the same either way."""
    target_firing_rate: float | None = Field(None, gt=0, lt=1)
    """Firing-rate target: add `firing_rate_weight` times a penalty on the per-layer firing rates
    of each training batch (non-zero fraction of each neuron's output, pads excluded, mean over a
    layer's neurons), so that a run is asked for a rate instead of a k (method doc 11). Spiking models
    only; the layers then run eagerly (compile is ignored). None = no penalty."""
    firing_rate_weight: float = Field(1.0, ge=0)
    """Weight of the firing-rate penalty in the training loss (used with target_firing_rate)."""
    firing_rate_penalty: FiringPenalty = "hinge"
    """'hinge' = mean over layers of max(0, rate - target)^2: a budget, only rates above the target
    cost; 'squared' = mean of (rate - target)^2, towards the target from both sides (ternary neurons'
    straight-through gradient can only lower rates)."""
    activation_checkpointing: bool = False
    """Activation (gradient) checkpointing: keep no layer's activations for the backward; recompute each
    layer there instead (`torch.utils.checkpoint`, non-reentrant; spiking BERT, BART and Llama, and the
    dense models of transformers; the Trainer's `activation_checkpointing`): a spiking layer keeps T times a dense layer's activations, so this is what lets a
    larger batch or T fit in memory, for about one more forward per step. The same loss and gradients
    (dropout replayed); a layer whose neurons still calibrate (a converted model's first step) runs
    plainly. Not with `target_firing_rate`, whose penalty reads the spikes through hooks."""
    weight_average: float | None = Field(None, gt=0, lt=1)
    """An exponential moving average of the trained weights with this decay, updated after every
    optimizer step from the weights training starts with; the decay warms up as min(decay, (1 + n) /
    (10 + n)) at update n, so the average spans about the last n/9 steps until the decay is reached
    (0.99: at update 890; about the last 100 steps from there on). Evaluations score it, the best
    checkpoint is the best average and final/ holds it; checkpoints keep the raw weights for resuming,
    with the average beside them (`training/weight_average.py`). None = no average."""

    def _check(self, rules: _Rules) -> None:
        rules.require(self.max_steps == -1 or self.max_steps >= 1, "max_steps",
                      f"must be -1 (use epochs) or >= 1, got {self.max_steps}")
        rules.require(self.max_epochs is None or self.max_steps >= 1, "max_epochs",
                      "caps max_steps: set train.max_steps too, or use train.epochs alone")
        rules.require(self.schedule_steps is None or self.lr_schedule == "linear", "schedule_steps",
                      "is only used with lr_schedule 'linear'")
        rules.require(self.eval_strategy != "steps" or self.eval_steps is not None, "eval_steps",
                      "is required when eval_strategy is 'steps'")
        rules.require(not (self.bf16 is not False and self.fp16), "fp16",
                      "cannot be true while bf16 is true or auto: choose one precision")
        rules.require(not (self.keep_best and self.eval_strategy == "no"), "keep_best",
                      "needs evaluation: set eval_strategy to 'epoch' or 'steps', or keep_best to false")
        rules.require(not ("none" in self.report_to and len(self.report_to) > 1), "report_to",
                      "'none' cannot be combined with other sinks")
        rules.require(not (self.activation_checkpointing and self.target_firing_rate is not None), "activation_checkpointing",
                      "cannot run with train.target_firing_rate: the penalty reads every neuron's spikes through "
                      "hooks, which the recomputation in the backward would run again; drop one of the two")
        for key in ("firing_rate_weight", "firing_rate_penalty"):
            rules.require(self.target_firing_rate is not None or getattr(self, key) == type(self).model_fields[key].default,
                          key,
                          f"shapes the firing-rate penalty, which only train.target_firing_rate turns on: set a "
                          f"target, or drop {key} (a sweep over targets: give {key} in the grid or in each "
                          f"point beside the target)")


class AugmentArgs(_Section):
    """TinyBERT-style augmentation of a small GLUE training set for distillation
    (`spikelm_core/data/augment.py`): copies of each example with one-piece words replaced by
    neighbours in the teacher's embedding space; the teacher labels the copies. Off by default."""

    copies: int = Field(0, ge=0)
    """Augmented copies of every training example (TinyBERT: 20); 0 = none unless min_examples asks."""
    min_examples: int | None = Field(None, ge=1)
    """Add copies until the training set holds at least this many examples (originals included):
    one setting for tasks of any size (a task already this large gets no copies)."""
    word_prob: float = Field(0.4, gt=0, le=1)
    """Probability of replacing each one-piece word (TinyBERT's p_t)."""
    neighbours: int = Field(15, ge=1)
    """Candidates per word: its nearest one-piece words by cosine of the teacher's input embeddings
    (TinyBERT's K)."""

    @property
    def enabled(self) -> bool:
        return self.copies > 0 or self.min_examples is not None


class DistillArgs(_RuledSection):
    """Knowledge distillation from a dense teacher: loss = alpha_ce * CE + alpha_kd * KD(T)
    + alpha_hidden * MSE(hidden states) + alpha_attn * (MSE or KL of attention); optionally staged
    (hidden states first) and on augmented data."""

    teacher: str | None = None
    """Teacher model: local directory or hub id (required by the distill command). A relative
    path in a recipe is read from the recipe's folder."""
    temperature: float = Field(1.0, gt=0)
    """Softmax temperature of the logit KD term."""
    alpha_kd: float = Field(1.0, ge=0)
    """Weight of the logit KD term (KL divergence at `temperature`)."""
    alpha_ce: float = Field(0.0, ge=0)
    """Weight of the hard-label loss (CE, or MSE for regression)."""
    alpha_hidden: float = Field(0.0, ge=0)
    """Weight of the hidden-state MSE term."""
    alpha_attn: float = Field(0.0, ge=0)
    """Weight of the attention term (see `attn_loss`)."""
    attn_loss: Literal["mse", "kl"] = "mse"
    """The attention term: `mse`, the MSE between the attention probabilities over every element, padded
    query rows included, as docs/spikelm-method.md section 13 writes it (so a batch's padding changes the
    term's scale; TinyBERT compares pre-softmax scores), or `kl`, KL(teacher || student) of each real query token's distribution over
    keys, averaged over heads, tokens and layers (MiniLM's self-attention distillation, every layer);
    the KL does not shrink with the sequence length as the MSE does."""
    hidden_match: Literal["mean", "steps"] = "mean"
    """What the hidden-state term matches to the teacher's layer outputs: the student's mean over its
    T time steps (`mean`, method doc 13; the released code has no distillation), or each time step's
    state (`steps`: the MSE of every step, averaged; it also penalises the spread over steps). `steps`
    needs a spiking BERT student."""
    hidden_norm: Literal["none", "relative"] = "none"
    """Scale of the hidden-state term: `none`, the MSE of every layer averaged over layers (layers with
    larger states weigh more), or `relative`, each layer's MSE divided by the teacher's mean square at
    that layer, so every layer weighs the same."""
    hidden_stage_steps: int = Field(0, ge=0)
    """Staged schedule (TinyBERT): the first this many optimizer steps train on the hidden-state and
    attention terms only; the logit and hard-label terms join after (a firing-rate penalty,
    `train.target_firing_rate`, applies in both stages). 0 = one stage, all terms."""
    hidden_stage_local: bool = False
    """In the hidden-state stage, train each layer on its own terms only (block-wise reconstruction):
    every layer reads the previous spiking layer's output detached, so no gradient crosses layers and
    each layer learns to map the student's own spiking states to the teacher's output. False = the
    gradient of every layer's term flows through all the layers below it. Needs hidden_stage_steps."""
    hidden_stage_lr_scale: float = Field(1.0, gt=0)
    """Multiplies the learning rate (the schedule's value) during the hidden-state stage; 1 = the one
    schedule for both stages. Needs hidden_stage_steps."""
    spike_drop: float = Field(0.0, ge=0, lt=1)
    """Spike drop (QDrop for spikes): in the student's training forwards each element of every
    elastic neuron's and K/V spike's output is its float input instead of its spike with this
    probability at step 0, falling linearly to 0 at `spike_drop_steps`; from there on, and in every
    evaluation, the student spikes fully: the twin moves from the dense teacher's weights to spikes
    gradually (on STS-B it did not help; docs/transfer-study-log.md). 0 = off (the released code)."""
    spike_drop_steps: int = Field(0, ge=0)
    """Steps over which `spike_drop` falls to 0 (needed with spike_drop > 0)."""
    augment: AugmentArgs = Field(default_factory=AugmentArgs)
    """Augmented training data labelled by the teacher (GLUE tasks); off by default."""

    def _check(self, rules: _Rules) -> None:
        _not_blank(rules, self.teacher, "teacher")
        rules.require(max(self.alpha_kd, self.alpha_ce, self.alpha_hidden, self.alpha_attn) > 0, "alpha_kd",
                      "at least one of alpha_kd, alpha_ce, alpha_hidden, alpha_attn must be > 0")
        rules.require(self.hidden_stage_steps == 0 or max(self.alpha_hidden, self.alpha_attn) > 0,
                      "hidden_stage_steps", "needs alpha_hidden or alpha_attn > 0 (the terms of the first stage)")
        rules.require(not self.hidden_stage_local or self.hidden_stage_steps > 0, "hidden_stage_local",
                      "needs hidden_stage_steps > 0 (the stage it applies to); without a stage set it to false")
        rules.require(self.hidden_stage_lr_scale == 1.0 or self.hidden_stage_steps > 0, "hidden_stage_lr_scale",
                      "needs hidden_stage_steps > 0 (the stage it applies to); without a stage set it to 1")
        rules.require(self.spike_drop == 0 or self.spike_drop_steps > 0, "spike_drop_steps",
                      "needs to be > 0 with spike_drop > 0 (the steps over which the drop falls to 0)")

    def spike_drop_at(self, step: int) -> float:
        """The spike-drop probability of optimizer step `step` (0-based): `spike_drop` falling linearly
        to 0 at `spike_drop_steps`."""
        if self.spike_drop == 0 or step >= self.spike_drop_steps:
            return 0.0
        return self.spike_drop * (1.0 - step / self.spike_drop_steps)


class GenerateArgs(_RuledSection):
    """Summarisation: how summaries are generated for ROUGE (beam search, KV cache)."""

    num_beams: int = Field(4, ge=1)
    """Beam size (1 = greedy). Not public for the paper's BART experiments."""
    max_new_tokens: int = Field(64, ge=1)
    """Maximum summary tokens generated."""
    min_new_tokens: int = Field(0, ge=0)
    """Minimum summary tokens generated: the end-of-sequence token is forbidden before this many (0 = off,
    spikelm's default whatever the checkpoint's generation_config says; fairseq's BART examples generate
    XSum summaries with a minimum of 10 tokens, CNN/DailyMail ones with 55)."""
    length_penalty: float = 1.0
    """Beam search's length penalty (the exponent of the length dividing a beam's log-probability;
    above 1 favours longer summaries). spikelm's own setting, not the checkpoint's generation_config,
    so a dense and a spiking model are scored alike (BART's authors generate XSum summaries at 1.0,
    CNN/DailyMail ones at 2.0, in fairseq's BART examples)."""
    no_repeat_ngram_size: int = Field(0, ge=0)
    """Forbid generating any n-gram of this size twice (0 = off, spikelm's default whatever the
    checkpoint's generation_config says; fairseq's BART examples generate with 3)."""

    def _check(self, rules: _Rules) -> None:
        rules.require(self.min_new_tokens <= self.max_new_tokens, "min_new_tokens",
                      f"({self.min_new_tokens}) must be at most max_new_tokens ({self.max_new_tokens})")


class PromptArgs(_RuledSection):
    """Generation mode of eval (`spikelm eval MODEL --prompt TEXT`): continue one prompt with a causal
    LM, through `generate()` and its KV cache, and time it (no task is scored)."""

    text: str
    """The prompt."""
    chat: bool = False
    """Wrap the prompt in the tokenizer's chat template as one user turn (SmolLM2-Instruct has one);
    false = plain text after the BOS token."""
    max_new_tokens: int = Field(32, ge=1)
    """Most tokens generated (fewer when the model ends its answer with an EOS token)."""
    sample: bool = False
    """Sample (with `temperature` and `top_p`, from `seed`) instead of greedy decoding."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature (sample: true)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling: keep the smallest set of tokens holding this probability (sample: true)."""
    compare_dense: bool = False
    """Also continue the prompt with the dense model (the model itself when it is dense and converted
    here, else `dense_reference`), from the same seed."""

    def _check(self, rules: _Rules) -> None:
        rules.require(self.text.strip() != "", "text", "must not be empty: give the text to continue")
        for name in ("temperature", "top_p"):
            rules.require(self.sample or name not in self.model_fields_set, name,
                          "is for sampling: set prompt.sample true (the CLI's --temperature / --top-p do)")


class MlmArgs(_Section):
    """Masked language modelling (the released pretraining objective: MLM CE + NSP CE)."""

    mlm_probability: float = Field(0.15, gt=0, lt=1)
    """Fraction of tokens selected for masking (80% [MASK], 10% random, 10% kept)."""
    nsp: bool = False
    """Add the next-sentence-prediction head and loss."""


# ------------------------------------------------------------------------------ task configs

_TASK_REQUIRED = ("is required: set data.task, or data.source to 'glue/<task>', a GLUE task directory "
                  "or a summarisation dataset (xsum, cnn_dm)")


_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_POINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]*")


def flatten_dotted(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"max_steps": 150}} -> {"train.max_steps": 150}: each leaf under its dotted key (a
    later key replaces an earlier one; an empty mapping is a leaf)."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten_dotted(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


class SweepEnergyArgs(_Section):
    """How a sweep audits the energy of each trained point (the settings of `spikelm energy`)."""

    enabled: bool = True
    """Audit each trained model (false: the table has no energy columns)."""
    seq_len: int | None = Field(None, ge=3)
    """Tokens per sequence for the audit; None = the recipe's data.max_length."""
    data: str | None = None
    """A UTF-8 text file for the audit's firing pass; None = the packaged calibration text."""
    batches: int = Field(4, ge=1)
    """Calibration-text batches traced for the firing rates."""
    count_neuron_updates: bool = False
    """Also bill the membrane updates (`spikelm energy --count-neuron-updates`)."""
    count_alpha_scale: bool = False
    """Also bill the rescaling by alpha (`spikelm energy --count-alpha-scale`)."""


SWEEP_OWNED_NOTE = ("the sweep sets this itself for every point (out_dir: <sweep's out_dir>/<point>; sweep: "
                     "none inside a point): choose another key")


#: what a sweep writes beside its points' run directories (its reference's folder, tables and plots): no point's name
SWEEP_OUTPUT_NAMES = ("reference", "sweep.json", "sweep.csv", "sweep.md", "pareto.png", "curves.png")


def sweep_owned_key(key: str) -> bool:
    """Keys a sweep point cannot set: its run directory and the sweep section itself."""
    return key == "out_dir" or key == "sweep" or key.startswith("sweep.")


class SweepArgs(_RuledSection):
    """An accuracy-energy sweep of this recipe (`training/sweep.py`): one run per point."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """Dotted key -> values; every combination is a point, named after its values (k2_num_timesteps4)."""
    points: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Named points, each a mapping of dotted key -> value, run after the grid's. Nested mappings
    (`-s sweep.points.lif.train.max_steps=150` writes one) are flattened to dotted keys. A point set
    to null is left out (how a recipe drops a point its `base:` defines)."""
    start_from: dict[str, str] = Field(default_factory=dict)
    """Point -> an earlier point whose trained model it starts from: `model` is that point's final/ and
    `reconvert` is on, so its weights are converted again with this point's explicit neuron settings (e.g.
    `{T1: T2}`: the T=1 twin starts from the trained T=2 twin). That point must have run first. An
    entry set to null is left out, as for points."""
    reference: str | None = None
    """The dense reference model (a row of the table, a line on the plot); None = distill.teacher
    in a distill recipe, no reference in a finetune recipe."""
    energy: SweepEnergyArgs = Field(default_factory=SweepEnergyArgs)
    """The energy audit of each trained point."""

    @field_validator("grid", "points", "start_from", mode="before")
    @classmethod
    def _kept_entries(cls, entries: Any, info) -> Any:
        """null is none (`-s sweep.points=null` drops a recipe's points; a mapping given with -s merges
        into the recipe's); points and starts set to null are left out; a point's nested mapping, and the
        grid's, become dotted keys."""
        if entries is None:
            return {}
        if not isinstance(entries, Mapping):
            return entries
        if info.field_name == "grid":  # `-s sweep.grid.neuron.k=[2,3]` writes {"neuron": {"k": [2, 3]}}
            return flatten_dotted(entries) if entries else entries
        kept = {name: value for name, value in entries.items() if value is not None}
        if info.field_name == "points":
            kept = {name: flatten_dotted(values) if isinstance(values, Mapping) and values else values
                    for name, values in kept.items()}
        return kept

    def _check(self, rules: _Rules) -> None:
        for key, values in self.grid.items():
            rules.require(bool(_DOTTED.fullmatch(key)), f"grid.{key}", "must be a dotted key such as neuron.k")
            rules.require(bool(values), f"grid.{key}", "needs at least one value")
            rules.require(not sweep_owned_key(key), f"grid.{key}", SWEEP_OWNED_NOTE)
        for name, values in self.points.items():
            rules.require(bool(_POINT_NAME.fullmatch(name)), f"points.{name}", "name: use letters, digits and . _ = + -")
            what = "the folder of the sweep's reference model" if name.lower() == "reference" else \
                "one of the sweep's tables or plots, written beside the points' folders"
            rules.require(name.lower() not in SWEEP_OUTPUT_NAMES, f"points.{name}",
                          f"name: '{name}' is {what}: choose another name")
            for key in values:
                rules.require(bool(_DOTTED.fullmatch(key)), f"points.{name}.{key}", "must be a dotted key such as neuron.k")
                rules.require(not sweep_owned_key(key), f"points.{name}.{key}", SWEEP_OWNED_NOTE)
        rules.require(bool(self.grid or self.points), "grid", "give a grid (e.g. neuron.k: [2, 3, 4]) or named points; "
                      "-s sweep=null runs the recipe without a sweep")
        for name, source in self.start_from.items():
            rules.require(name != source, f"start_from.{name}", "a point cannot start from its own model")
            rules.require("model" not in self.points.get(name, {}), f"start_from.{name}",
                          "that point sets model itself: drop one of the two")


class _TaskConfig(_RuledSection):
    """Fields every command's config has. `cfg.task` and `cfg.task_family` read `data.task`."""

    command: str
    """The command this recipe is for; a recipe for another command is refused."""
    model: str
    """Model: a local directory (config.json + model.safetensors), an alias (minilm, bert-base,
    bart-base) or a hub id. A relative path in a recipe is read from the recipe's folder."""
    out_dir: str | None = None
    """Run directory (checkpoints, metrics.jsonl, run_config.yaml, final/), relative to the current
    directory; None = runs/<command>-<task>."""
    neuron: Annotated[NeuronSettings, _NEURON_COERCIONS] = Field(default_factory=NeuronSettings)
    """Spiking neuron settings (used when the model is converted from a dense checkpoint)."""
    data: DataArgs = Field(default_factory=DataArgs)
    """Benchmark task, data source and lengths."""

    @property
    def task(self) -> str | None:
        """The benchmark task (`data.task`, canonical), or None for masked-LM on text."""
        return self.data.task

    @property
    def task_family(self) -> TaskFamily:
        """'glue', 'summarization' or 'mlm' (no benchmark task)."""
        return task_family(self.data.task)

    def _check(self, rules: _Rules) -> None:
        _not_blank(rules, self.model, "model")


class _BenchmarkConfig(_TaskConfig):
    """A config that can score a benchmark task, summarisation included."""

    generate: GenerateArgs = Field(default_factory=GenerateArgs)
    """Summarisation: generation settings for the ROUGE evaluation."""
    reconvert: bool = False
    """Start from a spiking checkpoint's weights alone: drop its saved neuron state (amplitudes,
    calibration, per-channel scales) and convert those weights again with the checkpoint's neuron
    settings, those this config sets explicitly (recipe, point, `-s neuron.*`) in their place,
    calibrated again on the first training batch (`eval`: the calibration text, as `spikelm convert`), e.g. a T=4 twin's
    weights as the start of a T=1 twin (`-s neuron.num_timesteps=1` alone).
    False runs a spiking checkpoint with its own neuron settings. No effect on a dense model. A sweep
    point sets it through `sweep.start_from`."""

    def _check(self, rules: _Rules) -> None:
        super()._check(rules)
        if self.task_family == "glue":  # GLUE reads data.source / data.data_dir alone: the rest would be ignored in silence
            for key, use in (("train_file", "summarisation and language modelling"),
                             ("validation_file", "summarisation and language modelling"),
                             ("text_column", "summarisation"), ("summary_column", "summarisation")):
                rules.require(getattr(self.data, key) is None, f"data.{key}",
                              f"is read for {use} only; GLUE task {self.task} reads data.source / data.data_dir "
                              "(--data-dir): drop it")
            rules.require(self.generate == GenerateArgs(), "generate",
                          f"is read for summarisation only (ROUGE); GLUE task {self.task} generates nothing: drop it")
        # the language-modelling (and summarisation) lengths: a value other than the default, not a key present, so
        # that a run_config.yaml (which holds every field) replays
        others = {"glue": ("seq_len", "stride", "max_tokens", "max_target_length"),
                  "summarization": ("seq_len", "stride", "max_tokens")}.get(self.task_family, ())
        for key in others:
            use = "summarisation" if key == "max_target_length" else "language modelling (wikitext2)"
            rules.require(getattr(self.data, key) == type(self.data).model_fields[key].default, f"data.{key}",
                          f"is read for {use} only; {self.task} does not read it (its length is data.max_length): drop it")


class _ModelOverrides(_Section):
    """The `model_config` key of the commands that build a model to train."""

    model_overrides: dict[str, Any] = Field(default_factory=dict, alias="model_config")
    """Recipe key `model_config`: fields of the model's config to change, e.g. {hidden_dropout_prob: 0.0,
    attention_probs_dropout_prob: 0.0} (no dropout in the student); `pretrain` from scratch also sizes
    the model with them, e.g. {hidden_size: 384, num_hidden_layers: 6}. Neuron fields belong in `neuron`.
    null = none (`-s model_config=null` drops a recipe's)."""

    @field_validator("model_overrides", mode="before")
    @classmethod
    def _null_is_none(cls, value: Any) -> Any:
        return {} if value is None else value


class _TrainingConfig(_ModelOverrides, _BenchmarkConfig):
    """A config that trains on a benchmark task."""

    train: TrainArgs = Field(default_factory=TrainArgs)
    """Optimisation and evaluation (defaults: lr 2e-5 constant, batch 32, eval every epoch)."""
    reinit_head: bool = False
    """Start a fresh classifier when the model's saved one has another label count (e.g. an SST-2
    model continued on MNLI); false refuses such a model instead of guessing."""
    model_init: Literal["pretrained", "random"] = "pretrained"
    """The weights training starts from: `pretrained`, those of `model`; `random`, the architecture
    and tokenizer of `model` with every weight drawn afresh by the model's own initialisation (BERT's
    normal(0, initializer_range), seeded by train.seed) and the amplitudes calibrated on them: a student
    trained from scratch, as the paper's ablation rows were pretrained (method doc 9; the study in
    recipes/README.md). A teacher is unchanged. Resuming reads the checkpoint's weights as usual."""
    sweep: SweepArgs | None = None
    """Run this recipe as a sweep: one run directory per point under out_dir, and one table
    (`spikelm distill recipe.yaml --grid neuron.k=2,3,4`); None = one ordinary run."""

    def _check(self, rules: _Rules) -> None:
        super()._check(rules)
        rules.require(self.train.target_firing_rate is None or self.neuron.spiking, "train.target_firing_rate",
                      "needs a spiking model, but neuron.kind is 'dense': choose elastic_bi or lif, or drop the target")
        rules.require(self.train.target_firing_rate is None or not (
            self.neuron.salient_fraction > 0 and self.neuron.salient_mode == "float"), "train.target_firing_rate",
            "cannot run with float salient channels (neuron.salient_mode 'float'): the penalty would count their "
            "float inputs as spikes; use salient_mode 'steps', or drop one of the two")
        rules.require(self.train.mismatched_model == "last" or self.task == "mnli", "train.mismatched_model",
                      f"is for MNLI, whose mismatched dev set it scores; {self.task or 'this run'} has none: drop it")


class FinetuneConfig(_TrainingConfig):
    """`spikelm finetune`: fine-tune a spiking (or, with neuron.kind 'dense', a dense) model on one
    GLUE, summarisation or language-modelling task (method doc 7.2)."""

    command: Literal["finetune"] = "finetune"
    """Command this recipe is for."""

    def _check(self, rules: _Rules) -> None:
        super()._check(rules)
        rules.require(self.data.task is not None, "data.task", _TASK_REQUIRED)


class DistillConfig(_TrainingConfig):
    """`spikelm distill`: train a spiking student against a dense teacher, on a benchmark task
    (data.task set or inferred) or with MLM on text (no task)."""

    command: Literal["distill"] = "distill"
    """Command this recipe is for."""
    distill: DistillArgs = Field(default_factory=DistillArgs)
    """Teacher and loss weights; distill.teacher is required."""
    mlm: MlmArgs = Field(default_factory=MlmArgs)
    """Masking settings, used for MLM distillation on text (no data.task)."""

    def _check(self, rules: _Rules) -> None:
        super()._check(rules)
        rules.require(self.distill.teacher is not None, "distill.teacher", "is required")
        rules.require(self.neuron.spiking, "neuron.kind", "'dense' has no spiking student; choose elastic_bi or lif")
        rules.require(self.data.task is not None or self.data.source is not None, "data.source",
                      "is required: 'glue/<task>', a GLUE task directory, or a text file/directory for MLM")
        _distill_rules(rules, self.distill, self.neuron, self.train, glue=self.task_family == "glue",
                       encoder=self.task_family in ("glue", "mlm"),
                       nsp=self.task_family == "mlm" and self.mlm.nsp)
        if self.task_family == "mlm":
            _text_corpus_rules(rules, self.data)


def _text_corpus_rules(rules: _Rules, data: DataArgs) -> None:
    """Masked-LM training reads its corpus from `data.source` and its held-out text from
    `data.validation_file`: the other data paths would be ignored in silence."""
    for key in ("data_dir", "train_file"):
        rules.require(getattr(data, key) is None, f"data.{key}",
                      "is not read by masked-LM training on text, which trains on data.source (a text file or a "
                      "folder of .txt files) and scores data.validation_file: drop it, or set data.source")
    # the causal-LM and summarisation settings: a masked LM reads data.max_length-token sequences (a value
    # other than the default, not a key present, so that a run's run_config.yaml, which holds every field, replays)
    for key, use in (("seq_len", "data.max_length sets the sequence length"), ("stride", "sequences never overlap"),
                     ("max_tokens", "data.train_subset / data.eval_subset limit the sequences"),
                     ("text_column", "the text is read line by line"), ("summary_column", "there are no summaries"),
                     ("max_target_length", "there are no summaries")):
        default = type(data).model_fields[key].default
        rules.require(getattr(data, key) == default, f"data.{key}",
                      f"is not read by masked-LM training on text ({use}): drop it")


def _distill_rules(rules: _Rules, distill: DistillArgs, neuron, train: TrainArgs, *, glue: bool, nsp: bool,
                   encoder: bool = True) -> None:
    """The distillation settings a run can honour (`distill`, and `pretrain` with a teacher): never
    one that would be ignored in silence. `encoder`: a BERT student (GLUE, masked-LM text)."""
    rules.require(distill.alpha_attn == 0 or encoder, "distill.alpha_attn",
                  "matches a spiking BERT student's attention maps (GLUE tasks, masked-LM text); BART and Llama "
                  "students have no attention term: set it to 0")
    rules.require(not nsp or distill.alpha_ce > 0, "distill.alpha_ce",
                  "is 0, so with mlm.nsp the next-sentence head would never train (only the cross-entropy "
                  "term reaches it): set distill.alpha_ce above 0, or mlm.nsp to false")
    rules.require(distill.hidden_match == "mean" or glue, "distill.hidden_match",
                  "'steps' needs a spiking BERT student on a GLUE task; masked-LM, BART and Llama students match "
                  "the mean over T")
    rules.require(not distill.augment.enabled or glue, "distill.augment",
                  "augments GLUE tasks only (the teacher labels word-replaced copies of sentences)")
    if distill.spike_drop > 0:
        rules.require(neuron.kind == "elastic_bi", "distill.spike_drop",
                      f"acts on elastic bi-spiking neurons, but neuron.kind is {neuron.kind!r}: "
                      "choose elastic_bi or set distill.spike_drop to 0")
        rules.require(train.target_firing_rate is None, "distill.spike_drop",
                      "cannot run with train.target_firing_rate: the firing penalty would count the "
                      "passed float inputs as spikes; drop one of the two")


def _pretrain_train_defaults() -> TrainArgs:
    """The released pretraining setup (method doc 7.1): 100k of a 500k-step linear schedule."""
    return TrainArgs(
        lr=2e-4,
        lr_schedule="linear",
        warmup_steps=5000,
        schedule_steps=500_000,
        max_steps=100_000,
        batch_size=64,
        weight_decay=0.0,
        save_steps=50_000,
        eval_strategy="no",
        keep_best=False,
    )


class PretrainConfig(_ModelOverrides, _TaskConfig):
    """`spikelm pretrain`: masked-language-model pretraining, from scratch or from a checkpoint,
    optionally with a distillation teacher (method doc 7.1)."""

    command: Literal["pretrain"] = "pretrain"
    """Command this recipe is for."""
    model: str | None = None
    """Starting checkpoint (local directory or hub id); None = from scratch, normal(0, 0.02)."""
    tokenizer: str | None = None
    """Tokenizer directory, alias ('minilm') or hub id; None = the starting model's own. Required
    when training from scratch (model null): its vocabulary sizes the embeddings."""
    train: TrainArgs = Field(default_factory=_pretrain_train_defaults)
    """Optimisation (defaults: lr 2e-4, linear, 5000 warmup, 500000-step horizon, stop at 100000);
    keys a recipe leaves out keep these pretraining defaults."""
    mlm: MlmArgs = Field(default_factory=MlmArgs)
    """Masking and NSP."""
    distill: DistillArgs | None = None
    """Optional teacher and KD weights; null = plain MLM (the released code)."""

    @field_validator("train", mode="before")
    @classmethod
    def _over_pretrain_defaults(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            defaults = _pretrain_train_defaults().model_dump()
            if value.get("lr_schedule", "linear") != "linear":  # the 500k-step horizon is the linear schedule's
                defaults["schedule_steps"] = None
            return {**defaults, **value}
        return value

    def _check(self, rules: _Rules) -> None:
        _not_blank(rules, self.model, "model", " (null = from scratch)")
        rules.require(self.data.source is not None, "data.source", "is required (a text file or directory)")
        rules.require(self.data.task is None, "data.task", "must be null: pretraining reads plain text")
        _text_corpus_rules(rules, self.data)
        shortest = 5 if self.mlm.nsp else 3  # [CLS] a [SEP] (b [SEP]): a token in each segment
        rules.require(self.data.max_length >= shortest, "data.max_length",
                      f"must be at least {shortest} for masked-LM sequences"
                      + (" with next-sentence prediction (two segments)" if self.mlm.nsp else "")
                      + f", got {self.data.max_length}")
        rules.require(self.neuron.spiking, "neuron.kind", "'dense' is not a spiking model; choose elastic_bi or lif")
        rules.require(self.distill is None or self.distill.teacher is not None, "distill.teacher",
                      "is required when distill is set")
        if self.distill is not None:
            _distill_rules(rules, self.distill, self.neuron, self.train, glue=False, nsp=self.mlm.nsp)
        for key, off in (("eval_strategy", "no"), ("keep_best", False)):  # no evaluation data: never in silence
            rules.require(getattr(self.train, key) == off, f"train.{key}",
                          "pretraining scores its held-out text (data.validation_file) once, after training, not "
                          "during it: leave eval_strategy 'no' and keep_best false")


_EVAL_NEEDS = ("is required: set data.task (--task), e.g. sst2, xsum or wikitext2 (perplexity), or give "
               "prompt.text (--prompt) to generate text")


class EvalConfig(_BenchmarkConfig):
    """`spikelm eval`: evaluate a saved model on the dev split(s) of a GLUE task, with ROUGE on a
    summarisation task, or by its perplexity on a text (wikitext2); or, with `prompt`, generate a
    continuation of one prompt."""

    command: Literal["eval"] = "eval"
    """Command this recipe is for."""
    neuron: Annotated[NeuronSettings | None, _NEURON_COERCIONS] = None
    """Neuron settings for a dense model being converted; null = the model's own config."""
    splits: tuple[str, ...] = ()
    """Splits to score (e.g. [dev_matched, dev_mismatched]); empty = every dev split of the task
    (wikitext2: test; valid and train are the others)."""
    batch_size: int = Field(64, ge=1)
    """Evaluation batch size."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto' = CUDA when available, else CPU."""
    seed: int = Field(42, ge=0)
    """Random seed (only matters for non-deterministic kernels)."""
    compile: Literal["auto", "none", "layers"] = "auto"
    """Compiled spiking layers for scoring (see train.compile): 'auto' (default) compiles when at
    least 2000 examples are scored, 'layers' always, 'none' never. Perplexity records the firing of
    every window, so its layers run eagerly."""
    bf16: bool | Literal["auto"] = False
    """Score under bfloat16 autocast, as a `train.bf16` run's own evaluations do (with `compile:
    layers` as well, they give that run's dev numbers to the digit); default float32; 'auto' as
    `train.bf16` (bf16 where the device computes it natively). A spike is a
    threshold decision, so the precision moves predictions: a CoLA twin's dev Matthews 23.1 in bf16,
    21.4 in float32 (recipes/README.md)."""
    dense_reference: str | None = None
    """The dense model a spiking checkpoint is compared with: wikitext2 scores it on the same windows
    (dense_perplexity), and prompt.compare_dense continues the prompt with it. None = the model itself
    when it is dense and converted here (else no comparison). A relative path in a recipe is read
    from the recipe's folder."""
    prompt: PromptArgs | None = None
    """Generation mode: continue `prompt.text` instead of scoring a task (--prompt); None = score `data.task`."""
    mlm: MlmArgs = Field(default_factory=MlmArgs)
    """A masked LM (BERT) on a language-modelling task (wikitext2) is scored on its masked tokens, masked
    as a pretraining run's held-out text is (`mlm_probability`, fixed mask seed); `nsp` scores the
    next-sentence head too. A pretraining run's model takes its run's settings unless set here."""

    def _check(self, rules: _Rules) -> None:
        super()._check(rules)
        task = self.data.task
        _not_blank(rules, self.dense_reference, "dense_reference")
        rules.require(self.mlm == MlmArgs() or task in LM_TASKS, "mlm",
                      f"masks the text a masked LM is scored on (--task wikitext2); {task} reads no mlm settings")
        if self.prompt is not None:
            rules.require(task is None, "prompt", f"generates text; data.task ({task}) scores a task: give one of them")
            return
        rules.require(task is not None, "data.task", _EVAL_NEEDS)
        if task in LM_TASKS:
            canonical = [normalize_lm_split(split) for split in self.splits]
            for split, name in zip(self.splits, canonical):
                rules.require(name is not None, "splits", f"{task} has no split {split!r}; choose from {', '.join(LM_SPLITS)}")
            object.__setattr__(self, "splits", tuple(n or s for n, s in zip(canonical, self.splits)))
        elif task in SUMMARIZATION_TASKS:
            bad = [s for s in self.splits if s not in SUMMARIZATION_SPLITS]
            rules.require(not bad, "splits", f"{task} splits are {', '.join(SUMMARIZATION_SPLITS)}; got {bad}")
        elif task in GLUE_TASKS:
            canonical = [normalize_glue_split(task, split) for split in self.splits]
            for split, name in zip(self.splits, canonical):
                rules.require(name is not None, "splits",
                              f"{task} has no split {split!r}; choose from {', '.join(GLUE_TASKS[task].split_names)}")
            object.__setattr__(self, "splits", tuple(n or s for n, s in zip(canonical, self.splits)))


TASK_CONFIGS: dict[str, type[_TaskConfig]] = {
    "finetune": FinetuneConfig,
    "distill": DistillConfig,
    "pretrain": PretrainConfig,
    "eval": EvalConfig,
}
"""Command name -> task config class."""
