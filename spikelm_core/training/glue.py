"""The GLUE family: classification and regression heads, trained (finetune, distill) and scored (eval).

The paper's setting (released code, method doc 7.2): AdamW, lr 2e-5 constant, batch 32, max length
128 with dynamic padding, per-task epochs, evaluation on dev after every epoch, the best epoch kept by
the task's primary metric; MNLI-mismatched is scored once, by the model of the last evaluation (the
released code's, docs/spikelm-method.md 7.2; `train.mismatched_model: kept` scores it on the kept
model instead: `ScoreAtLastEvaluation`). Prediction in `eval`
runs through `Trainer.predict` (so `torchrun` shards it as it shards training); metrics come from
scikit-learn / scipy, offline.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from transformers import TrainerCallback

from ..checkpoints import LoadedModel, label_order, load_model, load_teacher
from ..config import TrainArgs
from ..data.augment import FLAG, augment_dataset, copies_for
from ..data.glue import get_glue_task, glue_data_dir, load_glue, tokenize_glue
from ..errors import ConfigError
from ..evaluation.metrics import glue_compute_metrics, glue_metrics, predictions_from_logits
from ..log import get_logger
from .args import training_arguments
from .pipeline import Evaluation, Pipeline, calibration_indices, max_length, split_firing
from .trainers import DistillTrainer, SpikelmTrainer

HEAD = "sequence_classification"
FAMILIES = ("bert",)
log = get_logger("training")
MODEL_FIX = ("pass --model minilm (bundled), bert-base (hub) or a BERT directory, or pretrain one: "
             "spikelm pretrain recipes/bert_base/pretrain_base.yaml")


def _label_maps(spec) -> dict | None:
    return None if spec.is_regression else {"id2label": spec.id2label, "label2id": spec.label2id}


def _load_classifier(cfg, spec, role: str) -> LoadedModel:
    """The model to train or score, with a head for `spec` (spiking, or dense with neuron.kind dense)."""
    loaded = load_model(cfg.model, head=HEAD, neuron=cfg.neuron, num_labels=spec.num_labels,
                        label_maps=_label_maps(spec), families=FAMILIES, role=role,
                        config_overrides=getattr(cfg, "model_overrides", None),  # eval: none
                        reinit_head=getattr(cfg, "reinit_head", False), reconvert=getattr(cfg, "reconvert", False))
    # the task decides the loss, never the checkpoint's saved problem_type: a model fine-tuned on STS-B
    # ('regression') given a fresh 2-label head (--reinit-head) would otherwise train SST-2 on MSE
    loaded.model.config.problem_type = "regression" if spec.is_regression else "single_label_classification"
    return loaded


def _splits(cfg, spec, loaded, splits, subset) -> dict:
    where = glue_data_dir(cfg.data.source, cfg.data.data_dir)
    length = max_length(cfg, loaded.model)
    shortest = 5 if spec.is_pair else 3  # [CLS] a [SEP] (b [SEP]): a token of each text besides the markers
    if length < shortest:
        raise ConfigError(f"data.max_length {length} is too short for {spec.name}: its "
                          f"{'sentence pairs need' if spec.is_pair else 'sentences need'} at least {shortest} tokens "
                          "with [CLS] and [SEP]", hint=f"set -s data.max_length={shortest} or more (the paper: 128)")
    return {s: tokenize_glue(load_glue(spec.name, where, split=s, subset=subset), loaded.tokenizer, length)
            for s in splits}


def _collator(tokenizer):
    """Dynamic padding of tokenised GLUE examples (training, evaluation and calibration batches)."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)


def _check_split(cfg, spec, split: str) -> None:
    load_glue(spec.name, glue_data_dir(cfg.data.source, cfg.data.data_dir), split=split, subset=1)


