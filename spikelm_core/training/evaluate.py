"""`run_eval`: score a saved model on a GLUE task's dev split(s) and measure its firing rates.

Prediction runs through `Trainer.predict` (so `torchrun` shards evaluation as it shards
training); metrics come from `glue_metrics` (scikit-learn / scipy, offline). MNLI is scored on
both dev_matched and dev_mismatched. A dense BERT is converted with the recipe's neuron settings
and calibrated on the first dev batch: the spiking twin of a fine-tuned dense model, untrained;
with `neuron.kind: dense` it is scored as it is (e.g. a distillation teacher).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config.schema import EvalConfig, TrainArgs
from ..convert.bert import read_config
from ..data.glue import get_glue_task, glue_data_dir, load_glue, tokenize_glue
from ..errors import CheckpointError
from ..evaluation.metrics import glue_metrics, predictions_from_logits
from ..hub import resolve_model_source
from ..io import atomic_write_text
from ..models.spiking_bert import SpikingBertForSequenceClassification
from .args import check_device, training_arguments
from .common import (
    Timer,
    calibrate_if_needed,
    eval_batches,
    first_batch,
    layer_firing,
    load_dense_classifier,
    load_spiking_model,
    seed_everything,
    write_run_config,
)


@dataclass
class EvalResult:
    """Dev metrics per split, example counts and firing rates of one model on one GLUE task."""

    model: str
    glue_task: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)
    primary_metric: str = "accuracy"
    firing_rate: float | None = None
    layer_firing_rates: dict[str, float] = field(default_factory=dict)
    converted: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_labels(model_dir: Path, spec) -> None:
    cfg = read_config(model_dir)
    if cfg.get("model_type") != "spiking_bert":
        return
    n = len(cfg.get("id2label") or {}) or cfg.get("num_labels")
    if n is not None and n != spec.num_labels:
        raise CheckpointError(
            f"'{model_dir}' has a {n}-label head but {spec.name} has {spec.num_labels} label(s)",
            hint="evaluate a checkpoint fine-tuned on this task (its final/ directory), or pick the matching --task",
        )


def run_eval(cfg: EvalConfig) -> EvalResult:
    """Evaluate `cfg.model` on the dev split(s) of `cfg.glue_task`, or (a BART) with beam search and
    ROUGE on `cfg.summarization_task`."""
    from transformers import DataCollatorWithPadding

    from .trainers import SpikelmTrainer

    if cfg.summarization_task is not None:
        from .summarization import run_summarization_eval

        return run_summarization_eval(cfg)
    timer = Timer()
    check_device(cfg.device)
    seed_everything(cfg.seed)
    spec = get_glue_task(cfg.glue_task)
    model_dir = resolve_model_source(cfg.model)
    _check_labels(model_dir, spec)
    label_maps = None if spec.is_regression else {"id2label": spec.id2label, "label2id": spec.label2id}
    if cfg.neuron is not None and cfg.neuron.kind == "dense":
        model, tokenizer, _ = load_dense_classifier(cfg.model, spec.num_labels, label_maps)
        converted = False
    else:
        model, tokenizer, _, converted = load_spiking_model(
            cfg.model, SpikingBertForSequenceClassification, cfg.neuron, num_labels=spec.num_labels,
            label_maps=label_maps,
        )
    where = glue_data_dir(cfg.data.source, cfg.data.data_dir)
    splits = list(cfg.splits) or list(spec.eval_splits)
    data = {s: tokenize_glue(load_glue(spec.name, where, split=s, subset=cfg.data.eval_subset), tokenizer, cfg.data.max_length)
            for s in splits}
    collator = DataCollatorWithPadding(tokenizer)
    calibrate_if_needed(model, first_batch(data[splits[0]], collator, cfg.batch_size), converted)
    scratch = Path(tempfile.mkdtemp(prefix="spikelm-eval-"))
    try:
        train = TrainArgs(eval_batch_size=cfg.batch_size, device=cfg.device, seed=cfg.seed, eval_strategy="no", keep_best=False)
        args = training_arguments(train, scratch, evaluate=False)
        trainer = SpikelmTrainer(model=model, args=args, data_collator=collator, processing_class=tokenizer)
        metrics, examples = {}, {}
        for split, ds in data.items():
            out = trainer.predict(ds, metric_key_prefix=split)
            metrics[split] = glue_metrics(spec.name, predictions_from_logits(spec.name, out.predictions), out.label_ids)
            examples[split] = len(ds)
        rate, per_layer = layer_firing(trainer.model, eval_batches(data[splits[0]], collator, cfg.batch_size))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = EvalResult(
        model=str(cfg.model), glue_task=spec.name, metrics=metrics, examples=examples,
        primary_metric=spec.primary_metric, firing_rate=rate, layer_firing_rates=per_layer,
        converted=converted, seconds=timer.seconds,
    )
    if cfg.out_dir:
        out_dir = Path(cfg.out_dir)
        write_run_config(cfg, out_dir, "Resolved config of a `spikelm eval` run")
        atomic_write_text(out_dir / "eval_results.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result
