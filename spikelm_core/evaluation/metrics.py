"""GLUE and ROUGE metrics, computed offline with scikit-learn, SciPy and rouge-score.

Design:

- `evaluate` ships no metric scripts offline, so the GLUE definitions are written out here
  (the Hugging Face GLUE metric's definitions): CoLA Matthews correlation; STS-B Pearson and Spearman on
  float predictions; MRPC and QQP accuracy and F1 of the positive class 1; every other task
  accuracy. MNLI is scored per split: the caller passes matched and mismatched predictions
  separately and gets accuracy for each.
- GLUE values are fractions in [0, 1] (or [-1, 1] for correlations), with the keys of the
  Hugging Face GLUE metric (`matthews_correlation`, `pearson`, `spearmanr`, `accuracy`, `f1`).
  ROUGE values are F-measures x 100, as summarisation papers report them.
- A correlation that is undefined because one side is constant (a fresh model predicting one
  class or one score) is reported as 0.0, the convention scikit-learn uses for Matthews, not
  NaN: a NaN first evaluation would stick as the Trainer's "best" metric forever. Non-finite
  predictions (a model whose weights just overflowed) give 0.0 too, for the same reason.
- rougeLsum splits sentences on "\\n" only (rouge-score's default); nltk's punkt data is not
  needed. Put one sentence per line in both predictions and references.
- Bad inputs (length mismatch, logits where labels are expected) are programming errors and
  raise ValueError; an unknown task is a ConfigError listing the valid ones.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from spikelm_core.data.glue import get_glue_task

__all__ = [
    "glue_metrics",
    "primary_metric",
    "predictions_from_logits",
    "glue_compute_metrics",
    "rouge_intervals",
    "rouge_scores",
    "ROUGE_TYPES",
    "LOWER_IS_BETTER",
    "display_name",
    "display_scale",
    "higher_is_better",
]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
#: metrics where lower is better (every other: higher)
LOWER_IS_BETTER = frozenset({"perplexity", "nll", "loss"})


def higher_is_better(name: str | None) -> bool:
    """Whether a larger value of metric `name` is better (False for perplexity and losses)."""
    return name not in LOWER_IS_BETTER


def display_scale(name: str | None) -> float:
    """The factor a metric is shown with: 100 for fractions (accuracy, F1, correlations), 1 for
    ROUGE (already x 100) and for perplexity and losses."""
    return 1.0 if name in ROUGE_TYPES or name in LOWER_IS_BETTER else 100.0


def display_name(name: str | None) -> str:
    """A metric's column or axis label: 'accuracy x 100', 'rougeL', 'perplexity (lower is better)'."""
    label = name or "metric"
    if display_scale(name) != 1.0:
        label += " x 100"
    return label if higher_is_better(name) else f"{label} (lower is better)"


def primary_metric(task: str) -> str:
    """The model-selection key: 'matthews_correlation' (CoLA), 'pearson' (STS-B), else 'accuracy'."""
    return get_glue_task(task).primary_metric


def _vectors(predictions: Any, references: Any) -> tuple[np.ndarray, np.ndarray]:
    preds, refs = np.asarray(predictions), np.asarray(references)
    if preds.ndim != 1 or refs.ndim != 1:
        raise ValueError(
            f"expected 1-D predictions and references, got shapes {preds.shape} and {refs.shape}"
            " (for logits, call predictions_from_logits first)"
        )
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")
    if len(preds) == 0:
        raise ValueError("no predictions to score")
    return preds, refs


def _class_ids(values: np.ndarray, what: str) -> np.ndarray:
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    if values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    raise ValueError(f"{what} must be class ids (integers), got dtype {values.dtype}")


def _correlation(kind: str, preds: np.ndarray, refs: np.ndarray) -> float:
    from scipy import stats

    if not (np.isfinite(preds).all() and np.isfinite(refs).all()) or np.ptp(preds) == 0 or np.ptp(refs) == 0:
        return 0.0  # undefined; see the module docstring
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.pearsonr(preds, refs) if kind == "pearson" else stats.spearmanr(preds, refs)
    return float(result.statistic)


def glue_metrics(
    task: str, predictions: Sequence[Any] | np.ndarray, references: Sequence[Any] | np.ndarray
) -> dict[str, float]:
    """GLUE dev metrics for one task (and, for MNLI, one split), as GLUE defines them.

    predictions: class ids, or float scores for STS-B (see `predictions_from_logits`).
    references: gold class ids or scores, in the same order.
    Returns e.g. {'accuracy': 0.9, 'f1': 0.91} (MRPC, QQP), {'pearson': .., 'spearmanr': ..}
    (STS-B), {'matthews_correlation': ..} (CoLA), {'accuracy': ..} otherwise.
    """
    spec = get_glue_task(task)
    preds, refs = _vectors(predictions, references)
    if spec.is_regression:
        preds, refs = preds.astype(np.float64), refs.astype(np.float64)
        return {"pearson": _correlation("pearson", preds, refs), "spearmanr": _correlation("spearman", preds, refs)}

    preds, refs = _class_ids(preds, "predictions"), _class_ids(refs, "references")
    out: dict[str, float] = {}
    for name in spec.metrics:
        if name == "accuracy":
            out[name] = float(np.mean(preds == refs))
        elif name == "f1":
            from sklearn.metrics import f1_score

            out[name] = float(f1_score(refs, preds, pos_label=1, average="binary", zero_division=0.0))
        elif name == "matthews_correlation":
            from sklearn.metrics import matthews_corrcoef

            out[name] = float(matthews_corrcoef(refs, preds))
        else:  # pragma: no cover - registry and this function must agree
            raise AssertionError(f"no implementation for metric {name!r}")
    return out


