"""The recipe schema: frozen, typed dataclasses, one per recipe section.

Design:

- A recipe key is a dotted dataclass path (`train.lr`, `neuron.k`); there are no other spellings
  and no import-path strings. Every choice is a `Literal` field.
- Each field carries a docstring (the string right below it). `--print-config` and the recipe
  README take their wording from these.
- `__post_init__` validates values and reports *all* problems of a section at once through
  `ConfigProblems` (a `ValueError` that carries `(field, message)` pairs); `loading.py` turns them
  into dotted detail lines of one `ConfigError`.
- Type checking and coercion (`"2e-5"` for a float field, YAML `no` for a Literal containing
  "no") live in `loading.py`, so building these classes directly in Python stays cheap.
- Defaults that depend on the task (pretraining and fine-tuning use different learning rates)
  are set by the task config's `default_factory`, not by the section class; the loader starts
  from those task-specific defaults.
- Section classes: `NeuronArgs`, `DataArgs`, `TrainArgs`, `DistillArgs`, `MlmArgs`.
  Task configs: `FinetuneConfig`, `DistillConfig`, `PretrainConfig`, `EvalConfig`; each has a
  `task` field naming its command, which a recipe must match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from spikelm_core.data.glue import (
    GLUE_TASK_NAMES,
    GLUE_TASKS,
    infer_glue_task,
    normalize_glue_split,
    normalize_glue_task,
)
from spikelm_core.data.summarization import SUMMARIZATION_TASKS

__all__ = [
    "ConfigProblems",
    "NeuronArgs",
    "DataArgs",
    "TrainArgs",
    "DistillArgs",
    "MlmArgs",
    "FinetuneConfig",
    "DistillConfig",
    "PretrainConfig",
    "EvalConfig",
    "TASK_CONFIGS",
]


class ConfigProblems(ValueError):
    """Validation failures of one config section: a list of `(field, message)` pairs.

    Raised by `__post_init__`; `str()` reads `k: must be > 0, got -1.0; decay: ...`.
    `involved[i]` names every (dotted) field that problem i reads, so the
    loader can drop problems that only arise because a badly typed value was replaced.
    """

    def __init__(self, problems: list[tuple[str, str]], involved: list[frozenset[str]] | None = None):
        self.problems = list(problems)
        self.involved = list(involved) if involved is not None else [frozenset({name}) for name, _ in self.problems]
        super().__init__("; ".join(f"{name}: {msg}" for name, msg in self.problems))


class _Checks:
    """Collects `(field, message)` problems; `done()` raises them together, if any."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []
        self.involved: list[frozenset[str]] = []

    def require(self, ok: bool, name: str, message: str, *, also: tuple[str, ...] = ()) -> None:
        """Record `name: message` unless `ok`; `also` lists other fields the check reads."""
        if not ok:
            self.problems.append((name, message))
            self.involved.append(frozenset((name, *also)))

    def done(self) -> None:
        if self.problems:
            raise ConfigProblems(self.problems, self.involved)


# ----------------------------------------------------------------------------------- sections


