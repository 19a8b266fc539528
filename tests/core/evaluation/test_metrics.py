"""GLUE metrics and ROUGE against values worked out by hand from their definitions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from spikelm_core.data.glue import GLUE_TASK_NAMES
from spikelm_core.errors import ConfigError
from spikelm_core.evaluation import (
    glue_compute_metrics,
    glue_metrics,
    predictions_from_logits,
    primary_metric,
    rouge_scores,
)

# ------------------------------------------------------------------------------ GLUE


def test_matthews_by_hand():
    # refs 1 1 1 0 0 0 / preds 1 1 0 0 0 1: TP=2 FN=1 TN=2 FP=1
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (4 - 1) / sqrt(3*3*3*3) = 1/3
    out = glue_metrics("cola", [1, 1, 0, 0, 0, 1], [1, 1, 1, 0, 0, 0])
    assert out == {"matthews_correlation": pytest.approx(1 / 3)}


def test_matthews_of_constant_predictions_is_zero():
    assert glue_metrics("cola", [1, 1, 1, 1], [1, 0, 1, 0]) == {"matthews_correlation": 0.0}


def test_accuracy_and_f1_of_class_1_by_hand():
    # refs 1 0 1 1 0 / preds 1 1 1 0 0: TP=2 FP=1 FN=1 -> P = R = 2/3, F1 = 2/3; 3 of 5 right
    for task in ("mrpc", "qqp"):
        out = glue_metrics(task, [1, 1, 1, 0, 0], [1, 0, 1, 1, 0])
        assert out == {"accuracy": pytest.approx(0.6), "f1": pytest.approx(2 / 3)}


def test_f1_is_of_the_positive_class_only():
    # refs 0 0 0 1 / preds 0 0 0 0: 75 % accuracy, but no true positive -> F1 0
    assert glue_metrics("mrpc", [0, 0, 0, 0], [0, 0, 0, 1]) == {"accuracy": 0.75, "f1": 0.0}


def test_pearson_by_hand():
    # x = 1 2 3 4, y = 2 4 5 9: dx = -1.5 -.5 .5 1.5, dy = -3 -1 0 4
    # sum dx*dy = 11, sum dx^2 = 5, sum dy^2 = 26 -> r = 11 / sqrt(130)
    out = glue_metrics("stsb", [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 5.0, 9.0])
    assert out["pearson"] == pytest.approx(11 / math.sqrt(130))
    assert out["spearmanr"] == pytest.approx(1.0)  # same order


def test_spearman_by_hand():
    # ranks of preds 1 2 3 4, of refs 1 3 2 4: d = 0 -1 1 0, sum d^2 = 2 -> 1 - 6*2 / (4*15) = 0.8
    out = glue_metrics("stsb", [0.5, 1.7, 2.2, 4.9], [1.0, 3.2, 2.5, 4.0])
    assert out["spearmanr"] == pytest.approx(0.8)


def test_constant_regression_predictions_score_zero_not_nan():
    assert glue_metrics("stsb", [2.5, 2.5, 2.5], [1.0, 2.0, 5.0]) == {"pearson": 0.0, "spearmanr": 0.0}
    for bad in (float("nan"), float("inf")):  # weights that overflowed: 0.0 as well, never a NaN "best"
        assert glue_metrics("stsb", [1.0, bad, 2.0], [1.0, 2.0, 3.0]) == {"pearson": 0.0, "spearmanr": 0.0}


@pytest.mark.parametrize("task", ["sst2", "mnli", "qnli", "rte"])
def test_accuracy_tasks(task):
    assert glue_metrics(task, [0, 1, 1, 0], [0, 1, 0, 0]) == {"accuracy": 0.75}


def test_mnli_three_classes_and_array_inputs():
    out = glue_metrics("mnli-mm", np.array([0, 1, 2, 2]), torch.tensor([0, 1, 2, 1]))
    assert out == {"accuracy": 0.75}


def test_integral_float_class_ids_are_accepted():
    assert glue_metrics("rte", np.array([1.0, 0.0]), [1, 0]) == {"accuracy": 1.0}


def test_values_are_python_floats():
    out = glue_metrics("mrpc", [1, 0], [1, 0])
    assert all(type(v) is float for v in out.values())


def test_primary_metric():
    assert {t: primary_metric(t) for t in GLUE_TASK_NAMES} == {
        "cola": "matthews_correlation", "sst2": "accuracy", "mrpc": "accuracy", "qqp": "accuracy",
        "stsb": "pearson", "mnli": "accuracy", "qnli": "accuracy", "rte": "accuracy"}


@pytest.mark.parametrize(
    "task, preds, refs, message",
    [
        pytest.param("sst2", [0, 1], [0], "2 predictions but 1 references", id="length"),
        pytest.param("sst2", [], [], "no predictions", id="empty"),
        pytest.param("sst2", [[0.1, 0.9]], [1], "predictions_from_logits", id="logits"),
        pytest.param("sst2", [0.4, 0.6], [0, 1], "class ids", id="fractional"),
    ],
)
def test_bad_inputs(task, preds, refs, message):
    with pytest.raises(ValueError, match=message):
        glue_metrics(task, preds, refs)


def test_unknown_task():
    with pytest.raises(ConfigError, match="unknown GLUE task 'sst3'"):
        glue_metrics("sst3", [0], [0])
    with pytest.raises(ConfigError, match="GLUE's WNLI is not supported"):
        glue_metrics("wnli", [0], [0])


# -------------------------------------------------------------------- logits -> preds


def test_predictions_from_logits():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
    assert predictions_from_logits("sst2", logits).tolist() == [1, 0, 1]
    assert predictions_from_logits("sst2", (torch.tensor(logits), "hidden")).tolist() == [1, 0, 1]
    assert predictions_from_logits("mnli", [[0, 0, 1.0], [2.0, 0, 0]]).tolist() == [2, 0]
    scores = predictions_from_logits("stsb", torch.tensor([[1.5], [4.25]]))
    assert scores.dtype == np.float64 and scores.tolist() == [1.5, 4.25]
    assert predictions_from_logits("stsb", [1.0, 2.0]).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match=r"\[N, num_labels\]"):
        predictions_from_logits("sst2", [0.3, 0.7])
    with pytest.raises(ValueError, match=r"\[N\] or \[N, 1\]"):
        predictions_from_logits("stsb", [[0.3, 0.7]])


def test_compute_metrics_for_trainer():
    compute = glue_compute_metrics("mrpc")
    pred = SimpleNamespace(predictions=np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0]]), label_ids=np.array([0, 1, 0]))
    assert compute(pred) == {"accuracy": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3)}
    regression = glue_compute_metrics("stsb")
    out = regression((np.array([[1.0], [2.0], [3.0]]), np.array([1.0, 2.0, 3.0])))
    assert out == {"pearson": pytest.approx(1.0), "spearmanr": pytest.approx(1.0)}
    with pytest.raises(ConfigError):
        glue_compute_metrics("nope")


# ------------------------------------------------------------------------------ ROUGE


def test_rouge_by_hand():
    # tokens: pred "the cat sat on the mat" (6), ref "the cat sat" (3)
    # rouge1: overlap 3 -> P 3/6, R 3/3, F = 2/3; rouge2: bigrams 5 vs 2, overlap 2 -> P 2/5,
    # R 1, F = 2*0.4/1.4 = 4/7; rougeL: LCS 3 -> F = 2/3; rougeLsum on one line = rougeL
    out = rouge_scores(["the cat sat on the mat"], ["the cat sat"])
    assert out == {
        "rouge1": pytest.approx(100 * 2 / 3),
        "rouge2": pytest.approx(100 * 4 / 7),
        "rougeL": pytest.approx(100 * 2 / 3),
        "rougeLsum": pytest.approx(100 * 2 / 3),
    }


def test_rouge_lsum_uses_newline_sentences():
    # pred "red fox \n big cat", ref "big cat \n red fox": same unigrams (R1 100); bigrams
    # {red fox, fox big, big cat} vs {big cat, cat red, red fox} -> 2/3; LCS over the whole text
    # is 2 of 4 tokens (RL 50), but per sentence each reference line is matched whole (RLsum 100)
    out = rouge_scores(["red fox\nbig cat"], ["big cat\nred fox"])
    assert out == {
        "rouge1": pytest.approx(100.0),
        "rouge2": pytest.approx(100 * 2 / 3),
        "rougeL": pytest.approx(50.0),
        "rougeLsum": pytest.approx(100.0),
    }


def test_rouge_stems_and_averages():
    # Porter stemming makes "cats running" match "cat run" exactly (100); mean with a 0 pair = 50
    out = rouge_scores(["Cats running!", "zzz"], ["cat run", "yyy"])
    assert out["rouge1"] == pytest.approx(50.0) and out["rougeLsum"] == pytest.approx(50.0)


def test_rouge_bad_inputs():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        rouge_scores([], [])
    with pytest.raises(ValueError, match="must be strings"):
        rouge_scores([None], ["a"])  # type: ignore[list-item]


def test_rouge_leaves_the_root_logger_unconfigured(monkeypatch):
    """rouge-score's absl logging would call logging.basicConfig on a bare root logger, and the CLI's
    warnings would print twice."""
    import logging

    from spikelm_core.evaluation.metrics import rouge_scores

    monkeypatch.setattr(logging.root, "handlers", [])
    rouge_scores(["the cat sat"], ["a cat sat down"])
    assert logging.root.handlers == []
