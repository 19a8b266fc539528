"""Masked-LM corpora from local text files (offline; e.g. ../shared/data/text/wikitext-2).

A source is a UTF-8 text file or a directory of `*.txt` files (read in sorted order). Blank lines
separate documents (and every `DOCUMENT_LINES` lines in a row end one, so a file without blank lines
streams too). Each document's tokens are packed into full `[CLS] ... [SEP]` sequences of
`max_length` tokens (no padding inside a document; the last piece of a document may be shorter),
as BERT pretraining does. With `nsp=True` every sequence is a pair `[CLS] A [SEP] B [SEP]`: B is
A's continuation (label 0) or, with probability 1/2, a segment from elsewhere in the corpus
(label 1), drawn with a seeded generator so the dataset is the same on every run and rank.
Masking is left to the collator at batch time (`training.mlm.SeededMaskingCollator`). The corpus is
streamed, tokenised in batches and cached as Arrow files (`mlm_dataset`), so it need not fit in memory.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError, OutputError

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
    """The files a text source names: the file itself, or the sorted `*.txt` files of a directory and its
    subfolders."""
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


#: The most lines one document holds: a longer run of lines without a blank one (a corpus written without
#: blank lines is one document) is read as documents of this many lines each, so that memory stays
#: bounded (a document is tokenised and packed whole); its pieces are then packed, and NSP's random
#: segments drawn, per part. Far above an article's length (WikiText-2's longest: a few hundred lines).
DOCUMENT_LINES = 10_000


def _documents(files: list[str], stamp: str):
    """Each document of `files` as {"lines": [...]}: non-empty lines (as `str.splitlines` splits them),
    stripped; blank lines (and the end of a file) end a document, as do `DOCUMENT_LINES` lines in a row.
    Streams line by line, so a corpus never has to fit in memory. `stamp` only names the corpus version
    in the cache's fingerprint.
    (`datasets` may call it once per file, as shards: whether the whole corpus is empty is the
    caller's check.)"""
    for name in files:
        current: list[str] = []
        try:
            with open(name, "rb") as fh:
                for number, raw in enumerate(fh, start=1):
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise DataError(f"cannot read '{name}': line {number} is not UTF-8 text ({exc.reason} "
                                        f"at byte {exc.start} of the line)") from None
                    for line in text.splitlines():  # str.splitlines' breaks too (form feed, U+2028, ...)
                        line = line.strip()
                        if line:
                            current.append(line)
                            if len(current) >= DOCUMENT_LINES:
                                yield {"lines": current}
                                current = []
                        elif current:
                            yield {"lines": current}
                            current = []
        except OSError as exc:
            raise DataError(f"cannot read '{name}': {exc}") from None
        if current:
            yield {"lines": current}


def _has_text(files: list[str]) -> bool:
    """Whether any of `files` holds a line that is not blank (as `_documents` reads them); reads each
    only up to its first such line. Unreadable bytes count as text here: `_documents` names them."""
    for name in files:
        try:
            with open(name, "rb") as fh:
                if any(line.strip() for raw in fh for line in raw.decode("utf-8", "replace").splitlines()):
                    return True
        except OSError as exc:
            raise DataError(f"cannot read '{name}': {exc}") from None
    return False


def _cached(build):
    """Run a `datasets` step, unwrapping its errors: a DataError raised inside a generator or map (which
    datasets wraps in DatasetGenerationError) reaches the user as itself (exit 4); an OSError is the
    cache folder's (the corpus is read inside, as DataErrors): an OutputError (exit 5) naming
    HF_DATASETS_CACHE; anything else is raised as it is."""
    try:
        return build()
    except Exception as exc:
        cause = exc
        while cause is not None and not isinstance(cause, (DataError, OSError)):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, DataError):
            raise cause from None
        if isinstance(cause, OSError):
            raise OutputError(f"cannot write the tokenised corpus to the datasets cache: {cause}",
                              hint="set HF_DATASETS_CACHE to a writable folder with free space (default "
                              "~/.cache/huggingface/datasets)") from None
        raise


