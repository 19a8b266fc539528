"""`run_distill`: knowledge distillation from a dense teacher into a spiking student.

On a GLUE task the teacher is a dense BERT fine-tuned on that task; on xsum/cnn_dm a dense BART;
on a language-modelling text (wikitext2) a dense Llama-family causal LM; without a task, the distillation runs on a text corpus with a masked-LM teacher. The student is a
spiking checkpoint or, usually, the spiking twin of a dense model (often the teacher itself,
converted with the recipe's neuron settings). The loss terms are in `trainers.DistillTrainer`.
"""

from __future__ import annotations

from ..config import DistillConfig
from ..errors import ConfigError
from .causal_lm import CausalLmPipeline
from .glue import GluePipeline
from .mlm import MlmPipeline
from .pipeline import run_training
from .results import RunResult
from .seq2seq import Seq2SeqPipeline

PIPELINES = {"glue": GluePipeline, "summarization": Seq2SeqPipeline, "lm": CausalLmPipeline, "mlm": MlmPipeline}


def run_distill(cfg: DistillConfig, *, resume: str | None = "never", callbacks=None) -> RunResult:
    """Distill `cfg.distill.teacher` into the spiking student `cfg.model` on `cfg.task` (or on the
    text corpus `cfg.data.source` with masked-LM when there is no task)."""
    if cfg.distill.teacher is None:
        raise ConfigError("distill.teacher is required", hint="pass --teacher DIR or set distill.teacher")
    pipeline = PIPELINES[cfg.task_family](cfg, "distill", distill=cfg.distill)
    return run_training(pipeline, resume=resume, callbacks=callbacks)