class GluePipeline(Pipeline):
    """finetune and distill on a GLUE task."""

    family = "glue"
    model_fix = MODEL_FIX

    def __init__(self, cfg, command: str, distill=None):
        super().__init__(cfg, command, distill)
        self.spec = get_glue_task(cfg.task)
        self.evals: dict = {}
        self.teacher = None
        self.at_last: ScoreAtLastEvaluation | None = None  # MNLI-mismatched at the last evaluation

    def check_data(self) -> None:
        _check_split(self.cfg, self.spec, self.spec.eval_splits[0])

    def load_student(self) -> LoadedModel:
        return _load_classifier(self.cfg, self.spec, "student" if self.distill else "model")

    def load_teacher(self, student):
        if self.distill is None:
            return None
        self.teacher = load_teacher(self.distill.teacher, HEAD, student=student, distill=self.distill,
                                    num_labels=self.spec.num_labels, families=FAMILIES,
                                    label_maps=_label_maps(self.spec), positions=self.cfg.data.max_length)
        return self.teacher

    def load_data(self, loaded: LoadedModel):
        d = self.cfg.data
        train = _splits(self.cfg, self.spec, loaded, ["train"], d.train_subset)["train"]
        self.evals = _splits(self.cfg, self.spec, loaded, self.spec.eval_splits, d.eval_subset)
        if self.distill is not None and self.distill.augment.enabled:
            train = self._augmented(train, loaded)
        return train, self.evals

    def _augmented(self, train, loaded: LoadedModel):
        """The training set with the TinyBERT-style copies of `distill.augment` (teacher-labelled)."""
        a = self.distill.augment
        self.real_examples = len(train)  # the originals come first; calibration draws from them alone
        copies = copies_for(len(train), a.copies, a.min_examples)
        out = augment_dataset(train, loaded.tokenizer, self.teacher.get_input_embeddings().weight, copies=copies,
                              word_prob=a.word_prob, neighbours=a.neighbours, seed=self.cfg.train.seed)
        log.info("distill.augment: %d training examples + %d augmented copies of each (%d rows; the teacher "
                 "labels the copies)", len(train), copies, len(out))
        return out

    def calibration_batch(self, train_ds, collator):
        real = getattr(self, "real_examples", len(train_ds))  # augmented copies never calibrate
        batch = collator([train_ds[i] for i in calibration_indices(real, self.cfg.train)])
        batch.pop(FLAG, None)
        return batch

    def calibration_source(self, size: int) -> str:
        return super().calibration_source(getattr(self, "real_examples", size))

    def collator(self, loaded: LoadedModel):
        return _collator(loaded.tokenizer)

    def training_arguments(self, out_dir):
        return training_arguments(self.cfg.train, out_dir, metric_for_best_model=self.spec.primary_metric)

    def trainer(self, teacher, **kwargs):
        select = self.spec.eval_splits[0]  # MNLI: matched selects; mismatched is scored at the end
        evaluates = kwargs["args"].eval_strategy != "no"
        kwargs.update(
            eval_dataset=self.evals[select] if evaluates else None,
            compute_metrics=glue_compute_metrics(self.spec.name),
            schedule_steps=self.cfg.train.schedule_steps,
        )
        trainer = (SpikelmTrainer(**kwargs) if teacher is None
                   else DistillTrainer(**kwargs, teacher=teacher, distill=self.distill))
        self.at_last = None
        if len(self.spec.eval_splits) > 1 and evaluates and self.cfg.train.mismatched_model == "last":
            later = self.spec.eval_splits[1]
            self.at_last = ScoreAtLastEvaluation(trainer, later, self.evals[later])
            trainer.add_callback(self.at_last)
        return trainer

    def final_evaluation(self, trainer, evals, collator, tokenizer):
        metrics = {}
        for split, ds in evals.items():
            if self.at_last is not None and split == self.at_last.split:
                # the model of the last evaluation (train.mismatched_model): scored inside it, or, in a run
                # resumed from its last step's checkpoint, as that evaluation logged it (trainer_state.json)
                scores = self.at_last.metrics or _logged_scores(trainer, split)
                if scores is not None:
                    metrics[split] = scores
                    continue
                if trainer.state.best_model_checkpoint is not None:
                    log.warning("no evaluation at the run's last step scored %s, so it is scored on the kept model "
                                "(train.mismatched_model 'last' scores it inside the last step's evaluation)", split)
            metrics[split] = _final_scores(trainer, ds, split)
        select = self.spec.eval_splits[0]
        report = split_firing(trainer.model, evals[select], collator, self.cfg.train.eval_batch_size, select)
        return metrics, self.spec.primary_metric, report


def _final_scores(trainer, dataset, split: str) -> dict:
    """`trainer.evaluate` on one split, as `final_<split>_*` (logged so), without its timing keys."""
    prefix = f"final_{split}"
    raw = trainer.evaluate(dataset, metric_key_prefix=prefix)
    return {k[len(prefix) + 1:]: v for k, v in raw.items()
            if k.startswith(prefix + "_") and not k.endswith(("_runtime", "_per_second"))}


