"""Summarisation training (XSUM, CNN/DailyMail) of spiking BART on the Trainer's seq2seq variant.

`finetune` trains the student on the reference summaries (cross-entropy); `distill` adds token-level
logit KL (temperature T, on the summary tokens) and hidden-state MSE against a dense BART teacher
(decoder and encoder states; the student's are means over its time steps), the teacher in eval mode
under `no_grad`. The student is a spiking BART checkpoint or a dense BART converted on the fly with
the recipe's neuron settings, calibrated on the first training batch (decoder fed the summaries).
The run directory is laid out as for GLUE: run_config.yaml, metrics.jsonl, checkpoint-<step>/,
final/; at the end the student generates summaries for the validation split (beam search) and is
scored with ROUGE-1/2/L/Lsum.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from transformers import Seq2SeqTrainer

from ..config.schema import DistillArgs, NeuronArgs
from ..convert.bert import load_tokenizer, read_config, spiking_model_from_dense
from ..data.summarization import get_summarization_task, load_summarization, tokenize_summarization
from ..errors import CheckpointError, ConfigError
from ..evaluation.summarization import evaluate_summarization
from ..hub import resolve_model_source
from ..io import atomic_write_text
from ..models.spiking_bart import SpikingBartForConditionalGeneration
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
    first_batch,
    neuron_settings,
    resolve_resume,
    seed_everything,
    steps_of_checkpoint,
    write_run_config,
)
from .losses import hidden_mse, logit_kd
from .trainers import DistillTrainer, SpikelmTrainer

BART_TYPES = ("bart", "spiking_bart")


def _require_bart(model_dir, cfg: dict, task: str, role: str) -> None:
    if cfg.get("model_type") not in BART_TYPES:
        raise CheckpointError(
            f"'{task}' is a summarization task and needs an encoder-decoder (BART) {role}; "
            f"'{model_dir}' holds a '{cfg.get('model_type')}' model",
            details=["GLUE tasks (cola, sst2, ...) take BERT models; xsum and cnn_dm take BART models"],
            hint="give a (spiking) BART checkpoint, e.g. the output of `spikelm convert bart-base`",
        )


def load_spiking_bart(source: str, neuron) -> tuple:
    """(model, tokenizer, converted): a spiking BART checkpoint, or a dense BART converted with `neuron`."""
    model_dir = resolve_model_source(source)
    cfg = read_config(model_dir)
    _require_bart(model_dir, cfg, "summarization", "student")
    if cfg["model_type"] == "spiking_bart":
        try:
            model = SpikingBartForConditionalGeneration.from_pretrained(str(model_dir))
        except (OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot load the spiking model in '{model_dir}': {exc}") from exc
        converted = False
    else:
        model, *_ = spiking_model_from_dense(model_dir, neuron_settings(neuron or NeuronArgs()))
        if not isinstance(model, SpikingBartForConditionalGeneration):
            raise CheckpointError(f"'{model_dir}' is a BART without an LM head; summarization needs one",
                                  hint="give a BartForConditionalGeneration checkpoint")
        converted = True
    return model, load_tokenizer(model_dir), converted


def load_bart_teacher(source: str, task: str):
    from transformers import BartForConditionalGeneration

    model_dir = resolve_model_source(source)
    cfg = read_config(model_dir)
    if cfg.get("model_type") != "bart":
        raise CheckpointError(
            f"the teacher for '{task}' must be a dense BART; '{model_dir}' holds a '{cfg.get('model_type')}' model",
            hint="distill from the dense BART the student was converted from, fine-tuned on the task",
        )
    try:
        return BartForConditionalGeneration.from_pretrained(str(model_dir)).eval()
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot load the teacher '{source}': {exc}") from exc


def check_bart_teacher(teacher, student, distill: DistillArgs, source: str) -> None:
    t, s = teacher.config, student.config
    problems = []
    if t.vocab_size != s.vocab_size:
        problems.append(f"vocabulary: teacher {t.vocab_size} tokens, student {s.vocab_size}")
    if distill.alpha_hidden > 0:
        for name in ("d_model", "encoder_layers", "decoder_layers"):
            if getattr(t, name) != getattr(s, name):
                problems.append(f"{name}: teacher {getattr(t, name)}, student {getattr(s, name)}")
    if problems:
        raise CheckpointError(
            f"the teacher '{source}' does not match the student", details=problems,
            hint="use the dense BART the student was converted from; set distill.alpha_hidden=0 when only shapes differ",
        )


class SpikelmSeq2SeqTrainer(SpikelmTrainer, Seq2SeqTrainer):
    """`Seq2SeqTrainer` with spikelm's schedule horizon, finite-loss guard and loss-part logs."""


