"""The one place where a recipe becomes `transformers.TrainingArguments`.

Users never see `HfArgumentParser` or `training_args.bin`: `run_config.yaml` is the record of a run,
and every Trainer setting spikelm relies on is written here, explicitly, so that a transformers
default changing under us cannot silently change a run:

- `report_to` is explicit ("none" unless the recipe lists sinks); metrics.jsonl is always written by
  `JsonlMetricsCallback`, not through `report_to`.
- `disable_tqdm=True`: progress is drawn by the CLI's callback on stderr, never by the library.
- Checkpoints are safetensors (the only format transformers 5 writes), one `checkpoint-<step>/`
  per save, with optimizer, scheduler and RNG state so that a resumed run replays exactly.
- Non-finite losses are not filtered out of the logs (`logging_nan_inf_filter=False`): the
  trainer stops on them instead (`SpikelmTrainer.training_step`).
- The learning-rate schedule: 'constant' (with optional warmup) or 'linear'. A linear schedule whose
  horizon differs from the run length (`schedule_steps`, pretraining: 500k horizon, stop at 100k) is
  built by `SpikelmTrainer.create_scheduler`; the Trainer's own scheduler is used otherwise.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config.schema import TrainArgs
from ..errors import ConfigError
from ..log import get_logger
from .precision import resolve_bf16, run_device

log = get_logger("training")


def check_device(device: str, key: str = "train.device") -> None:
    """Refuse `device: cuda` on a machine without a usable CUDA device (ConfigError, exit 2). `key`: the
    setting's name in the command's config (`train.device` for training, `device` for eval)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{key} is 'cuda' but no CUDA device is available",
            details=[f"torch {torch.__version__}, torch.cuda.is_available() = False"],
            hint=f"set -s {key}=cpu (or auto), or run on a machine with a CUDA GPU",
        )


_SINK_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def check_sinks(report_to) -> None:
    """Refuse a metric sink whose package is not installed (the Trainer would fail mid-setup)."""
    import importlib.util

    missing = [s for s in report_to if s in _SINK_MODULES
               and not any(importlib.util.find_spec(m) for m in _SINK_MODULES[s])]
    if missing:
        raise ConfigError(
            f"train.report_to names {', '.join(missing)}, which is not installed",
            hint=f"pip install 'spikelm[{missing[0]}]', or drop it from train.report_to (metrics.jsonl is always written)",
        )


def training_arguments(
    train: TrainArgs,
    out_dir: str | Path,
    *,
    metric_for_best_model: str | None = None,
    greater_is_better: bool = True,
    label_names: tuple[str, ...] = ("labels",),
    evaluate: bool = True,
    args_class=None,
):
    """`TrainingArguments` for `train`, writing checkpoints under `out_dir`.

    metric_for_best_model: the metric name (without the 'eval_' prefix) that selects the best
        checkpoint when `train.keep_best`; greater is better for every GLUE metric
        (`greater_is_better=False` for a loss: summarisation selects by the dev loss).
    evaluate: False when the run has no evaluation data (pretraining); evaluation is then off.
    args_class: the arguments class, e.g. `Seq2SeqTrainingArguments` for seq2seq runs.
    """
    from transformers import TrainingArguments

    check_device(train.device)
    check_sinks(train.report_to)
    eval_strategy = train.eval_strategy if evaluate else "no"
    keep_best = bool(train.keep_best and eval_strategy != "no" and metric_for_best_model)
    if eval_strategy == "epoch":
        save_strategy, save_steps = "epoch", train.save_steps
    else:
        save_strategy, save_steps = "steps", train.save_steps
    if keep_best and eval_strategy == "steps" and save_steps != train.eval_steps:
        # the Trainer keeps a best evaluation only when a checkpoint is saved at its step: one between
        # two saves would be lost (the run ending on its last weights, best_checkpoint null)
        log.info("train.keep_best: a checkpoint at every evaluation (train.save_steps %d -> train.eval_steps %d), "
                 "so that the best one can be kept", save_steps, train.eval_steps)
        save_steps = train.eval_steps
    if train.lr_schedule == "constant":
        scheduler = "constant_with_warmup" if train.warmup_steps > 0 else "constant"
    else:
        scheduler = "linear"
    return (args_class or TrainingArguments)(
        output_dir=str(out_dir),
        # optimisation: AdamW, as the released code, in torch's fused kernel (one pass over each
        # tensor; `benchmarks/bench.py --only precision` times it against the per-tensor loop)
        optim="adamw_torch_fused",
        learning_rate=train.lr,
        weight_decay=train.weight_decay,
        lr_scheduler_type=scheduler,
        warmup_steps=train.warmup_steps,
        max_grad_norm=train.grad_clip if train.grad_clip is not None else 0.0,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.eval_batch_size,
        gradient_accumulation_steps=train.grad_accum_steps,
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        seed=train.seed,
        bf16=resolve_bf16(train.bf16, run_device(train.device)),  # 'auto': bf16 where native
        fp16=train.fp16,
        use_cpu=train.device == "cpu",
        # memory: recompute each layer in the backward (the models' own non-reentrant checkpointing)
        activation_checkpointing=train.activation_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if train.activation_checkpointing else None,
        # DDP looks for parameters a step leaves unused (a hidden-state-only distillation leaves the head) as it
        # does without checkpointing: the Trainer would stop looking once checkpointing is on (a rule for the
        # reentrant kind; the non-reentrant recomputation used here supports the search)
        ddp_find_unused_parameters=True if train.activation_checkpointing else None,
        # evaluation and model selection
        eval_strategy=eval_strategy,
        eval_steps=train.eval_steps if eval_strategy == "steps" else None,
        load_best_model_at_end=keep_best,
        metric_for_best_model=metric_for_best_model if keep_best else None,
        greater_is_better=greater_is_better if keep_best else None,
        # checkpoints
        save_strategy=save_strategy,
        save_steps=save_steps,
        save_total_limit=train.save_total_limit,
        save_only_model=False,
        # logging: metrics.jsonl via our callback; progress via the CLI's callback
        logging_strategy="steps",
        logging_steps=train.logging_steps,
        logging_nan_inf_filter=False,
        report_to="none" if list(train.report_to) == ["none"] else list(train.report_to),
        disable_tqdm=True,
        log_level="warning",
        # data
        dataloader_num_workers=train.num_workers,
        train_sampling_strategy=train.sampling,
        dataloader_pin_memory=torch.cuda.is_available() and train.device != "cpu",
        remove_unused_columns=False,
        label_names=list(label_names),
    )