def _logged_scores(trainer, split: str) -> dict | None:
    """The `final_<split>_*` scores the trainer's log holds for its last step (a run resumed from that
    step's checkpoint reads its log back), or None."""
    if trainer.state.global_step < trainer.state.max_steps:
        return None
    prefix = f"final_{split}_"
    for record in reversed(trainer.state.log_history):
        if record.get("step") == trainer.state.global_step and any(k.startswith(prefix) for k in record):
            return {k[len(prefix):]: v for k, v in record.items()
                    if k.startswith(prefix) and not k.endswith(("_runtime", "_per_second"))}
    return None


class ScoreAtLastEvaluation(TrainerCallback):
    """Scores a second dev split (MNLI-mismatched) once, with the model of the run's last evaluation:
    inside that evaluation (the weights it evaluates, a weight average included), at the last step,
    before keep_best loads the best checkpoint back; the scores are logged, so the checkpoint saved
    after it keeps them. `metrics` stays None when no evaluation runs at the last step (a run resumed
    from its last step's checkpoint: `_logged_scores` reads them from its log)."""

    def __init__(self, trainer, split: str, dataset):
        self.trainer, self.split, self.dataset = trainer, split, dataset
        self.metrics: dict | None = None
        self._inside = False
        self._trained = False

    def on_train_end(self, args, state, control, **kwargs):
        self._trained = True  # the evaluations after training (the kept model's) are not the last one's

    def on_evaluate(self, args, state, control, **kwargs):
        if self._inside or self._trained or state.global_step < state.max_steps:
            return
        self._inside = True
        try:
            self.metrics = _final_scores(self.trainer, self.dataset, self.split)
        finally:
            self._inside = False


class GlueEvaluation(Evaluation):
    """eval on the dev split(s) of a GLUE task (a dense model is converted with the recipe's neuron
    settings and calibrated on the calibration text as `spikelm convert` calibrates: the untrained
    spiking twin; with `neuron.kind: dense` it is scored as it is). Firing rates: `split_firing`."""

    model_fix = MODEL_FIX

    def __init__(self, cfg):
        super().__init__(cfg)
        self.spec = get_glue_task(cfg.task)
        self.split_names = list(cfg.splits) or list(self.spec.eval_splits)

    def check_data(self) -> None:
        _check_split(self.cfg, self.spec, self.split_names[0])

    def load(self) -> LoadedModel:
        return _load_classifier(self.cfg, self.spec, "model")

    def warnings(self, loaded: LoadedModel) -> list[str]:
        out = []
        fresh = [k for k in (loaded.weights.newly_initialised if loaded.weights else []) if "classifier" in k]
        if fresh:
            out.append(f"'{self.cfg.model}' has no trained classifier: its {self.spec.name} head is newly "
                       "initialised, so these scores are those of a random classifier (evaluate a fine-tuned "
                       "model, e.g. a run's final/)")
        names = loaded.config.get("id2label")
        saved = [str(v).lower() for v in names.values()] if isinstance(names, dict) else []
        expected = [str(v).lower() for v in self.spec.id2label.values()]
        generic = all(label.startswith("label_") for label in saved)
        # the task's labels in another order: load_model reordered them (one rule: checkpoints.label_order)
        reordered = label_order(names, self.spec.id2label) is not None
        if not fresh and saved and not generic and not reordered and not self.spec.is_regression and saved != expected:
            out.append(f"'{self.cfg.model}' was trained with the labels {saved}, {self.spec.name} has {expected}: "
                       "is it a model of another task?")
        return out

    def load_data(self, loaded: LoadedModel):
        return _splits(self.cfg, self.spec, loaded, self.split_names, self.cfg.data.eval_subset)

    def score(self, loaded, data):
        cfg, spec = self.cfg, self.spec
        collator = _collator(loaded.tokenizer)
        scratch = Path(tempfile.mkdtemp(prefix="spikelm-eval-"))
        try:
            train = TrainArgs(eval_batch_size=cfg.batch_size, device=cfg.device, seed=cfg.seed, eval_strategy="no",
                              keep_best=False)
            args = training_arguments(train, scratch, evaluate=False)
            trainer = SpikelmTrainer(model=loaded.model, args=args, data_collator=collator,
                                     processing_class=loaded.tokenizer)
            metrics, examples = {}, {}
            for split, ds in data.items():
                out = trainer.predict(ds, metric_key_prefix=split)
                metrics[split] = glue_metrics(spec.name, predictions_from_logits(spec.name, out.predictions), out.label_ids)
                examples[split] = len(ds)
            first = self.split_names[0]
            report = split_firing(trainer.model, data[first], collator, cfg.batch_size, first)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return metrics, examples, spec.primary_metric, report