def predictions_from_logits(task: str, logits: Any) -> np.ndarray:
    """Model outputs -> what `glue_metrics` expects: argmax class ids, or the squeezed score
    for STS-B. Accepts a tensor/array of shape [N, C] (or [N] / [N, 1] for regression), or a
    tuple whose first item is that (as `Trainer` hands over extra outputs)."""
    spec = get_glue_task(task)
    if isinstance(logits, tuple):  # (logits, hidden states, ...) from Trainer.predict
        logits = logits[0]
    if hasattr(logits, "detach"):  # a torch tensor
        logits = logits.detach().float().cpu().numpy()
    array = np.asarray(logits)
    if spec.is_regression:
        if array.ndim == 2 and array.shape[-1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise ValueError(f"regression outputs must have shape [N] or [N, 1], got {array.shape}")
        return array.astype(np.float64)
    if array.ndim != 2:
        raise ValueError(f"classification logits must have shape [N, num_labels], got {array.shape}")
    return array.argmax(axis=-1).astype(np.int64)


def glue_compute_metrics(task: str) -> Callable[[Any], dict[str, float]]:
    """A `compute_metrics` for `Trainer`: EvalPrediction (or (logits, labels)) -> glue_metrics."""
    get_glue_task(task)  # fail now, not at the first evaluation

    def compute(eval_pred: Any) -> dict[str, float]:
        if hasattr(eval_pred, "predictions"):
            logits, labels = eval_pred.predictions, eval_pred.label_ids
        else:
            logits, labels = eval_pred
        if isinstance(labels, tuple):
            labels = labels[0]
        labels = np.asarray(labels)
        if get_glue_task(task).is_regression and labels.ndim == 2 and labels.shape[-1] == 1:
            labels = labels[:, 0]
        return glue_metrics(task, predictions_from_logits(task, logits), labels)

    return compute


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F-measure x 100 over pairs (Porter stemming, rouge-score tokens).

    For rougeLsum, sentences are the "\\n"-separated lines of each text.
    """
    pairs = _rouge_pairs(predictions, references)
    return {name: 100.0 * sum(score[name].fmeasure for score in pairs) / len(pairs) for name in ROUGE_TYPES}


#: the bootstrap of `rouge_intervals`: resamples, confidence and seed (fixed: the same run, the same interval)
ROUGE_RESAMPLES, ROUGE_CONFIDENCE, ROUGE_SEED = 1000, 0.95, 0


def rouge_intervals(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Per ROUGE type, the [low, high] bootstrap interval (x 100) of its mean F-measure: rouge-score's
    `BootstrapAggregator` (`ROUGE_RESAMPLES` resamples of the pairs, `ROUGE_CONFIDENCE` percentile
    interval), under a fixed seed; numpy's global random state is left as it was."""
    from rouge_score import scoring

    pairs = _rouge_pairs(predictions, references)
    state = np.random.get_state()
    try:
        np.random.seed(ROUGE_SEED)
        aggregator = scoring.BootstrapAggregator(confidence_interval=ROUGE_CONFIDENCE, n_samples=ROUGE_RESAMPLES)
        for score in pairs:
            aggregator.add_scores(score)
        result = aggregator.aggregate()
    finally:
        np.random.set_state(state)
    return {name: [100.0 * result[name].low.fmeasure, 100.0 * result[name].high.fmeasure] for name in ROUGE_TYPES}


def _rouge_pairs(predictions: Sequence[str], references: Sequence[str]) -> list[dict]:
    """rouge-score's scores of each (prediction, reference) pair, after checking the inputs."""
    from rouge_score import rouge_scorer

    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    bad = [i for i, t in enumerate(predictions + references) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"predictions and references must be strings (first bad item at {bad[0]})")
    with _no_root_logging_setup():
        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
        return [scorer.score(reference, prediction) for prediction, reference in zip(predictions, references)]  # (target, prediction)


@contextlib.contextmanager
def _no_root_logging_setup():
    """rouge-score logs through absl, which configures the root logger (`logging.basicConfig`) when it
    has no handler: every later warning of an application's own logger would then print twice. A
    handler that drops records keeps the root logger as the application left it."""
    if logging.root.handlers:
        yield
        return
    guard = logging.NullHandler()
    logging.root.addHandler(guard)
    try:
        yield
    finally:
        logging.root.removeHandler(guard)
