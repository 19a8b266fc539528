"""`run_finetune`: train a model on a benchmark task with its labels (GLUE: `glue.GluePipeline`;
xsum/cnn_dm: `seq2seq.Seq2SeqPipeline`; wikitext2, next-token prediction: `causal_lm.CausalLmPipeline`). The run directory holds run_config.yaml (`spikelm finetune
<out>/run_config.yaml` replays the run), metrics.jsonl, the Trainer's checkpoint-<step>/ directories
and final/ (the model and its tokenizer)."""

from __future__ import annotations

from ..config import DistillConfig, FinetuneConfig
from ..errors import ConfigError
from .causal_lm import CausalLmPipeline
from .glue import GluePipeline
from .pipeline import run_training
from .results import RunResult
from .seq2seq import Seq2SeqPipeline


def run_finetune(cfg: FinetuneConfig, *, resume: str | None = "never", callbacks=None) -> RunResult:
    """Fine-tune `cfg.model` (a spiking checkpoint, a dense model converted with `cfg.neuron`, or with
    `neuron.kind: dense` a dense model as it is, e.g. a distillation teacher) on `cfg.task`.

    resume: 'never' (default; refuses a directory that already holds checkpoints), 'auto' (the latest
    checkpoint-<step>/ of the run directory, or a fresh start) or a checkpoint directory.
    callbacks: extra `TrainerCallback`s (the CLI passes its progress display).
    """
    if isinstance(cfg, DistillConfig):
        raise ConfigError("run_finetune takes a FinetuneConfig; use run_distill for a distill recipe")
    pipelines = {"glue": GluePipeline, "summarization": Seq2SeqPipeline, "lm": CausalLmPipeline}
    if cfg.task_family not in pipelines:
        raise ConfigError("finetune needs a task: set data.task (or --task), e.g. sst2, xsum or wikitext2")
    return run_training(pipelines[cfg.task_family](cfg, "finetune"), resume=resume, callbacks=callbacks)