@dataclass(frozen=True, kw_only=True)
class NeuronArgs:
    """Spiking neuron placed before every linear layer (spikelm-method.md sections 2 and 5)."""

    kind: Literal["elastic_bi", "lif", "dense"] = "elastic_bi"
    """'elastic_bi' = SpikeLM elastic bi-spiking neuron; 'lif' = binary LIF baseline; 'dense' = no
    spiking neurons: finetune/eval use a dense BERT as it is (e.g. a distillation teacher)."""
    num_timesteps: int = 4
    """Time steps T; the input is repeated T times (direct encoding). T = 1 has no dynamics."""
    k: float = 2.0
    """Amplitude coefficient: alpha_t = k * mean|u_t| at calibration."""
    decay: float = 0.25
    """Membrane decay tau of the bi-spiking neuron, in [0, 1]."""
    reset: Literal["official", "soft", "none"] = "official"
    """Membrane reset: 'official' = the released code's multiplicative reset; 'soft' =
    subtract the spike; 'none' = no membrane carried between steps."""
    levels: Literal["ternary", "binary"] = "ternary"
    """Spike levels: 'ternary' = {-1, 0, +1} (bidirectional); 'binary' = {0, +1} (ablation)."""
    amplitude: Literal["elastic", "unit"] = "elastic"
    """Spike amplitude: 'elastic' = alpha_t * q_t; 'unit' = q_t (ablation)."""
    alpha_mode: Literal["calibrated", "fixed"] = "calibrated"
    """'calibrated' = alpha from data (k * mean|u|); 'fixed' = `fixed_alpha` (ablation)."""
    fixed_alpha: float = 1.0
    """Amplitude used when alpha_mode is 'fixed'."""
    spike_kv: bool = True
    """Spike keys and values (stateless) before attention; queries are never spiked."""
    learn_alpha: bool = False
    """Train the amplitudes after calibration with LSQ gradients (method doc 2.4; off in the
    released code, where they stay frozen). Needs amplitude 'elastic', alpha_mode 'calibrated'."""

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(self.num_timesteps >= 1, "num_timesteps", f"must be >= 1, got {self.num_timesteps}")
        c.require(self.k > 0, "k", f"must be > 0, got {self.k}")
        c.require(0.0 <= self.decay <= 1.0, "decay", f"must be in [0, 1], got {self.decay}")
        c.require(self.fixed_alpha > 0, "fixed_alpha", f"must be > 0, got {self.fixed_alpha}")
        c.require(
            not self.learn_alpha or (self.kind == "elastic_bi" and self.amplitude == "elastic"
                                     and self.alpha_mode == "calibrated"),
            "learn_alpha",
            "needs kind 'elastic_bi', amplitude 'elastic' and alpha_mode 'calibrated'",
        )
        c.done()


@dataclass(frozen=True, kw_only=True)
class DataArgs:
    """Where the data comes from and how it is cut.

    For GLUE, `source` is 'glue/<task>' (files from `data_dir`, else $GLUE_DIR, else the hub
    when online), a GLUE task directory such as ../shared/data/glue/SST-2, or a GLUE root
    directory together with `glue_task`. For pretraining it is a text file or directory.
    """

    source: str | None = None
    """'glue/<task>', a local directory or file, or None (the task config says what is needed)."""
    data_dir: str | None = None
    """Local GLUE root (holding SST-2/, MRPC/, ...) for 'glue/<task>' sources; overrides $GLUE_DIR."""
    max_length: int = 128
    """Maximum tokens per example after truncation; batches are padded dynamically."""
    train_subset: int | None = None
    """Use only the first N training examples (deterministic); None = all."""
    eval_subset: int | None = None
    """Use only the first N examples of each evaluation split; None = all."""
    train_file: str | None = None
    """Summarisation: a jsonl/json/csv training file (overrides data_dir)."""
    validation_file: str | None = None
    """Summarisation: a jsonl/json/csv validation file (overrides data_dir)."""
    text_column: str | None = None
    """Summarisation: the document column; None = the dataset's (document for XSUM, article for CNN/DM)."""
    summary_column: str | None = None
    """Summarisation: the summary column; None = the dataset's (summary for XSUM, highlights for CNN/DM)."""
    max_target_length: int = 64
    """Summarisation: maximum summary tokens for training (labels are truncated)."""

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(self.max_length >= 2, "max_length", f"must be >= 2, got {self.max_length}")
        c.require(self.max_target_length >= 2, "max_target_length", f"must be >= 2, got {self.max_target_length}")
        for name in ("train_subset", "eval_subset"):
            value = getattr(self, name)
            c.require(value is None or value >= 1, name, f"must be >= 1 or null, got {value}")
        c.require(self.source is None or self.source.strip() != "", "source", "must not be empty")
        c.done()


_REPORT_TO = ("none", "tensorboard", "wandb")
SUMMARIZATION_TASK_NAMES = tuple(SUMMARIZATION_TASKS)