def _tokenizer_key(tokenizer: Any) -> str:
    """A content hash of a tokenizer (its full serialisation for fast tokenizers), for cache fingerprints."""
    from datasets.fingerprint import Hasher

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # without the truncation and padding state, which every call may change
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        return Hasher.hash([type(tokenizer).__name__, json.dumps(spec, sort_keys=True)])
    return Hasher.hash(tokenizer)


def _pack(batch: dict, indices: list[int], *, tokenizer: Any, body: int) -> dict:
    """Tokenise a batch of documents (one batched call, line by line without special tokens, as the
    model reads each line alone) and cut each document's tokens into pieces of `body` tokens."""
    flat = [line for doc in batch["lines"] for line in doc]
    encoded = tokenizer(flat, add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)["input_ids"]
    pieces: list[list[int]] = []
    docs: list[int] = []
    at = 0
    for lines, doc in zip(batch["lines"], indices):
        ids = [t for line_ids in encoded[at : at + len(lines)] for t in line_ids]
        at += len(lines)
        for i in range(0, len(ids), body):
            pieces.append(ids[i : i + body])
            docs.append(doc)
    return {"piece": pieces, "doc": docs, "length": [len(p) for p in pieces]}


@dataclass(frozen=True)
class _Documents:
    """Where each document's pieces lie, for drawing NSP's random second segments: per piece its
    document's row here (`row_of`); per document its first piece and its token count. Pieces are in
    document order, each `body` tokens but a document's last."""

    row_of: Any
    first: Any
    tokens: Any
    body: int

    @classmethod
    def of(cls, doc_of: Any, length: Any, body: int) -> "_Documents":
        import numpy as np

        _, first, row_of = np.unique(doc_of, return_index=True, return_inverse=True)
        return cls(row_of=row_of, first=first, tokens=np.add.reduceat(length, first) if len(first) else first,
                   body=body)


#: NSP: draws of a random document before the longest one drawn stands in (a corpus of short documents)
_NSP_DRAWS = 10


def _random_segment(rng: random.Random, i: int, cut: int, length: int, docs: _Documents) -> tuple[int, int, int]:
    """(document row, first token, token count) of the random second segment of piece `i`'s pair, as
    BERT draws it: a random other document, then a random start from which `length` tokens fit (the
    true continuation's length; fewer only where no document drawn holds that many). Documents too
    short are drawn again, so that a negative's length does not give it away. A corpus of one document:
    a random stretch of it other than the true continuation."""
    own = int(docs.row_of[i])
    count = len(docs.first)
    if count == 1:
        total = int(docs.tokens[0])
        true_start = (i - int(docs.first[0])) * docs.body + cut
        starts = max(total - length, 0)
        start = rng.randrange(starts) if starts else 0
        start = start + 1 if starts and start >= true_start else start  # never the continuation itself
        return 0, start, min(length, total)
    best = None
    for _ in range(_NSP_DRAWS):
        row = rng.randrange(count - 1)
        row = row + 1 if row >= own else row
        if best is None or docs.tokens[row] > docs.tokens[best]:
            best = row
        if docs.tokens[row] >= length:
            break
    total = int(docs.tokens[best])
    start = rng.randrange(total - length + 1) if total >= length else 0
    return best, start, min(length, total)


