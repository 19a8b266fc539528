"""Which evaluation scores which task family: the one choice `run_eval` and the firing picture share."""

from __future__ import annotations

from ..errors import ConfigError
from .causal_lm import CausalLmEvaluation
from .glue import GlueEvaluation
from .mlm import MaskedLmEvaluation
from .pipeline import Evaluation
from .seq2seq import Seq2SeqEvaluation

EVALUATIONS = {"glue": GlueEvaluation, "summarization": Seq2SeqEvaluation, "lm": CausalLmEvaluation}
"""Task family (`cfg.task_family`) -> its `pipeline.Evaluation` (GLUE dev metrics, beam search + ROUGE,
perplexity of a causal LM). A masked LM (BERT) on a language-modelling task is scored by
`mlm.MaskedLmEvaluation` instead (`evaluation_for`)."""

NO_TASK = "eval needs a task: set data.task (or --task), e.g. sst2, xsum or wikitext2"


def evaluation_for(cfg, **extra) -> Evaluation:
    """The evaluation of `cfg`: its task family's, except that a BERT-family model on a
    language-modelling task (wikitext2) gets held-out masked-LM scores instead of perplexity.
    `extra` goes to a language-modelling evaluation (its progress callback)."""
    if cfg.task_family not in EVALUATIONS:
        raise ConfigError(NO_TASK)
    if cfg.task_family != "lm":
        return EVALUATIONS[cfg.task_family](cfg)
    return (MaskedLmEvaluation if MaskedLmEvaluation.takes(cfg.model) else CausalLmEvaluation)(cfg, **extra)


__all__ = ["EVALUATIONS", "NO_TASK", "evaluation_for"]
