"""Held-out masked-LM scores: the masked tokens' loss, accuracy and perplexity (and next-sentence
accuracy with NSP) of a BERT-style model over a dataset of `data.text.mlm_dataset`.

The masks are those of the training collator (`training.mlm.SeededMaskingCollator`: 15 % of real
tokens, 80/10/10, special tokens never), drawn with a fixed seed (`HELD_OUT_MASK_SEED`) and epoch 0,
so two runs scored on the same text and tokenizer are scored on the same masked positions, whatever
their training seeds. Every number is a mean over tokens (or pairs), not over batches, so the batch
size does not change it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .perplexity import perplexity

HELD_OUT_MASK_SEED = 0
"""The masks' seed for held-out text: one set of masked positions for every run."""


@dataclass(frozen=True)
class MaskedLmScore:
    """Sums over the masked tokens (and NSP pairs) of one pass; the means are properties."""

    nll: float
    """Sum of -log p(original token) over the masked positions."""
    correct: int
    """Masked positions whose arg-max prediction is the original token."""
    masked_tokens: int
    sequences: int
    nsp_correct: int | None = None
    """Pairs whose next-sentence prediction is right (None without NSP)."""
    seconds: float = 0.0

    @property
    def loss(self) -> float:
        """Mean cross-entropy per masked token (nats)."""
        return self.nll / self.masked_tokens

    @property
    def accuracy(self) -> float:
        return self.correct / self.masked_tokens

    @property
    def perplexity(self) -> float:
        """exp(loss): the masked tokens' perplexity (what run_mlm-style scripts report; not the
        pseudo-perplexity that masks every token in turn)."""
        return perplexity(self.nll, self.masked_tokens)

    @property
    def nsp_accuracy(self) -> float | None:
        return None if self.nsp_correct is None else self.nsp_correct / self.sequences

    def metrics(self) -> dict[str, float | int]:
        """The scores as a flat dict (metrics.json, the run result)."""
        out: dict[str, float | int] = {"mlm_loss": self.loss, "mlm_accuracy": self.accuracy,
                                       "mlm_perplexity": self.perplexity, "masked_tokens": self.masked_tokens,
                                       "sequences": self.sequences}
        if self.nsp_accuracy is not None:
            out["nsp_accuracy"] = self.nsp_accuracy
        return out


NOTHING_MASKED = "no token of the held-out text was masked (too few real tokens)"


def any_masked(dataset, collator: Callable[[list[dict]], dict[str, torch.Tensor]]) -> bool:
    """Whether `collator` masks any token of `dataset` (read one example at a time, up to the first
    one with a mask: the seeded masks of an example do not depend on its batch)."""
    return any(bool((collator([dataset[i]])["labels"] != -100).any()) for i in range(len(dataset)))


def score_masked_lm(model, dataset, collator: Callable[[list[dict]], dict[str, torch.Tensor]], *,
                    batch_size: int = 32, progress: Callable[[int, int, int, float], None] | None = None
                    ) -> MaskedLmScore:
    """Score `model` (a masked-LM or pretraining head) on every example of `dataset`, masked by
    `collator` (eval mode, no grad). `progress(sequences done, sequences in all, real tokens read,
    seconds so far)` is called after each batch. Raises ValueError when no token gets masked."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll = torch.zeros((), dtype=torch.float64)
    correct = masked = pairs = read = 0
    nsp_correct: int | None = None
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for first in range(0, len(dataset), batch_size):
                rows = [dataset[i] for i in range(first, min(first + batch_size, len(dataset)))]
                batch = {k: v.to(device) for k, v in collator(rows).items()}
                labels = batch.pop("labels")
                nsp_labels = batch.pop("next_sentence_label", None)
                out: Any = model(**batch)
                logits = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
                where = labels != -100
                scored = logits[where].float()  # only the masked positions: never the whole vocabulary x length
                targets = labels[where]
                nll += F.cross_entropy(scored, targets, reduction="sum").double().cpu()
                correct += int((scored.argmax(-1) == targets).sum())
                masked += int(where.sum())
                if nsp_labels is not None:
                    nsp_correct = (nsp_correct or 0) + int(
                        (out.seq_relationship_logits.argmax(-1) == nsp_labels).sum())
                pairs += len(rows)
                if progress is not None:
                    read += int(batch["attention_mask"].sum())
                    progress(pairs, len(dataset), read, time.perf_counter() - start)
    finally:
        model.train(was_training)
    if masked == 0:
        raise ValueError(NOTHING_MASKED)
    return MaskedLmScore(float(nll), correct, masked, pairs, nsp_correct, time.perf_counter() - start)


__all__ = ["HELD_OUT_MASK_SEED", "NOTHING_MASKED", "MaskedLmScore", "any_masked", "score_masked_lm"]