class Seq2SeqDistillTrainer(DistillTrainer, Seq2SeqTrainer):
    """`DistillTrainer` (teacher handling, loss-part logs) on the seq2seq Trainer, with the loss
    read off encoder-decoder outputs:

        loss = alpha_ce * CE + alpha_kd * KL(student/T || teacher/T) * T^2 on summary tokens
             + alpha_hidden * MSE(decoder and encoder hidden states)
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        d = self.distill
        need_hidden = d.alpha_hidden > 0
        outputs = model(**inputs, output_hidden_states=need_hidden)
        teacher_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "decoder_input_ids") if k in inputs}
        self.teacher.eval()
        with torch.no_grad():
            t_out = self.teacher(**teacher_inputs, output_hidden_states=need_hidden, use_cache=False)
        labels = inputs["labels"]
        summary_mask = labels != -100
        parts: dict[str, torch.Tensor] = {}
        if d.alpha_ce > 0:
            parts["ce"] = outputs.loss
        if d.alpha_kd > 0:
            parts["kd"] = logit_kd(outputs.logits, t_out.logits, d.temperature, summary_mask)
        if need_hidden:
            dec = hidden_mse(outputs.decoder_hidden_states, t_out.decoder_hidden_states, summary_mask)
            enc = hidden_mse(outputs.encoder_hidden_states, t_out.encoder_hidden_states, inputs.get("attention_mask"))
            parts["hidden"] = (dec + enc) / 2
        weights = {"ce": d.alpha_ce, "kd": d.alpha_kd, "hidden": d.alpha_hidden}
        loss = sum(weights[name] * value for name, value in parts.items())
        self.record_loss_parts(parts)
        return (loss, outputs) if return_outputs else loss


def _split(cfg, tokenizer, split: str, subset: int | None, model):
    d = cfg.data
    files = {"train": d.train_file, "validation": d.validation_file}
    raw = load_summarization(
        cfg.summarization_task, split, data_dir=d.data_dir, files=files, text_column=d.text_column,
        summary_column=d.summary_column, subset=subset,
    )
    tok = tokenize_summarization(raw, tokenizer, d.max_length, d.max_target_length,
                                 model_max_positions=model.config.max_position_embeddings)
    return raw, tok


def run_summarization_training(cfg, *, resume: str | None, callbacks, command: str,
                               distill: DistillArgs | None = None) -> RunResult:
    """finetune (distill None) or distill a spiking BART on `cfg.summarization_task`."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainingArguments

    timer = Timer()
    check_device(cfg.train.device)
    task = get_summarization_task(cfg.summarization_task).name
    if cfg.generate.num_beams < 1:
        raise ConfigError(f"generate.num_beams must be >= 1, got {cfg.generate.num_beams}")
    out_dir = default_out_dir(cfg, f"{command}-{task}")
    lock = RunLock(out_dir)
    lock.acquire()
    try:
        resume_from = resolve_resume(resume, out_dir)
        check_resume_config(cfg, out_dir, resume_from)
        seed_everything(cfg.train.seed)
        model, tokenizer, converted = load_spiking_bart(cfg.model, cfg.neuron)
        for key in ("pad_token_id", "eos_token_id", "decoder_start_token_id", "bos_token_id"):
            setattr(model.generation_config, key, getattr(model.config, key))
        teacher = None
        if distill is not None:
            teacher = load_bart_teacher(distill.teacher, task)
            check_bart_teacher(teacher, model, distill, distill.teacher)
        _, train_ds = _split(cfg, tokenizer, "train", cfg.data.train_subset, model)
        eval_raw, eval_ds = _split(cfg, tokenizer, "validation", cfg.data.eval_subset, model)
        collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
        args = training_arguments(cfg.train, out_dir, args_class=Seq2SeqTrainingArguments)
        write_run_config(cfg, out_dir, f"# spikelm {command} run ({task}); replay: spikelm {command} {out_dir}/run_config.yaml")
        firing = FiringRateCallback()
        sink = JsonlMetricsCallback(out_dir / METRICS, resume_step=steps_of_checkpoint(resume_from))
        kwargs = dict(
            model=model, args=args, train_dataset=train_ds,
            eval_dataset=eval_ds if args.eval_strategy != "no" else None, data_collator=collator,
            processing_class=tokenizer, callbacks=[firing, sink, *(callbacks or [])],
            schedule_steps=cfg.train.schedule_steps,
        )
        if teacher is not None:
            trainer = Seq2SeqDistillTrainer(**kwargs, teacher=teacher, distill=distill)
        else:
            trainer = SpikelmSeq2SeqTrainer(**kwargs)
        calibrated = calibrate_if_needed(trainer.model, first_batch(train_ds, collator, cfg.train.batch_size), converted)
        compile_if_asked(trainer.model, cfg.train.compile)
        train_out = trainer.train(resume_from_checkpoint=resume_from)
        final_dir = out_dir / "final"
        trainer.save_model(str(final_dir))
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(str(final_dir))
        g = cfg.generate
        evaluation = evaluate_summarization(
            trainer.model, tokenizer, eval_raw, num_beams=g.num_beams, max_source_length=cfg.data.max_length,
            max_new_tokens=g.max_new_tokens, batch_size=cfg.train.eval_batch_size,
        )
        if trainer.is_world_process_zero():
            record = {"step": trainer.state.global_step, **{f"final_validation_{k}": v for k, v in evaluation.rouge.items()}}
            with (out_dir / METRICS).open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        loss = train_out.training_loss
        return RunResult(
            command=command, out_dir=str(out_dir), final_dir=str(final_dir), glue_task=task,
            global_step=trainer.state.global_step, epochs=float(trainer.state.epoch or 0.0),
            train_loss=loss if loss is not None and math.isfinite(loss) else None,
            metrics={"validation": evaluation.rouge}, primary_metric="rougeL", best_checkpoint=None,
            resumed_from=resume_from, calibrated=calibrated, firing_rate=evaluation.mean_firing_rate,
            layer_firing_rates=evaluation.layer_firing_rates, warnings=list(firing.warnings),
            samples_per_second=train_out.metrics.get("train_samples_per_second"), seconds=timer.seconds,
        )
    finally:
        lock.release()


