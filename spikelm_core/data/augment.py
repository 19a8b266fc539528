"""TinyBERT-style data augmentation for distillation on small tasks (`distill.augment`).

TinyBERT (Jiao et al., 2020) grows a task's training set by copies of each example in which every
word is replaced, with probability `word_prob`, by one of its `neighbours` nearest candidates (from
BERT's masked-LM predictions for one-piece words, GloVe neighbours otherwise); the teacher labels the
copies. The bundled MiniLM has no trained masked-LM head, so here the candidates of a one-piece word
are its nearest one-piece words in the teacher's own input-embedding space (cosine similarity), and
words of several pieces are kept. Lengths do not change, so `attention_mask` and `token_type_ids` are
those of the original. The copies carry `teacher_labelled = 1`: their hard label is the teacher's
prediction, set per batch by the distillation trainer (originals carry 0 and keep their label).

Everything is deterministic under `seed`: copy c of the dataset draws from its own generator
`numpy.random.default_rng([seed, c])`, whatever the number of copies or processes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .glue import quiet_progress

#: the column marking augmented copies, read (and removed) by the distillation trainer
FLAG = "teacher_labelled"


def word_vocabulary(tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
    """(one-piece word mask, continuation mask) over the vocabulary of a WordPiece tokenizer.

    A one-piece word is a token of letters only (not special, not a '##' continuation piece); only
    such tokens are replaced, and only by such tokens.
    """
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    words, continuation = np.zeros(size, bool), np.zeros(size, bool)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token, i in vocab.items():
        if token.startswith("##"):
            continuation[i] = True
        elif token.isalpha() and i not in special:
            words[i] = True
    if not continuation.any():
        raise ConfigError("distill.augment needs a WordPiece tokenizer ('##' continuation pieces), "
                          f"and {type(tokenizer).__name__} has none",
                          hint="set distill.augment.copies: 0 (and min_examples: null) for this model")
    return words, continuation


def neighbour_table(embeddings: torch.Tensor, words: np.ndarray, k: int, *, chunk: int = 2048) -> np.ndarray:
    """[V, k] ids of the `k` one-piece words nearest (cosine) to each one-piece word; -1 elsewhere.

    A word is never its own neighbour."""
    emb = torch.nn.functional.normalize(embeddings.detach().float(), dim=-1)
    ids = torch.from_numpy(np.flatnonzero(words[: emb.shape[0]]))
    if len(ids) <= k:  # before the [V, k] table is allocated: a large k would not fit in memory
        raise ConfigError(f"distill.augment.neighbours is {k} but the vocabulary has only {len(ids)} one-piece words",
                          hint="lower distill.augment.neighbours")
    table = np.full((emb.shape[0], k), -1, dtype=np.int64)
    cand = emb[ids]  # [W, D]
    for start in range(0, len(ids), chunk):
        rows = ids[start:start + chunk]
        sims = emb[rows] @ cand.T  # [c, W]
        sims[torch.arange(len(rows)), torch.arange(start, start + len(rows))] = -float("inf")
        top = sims.topk(k, dim=-1).indices
        table[rows.numpy()] = ids[top].numpy()
    return table


def replace_words(input_ids: list[int], table: np.ndarray, continuation: np.ndarray, word_prob: float,
                  rng: np.random.Generator) -> list[int]:
    """One augmented copy of `input_ids`: each one-piece word (a token with neighbours, not followed by
    a continuation piece) replaced with probability `word_prob` by a uniformly drawn neighbour.

    Two draws per token, made for every token whatever it is, so the stream of random numbers does
    not depend on which tokens are words."""
    ids = np.asarray(input_ids, dtype=np.int64)
    n = len(ids)
    replace = rng.random(n) < word_prob
    pick = rng.integers(0, table.shape[1], n)
    following = np.zeros(n, bool)
    following[:-1] = continuation[ids[1:]]
    eligible = (table[ids, 0] >= 0) & ~following
    out = ids.copy()
    where = replace & eligible
    out[where] = table[ids[where], pick[where]]
    return out.tolist()


def copies_for(examples: int, copies: int, min_examples: int | None) -> int:
    """Augmented copies per example: `copies`, or more when `min_examples` asks for more rows."""
    if min_examples is not None and examples > 0:
        copies = max(copies, math.ceil(min_examples / examples) - 1)
    return copies


def augment_dataset(dataset, tokenizer, embeddings: torch.Tensor, *, copies: int, word_prob: float,
                    neighbours: int, seed: int):
    """`dataset` (tokenised: input_ids, ...) followed by `copies` augmented copies of it, with the
    `teacher_labelled` column (0 for the originals, 1 for the copies). Originals come first, in
    order, so the first batch (calibration) is real data."""
    import datasets

    flagged = dataset.add_column(FLAG, [0] * len(dataset))
    if copies <= 0:
        return flagged
    words, continuation = word_vocabulary(tokenizer)
    table = neighbour_table(embeddings, words, neighbours)
    parts = [flagged]
    originals = list(dataset["input_ids"])
    with quiet_progress():
        for c in range(copies):
            rng = np.random.default_rng([seed, c])
            ids = [replace_words(row, table, continuation, word_prob, rng) for row in originals]
            copy = dataset.remove_columns("input_ids").add_column("input_ids", ids)
            copy = copy.add_column(FLAG, [1] * len(dataset)).select_columns(flagged.column_names)
            parts.append(copy.cast(flagged.features))
        return datasets.concatenate_datasets(parts)
