"""Task metrics computed offline: GLUE (`glue_metrics`) and ROUGE (`rouge_scores`)."""

from spikelm_core.evaluation.metrics import (
    glue_compute_metrics,
    glue_metrics,
    predictions_from_logits,
    primary_metric,
    rouge_scores,
)

__all__ = [
    "glue_compute_metrics",
    "glue_metrics",
    "predictions_from_logits",
    "primary_metric",
    "rouge_scores",
]
