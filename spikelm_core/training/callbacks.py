"""Trainer callbacks: the metrics.jsonl sink and the firing-rate monitor.

Both write or log on the main process only. Neither prints: warnings go to the `spikelm` logger,
and the CLI decides what reaches the terminal.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from transformers import TrainerCallback

from ..firing import FiringRecorder
from ..io import atomic_write_text
from ..log import get_logger

log = get_logger("training")

#: Wall-clock keys the Trainer logs; kept out of metrics.jsonl so that two runs with one seed
#: write bit-identical files (they are reported in the run summary instead).
WALL_CLOCK_KEYS = ("_runtime", "_per_second", "total_flos")


def _is_wall_clock(key: str) -> bool:
    return any(key.endswith(s) for s in WALL_CLOCK_KEYS)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl file, in order; a line cut short by a kill (or anything not a
    JSON object) is skipped. A missing file has none."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class JsonlMetricsCallback(TrainerCallback):
    """Appends every Trainer log (training loss, learning rate, evaluation metrics, firing rate) to
    `<out_dir>/metrics.jsonl`, one JSON object per line with `step` and `epoch`.

    On resume the lines after the checkpoint's step are dropped first, and the final scores at that
    step (a run killed while it ended, or a finished run resumed: they are written again), so a run killed mid-way and
    resumed leaves the same file as one that was never interrupted, but for the last record's
    `train_loss`: the mean over the resumed steps, marked `train_loss_from_step`.
    """

    def __init__(self, path: str | Path, *, resume_step: int | None = None):
        self.path = Path(path)
        self.resume_step = resume_step
        self.wall_clock: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.resume_step is None:
            atomic_write_text(self.path, "")
        elif self.path.exists():  # rewritten by a rename: a kill now leaves the old file, never a cut one
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) < self.resume_step
                    or (r.get("step", 0) == self.resume_step and not end_of_run(r))]  # the end comes again
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        logs = dict(logs)
        if "train_loss" in logs and self.resume_step:  # the Trainer's mean covers this call's steps only
            if state.global_step <= self.resume_step:
                logs.pop("train_loss")  # no step taken (a finished run resumed): no mean, not 0.0
            else:
                logs["train_loss_from_step"] = self.resume_step + 1
        record = {"step": state.global_step, "epoch": state.epoch}
        for key, value in logs.items():
            if _is_wall_clock(key):
                self.wall_clock[key] = value
                continue
            record[key] = value
        record = jsonl_record(record)
        if set(record) <= {"step", "epoch"}:  # nothing left to record (a finished run resumed)
            return
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def jsonl_record(record: dict) -> dict:
    """A metrics.jsonl record with each non-finite number as text ('nan', 'inf'): JSON has none, and the
    fact (a diverged loss, a perplexity beyond the largest float) stays visible."""
    return {key: str(value) if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in record.items()}


def end_of_run(record: dict) -> bool:
    """Whether a metrics.jsonl record holds the final scores a run writes as it ends (its training-loss
    mean stays: a resumed call that takes no step has none of its own)."""
    return any(key.startswith("final_") for key in record)


#: Written into each checkpoint: the precision its steps computed in (`train.bf16: auto` depends on the cores)
PRECISION_FILE = "spikelm_precision.json"


class PrecisionRecord(TrainerCallback):
    """Writes `PRECISION_FILE` into every checkpoint the run saves (`rundir.warn_if_resumed_at_another_precision`)."""

    def __init__(self, precision: str):
        self.precision = precision

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            atomic_write_text(folder / PRECISION_FILE, json.dumps({"precision": self.precision}) + "\n")


class FiringRateCallback(TrainerCallback):
    """Measures the firing rate on each logged step and adds it to the logs as `firing_rate`.

    The rate is `spikelm_core.firing`'s: per neuron the non-zero fraction of its output with pad
    tokens excluded, then the mean over neurons (`FiringReport.mean_rate`); `last_layer_rates`
    holds the per-layer means (`FiringReport.layer_rates()`, keys from `layer_key`). Recording is
    switched on for the one optimizer step that precedes a log, so it costs nothing on the other
    steps. The first time a layer's neurons are silent (rate 0) or saturated (rate 1) a warning
    names it, once per layer and kind.
    """

    def __init__(self, *, low: float = 0.0, high: float = 1.0):
        self.low, self.high = low, high
        self.last_rate: float | None = None
        self.last_layer_rates: dict[str, float] = {}
        self.warnings: list[str] = []
        self._warned: set[tuple[str, str]] = set()
        self._recorder: FiringRecorder | None = None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if model is None or args.logging_steps <= 0:
            return
        if (state.global_step + 1) % int(args.logging_steps) == 0:
            self._recorder = FiringRecorder(model)
            self._recorder.start()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self._recorder is None:
            return
        report = self._recorder.stop()
        self._recorder = None
        if not report.neurons:
            return
        self.last_rate = report.mean_rate
        self.last_layer_rates = report.layer_rates()
        for layer, rate in self.last_layer_rates.items():
            kind = "dead (firing rate 0)" if rate <= self.low else "saturated (firing rate 1)" if rate >= self.high else None
            if kind and (layer, kind) not in self._warned:
                self._warned.add((layer, kind))
                message = f"{layer}: neurons are {kind} at step {state.global_step}"
                self.warnings.append(message)
                if state.is_world_process_zero:
                    log.warning(message)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and self.last_rate is not None and "loss" in logs:
            (rate,) = mean_over_ranks([self.last_rate], getattr(args, "device", "cpu"))  # every rank's last batch
            logs["firing_rate"] = round(rate, 6)


def mean_over_ranks(values: list[float], device) -> list[float]:
    """`values` averaged over the processes of a distributed run (every rank must call it at the same
    point, as the Trainer's logging does); unchanged in a single process. `device`: the run's device
    (NCCL reduces CUDA tensors, gloo CPU ones)."""
    import torch
    import torch.distributed as dist

    if not values or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64 if str(device).startswith("cpu") else torch.float32,
                          device=device)
    dist.all_reduce(tensor)
    return [float(v) / dist.get_world_size() for v in tensor.tolist()]


class CompileTimeCallback(TrainerCallback):
    """Shows, once, what compiling the spiking layers cost: the first optimizer step (which
    compiles the forward and backward graphs) against the second, logged after the second step.
    Added by the pipelines when they compile (`compile: layers`, or `auto` for a long run)."""

    def __init__(self):
        self._begin: float | None = None
        self._steps: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._begin is None or len(self._steps) >= 2:
            return
        self._steps.append(time.perf_counter() - self._begin)
        if len(self._steps) == 2 and state.is_world_process_zero:
            first, second = self._steps
            log.info("compiled spiking layers: the first step took %.1f s, the second %.2f s (about %.0f s "
                     "compiling; torch's cache makes the next run's compile shorter)", first, second,
                     max(0.0, first - second))
