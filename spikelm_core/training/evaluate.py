"""`run_eval`: score a saved model on a task's dev split(s) and measure its firing rates
(GLUE: `glue.GlueEvaluation`; xsum/cnn_dm: beam search + ROUGE, `seq2seq.Seq2SeqEvaluation`;
wikitext2: perplexity of a causal LM, `causal_lm.CausalLmEvaluation`, or a masked LM's held-out
masked-token scores, `mlm.MaskedLmEvaluation`). `run_generation`: eval's
generation mode (`--prompt`), a causal LM's continuation of one prompt."""

from __future__ import annotations

from ..config import EvalConfig
from ..errors import ConfigError
from .causal_lm import Progress, run_generation
from .families import evaluation_for
from .pipeline import run_evaluation
from .results import EvalResult


def run_eval(cfg: EvalConfig, *, progress: Progress | None = None,
             firing_picture: dict[str, str] | None = None) -> EvalResult:
    """Evaluate `cfg.model` on `cfg.task`; write eval_results.json to `cfg.out_dir` when set.

    progress: called as scoring goes (language modelling only): progress(what, windows done,
    windows in all, tokens read, seconds), with unit='sequences' for a masked LM (`causal_lm.Progress`). firing_picture: where a firing picture of this model
    went ({'png': ..., 'data': ...}), recorded in the result."""
    if cfg.prompt is not None:
        raise ConfigError("this eval config has a prompt: generate with run_generation, or drop prompt to score a task")
    return run_evaluation(evaluation_for(cfg, progress=progress), firing_picture=firing_picture)


__all__ = ["run_eval", "run_generation"]