def _sequences(batch: dict, indices: list[int], *, cls_id: int, sep_id: int, nsp: bool, seed: int,
               pieces: Any = None, docs: _Documents | None = None) -> dict:
    """`[CLS] piece [SEP]` rows, or NSP pairs `[CLS] A [SEP] B [SEP]`: each piece cut at a random token
    into A and its true continuation B (label 0), or, half the time, B replaced by as many tokens from
    a random start in another document (label 1; `_random_segment`). A pair's random draws come from a
    generator seeded by (seed, piece index), so a row does not depend on batching or on other rows."""
    out: dict[str, list] = {"input_ids": [], "token_type_ids": [], "attention_mask": [], EXAMPLE_INDEX: []}
    if not nsp:
        for piece, i in zip(batch["piece"], indices):
            seq = [cls_id, *piece, sep_id]
            out["input_ids"].append(seq)
            out["token_type_ids"].append([0] * len(seq))
            out["attention_mask"].append([1] * len(seq))
            out[EXAMPLE_INDEX].append(i)
        return out
    out["next_sentence_label"] = []
    draws: list[tuple[int, int, int, int]] = []  # (row in out, document row, first token, token count)
    for piece, i in zip(batch["piece"], indices):
        if len(piece) < 2:
            continue
        rng = random.Random((seed << 40) ^ i)
        cut = rng.randint(1, len(piece) - 1)
        a, b, label = piece[:cut], piece[cut:], 0
        if rng.random() < 0.5 and (len(docs.first) > 1 or docs.tokens[0] > len(b)):
            draws.append((len(out["input_ids"]), *_random_segment(rng, i, cut, len(b), docs)))
            label = 1
        out["input_ids"].append((a, b))
        out["next_sentence_label"].append(label)
        out[EXAMPLE_INDEX].append(i)
    if draws:  # the pieces the segments lie in (a segment spans at most two: it is shorter than a piece)
        spans = {}
        for row, doc, start, length in draws:
            first = int(docs.first[doc]) + start // docs.body
            last = int(docs.first[doc]) + (start + length - 1) // docs.body
            spans[row] = (range(first, last + 1), start % docs.body, length)
        wanted = sorted({p for span, _, _ in spans.values() for p in span})
        text = dict(zip(wanted, pieces[wanted]["piece"]))
        for row, (span, offset, length) in spans.items():
            tokens = [t for p in span for t in text[p]]
            out["input_ids"][row] = (out["input_ids"][row][0], tokens[offset : offset + length])
    for row, (a, b) in enumerate(out["input_ids"]):
        seq = [cls_id, *a, sep_id, *b, sep_id]
        out["input_ids"][row] = seq
        out["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
        out["attention_mask"].append([1] * len(seq))
    return out


#: Bump when the layout of the cached corpus changes: it is part of every cache fingerprint.
_CACHE_FORMAT = "spikelm-mlm-4"


def file_stamp(path: str) -> tuple:
    """What says a file changed: path, inode, size, modification and status-change times (ctime: a
    same-size edit whose mtime was set back, as `cp -p` or `rsync -t` do, still changes it)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DataError(f"cannot read '{path}': {exc}") from None
    return (path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def require_special_tokens(tokenizer, names: tuple[str, ...], why: str) -> list[int]:
    """The ids of the tokenizer's special tokens `names` ('cls', 'sep', 'mask', ...); CheckpointError
    (exit 3) naming those it lacks: an encoder reads [CLS] text [SEP], masked-LM needs [MASK] as well."""
    from ..errors import CheckpointError

    ids = [getattr(tokenizer, f"{name}_token_id", None) for name in names]
    missing = [f"[{name.upper()}]" for name, i in zip(names, ids) if i is None]
    if missing:
        raise CheckpointError(f"the tokenizer ({type(tokenizer).__name__}) has no {'/'.join(missing)} token"
                              f"{'s' if len(missing) > 1 else ''}; {why} {'/'.join(f'[{n.upper()}]' for n in names)}",
                              hint="use the BERT-style tokenizer the model was trained with")
    return ids


def corpus_files(source: str | Path) -> list[str]:
    """The text files of a masked-LM corpus (a file, or a folder's .txt files), resolved; DataError when
    they hold no text (checked before any tokenising: `datasets` refuses a generator that yields nothing,
    and a held-out text is best refused before the training corpus is tokenised)."""
    files = [str(f.resolve()) for f in text_files(source)]
    if not _has_text(files):
        raise DataError(f"the text corpus '{source}' is empty" + (f" (its {len(files)} .txt files hold only blank lines)"
                                                                   if len(files) > 1 else ""))
    return files


def mlm_dataset(source: str | Path, tokenizer: Any, max_length: int = 128, *, nsp: bool = False,
                subset: int | None = None, seed: int = 0):
    """A `datasets.Dataset` of packed sequences: input_ids, token_type_ids, attention_mask
    (+ next_sentence_label with `nsp`) and `EXAMPLE_INDEX`. `subset` keeps the first N sequences.
    NSP: each piece cut in two at a random token; half the time (label 1) the second segment is
    replaced by as many tokens from a random start in another document (blank lines split documents;
    a corpus of one document: another stretch of it), as BERT builds its pairs (it cuts at sentence
    ends; spikelm's pieces are token runs); label 0 = the true continuation.

    Built for corpora of any size: documents stream from the files, are tokenised in batches and
    written to Arrow files in the `datasets` cache (HF_DATASETS_CACHE), memory-mapped rather than held
    in memory, with a progress bar. The cache is keyed by the files (`file_stamp`),
    the tokenizer's content, the lengths and the seed, so a rerun or a resumed run reads it back
    instead of tokenising again, and an edited file or another tokenizer builds a new one."""
    import datasets
    from datasets.fingerprint import Hasher

    if max_length < (5 if nsp else 3):
        raise DataError(f"data.max_length must be at least {5 if nsp else 3} for masked-LM data, got {max_length}")
    cls_id, sep_id, _ = require_special_tokens(tokenizer, ("cls", "sep", "mask"), "masked-LM training needs")
    body = max_length - (3 if nsp else 2)
    files = corpus_files(source)
    stamp = Hasher.hash([_CACHE_FORMAT, [file_stamp(f) for f in files]])
    docs = _cached(lambda: datasets.Dataset.from_generator(
        _documents, gen_kwargs={"files": files, "stamp": stamp}, fingerprint=stamp,
        features=datasets.Features({"lines": datasets.List(datasets.Value("string"))})))
    token_type = datasets.List(datasets.Value("int32"))
    pieces = _cached(lambda: docs.map(
        _pack, batched=True, with_indices=True, remove_columns=["lines"],
        fn_kwargs={"tokenizer": tokenizer, "body": body},
        features=datasets.Features({"piece": token_type, "doc": datasets.Value("int64"),
                                    "length": datasets.Value("int64")}),
        new_fingerprint=Hasher.hash([stamp, _tokenizer_key(tokenizer), body]),
        desc=f"tokenising {Path(source).name}"))
    if len(pieces) == 0:
        raise DataError(f"the text corpus '{source}' holds no tokens")
    _check_vocabulary(pieces, tokenizer, source)
    features = {"input_ids": token_type, "token_type_ids": datasets.List(datasets.Value("int8")),
                "attention_mask": datasets.List(datasets.Value("int8"))}
    kwargs: dict[str, Any] = {"cls_id": cls_id, "sep_id": sep_id, "nsp": nsp, "seed": seed}
    if nsp:
        features["next_sentence_label"] = datasets.Value("int64")
        table = pieces.with_format("numpy")
        kwargs.update(pieces=pieces, docs=_Documents.of(table["doc"][:], table["length"][:], body))
    features[EXAMPLE_INDEX] = datasets.Value("int64")
    rows = _cached(lambda: pieces.map(
        _sequences, batched=True, with_indices=True, remove_columns=["piece", "doc", "length"], fn_kwargs=kwargs,
        features=datasets.Features(features),
        new_fingerprint=Hasher.hash([pieces._fingerprint, cls_id, sep_id, nsp, seed if nsp else None]),
        desc="NSP pairs" if nsp else "sequences"))
    if subset is not None and subset < len(rows):
        rows = rows.select(range(subset))
    if len(rows) == 0:
        raise DataError(f"the text corpus '{source}' is too short to make any sequence")
    return rows


def _check_vocabulary(pieces: Any, tokenizer: Any, source: str | Path, sample: int = 2000) -> None:
    """Refuse a tokenizer that maps most of the corpus (its first `sample` pieces) to [UNK]."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return
    head = pieces.select(range(min(sample, len(pieces))))["piece"]
    n_tokens = sum(len(p) for p in head)
    n_unk = sum(p.count(unk) for p in head)
    if n_tokens and n_unk > n_tokens / 2:
        raise DataError(
            f"the tokenizer maps {n_unk} of {n_tokens} tokens of '{source}' to {tokenizer.unk_token}",
            hint="the tokenizer's vocabulary does not fit this text (special tokens are never masked, so "
            "masked-LM would have nothing to learn); use the tokenizer the model was trained with",
        )


#: the column of `mlm_dataset` that numbers its sequences, each its own number (its piece's index: with NSP,
#: pieces too short to split leave gaps); `training.mlm.SeededMaskingCollator` seeds each example's masks by it
EXAMPLE_INDEX = "example_index"
