"""The sequence-to-sequence family: summarisation (XSUM, CNN/DailyMail) with spiking BART.

`finetune` trains the student on the reference summaries (cross-entropy); `distill` adds token-level
logit KL (temperature T, on the summary tokens) and hidden-state MSE against a dense BART teacher
(decoder and encoder states; the student's are means over its time steps), the teacher in eval mode
under `no_grad`. The student is a spiking BART checkpoint or a dense BART converted on the fly with
the recipe's neuron settings, calibrated on the first training batch (decoder fed the summaries).
At the end the student generates summaries for the validation split (beam search) and is scored with
ROUGE-1/2/L/Lsum; `eval` does the same for a saved model.
"""

from __future__ import annotations

import torch
from transformers import Seq2SeqTrainer

from ..checkpoints import LoadedModel, load_model, load_teacher
from ..data.summarization import check_lengths, get_summarization_task, load_summarization, tokenize_summarization
from ..errors import DataError
from ..evaluation.summarization import evaluate_summarization
from ..log import get_logger
from .args import training_arguments
from .losses import logit_kd
from .pipeline import Evaluation, Pipeline, record_final_metrics
from .trainers import DistillTrainer, SpikelmTrainer

log = get_logger("training")
HEAD = "seq2seq_lm"
FAMILIES = ("bart",)
PRIMARY = "rougeL"
MODEL_FIX = ("pass --model DIR, a local (spiking) BART directory (e.g. from `spikelm convert DIR --out DIR2`), or "
             "bart-base where the hub can be reached")


class SpikelmSeq2SeqTrainer(SpikelmTrainer, Seq2SeqTrainer):
    """`Seq2SeqTrainer` with spikelm's schedule horizon, finite-loss guard and loss-part logs."""


class Seq2SeqDistillTrainer(DistillTrainer, Seq2SeqTrainer):
    """`DistillTrainer` (teacher handling, loss-part logs) on the seq2seq Trainer, with the loss
    read off encoder-decoder outputs:

        loss = alpha_ce * CE + alpha_kd * KL(teacher/T || student/T) * T^2 on summary tokens
             + alpha_hidden * MSE(decoder and encoder hidden states)

    `distill.hidden_stage_steps` and `distill.hidden_stage_local` act as in `DistillTrainer`.
    """

    def training_loss(self, model, inputs, num_items_in_batch=None):
        d = self.distill
        need_hidden = d.alpha_hidden > 0
        with self.student_forward_scope(model):
            outputs = model(**inputs, output_hidden_states=need_hidden)
        teacher_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask", "decoder_input_ids") if k in inputs}
        self.teacher.eval()
        with torch.no_grad():
            t_out = self.teacher(**teacher_inputs, output_hidden_states=need_hidden, use_cache=False)
        summary_mask = inputs["labels"] != -100
        parts: dict[str, torch.Tensor] = {}
        if d.alpha_ce > 0:
            parts["ce"] = outputs.loss
        if d.alpha_kd > 0:
            parts["kd"] = logit_kd(outputs.logits, t_out.logits, d.temperature, summary_mask)
        if need_hidden:
            dec = self.hidden_term(outputs.decoder_hidden_states, t_out.decoder_hidden_states, summary_mask)
            enc = self.hidden_term(outputs.encoder_hidden_states, t_out.encoder_hidden_states, inputs.get("attention_mask"))
            parts["hidden"] = (dec + enc) / 2
        return self.weighed(parts), outputs, parts


def _load_bart(cfg, role: str) -> LoadedModel:
    loaded = load_model(cfg.model, head=HEAD, neuron=cfg.neuron, families=FAMILIES, role=role,
                        config_overrides=getattr(cfg, "model_overrides", None),  # eval: none
                        reconvert=getattr(cfg, "reconvert", False))
    model = loaded.model
    for key in ("pad_token_id", "eos_token_id", "decoder_start_token_id", "bos_token_id"):
        setattr(model.generation_config, key, getattr(model.config, key))
    return loaded


def _raw_split(cfg, split: str, subset: int | None):
    d = cfg.data
    files = {"train": d.train_file, "validation": d.validation_file}
    return load_summarization(cfg.task, split, data_dir=d.data_dir, files=files, text_column=d.text_column,
                              summary_column=d.summary_column, subset=subset)


def _score(cfg, model, tokenizer, raw, batch_size: int):
    g = cfg.generate
    return evaluate_summarization(model, tokenizer, raw, num_beams=g.num_beams, max_source_length=cfg.data.max_length,
                                  max_new_tokens=g.max_new_tokens, batch_size=batch_size,
                                  length_penalty=g.length_penalty, no_repeat_ngram_size=g.no_repeat_ngram_size,
                                  min_new_tokens=g.min_new_tokens)


