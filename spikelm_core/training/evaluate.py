"""`run_eval`: score a saved model on a task's dev split(s) and measure its firing rates
(GLUE: `glue.GlueEvaluation`; xsum/cnn_dm: beam search + ROUGE, `seq2seq.Seq2SeqEvaluation`;
wikitext2: perplexity of a causal LM, `causal_lm.CausalLmEvaluation`). `run_generation`: eval's
generation mode (`--prompt`), a causal LM's continuation of one prompt."""

from __future__ import annotations

from ..config import EvalConfig
from ..errors import ConfigError
from .causal_lm import Progress, run_generation
from .families import EVALUATIONS, NO_TASK
from .pipeline import run_evaluation
from .results import EvalResult


def run_eval(cfg: EvalConfig, *, progress: Progress | None = None,
             firing_picture: dict[str, str] | None = None) -> EvalResult:
    """Evaluate `cfg.model` on `cfg.task`; write eval_results.json to `cfg.out_dir` when set.

    progress: called as scoring goes (language modelling only): progress(what, windows done,
    windows in all, tokens read, seconds). firing_picture: where a firing picture of this model
    went ({'png': ..., 'data': ...}), recorded in the result."""
    if cfg.prompt is not None:
        raise ConfigError("this eval config has a prompt: generate with run_generation, or drop prompt to score a task")
    if cfg.task_family not in EVALUATIONS:
        raise ConfigError(NO_TASK)
    extra = {"progress": progress} if cfg.task_family == "lm" else {}
    return run_evaluation(EVALUATIONS[cfg.task_family](cfg, **extra), firing_picture=firing_picture)


__all__ = ["run_eval", "run_generation"]
