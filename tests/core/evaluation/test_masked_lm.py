"""Held-out masked-LM scores (`spikelm_core.evaluation.masked_lm`) against a hand computation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from spikelm_core.evaluation.masked_lm import MaskedLmScore, score_masked_lm

VOCAB = 5


class _TableModel(torch.nn.Module):
    """Logits that depend on the input token alone (a lookup table): the score is computable by hand.
    With `nsp`, a pretraining head whose next-sentence logits say 'continuation' for every pair."""

    def __init__(self, table: torch.Tensor, nsp: bool = False):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone())
        self.nsp = nsp

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        logits = self.table[input_ids]
        if self.nsp:
            pairs = torch.tensor([[1.0, 0.0]]).expand(input_ids.shape[0], 2)
            return SimpleNamespace(prediction_logits=logits, seq_relationship_logits=pairs)
        return SimpleNamespace(logits=logits)


def _fixed_masks(rows):
    """A collator with hand-chosen masks: the input shows token 4 ([MASK]) where labels name the original."""
    ids = torch.tensor([r["input_ids"] for r in rows])
    labels = torch.tensor([r["labels"] for r in rows])
    batch = {"input_ids": torch.where(labels != -100, torch.full_like(ids, 4), ids), "labels": labels,
             "attention_mask": torch.ones_like(ids)}
    if "next_sentence_label" in rows[0]:
        batch["next_sentence_label"] = torch.tensor([r["next_sentence_label"] for r in rows])
    return batch


ROWS = [
    {"input_ids": [0, 1, 2, 3], "labels": [-100, 1, -100, 3], "next_sentence_label": 0},
    {"input_ids": [0, 2, 2, 3], "labels": [-100, -100, 2, -100], "next_sentence_label": 1},
    {"input_ids": [0, 3, 1, 3], "labels": [-100, 3, 1, -100], "next_sentence_label": 0},
]


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_loss_accuracy_and_perplexity_by_hand(batch_size):
    table = torch.zeros(VOCAB, VOCAB)
    table[4] = torch.tensor([0.0, 2.0, 1.0, 0.5, 0.0])  # every masked position reads token 4: one distribution
    score = score_masked_lm(_TableModel(table, nsp=True), ROWS, _fixed_masks, batch_size=batch_size)
    log_p = torch.log_softmax(table[4], -1)
    targets = [1, 3, 2, 3, 1]  # the labels, row by row
    nll = -sum(float(log_p[t]) for t in targets)
    assert score.masked_tokens == 5 and score.sequences == 3
    assert score.loss == pytest.approx(nll / 5)
    assert score.perplexity == pytest.approx(math.exp(nll / 5))
    assert score.accuracy == pytest.approx(2 / 5)  # the arg-max, token 1, is right twice
    assert score.nsp_accuracy == pytest.approx(2 / 3)  # 'continuation' (0) for every pair; two are
    assert set(score.metrics()) == {"mlm_loss", "mlm_accuracy", "mlm_perplexity", "masked_tokens", "sequences",
                                    "nsp_accuracy"}


def test_without_nsp_and_model_mode_restored():
    model = _TableModel(torch.eye(VOCAB))
    model.train()
    score = score_masked_lm(model, [{k: v for k, v in r.items() if k != "next_sentence_label"} for r in ROWS],
                            _fixed_masks, batch_size=2)
    assert score.nsp_accuracy is None and "nsp_accuracy" not in score.metrics()
    assert model.training  # eval mode only while scoring


def test_no_masked_token_is_an_error():
    rows = [{"input_ids": [0, 1], "labels": [-100, -100]}]
    with pytest.raises(ValueError, match="no token of the held-out text was masked"):
        score_masked_lm(_TableModel(torch.eye(VOCAB)), rows, _fixed_masks)


def test_an_overflowing_loss_reads_as_infinite_perplexity():
    assert MaskedLmScore(nll=1e6, correct=0, masked_tokens=1, sequences=1).perplexity == math.inf
