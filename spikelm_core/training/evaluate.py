"""`run_eval`: score a saved model on a task's dev split(s) and measure its firing rates
(GLUE: `glue.GlueEvaluation`; xsum/cnn_dm: beam search + ROUGE, `seq2seq.Seq2SeqEvaluation`)."""

from __future__ import annotations

from ..config import EvalConfig
from ..errors import ConfigError
from .glue import GlueEvaluation
from .pipeline import run_evaluation
from .results import EvalResult
from .seq2seq import Seq2SeqEvaluation


def run_eval(cfg: EvalConfig) -> EvalResult:
    """Evaluate `cfg.model` on `cfg.task`; write eval_results.json to `cfg.out_dir` when set."""
    evaluations = {"glue": GlueEvaluation, "summarization": Seq2SeqEvaluation}
    if cfg.task_family not in evaluations:
        raise ConfigError("eval needs a task: set data.task (or --task), e.g. sst2 or xsum")
    return run_evaluation(evaluations[cfg.task_family](cfg))