@dataclass(frozen=True, kw_only=True)
class TrainArgs:
    """Optimisation, schedule, evaluation and checkpointing; mapped to `TrainingArguments`
    in `training/args.py`. Defaults follow the released GLUE fine-tuning code (method doc 7.2)."""

    lr: float = 2e-5
    """Peak learning rate of AdamW."""
    lr_schedule: Literal["constant", "linear"] = "constant"
    """'constant' (after warmup) or 'linear' decay to 0 at `schedule_steps` (or the run's end)."""
    warmup_steps: int = 0
    """Linear warmup steps from 0 to `lr`."""
    schedule_steps: int | None = None
    """Horizon of the linear schedule when it differs from the run length (pretraining: 500000
    while stopping at 100000); None = the run length."""
    batch_size: int = 32
    """Training batch size per device."""
    eval_batch_size: int = 64
    """Evaluation batch size per device."""
    grad_accum_steps: int = 1
    """Gradient accumulation steps per optimiser step."""
    epochs: float = 3.0
    """Training epochs (fractions allowed); ignored when max_steps > 0."""
    max_steps: int = -1
    """Stop after this many optimiser steps; -1 = use `epochs`."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    seed: int = 42
    """Random seed (set inside run_<verb>(), never at import)."""
    grad_clip: float | None = None
    """Clip the gradient norm at this value; None = no clipping (the released code)."""
    save_steps: int = 500
    """Save a checkpoint-<step>/ every N steps (when eval_strategy is 'steps' or 'no')."""
    save_total_limit: int | None = None
    """Keep at most N checkpoints (the best one is always kept); None = keep all."""
    eval_strategy: Literal["epoch", "steps", "no"] = "epoch"
    """When to evaluate on the dev split(s)."""
    eval_steps: int | None = None
    """Evaluate every N steps; required when eval_strategy is 'steps'."""
    logging_steps: int = 50
    """Log training metrics every N steps."""
    bf16: bool = False
    """Train in bfloat16 mixed precision."""
    fp16: bool = False
    """Train in float16 mixed precision."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto' = CUDA when available, else CPU."""
    report_to: tuple[str, ...] = ("none",)
    """Extra metric sinks besides metrics.jsonl: a list of 'none', 'tensorboard', 'wandb'."""
    keep_best: bool = True
    """Keep the best evaluated checkpoint (by the task's primary metric) as the final model."""
    num_workers: int = 0
    """DataLoader worker processes."""
    compile: Literal["none", "layers"] = "none"
    """'layers': after calibration, run each spiking encoder layer as one torch.compile'd graph that
    fuses the neurons with their neighbours (faster steps after a one-off compile, about a minute on
    CPU; steps that record firing rates run eagerly); 'none': eager layers. Same spikes either way."""
    sampling: Literal["random", "group_by_length"] = "random"
    """Order of training examples: 'random' (shuffled) or 'group_by_length' (shuffled, then batches
    of similar length, so that dynamic padding wastes little: faster on short, varied texts such as
    SST-2; the Trainer's `train_sampling_strategy`)."""

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        c.require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        c.require(
            self.schedule_steps is None or self.schedule_steps >= 1,
            "schedule_steps",
            f"must be >= 1 or null, got {self.schedule_steps}",
        )
        c.require(
            self.schedule_steps is None or self.lr_schedule == "linear",
            "schedule_steps",
            "is only used with lr_schedule 'linear'",
            also=("lr_schedule",),
        )
        for name in ("batch_size", "eval_batch_size", "grad_accum_steps", "save_steps", "logging_steps"):
            value = getattr(self, name)
            c.require(value >= 1, name, f"must be >= 1, got {value}")
        c.require(self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
        c.require(
            self.max_steps == -1 or self.max_steps >= 1,
            "max_steps",
            f"must be -1 (use epochs) or >= 1, got {self.max_steps}",
        )
        c.require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        c.require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        c.require(
            self.grad_clip is None or self.grad_clip > 0, "grad_clip", f"must be > 0 or null, got {self.grad_clip}"
        )
        c.require(
            self.save_total_limit is None or self.save_total_limit >= 1,
            "save_total_limit",
            f"must be >= 1 or null, got {self.save_total_limit}",
        )
        c.require(
            self.eval_steps is None or self.eval_steps >= 1,
            "eval_steps",
            f"must be >= 1 or null, got {self.eval_steps}",
        )
        c.require(
            self.eval_strategy != "steps" or self.eval_steps is not None,
            "eval_steps",
            "is required when eval_strategy is 'steps'",
            also=("eval_strategy",),
        )
        c.require(not (self.bf16 and self.fp16), "fp16", "bf16 and fp16 cannot both be true", also=("bf16",))
        c.require(
            not (self.keep_best and self.eval_strategy == "no"),
            "keep_best",
            "needs evaluation: set eval_strategy to 'epoch' or 'steps', or keep_best to false",
            also=("eval_strategy",),
        )
        c.require(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        unknown = [r for r in self.report_to if r not in _REPORT_TO]
        c.require(
            not unknown,
            "report_to",
            f"unknown sink(s) {', '.join(map(repr, unknown))}; choose from {', '.join(map(repr, _REPORT_TO))}",
        )
        c.require(
            not ("none" in self.report_to and len(self.report_to) > 1),
            "report_to",
            "'none' cannot be combined with other sinks",
        )
        c.done()


@dataclass(frozen=True, kw_only=True)
class DistillArgs:
    """Knowledge distillation from a dense teacher: loss = alpha_ce * CE + alpha_kd * KD(T)
    + alpha_hidden * MSE(hidden states) + alpha_attn * MSE(attention scores)."""

    teacher: str | None = None
    """Teacher model: local directory or hub id (required by the distill command)."""
    temperature: float = 1.0
    """Softmax temperature of the logit KD term."""
    alpha_kd: float = 1.0
    """Weight of the logit KD term (KL divergence at `temperature`)."""
    alpha_ce: float = 0.0
    """Weight of the hard-label loss (CE, or MSE for regression)."""
    alpha_hidden: float = 0.0
    """Weight of the hidden-state MSE term."""
    alpha_attn: float = 0.0
    """Weight of the attention-score MSE term."""

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(self.teacher is None or self.teacher.strip() != "", "teacher", "must not be empty")
        c.require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        weights = ("alpha_kd", "alpha_ce", "alpha_hidden", "alpha_attn")
        for name in weights:
            value = getattr(self, name)
            c.require(value >= 0, name, f"must be >= 0, got {value}")
        c.require(
            any(getattr(self, name) > 0 for name in weights),
            "alpha_kd",
            "at least one of alpha_kd, alpha_ce, alpha_hidden, alpha_attn must be > 0",
            also=weights,
        )
        c.done()


@dataclass(frozen=True, kw_only=True)
class GenerateArgs:
    """Summarisation: how summaries are generated for ROUGE (beam search, KV cache)."""

    num_beams: int = 4
    """Beam size (1 = greedy). Not public for the paper's BART experiments."""
    max_new_tokens: int = 64
    """Maximum summary tokens generated."""

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(self.num_beams >= 1, "num_beams", f"beam size must be >= 1, got {self.num_beams}")
        c.require(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        c.done()


@dataclass(frozen=True, kw_only=True)
class MlmArgs:
    """Masked language modelling (the released pretraining objective: MLM CE + NSP CE)."""

    mlm_probability: float = 0.15
    """Fraction of tokens selected for masking (80% [MASK], 10% random, 10% kept)."""
    nsp: bool = False
    """Add the next-sentence-prediction head and loss."""

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(
            0.0 < self.mlm_probability < 1.0,
            "mlm_probability",
            f"must be in (0, 1), got {self.mlm_probability}",
        )
        c.done()


# ------------------------------------------------------------------------------ task configs


def _summarization_name(value: str | None) -> str | None:
    if not value:
        return None
    key = value.strip().lower().replace("-", "_")
    key = key.removeprefix("summarization/")
    key = {"cnndm": "cnn_dm", "cnn_dailymail": "cnn_dm"}.get(key, key)
    return key if key in SUMMARIZATION_TASK_NAMES else None


def _check_task(config: Any, c: _Checks, *, required: bool) -> None:
    """A summarisation task (xsum, cnn_dm: from `summarization_task`, `glue_task`/--task or
    `data.source`) or else a GLUE task (see `_check_glue_task`)."""
    task = (_summarization_name(config.summarization_task) or _summarization_name(config.glue_task)
            or _summarization_name(config.data.source))
    if config.summarization_task is not None and task is None:
        c.require(False, "summarization_task",
                  f"unknown summarization task {config.summarization_task!r}; choose from {', '.join(SUMMARIZATION_TASK_NAMES)}")
    if task is not None:
        object.__setattr__(config, "summarization_task", task)
        if _summarization_name(config.glue_task):
            object.__setattr__(config, "glue_task", None)
        c.require(config.glue_task is None, "glue_task",
                  f"{config.glue_task!r} is a GLUE task but the recipe summarises ({task}); set only one",
                  also=("summarization_task",))
        return
    _check_glue_task(config, c, required=required)


def _check_glue_task(config: Any, c: _Checks, *, required: bool) -> None:
    """Normalise `config.glue_task`, infer it from `data.source`, and check the two agree."""
    given = config.glue_task
    inferred_ok = True
    try:
        inferred = infer_glue_task(config.data.source)
    except ValueError as exc:
        c.require(False, "data.source", str(exc))
        inferred, inferred_ok = None, False
    task = None
    if given is not None:
        task = normalize_glue_task(given)
        c.require(
            task is not None,
            "glue_task",
            f"unknown GLUE task {given!r}; choose from {', '.join(GLUE_TASK_NAMES)}",
        )
    if task is not None and inferred is not None and task != inferred:
        c.require(
            False,
            "glue_task",
            f"{given!r} disagrees with data.source {config.data.source!r} (task {inferred!r})",
            also=("data.source",),
        )
    if task is None and given is None:
        task = inferred
    if required and task is None and given is None and inferred_ok:
        c.require(
            False,
            "glue_task",
            "is required: set glue_task, or data.source to 'glue/<task>' or a GLUE task directory",
            also=("data.source",),
        )
    object.__setattr__(config, "glue_task", task if task is not None else given)


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """`spikelm finetune`: fine-tune a spiking model on one GLUE task (method doc 7.2)."""

    task: Literal["finetune"] = "finetune"
    """Command this recipe is for."""
    model: str
    """Model to fine-tune: a local directory (config.json + model.safetensors) or a hub id."""
    glue_task: str | None = None
    """GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte); None = inferred from data.source."""
    summarization_task: str | None = None
    """Summarisation task (xsum, cnn_dm) for BART models; None = inferred from --task or data.source.
    GLUE tasks and summarisation tasks are exclusive."""
    generate: GenerateArgs = field(default_factory=GenerateArgs)
    """Summarisation: generation settings for the ROUGE evaluation."""
    out_dir: str | None = None
    """Run directory (checkpoints, metrics.jsonl, run_config.yaml, final/); None = runs/<task>."""
    neuron: NeuronArgs = field(default_factory=NeuronArgs)
    """Spiking neuron settings (used when the model is converted from a dense checkpoint)."""
    data: DataArgs = field(default_factory=DataArgs)
    """Data source and lengths."""
    train: TrainArgs = field(default_factory=TrainArgs)
    """Optimisation and evaluation (defaults: lr 2e-5 constant, batch 32, eval every epoch)."""

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(self.model.strip() != "", "model", "must not be empty")
        _check_task(self, c, required=True)
        c.done()


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """`spikelm distill`: train a spiking student against a dense teacher, on a GLUE task
    (glue_task set or inferred) or with MLM on text (glue_task null)."""

    task: Literal["distill"] = "distill"
    """Command this recipe is for."""
    model: str
    """Student initialisation: a local directory or hub id (dense weights are converted)."""
    glue_task: str | None = None
    """GLUE task to distill on; None = inferred from data.source, else MLM distillation on text."""
    summarization_task: str | None = None
    """Summarisation task (xsum, cnn_dm) for BART models; None = inferred from --task or data.source.
    GLUE tasks and summarisation tasks are exclusive."""
    generate: GenerateArgs = field(default_factory=GenerateArgs)
    """Summarisation: generation settings for the ROUGE evaluation."""
    out_dir: str | None = None
    """Run directory; None = runs/distill."""
    neuron: NeuronArgs = field(default_factory=NeuronArgs)
    """Spiking neuron settings of the student."""
    data: DataArgs = field(default_factory=DataArgs)
    """Data source and lengths."""
    train: TrainArgs = field(default_factory=TrainArgs)
    """Optimisation and evaluation."""
    distill: DistillArgs = field(default_factory=DistillArgs)
    """Teacher and loss weights; distill.teacher is required."""
    mlm: MlmArgs = field(default_factory=MlmArgs)
    """Masking settings, used for MLM distillation on text (glue_task null)."""

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(self.model.strip() != "", "model", "must not be empty")
        c.require(self.distill.teacher is not None, "distill.teacher", "is required")
        c.require(self.neuron.kind != "dense", "neuron.kind", "'dense' has no spiking student; choose elastic_bi or lif")
        _check_task(self, c, required=False)
        c.require(
            self.glue_task is not None or self.summarization_task is not None or self.data.source is not None,
            "data.source",
            "is required: 'glue/<task>', a GLUE task directory, or a text file/directory for MLM",
            also=("glue_task",),
        )
        c.done()


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


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """`spikelm pretrain`: masked-language-model pretraining, from scratch or from a checkpoint,
    optionally with a distillation teacher (method doc 7.1)."""

    task: Literal["pretrain"] = "pretrain"
    """Command this recipe is for."""
    model: str | None = None
    """Starting checkpoint (local directory or hub id); None = from scratch, normal(0, 0.02)."""
    model_config: dict[str, Any] = field(default_factory=dict)
    """Model config overrides, e.g. {hidden_size: 384, num_hidden_layers: 6}; from scratch they
    size the model, with a checkpoint they are passed to from_pretrained."""
    tokenizer: str | None = None
    """Tokenizer directory, alias ('minilm') or hub id; None = the starting model's own. Required
    when training from scratch (model null): its vocabulary sizes the embeddings."""
    out_dir: str | None = None
    """Run directory; None = runs/pretrain."""
    neuron: NeuronArgs = field(default_factory=NeuronArgs)
    """Spiking neuron settings."""
    data: DataArgs = field(default_factory=DataArgs)
    """Text source (file or directory) and lengths; data.source is required."""
    train: TrainArgs = field(default_factory=_pretrain_train_defaults)
    """Optimisation (defaults: lr 2e-4, linear, 5000 warmup, 500000-step horizon, stop at 100000)."""
    mlm: MlmArgs = field(default_factory=MlmArgs)
    """Masking and NSP."""
    distill: DistillArgs | None = None
    """Optional teacher and KD weights; null = plain MLM (the released code)."""

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(self.model is None or self.model.strip() != "", "model", "must not be empty (null = from scratch)")
        c.require(self.data.source is not None, "data.source", "is required (a text file or directory)")
        c.require(self.neuron.kind != "dense", "neuron.kind", "'dense' is not a spiking model; choose elastic_bi or lif")
        c.require(
            self.distill is None or self.distill.teacher is not None,
            "distill.teacher",
            "is required when distill is set",
        )
        c.done()


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """`spikelm eval`: evaluate a saved model on the dev split(s) of a GLUE task."""

    task: Literal["eval"] = "eval"
    """Command this recipe is for."""
    model: str
    """Model to evaluate: a local directory or hub id."""
    glue_task: str | None = None
    """GLUE task; None = inferred from data.source."""
    summarization_task: str | None = None
    """Summarisation task (xsum, cnn_dm) for BART models; None = inferred from --task or data.source.
    GLUE tasks and summarisation tasks are exclusive."""
    generate: GenerateArgs = field(default_factory=GenerateArgs)
    """Summarisation: generation settings for the ROUGE evaluation."""
    out_dir: str | None = None
    """Where eval_results.json and run_config.yaml go; None = next to nothing (stdout only)."""
    splits: tuple[str, ...] = ()
    """Splits to score (e.g. [dev_matched, dev_mismatched]); empty = every dev split of the task."""
    neuron: NeuronArgs | None = None
    """Neuron overrides for a dense model being converted; null = the model's own config."""
    data: DataArgs = field(default_factory=DataArgs)
    """Data source and lengths (data.eval_subset limits the examples)."""
    batch_size: int = 64
    """Evaluation batch size."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto' = CUDA when available, else CPU."""
    seed: int = 42
    """Random seed (only matters for non-deterministic kernels)."""

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(self.model.strip() != "", "model", "must not be empty")
        c.require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        c.require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        _check_task(self, c, required=True)
        if self.summarization_task is not None:
            bad = [x for x in self.splits if x not in ("train", "validation", "test")]
            c.require(not bad, "splits", f"{self.summarization_task} splits are train, validation, test; got {bad}")
        task = normalize_glue_task(self.glue_task) if self.glue_task and not self.summarization_task else None
        if task is not None:
            splits = []
            for split in self.splits:
                canonical = normalize_glue_split(task, split)
                c.require(
                    canonical is not None,
                    "splits",
                    f"{task} has no split {split!r}; choose from {', '.join(GLUE_TASKS[task].split_names)}",
                    also=("glue_task", "data.source"),
                )
                splits.append(canonical or split)
            object.__setattr__(self, "splits", tuple(splits))
        c.done()


TASK_CONFIGS: dict[str, type] = {
    "finetune": FinetuneConfig,
    "distill": DistillConfig,
    "pretrain": PretrainConfig,
    "eval": EvalConfig,
}
"""Command name -> task config class."""
