"""`run_finetune`: a GLUE task head on a spiking model, trained with the Hugging Face Trainer.

The paper's setting (released code, spikelm-method.md 7.2): AdamW, lr 2e-5 constant, batch 32,
max length 128 with dynamic padding, per-task epochs, evaluation on dev after every epoch, the
best epoch kept by the task's primary metric; MNLI-mismatched scored once, on the final model.

The run directory holds run_config.yaml (the resolved config: `spikelm finetune
<out>/run_config.yaml` replays the run), metrics.jsonl, the Trainer's checkpoint-<step>/
directories and final/ (save_pretrained + tokenizer).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..config.schema import DistillConfig, FinetuneConfig
from ..data.glue import get_glue_task, glue_data_dir, load_glue, tokenize_glue
from ..errors import ConfigError
from ..evaluation.metrics import glue_compute_metrics
from ..log import get_logger
from ..models.spiking_bert import SpikingBertForSequenceClassification
from .args import check_device, training_arguments
from .callbacks import FiringRateCallback, JsonlMetricsCallback
from .common import (
    METRICS,
    RunLock,
    RunResult,
    Timer,
    calibrate_if_needed,
    compile_if_asked,
    check_resume_config,
    default_out_dir,
    eval_batches,
    first_batch,
    is_main_process,
    layer_firing,
    load_dense_classifier,
    load_spiking_model,
    resolve_resume,
    seed_everything,
    steps_of_checkpoint,
    write_run_config,
)

log = get_logger("training")


def load_glue_for_training(cfg, tokenizer):
    """(task spec, tokenised train split, {eval split: tokenised dataset})."""
    spec = get_glue_task(cfg.glue_task)
    where = glue_data_dir(cfg.data.source, cfg.data.data_dir)
    train = load_glue(spec.name, where, split="train", subset=cfg.data.train_subset)
    evals = {s: load_glue(spec.name, where, split=s, subset=cfg.data.eval_subset) for s in spec.eval_splits}
    train = tokenize_glue(train, tokenizer, cfg.data.max_length)
    evals = {s: tokenize_glue(ds, tokenizer, cfg.data.max_length) for s, ds in evals.items()}
    if len(train) == 0:
        from ..errors import DataError

        raise DataError(f"the {spec.name} training split is empty")
    return spec, train, evals


def check_max_length(cfg, model) -> None:
    limit = model.config.max_position_embeddings
    if cfg.data.max_length > limit:
        raise ConfigError(
            f"data.max_length is {cfg.data.max_length} but the model has {limit} positions",
            hint=f"set -s data.max_length={limit} or less",
        )


def run_header(command: str, out_dir: Path) -> str:
    """The comment atop run_config.yaml: what wrote it and how to replay or continue the run."""
    return (f"Resolved config of a `spikelm {command}` run; replay or continue it with:\n"
            f"  spikelm {command} {out_dir / 'run_config.yaml'} --resume auto")


def run_glue_training(cfg, *, resume: str | None, callbacks, trainer_factory, command: str) -> RunResult:
    """The finetune/distill pipeline; `trainer_factory(**kwargs)` builds the Trainer."""
    from transformers import DataCollatorWithPadding

    timer = Timer()
    check_device(cfg.train.device)
    spec = get_glue_task(cfg.glue_task)
    out_dir = default_out_dir(cfg, f"{command}-{spec.name}")
    lock = RunLock(out_dir)
    lock.acquire()
    try:
        resume_from = resolve_resume(resume, out_dir)
        check_resume_config(cfg, out_dir, resume_from)
        seed_everything(cfg.train.seed)
        label_maps = None if spec.is_regression else {"id2label": spec.id2label, "label2id": spec.label2id}
        if cfg.neuron.kind == "dense":
            model, tokenizer, _ = load_dense_classifier(cfg.model, spec.num_labels, label_maps)
            converted = False
        else:
            model, tokenizer, _, converted = load_spiking_model(
                cfg.model, SpikingBertForSequenceClassification, cfg.neuron, num_labels=spec.num_labels,
                label_maps=label_maps,
            )
        if spec.is_regression:
            model.config.problem_type = "regression"
        check_max_length(cfg, model)
        spec, train_ds, eval_sets = load_glue_for_training(cfg, tokenizer)
        collator = DataCollatorWithPadding(tokenizer)
        select_split = spec.eval_splits[0]  # MNLI: matched selects; mismatched is scored at the end
        args = training_arguments(cfg.train, out_dir, metric_for_best_model=spec.primary_metric)
        write_run_config(cfg, out_dir, run_header(command, out_dir))
        firing = FiringRateCallback()
        sink = JsonlMetricsCallback(out_dir / METRICS, resume_step=steps_of_checkpoint(resume_from))
        trainer = trainer_factory(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_sets[select_split] if args.eval_strategy != "no" else None,
            data_collator=collator,
            processing_class=tokenizer,
            compute_metrics=glue_compute_metrics(spec.name),
            callbacks=[firing, sink, *(callbacks or [])],
        )
        calibrated = calibrate_if_needed(trainer.model, first_batch(train_ds, collator, cfg.train.batch_size), converted)
        compile_if_asked(trainer.model, cfg.train.compile)
        train_out = trainer.train(resume_from_checkpoint=resume_from)
        metrics = {}
        for split, ds in eval_sets.items():
            prefix = f"final_{split}"
            raw = trainer.evaluate(ds, metric_key_prefix=prefix)
            metrics[split] = {k[len(prefix) + 1:]: v for k, v in raw.items()
                              if k.startswith(prefix + "_") and not k.endswith(("_runtime", "_per_second"))}
        rate, per_layer = layer_firing(trainer.model, eval_batches(eval_sets[select_split], collator, cfg.train.eval_batch_size))
        final_dir = out_dir / "final"
        trainer.save_model(str(final_dir))  # every rank calls it; only the main process writes
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(str(final_dir))
        loss = train_out.training_loss
        return RunResult(
            command=command,
            out_dir=str(out_dir),
            final_dir=str(final_dir),
            glue_task=spec.name,
            global_step=trainer.state.global_step,
            epochs=float(trainer.state.epoch or 0.0),
            train_loss=loss if loss is not None and math.isfinite(loss) else None,
            metrics=metrics,
            primary_metric=spec.primary_metric,
            best_checkpoint=trainer.state.best_model_checkpoint,
            resumed_from=resume_from,
            calibrated=calibrated,
            firing_rate=rate,
            layer_firing_rates=per_layer,
            warnings=list(firing.warnings),
            samples_per_second=train_out.metrics.get("train_samples_per_second"),
            seconds=timer.seconds,
        )
    finally:
        lock.release()


def run_finetune(cfg: FinetuneConfig, *, resume: str | None = "never", callbacks=None) -> RunResult:
    """Fine-tune `cfg.model` (spiking checkpoint, or dense BERT converted with `cfg.neuron`; with
    `neuron.kind: dense` a dense BERT as it is, e.g. a distillation teacher) on `cfg.glue_task`. Returns the run's dev metrics, firing rates and where everything was saved.

    resume: 'never' (default; refuses a directory that already holds checkpoints), 'auto' (the
    latest checkpoint-<step>/ of the run directory, or a fresh start) or a checkpoint directory.
    callbacks: extra `TrainerCallback`s (the CLI passes its progress display).
    """
    from .trainers import SpikelmTrainer

    if isinstance(cfg, DistillConfig):
        raise ConfigError("run_finetune takes a FinetuneConfig; use run_distill for a distill recipe")
    if cfg.summarization_task is not None:
        from .summarization import run_summarization_training

        return run_summarization_training(cfg, resume=resume, callbacks=callbacks, command="finetune")
    return run_glue_training(
        cfg, resume=resume, callbacks=callbacks, command="finetune",
        trainer_factory=lambda **kw: SpikelmTrainer(**kw, schedule_steps=cfg.train.schedule_steps),
    )


__all__ = ["run_finetune", "is_main_process"]
