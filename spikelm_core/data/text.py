"""Masked-LM corpora from local text files (offline; e.g. ../shared/data/text/wikitext-2).

A source is a UTF-8 text file or a directory of `*.txt` files (read in sorted order). Blank lines
separate documents. Each document's tokens are packed into full `[CLS] ... [SEP]` sequences of
`max_length` tokens (no padding inside a document; the last piece of a document may be shorter),
as BERT pretraining does. With `nsp=True` every sequence is a pair `[CLS] A [SEP] B [SEP]`: B is
A's continuation (label 0) or, with probability 1/2, a segment from elsewhere in the corpus
(label 1), drawn with a seeded generator so the dataset is the same on every run and rank.
Masking is left to `DataCollatorForLanguageModeling` at batch time.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from ..errors import DataError

#: The shared data beside a checkout (`<checkout>/../shared/data`), found from this file, not from the
#: working directory: the same default calibration text and hints wherever a command runs.
SHARED_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def read_utf8(path: str | Path) -> str:
    """The text of one file; DataError (exit 4) when it cannot be read or is not UTF-8. The one
    reader of plain-text files (corpora, language-modelling splits, calibration text)."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read '{p}': it is not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise DataError(f"cannot read '{p}': {exc}") from None


def text_files(source: str | Path) -> list[Path]:
    """The files a text source names: the file itself, or the sorted `*.txt` files of a directory."""
    p = Path(source).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if f.is_file())
        if not files:
            raise DataError(f"no .txt files in '{p}'", hint="point data.source at a UTF-8 text file or a directory of .txt files")
        return files
    raise DataError(
        f"text corpus '{p}' does not exist",
        hint="point data.source at a UTF-8 text file or a directory of .txt files "
        "(e.g. ../shared/data/text/wikitext-2/valid.txt)",
    )


def read_documents(source: str | Path) -> list[list[str]]:
    """Documents (lists of non-empty lines) of all files of `source`; blank lines split documents."""
    docs: list[list[str]] = []
    for f in text_files(source):
        text = read_utf8(f)
        current: list[str] = []
        for line in text.splitlines():
            if line.strip():
                current.append(line.strip())
            elif current:
                docs.append(current)
                current = []
        if current:
            docs.append(current)
    if not docs:
        raise DataError(f"the text corpus '{source}' is empty")
    return docs


def mlm_dataset(source: str | Path, tokenizer: Any, max_length: int = 128, *, nsp: bool = False,
                subset: int | None = None, seed: int = 0):
    """A `datasets.Dataset` of packed sequences: input_ids, token_type_ids, attention_mask
    (+ next_sentence_label with `nsp`) and `EXAMPLE_INDEX`. `subset` keeps the first N sequences.
    NSP: each piece split in two; half the time (label 1) the second segment is replaced by the
    start of a random piece of another document (blank lines split documents; a corpus of one
    document: another piece of it), as BERT builds its pairs; label 0 = the true continuation."""
    import datasets

    if max_length < (5 if nsp else 3):
        raise DataError(f"data.max_length must be at least {5 if nsp else 3} for masked-LM data, got {max_length}")
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None or tokenizer.mask_token_id is None:
        raise DataError("the tokenizer has no [CLS]/[SEP]/[MASK] tokens; masked-LM needs a BERT-style tokenizer")
    body = max_length - (3 if nsp else 2)
    pieces: list[list[int]] = []
    spans: list[tuple[int, int]] = []  # per piece, its document's [first, last + 1) piece indices
    for doc in read_documents(source):
        ids: list[int] = []
        for line in doc:
            ids.extend(tokenizer(line, add_special_tokens=False)["input_ids"])
        start = len(pieces)
        pieces.extend(ids[i : i + body] for i in range(0, len(ids), body) if ids[i : i + body])
        spans.extend([(start, len(pieces))] * (len(pieces) - start))
    if not pieces:
        raise DataError(f"the text corpus '{source}' holds no tokens")
    unk = tokenizer.unk_token_id
    n_tokens = sum(len(p) for p in pieces)
    n_unk = sum(p.count(unk) for p in pieces) if unk is not None else 0
    if n_tokens and n_unk > n_tokens / 2:
        raise DataError(
            f"the tokenizer maps {n_unk} of {n_tokens} tokens of '{source}' to {tokenizer.unk_token}",
            hint="the tokenizer's vocabulary does not fit this text (special tokens are never masked, so "
            "masked-LM would have nothing to learn); use the tokenizer the model was trained with",
        )
    rows: dict[str, list] = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
    if nsp:
        rows["next_sentence_label"] = []
        rng = random.Random(seed)
        for i, piece in enumerate(pieces):
            if len(piece) < 2:
                continue
            cut = len(piece) // 2
            a, b, label = piece[:cut], piece[cut:], 0
            if len(pieces) > 1 and rng.random() < 0.5:
                first, end = spans[i]
                if len(pieces) > end - first:  # as BERT: the random second segment comes from another document
                    j = rng.randrange(len(pieces) - (end - first))
                    j = j + (end - first) if j >= first else j
                else:  # a single document: another piece of it
                    j = rng.randrange(len(pieces) - 1)
                    j = j + 1 if j >= i else j
                other = pieces[j]
                b, label = other[: max(1, len(piece) - cut)], 1
            seq = [cls_id, *a, sep_id, *b, sep_id]
            rows["input_ids"].append(seq)
            rows["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
            rows["attention_mask"].append([1] * len(seq))
            rows["next_sentence_label"].append(label)
    else:
        for piece in pieces:
            seq = [cls_id, *piece, sep_id]
            rows["input_ids"].append(seq)
            rows["token_type_ids"].append([0] * len(seq))
            rows["attention_mask"].append([1] * len(seq))
    if subset is not None:
        rows = {k: v[:subset] for k, v in rows.items()}
    if not rows["input_ids"]:
        raise DataError(f"the text corpus '{source}' is too short to make any sequence")
    rows[EXAMPLE_INDEX] = list(range(len(rows["input_ids"])))  # the masking collator seeds each example's masks by it
    return datasets.Dataset.from_dict(rows)


#: the column of `mlm_dataset` that numbers its sequences (`training.mlm.SeededMaskingCollator` reads it)
EXAMPLE_INDEX = "example_index"