def run_summarization_eval(cfg):
    """`spikelm eval --task xsum|cnn_dm`: beam-search summaries of a split, ROUGE, firing rates."""
    from .evaluate import EvalResult

    timer = Timer()
    check_device(cfg.device)
    seed_everything(cfg.seed)
    task = get_summarization_task(cfg.summarization_task).name
    model_dir = resolve_model_source(cfg.model)
    _require_bart(model_dir, read_config(model_dir), task, "checkpoint")
    model, tokenizer, converted = load_spiking_bart(cfg.model, cfg.neuron)
    device = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    model.to(device)
    metrics, examples, firing, per_layer = {}, {}, None, {}
    for split in list(cfg.splits) or ["validation"]:
        files = {"train": cfg.data.train_file, "validation": cfg.data.validation_file}
        raw = load_summarization(task, split, data_dir=cfg.data.data_dir, files=files,
                                 text_column=cfg.data.text_column, summary_column=cfg.data.summary_column,
                                 subset=cfg.data.eval_subset)
        if converted:  # a dense BART converted here: calibrate on the first documents
            enc = tokenizer(list(raw["document"][: cfg.batch_size]), max_length=cfg.data.max_length,
                            truncation=True, padding=True, return_tensors="pt")
            calibrate_if_needed(model, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}, True)
            converted = False
        res = evaluate_summarization(
            model, tokenizer, raw, num_beams=cfg.generate.num_beams, max_source_length=cfg.data.max_length,
            max_new_tokens=cfg.generate.max_new_tokens, batch_size=cfg.batch_size,
        )
        metrics[split], examples[split] = res.rouge, res.num_examples
        if firing is None:
            firing, per_layer = res.mean_firing_rate, res.layer_firing_rates
    result = EvalResult(
        model=str(cfg.model), glue_task=task, metrics=metrics, examples=examples, primary_metric="rougeL",
        firing_rate=firing, layer_firing_rates=per_layer, converted=False, seconds=timer.seconds,
    )
    if cfg.out_dir:
        out_dir = Path(cfg.out_dir)
        write_run_config(cfg, out_dir, "Resolved config of a `spikelm eval` run")
        atomic_write_text(out_dir / "eval_results.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result
