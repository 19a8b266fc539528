"""`run_pretrain`: masked-LM (optionally + next-sentence) pretraining of a spiking BERT on local
text, from scratch (the paper) or from a checkpoint, optionally distilled from a dense MLM teacher.

The released schedule (spikelm-method.md 7.1): AdamW lr 2e-4, weight decay 0, linear schedule
with 5k warmup over a 500k-step horizon, stopped at 100k steps, batch 512 (64 x 8 GPUs), length
128, mask probability 0.15. The horizon is `train.schedule_steps`, implemented by
`SpikelmTrainer.create_scheduler`.
"""

from __future__ import annotations

import math

from ..config.schema import DistillArgs, PretrainConfig
from ..convert.bert import load_tokenizer
from ..data.text import mlm_dataset
from ..errors import CheckpointError, ConfigError
from ..hub import resolve_model_source
from ..models.spiking_bert import SpikingBertConfig, SpikingBertForMaskedLM, SpikingBertForPreTraining
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
    layer_firing,
    load_spiking_model,
    resolve_resume,
    seed_everything,
    steps_of_checkpoint,
    write_run_config,
)
from .finetune import run_header

_SPIKING_FIELDS = ("num_timesteps", "k", "decay", "reset", "levels", "amplitude", "alpha_mode", "fixed_alpha", "spike_kv",
                   "learn_alpha")


def _scratch_model(cfg, head_cls, tokenizer):
    fields = dict(cfg.model_config)
    fields.setdefault("vocab_size", len(tokenizer))
    if fields["vocab_size"] < len(tokenizer):
        raise ConfigError(f"model_config.vocab_size ({fields['vocab_size']}) is smaller than the tokenizer's "
                          f"vocabulary ({len(tokenizer)})")
    fields["pad_token_id"] = tokenizer.pad_token_id or 0
    n = cfg.neuron
    fields.update({"neuron_kind": n.kind, **{f: getattr(n, f) for f in _SPIKING_FIELDS}})
    try:
        config = SpikingBertConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid model_config: {exc}") from exc
    config.architectures = [head_cls.__name__]
    return head_cls(config)


def _first_unmasked_batch(dataset, tokenizer, batch_size: int):
    rows = [{k: dataset[i][k] for k in ("input_ids", "token_type_ids", "attention_mask")}
            for i in range(min(batch_size, len(dataset)))]
    return tokenizer.pad(rows, return_tensors="pt")


def run_mlm_training(cfg, *, resume, callbacks, distill: DistillArgs | None, command: str) -> RunResult:
    """Masked-LM training shared by `pretrain` and text distillation."""
    from transformers import DataCollatorForLanguageModeling

    from .distill import check_teacher, load_teacher
    from .trainers import DistillTrainer, SpikelmTrainer

    timer = Timer()
    check_device(cfg.train.device)
    out_dir = default_out_dir(cfg, command)
    lock = RunLock(out_dir)
    lock.acquire()
    try:
        resume_from = resolve_resume(resume, out_dir)
        check_resume_config(cfg, out_dir, resume_from)
        seed_everything(cfg.train.seed)
        nsp = bool(cfg.mlm.nsp)
        head_cls = SpikingBertForPreTraining if nsp else SpikingBertForMaskedLM
        model_config = dict(getattr(cfg, "model_config", {}) or {})
        tokenizer_src = getattr(cfg, "tokenizer", None)
        if cfg.model is None:
            if tokenizer_src is None:
                raise ConfigError("tokenizer is required when pretraining from scratch (model: null)",
                                  hint="set tokenizer: minilm (30522-token uncased WordPiece) or a tokenizer directory")
            tokenizer = load_tokenizer(resolve_model_source(tokenizer_src))
            model, converted = _scratch_model(cfg, head_cls, tokenizer), True
        else:
            model, tokenizer, _, converted = load_spiking_model(cfg.model, head_cls, cfg.neuron, config_overrides=model_config)
            if tokenizer_src is not None:
                tokenizer = load_tokenizer(resolve_model_source(tokenizer_src))
            if len(tokenizer) > model.config.vocab_size:
                raise CheckpointError(f"the tokenizer has {len(tokenizer)} tokens, the model {model.config.vocab_size}")
        if cfg.data.max_length > model.config.max_position_embeddings:
            raise ConfigError(f"data.max_length is {cfg.data.max_length} but the model has "
                              f"{model.config.max_position_embeddings} positions")
        teacher = None
        if distill is not None:
            teacher = load_teacher(distill.teacher, "mlm", distill)
            check_teacher(teacher, model, distill, num_labels=None, source=distill.teacher)
        train_ds = mlm_dataset(cfg.data.source, tokenizer, cfg.data.max_length, nsp=nsp,
                               subset=cfg.data.train_subset, seed=cfg.train.seed)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=cfg.mlm.mlm_probability)
        labels = ("labels", "next_sentence_label") if nsp else ("labels",)
        args = training_arguments(cfg.train, out_dir, label_names=labels, evaluate=False)
        write_run_config(cfg, out_dir, run_header(command, out_dir))
        firing = FiringRateCallback()
        sink = JsonlMetricsCallback(out_dir / METRICS, resume_step=steps_of_checkpoint(resume_from))
        common = dict(model=model, args=args, train_dataset=train_ds, data_collator=collator, processing_class=tokenizer,
                      callbacks=[firing, sink, *(callbacks or [])], schedule_steps=cfg.train.schedule_steps)
        trainer = DistillTrainer(**common, teacher=teacher, distill=distill) if teacher is not None else SpikelmTrainer(**common)
        calib = _first_unmasked_batch(train_ds, tokenizer, cfg.train.batch_size)
        calibrated = calibrate_if_needed(trainer.model, calib, converted)
        compile_if_asked(trainer.model, cfg.train.compile)
        train_out = trainer.train(resume_from_checkpoint=resume_from)
        rate, per_layer = layer_firing(trainer.model, [calib])
        final_dir = out_dir / "final"
        trainer.save_model(str(final_dir))  # every rank calls it; only the main process writes
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(str(final_dir))
        loss = train_out.training_loss
        return RunResult(
            command=command, out_dir=str(out_dir), final_dir=str(final_dir), glue_task=None,
            global_step=trainer.state.global_step, epochs=float(trainer.state.epoch or 0.0),
            train_loss=loss if loss is not None and math.isfinite(loss) else None,
            resumed_from=resume_from, calibrated=calibrated, firing_rate=rate, layer_firing_rates=per_layer,
            warnings=list(firing.warnings), samples_per_second=train_out.metrics.get("train_samples_per_second"),
            seconds=timer.seconds,
        )
    finally:
        lock.release()


def run_pretrain(cfg: PretrainConfig, *, resume: str | None = "never", callbacks=None) -> RunResult:
    """Pretrain a spiking BERT with masked-LM (+ NSP when `cfg.mlm.nsp`) on `cfg.data.source`."""
    return run_mlm_training(cfg, resume=resume, callbacks=callbacks, distill=cfg.distill, command="pretrain")
