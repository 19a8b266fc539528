"""Which evaluation scores which task family: the one map `run_eval` and the firing picture share."""

from __future__ import annotations

from .causal_lm import CausalLmEvaluation
from .glue import GlueEvaluation
from .seq2seq import Seq2SeqEvaluation

EVALUATIONS = {"glue": GlueEvaluation, "summarization": Seq2SeqEvaluation, "lm": CausalLmEvaluation}
"""Task family (`cfg.task_family`) -> its `pipeline.Evaluation` (GLUE dev metrics, beam search + ROUGE,
perplexity of a causal LM)."""

NO_TASK = "eval needs a task: set data.task (or --task), e.g. sst2, xsum or wikitext2"

__all__ = ["EVALUATIONS", "NO_TASK"]
