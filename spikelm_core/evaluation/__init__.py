"""Task metrics computed offline: GLUE (`glue_metrics`), ROUGE (`rouge_scores`), perplexity
(module `perplexity`: `score_windows` over the windows of `lm_windows`) and held-out masked-LM scores
(module `masked_lm`: `score_masked_lm`)."""

from spikelm_core.evaluation.metrics import (
    glue_compute_metrics,
    glue_metrics,
    predictions_from_logits,
    primary_metric,
    rouge_scores,
)
from spikelm_core.evaluation.masked_lm import score_masked_lm
from spikelm_core.evaluation.perplexity import lm_windows, score_windows

__all__ = [
    "glue_compute_metrics",
    "glue_metrics",
    "lm_windows",
    "predictions_from_logits",
    "primary_metric",
    "rouge_scores",
    "score_masked_lm",
    "score_windows",
]