class Seq2SeqPipeline(Pipeline):
    """finetune and distill on a summarisation task."""

    family = "summarization"
    model_fix = MODEL_FIX

    def __init__(self, cfg, command: str, distill=None):
        super().__init__(cfg, command, distill)
        self.spec = get_summarization_task(cfg.task)
        # a dense finetune: the task's recipe converts the model to spiking (a spiking teacher is refused)
        self.teacher_fix = (f"give the dense teacher: a BART directory fine-tuned on the task (spikelm finetune --task "
                            f"{self.spec.name} --model DIR -s neuron.kind=dense writes <out-dir>/final), or bart-base "
                            "where the hub can be reached")

    def check_data(self) -> None:  # the rows the run reads: a problem's count is the run's
        d, problems = self.cfg.data, []
        for split, subset in (("train", d.train_subset), ("validation", d.eval_subset)):
            try:
                _raw_split(self.cfg, split, subset)
            except DataError as exc:
                problems.append(exc)
        if len(problems) == 1:
            raise problems[0]
        if problems:  # both splits: said together (once when alike), as preflight says model and data together
            raise DataError(" and ".join(dict.fromkeys(p.message for p in problems)),
                            details=list(dict.fromkeys(detail for p in problems for detail in p.details)),
                            hint="; ".join(dict.fromkeys(p.hint for p in problems if p.hint)) or None)

    def load_student(self) -> LoadedModel:
        return _load_bart(self.cfg, "student" if self.distill else "model")

    def load_teacher(self, student):
        if self.distill is None:
            return None
        d = self.cfg.data  # the teacher reads the sources and is fed the summaries: both within its positions
        key = "data.max_target_length" if d.max_target_length > d.max_length else "data.max_length"
        return load_teacher(self.distill.teacher, HEAD, student=student, distill=self.distill, num_labels=None,
                            families=FAMILIES, positions=max(d.max_length, d.max_target_length), positions_key=key)

    def load_data(self, loaded: LoadedModel):
        d = self.cfg.data
        positions = loaded.model.config.max_position_embeddings
        check_lengths(positions, max_source_length=d.max_length, max_target_length=d.max_target_length,
                      max_new_tokens=self.cfg.generate.max_new_tokens)  # before any step: the final validation generates
        out = {}
        for split, subset in (("train", d.train_subset), ("validation", d.eval_subset)):
            raw = _raw_split(self.cfg, split, subset)
            out[split] = (raw, tokenize_summarization(raw, loaded.tokenizer, d.max_length, d.max_target_length,
                                                      model_max_positions=positions))
        self.eval_raw, self.eval_ds = out["validation"]
        return out["train"][1], {"validation": self.eval_raw}

    def collator(self, loaded: LoadedModel):
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(loaded.tokenizer, model=loaded.model, label_pad_token_id=-100)

    def training_arguments(self, out_dir):
        from transformers import Seq2SeqTrainingArguments

        # keep_best: by the teacher-forced dev loss (ROUGE needs generation, run once at the end only)
        return training_arguments(self.cfg.train, out_dir, metric_for_best_model="loss", greater_is_better=False,
                                  args_class=Seq2SeqTrainingArguments)

    def trainer(self, teacher, **kwargs):
        kwargs.update(eval_dataset=self.eval_ds if kwargs["args"].eval_strategy != "no" else None,
                      schedule_steps=self.cfg.train.schedule_steps)
        if teacher is None:
            return SpikelmSeq2SeqTrainer(**kwargs)
        return Seq2SeqDistillTrainer(**kwargs, teacher=teacher, distill=self.distill)

    def final_evaluation(self, trainer, evals, collator, tokenizer):
        res = _score(self.cfg, trainer.model, tokenizer, evals["validation"], self.cfg.train.eval_batch_size)
        self.final_warnings = _empty_summaries("validation", res)  # as eval says it: ROUGE 0 explained
        if trainer.is_world_process_zero():
            for message in self.final_warnings:
                log.warning(message)
        return {"validation": res.rouge}, PRIMARY, res.firing

    def after_training(self, trainer, run, metrics):
        record_final_metrics(trainer, run, metrics)


def _empty_summaries(split: str, res) -> list[str]:
    """The warning of a split whose generated summaries are (partly) empty, each scoring ROUGE 0."""
    if not res.empty_predictions:
        return []
    return [f"{split}: {res.empty_predictions} of {res.num_examples} generated summaries are empty once special "
            "tokens are removed (the model ends at once or generates only special tokens), each scoring ROUGE 0; "
            "is it trained for this task?"]


class Seq2SeqEvaluation(Evaluation):
    """eval: beam-search summaries of a split, ROUGE, firing rates."""

    model_fix = MODEL_FIX

    def __init__(self, cfg):
        super().__init__(cfg)
        self.spec = get_summarization_task(cfg.task)
        self.split_names = list(cfg.splits) or ["validation"]

    def check_data(self) -> None:  # the rows the run reads: a problem's count is the run's
        _raw_split(self.cfg, self.split_names[0], self.cfg.data.eval_subset)

    def load(self) -> LoadedModel:
        loaded = _load_bart(self.cfg, "model")
        device = "cuda" if self.cfg.device == "cuda" or (self.cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
        loaded.model.to(device)
        return loaded

    def load_data(self, loaded):
        check_lengths(loaded.model.config.max_position_embeddings, max_source_length=self.cfg.data.max_length,
                      max_new_tokens=self.cfg.generate.max_new_tokens)  # before a converted model calibrates
        return {s: _raw_split(self.cfg, s, self.cfg.data.eval_subset) for s in self.split_names}

    def score(self, loaded, data):
        metrics, examples, report = {}, {}, None
        self.results = {}
        for split, raw in data.items():
            res = _score(self.cfg, loaded.model, loaded.tokenizer, raw, self.cfg.batch_size)
            metrics[split], examples[split] = res.rouge, res.num_examples
            self.results[split] = res
            if report is None and res.firing is not None:  # the first split's, as a GLUE eval's: say which
                report = res.firing
                report.description = f"{report.description}; while generating {res.num_examples:,} {split} summaries"
        return metrics, examples, PRIMARY, report

    def warnings(self, loaded):
        return [message for split, res in getattr(self, "results", {}).items() for message in _empty_summaries(split, res)]

    def result_fields(self):
        return {"summaries": {split: res.examples for split, res in self.results.items()},
                "intervals": {split: res.rouge_intervals for split, res in self.results.items()}}
