"""Machinery shared by the training entry points: the run directory (lock, run_config.yaml,
resume), model loading (spiking checkpoint or dense BERT converted on the fly), GLUE data, the
explicit amplitude calibration and the run result.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..calibration import calibrate, is_calibrated, measure_firing, spiking_neurons
from ..config.loading import diff_configs, load_config, save_config
from ..config.schema import NeuronArgs
from ..convert.bert import NeuronSettings, load_tokenizer, read_config, spiking_model_from_dense
from ..errors import CheckpointError, ConfigError
from ..hub import resolve_model_source
from ..log import get_logger
from ..models.spiking_bert import SpikingBertModel
from .callbacks import layer_of

log = get_logger("training")

LOCK_NAME = ".spikelm.lock"
RUN_CONFIG = "run_config.yaml"
METRICS = "metrics.jsonl"
#: Fields that may differ between a run and its resumption (they do not change the numbers).
RESUME_MAY_CHANGE = (
    "out_dir", "data.data_dir", "train.logging_steps", "train.save_total_limit", "train.report_to",
    "train.num_workers", "train.eval_batch_size", "train.device",
)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# ---------------------------------------------------------------------------- run directory


class RunLock:
    """`<out_dir>/.spikelm.lock` holding the pid of the run that writes there (main process only).

    A lock whose process is gone is stale and taken over; a live one refuses the directory.
    """

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        if not is_main_process():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pid = _read_pid(self.path)
                if pid is not None and pid != os.getpid() and _alive(pid):
                    raise ConfigError(
                        f"output directory '{self.path.parent}' is in use by another run (pid {pid})",
                        details=[f"lock file: {self.path}"],
                        hint="wait for that run to finish, or choose another --out-dir; if no such run "
                        "exists, delete the lock file",
                    ) from None
                log.info("removing a stale lock %s (pid %s is not running)", self.path, pid)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            self.held = True
            return

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_resume(resume: str | None, out_dir: Path) -> str | None:
    """`never` -> None; `auto` -> the latest checkpoint-<step>/ in `out_dir` or None (with an INFO
    line); anything else must be a checkpoint directory."""
    from transformers.trainer_utils import get_last_checkpoint

    if resume in (None, "", "never"):
        if out_dir.is_dir() and get_last_checkpoint(str(out_dir)) is not None:
            raise ConfigError(
                f"'{out_dir}' already holds checkpoints of an earlier run",
                hint="pass --resume auto to continue it, or choose another --out-dir",
            )
        return None
    if resume == "auto":
        last = get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None
        if is_main_process():
            if last is None:
                log.info("--resume auto: no checkpoint in %s, starting fresh", out_dir)
            else:
                log.info("--resume auto: continuing from %s", last)
        return last
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise CheckpointError(
            f"'{resume}' is not a Trainer checkpoint (no trainer_state.json)",
            hint="give a checkpoint-<step>/ directory of an earlier run, or --resume auto",
        )
    return str(path)


def check_resume_config(cfg, out_dir: Path, resume_from: str | None) -> None:
    """On resume, the saved run_config.yaml must agree with `cfg` except allow-listed fields."""
    saved = out_dir / RUN_CONFIG
    if resume_from is None or not saved.is_file():
        return
    old = load_config(type(cfg), saved, [])
    changed = [(k, a, b) for k, a, b in diff_configs(old, cfg) if not k.startswith(RESUME_MAY_CHANGE)]
    if changed:
        raise ConfigError(
            "the resumed run's config differs from the one it started with",
            details=[f"{k}: {a!r} in {saved}, now {b!r}" for k, a, b in changed],
            hint="resume with the same recipe and overrides, or start a new run in another --out-dir; "
            f"these may change: {', '.join(RESUME_MAY_CHANGE)}",
        )


def write_run_config(cfg, out_dir: Path, header: str) -> None:
    if is_main_process():
        save_config(cfg, out_dir / RUN_CONFIG, header=header)


def steps_of_checkpoint(path: str | None) -> int | None:
    if path is None:
        return None
    state = json.loads((Path(path) / "trainer_state.json").read_text())
    return int(state.get("global_step", 0))


# ---------------------------------------------------------------------------------- models


def neuron_settings(neuron: NeuronArgs) -> NeuronSettings:
    if neuron.kind == "dense":
        raise ConfigError("neuron.kind 'dense' cannot convert a model to spiking",
                          hint="choose neuron.kind elastic_bi or lif")
    return NeuronSettings(
        neuron_kind=neuron.kind, num_timesteps=neuron.num_timesteps, k=neuron.k, decay=neuron.decay,
        reset=neuron.reset, levels=neuron.levels, amplitude=neuron.amplitude, alpha_mode=neuron.alpha_mode,
        fixed_alpha=neuron.fixed_alpha, spike_kv=neuron.spike_kv, learn_alpha=neuron.learn_alpha,
    )


def load_spiking_model(source: str, head_cls, neuron: NeuronArgs | None, *, num_labels: int | None = None,
                       label_maps: dict | None = None, config_overrides: dict | None = None):
    """(model, tokenizer, model_dir, converted) for `source`.

    A spiking checkpoint (model_type 'spiking_bert') loads as `head_cls` with its own neuron
    settings; a dense BERT is converted with `neuron` (weights copied key for key, amplitudes not
    yet calibrated: the caller calibrates on its first training batch). A head the checkpoint lacks
    (e.g. a classifier on a pretrained encoder) starts from the model's initialiser.
    """
    model_dir = resolve_model_source(source)
    cfg = read_config(model_dir)
    if cfg.get("model_type") not in ("bert", "spiking_bert"):
        raise CheckpointError(
            f"'{model_dir}' holds a '{cfg.get('model_type')}' model; this command trains BERT-family encoders",
            hint="give a (spiking) BERT checkpoint, e.g. 'minilm' or the output of spikelm convert",
        )
    extra = dict(config_overrides or {})
    if num_labels is not None:
        extra["num_labels"] = num_labels
        if label_maps:
            extra.update(label_maps)
    if cfg["model_type"] == "spiking_bert":
        try:
            model = head_cls.from_pretrained(str(model_dir), ignore_mismatched_sizes=True, **extra)
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot load the spiking model in '{model_dir}': {exc}") from exc
        converted = False
    else:
        settings = neuron_settings(neuron or NeuronArgs())
        dense, *_ = spiking_model_from_dense(model_dir, settings)
        if isinstance(dense, head_cls) and (num_labels is None or dense.config.num_labels == num_labels):
            model = dense
            if label_maps:
                model.config.id2label, model.config.label2id = label_maps["id2label"], label_maps["label2id"]
        else:
            base = dense if isinstance(dense, SpikingBertModel) else getattr(dense, "bert")
            config = base.config.__class__.from_dict({**base.config.to_dict(), **extra})
            config.architectures = [head_cls.__name__]
            model = head_cls(config)
            missing, unexpected = model.bert.load_state_dict(base.state_dict(), strict=False)
            bad = [k for k in missing if not k.startswith("pooler.") and not k.endswith((".alpha", ".calibrated"))]
            if bad:
                raise CheckpointError(f"converting '{model_dir}' left encoder weights unset", details=bad[:5])
            for _, n in model.spiking_neurons():
                n.mark_uncalibrated()
        converted = True
    tokenizer = load_tokenizer(model_dir)
    return model, tokenizer, model_dir, converted


def load_dense_classifier(source: str, num_labels: int, label_maps: dict | None):
    """(model, tokenizer, model_dir) of a dense BERT with a sequence-classification head."""
    from transformers import AutoModelForSequenceClassification

    model_dir = resolve_model_source(source)
    cfg = read_config(model_dir)
    if cfg.get("model_type") != "bert":
        raise CheckpointError(
            f"neuron.kind 'dense' needs a dense BERT checkpoint; '{model_dir}' holds a '{cfg.get('model_type')}' model",
            hint="set -s neuron.kind=elastic_bi to train or score a spiking model",
        )
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), num_labels=num_labels, ignore_mismatched_sizes=True, **(label_maps or {}))
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the dense model in '{model_dir}': {exc}") from exc
    return model, load_tokenizer(model_dir), model_dir


def calibrate_if_needed(model, batch: dict[str, torch.Tensor], converted: bool) -> bool:
    """Calibrate amplitudes on `batch` when the model is uncalibrated (a dense model converted on
    the fly). Every rank passes the same batch and `calibrate` averages across ranks, so all ranks
    hold identical amplitudes. Returns whether it calibrated."""
    if converted or not is_calibrated(model):
        calibrate(model, batch)
        return True
    return False


def compile_if_asked(model, mode: str) -> int:
    """`train.compile: layers`: run each spiking layer of `model` as one compiled graph (after
    calibration, which compiled layers leave to the eager path). Returns how many layers."""
    if mode != "layers":
        return 0
    from ..models.common import compile_layers

    n = compile_layers(model, dynamic=True)  # batches vary in length: one graph for all lengths
    if n == 0:
        log.warning("train.compile is 'layers' but %s has no compilable spiking layers; it runs eagerly",
                    type(model).__name__)
    else:
        log.info("compiled %d spiking layers (the first steps in training and in evaluation compile)", n)
    return n


def first_batch(dataset, collator, batch_size: int) -> dict[str, torch.Tensor]:
    """The first `batch_size` examples in file order, collated: the same batch on every rank."""
    rows = [dataset[i] for i in range(min(batch_size, len(dataset)))]
    return collator(rows)


def layer_firing(model, batches) -> tuple[float | None, dict[str, float]]:
    """Mean firing rate and mean rate per layer of `model` over `batches` (eval mode); None for a dense model."""
    if not spiking_neurons(model):
        return None, {}
    report = measure_firing(model, batches)
    per_layer: dict[str, list[float]] = {}
    for name in report.neurons:
        per_layer.setdefault(layer_of(name), []).append(report.rate(name))
    return report.mean_rate, {k: sum(v) / len(v) for k, v in per_layer.items()}


def eval_batches(dataset, collator, batch_size: int, limit: int = 4) -> list[dict[str, torch.Tensor]]:
    out = []
    for start in range(0, min(len(dataset), batch_size * limit), batch_size):
        out.append(collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]))
    return out


# ---------------------------------------------------------------------------------- results


@dataclass
class RunResult:
    """What a training run did, for the CLI summary and `--format json`."""

    command: str
    out_dir: str
    final_dir: str
    glue_task: str | None
    global_step: int
    epochs: float
    train_loss: float | None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    primary_metric: str | None = None
    best_checkpoint: str | None = None
    resumed_from: str | None = None
    calibrated: bool = False
    firing_rate: float | None = None
    layer_firing_rates: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    samples_per_second: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def default_out_dir(cfg, fallback: str) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else Path("runs") / fallback


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def neurons_uncalibrated(model) -> list[str]:
    return [name for name, n in spiking_neurons(model) if not n.is_calibrated]
