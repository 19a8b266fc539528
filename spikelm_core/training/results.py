"""What a training or evaluation run returns: plain dataclasses, for the CLI summary and `--format json`.

JSON schemas: `spikelm.run/2` and `spikelm.eval/2` (version 2 renamed `glue_task` to `task`, which
names any benchmark task: a GLUE task, xsum or cnn_dm, or null for masked-LM runs, and added
`firing_rate_mean`, which says which mean `firing_rate` is). Fields added since, without a new
version (readers of version 2 can ignore them): `spikelm.run/2` `target_firing_rate`, `precision`, `resumed_at_step`;
`spikelm.eval/2` `precision`, and `perplexity`, `dense_perplexity`, `dense_model`, `tokens`, `seq_len`,
`window_bos`, `stride`, `tokens_per_second`, `dense_tokens_per_second` (language modelling, null for other tasks).

`spikelm eval --prompt` returns a `GenerationResult`, schema `spikelm.generation/1`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

RUN_SCHEMA = "spikelm.run/2"
EVAL_SCHEMA = "spikelm.eval/2"
GENERATION_SCHEMA = "spikelm.generation/1"


@dataclass
class RunResult:
    """What a training run (finetune, distill, pretrain) did and where it saved everything."""

    command: str
    out_dir: str
    final_dir: str
    task: str | None
    global_step: int
    epochs: float
    train_loss: float | None
    """The Trainer's mean training loss over the steps this call trained: from `resumed_at_step` + 1
    on when resumed (metrics.jsonl's last record then says `train_loss_from_step`)."""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    primary_metric: str | None = None
    best_checkpoint: str | None = None
    resumed_from: str | None = None
    resumed_at_step: int | None = None
    """The step of `resumed_from` (read when the run resumed: the Trainer may delete that checkpoint)."""
    calibrated: bool = False
    calibration: str | None = None
    """What the amplitudes were calibrated on, in words (`train.calibration_*`); None when not calibrated."""
    firing_rate: float | None = None
    firing_rate_mean: str | None = None
    layer_firing_rates: dict[str, float] = field(default_factory=dict)
    target_firing_rate: float | None = None
    """`train.target_firing_rate` (None = none), to compare with `layer_firing_rates`."""
    warnings: list[str] = field(default_factory=list)
    samples_per_second: float | None = None
    seconds: float = 0.0
    precision: str | None = None
    """What the training matmuls computed in: 'bf16', 'fp16' or 'float32' (`train.bf16: auto` resolved)."""
    schema: str = RUN_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """As standard JSON values (`json_values`: a non-finite number is null)."""
        return json_values(asdict(self))


@dataclass
class EvalResult:
    """Metrics per split, example counts and firing rates of one model on one task."""

    model: str
    task: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    primary_metric: str = "accuracy"
    firing_rate: float | None = None
    firing_rate_mean: str | None = None
    layer_firing_rates: dict[str, float] = field(default_factory=dict)
    converted: bool = False
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    precision: str | None = None
    """What the scoring computed in: 'bf16' or 'float32' (`bf16: auto` resolved)."""
    # -- language modelling (wikitext2); null for other tasks. Per split in `metrics` too; these
    #    are the first split's.
    perplexity: float | None = None
    """exp of the token-weighted mean negative log-likelihood of the model (`evaluation.perplexity`)."""
    dense_perplexity: float | None = None
    """The same on the same windows for the dense reference (`dense_model`); null without one."""
    dense_model: str | None = None
    """The dense reference: the model itself before conversion, or `dense_reference`."""
    tokens: int | None = None
    """Tokens scored (every text token once; without a BOS token all but the first)."""
    seq_len: int | None = None
    """Positions per window, the BOS token included (`window_bos`)."""
    window_bos: bool | None = None
    """Whether each window starts with the tokenizer's BOS token (false: it has none)."""
    stride: int | None = None
    """Text tokens between window starts (seq_len - 1: non-overlapping)."""
    tokens_per_second: float | None = None
    """Positions the model read per second while scoring (all splits)."""
    dense_tokens_per_second: float | None = None
    """The same for the dense reference."""
    intervals: dict[str, dict[str, list[float]]] | None = None
    """Summarisation: per split, each ROUGE type's 95% bootstrap interval [low, high] (rouge-score's
    BootstrapAggregator, 1,000 resamples of the documents, seed 0); null for other tasks."""
    summaries: dict[str, list[dict[str, str]]] | None = None
    """Summarisation: the first generated summaries per split, each {document (its start), reference,
    prediction}; null for other tasks."""
    firing_picture: dict[str, str] | None = None
    """With `eval --plot-firing`: where the picture went, {'png': ..., 'data': ...}; null without."""
    schema: str = EVAL_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """The result as standard JSON values: a non-finite number (the infinite perplexity of a
        diverged model) is null, as JSON has no Infinity or NaN."""
        return json_values(asdict(self))


@dataclass
class Continuation:
    """One model's continuation of a prompt, timed."""

    model: str
    text: str
    """The generated text (special tokens dropped; the prompt not repeated)."""
    tokens: int
    """Tokens generated."""
    seconds: float
    """Wall-clock seconds of `generate()` (the prompt's forward included)."""
    tokens_per_second: float
    finish_reason: str
    """'eos' (the model ended its answer) or 'length' (max_new_tokens reached)."""
    spiking: bool


@dataclass
class GenerationResult:
    """`spikelm eval MODEL --prompt TEXT`: a causal LM's continuation of one prompt (and the dense one)."""

    model: str
    prompt: str
    chat: bool
    prompt_tokens: int
    """Tokens the model read before generating (BOS or chat template included)."""
    text: str
    tokens: int
    seconds: float
    tokens_per_second: float
    finish_reason: str
    decoding: dict[str, Any] = field(default_factory=dict)
    """{'sample': bool, 'temperature', 'top_p', 'seed', 'max_new_tokens'}."""
    timesteps: int | None = None
    """The spiking model's T (null for a dense model)."""
    converted: bool = False
    dense: Continuation | None = None
    """The dense model's continuation of the same prompt (prompt.compare_dense)."""
    schema: str = GENERATION_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return json_values(asdict(self))  # non-finite numbers as null, as the other results


def json_values(value: Any) -> Any:
    """`value` with every non-finite float (inf, nan) replaced by None, in nested dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_values(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_values(v) for v in value]
    return value


class Timer:
    """Wall-clock seconds since construction."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
