"""What a training or evaluation run returns: plain dataclasses, for the CLI summary and `--format json`.

JSON schemas: `spikelm.run/2` and `spikelm.eval/2` (version 2 renamed `glue_task` to `task`, which
names any benchmark task: a GLUE task, xsum or cnn_dm, or null for masked-LM runs, and added
`firing_rate_mean`, which says which mean `firing_rate` is). Fields added since, without a new
version (readers of version 2 can ignore them): `spikelm.run/2` `target_firing_rate`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

RUN_SCHEMA = "spikelm.run/2"
EVAL_SCHEMA = "spikelm.eval/2"


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
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    primary_metric: str | None = None
    best_checkpoint: str | None = None
    resumed_from: str | None = None
    calibrated: bool = False
    firing_rate: float | None = None
    firing_rate_mean: str | None = None
    layer_firing_rates: dict[str, float] = field(default_factory=dict)
    target_firing_rate: float | None = None
    """`train.target_firing_rate` (None = none), to compare with `layer_firing_rates`."""
    warnings: list[str] = field(default_factory=list)
    samples_per_second: float | None = None
    seconds: float = 0.0
    schema: str = RUN_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    schema: str = EVAL_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Timer:
    """Wall-clock seconds since construction."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
