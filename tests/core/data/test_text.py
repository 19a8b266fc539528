"""Masked-LM corpora (`data.text.mlm_dataset`): the streamed, batched, cached build against a plain
in-memory reference, the cache's invalidation, NSP pairs and bad corpora."""

from __future__ import annotations

import os

import pytest

from spikelm_core.data.text import EXAMPLE_INDEX, mlm_dataset
from spikelm_core.errors import DataError


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from tests.training_fixtures import make_tiny_dense
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(make_tiny_dense(tmp_path_factory.mktemp("tok") / "dense"))


def reference_sequences(files, tok, max_length):
    """The slow reference: read each file whole, split documents on blank (or whitespace-only) lines,
    tokenise line by line, cut each document into pieces of max_length - 2 tokens, wrap them."""
    body = max_length - 2
    rows = []
    for f in files:
        docs, current = [], []
        for line in open(f, encoding="utf-8").read().splitlines():
            if line.strip():
                current.append(line.strip())
            elif current:
                docs.append(current)
                current = []
        if current:
            docs.append(current)
        for doc in docs:
            ids = [t for line in doc for t in tok(line, add_special_tokens=False)["input_ids"]]
            rows += [[tok.cls_token_id, *ids[i : i + body], tok.sep_token_id] for i in range(0, len(ids), body)]
    return rows


def _corpus(folder, tok):
    words = [w for w in tok.get_vocab() if w.isalpha() and w.islower()][:30]
    folder.mkdir()
    # two files (read in sorted order), documents split by empty and whitespace-only lines, a long line
    (folder / "b.txt").write_text(" ".join(words[:7]) + "\n  \n" + " ".join(words * 3) + "\n" + words[2] + "\n"
                                  # str.splitlines' other breaks: a form feed, a line and a paragraph separator
                                  + words[3] + "\x0c\n" + words[4] + "\u2028\u2028" + words[5] + "\x85" + words[6] + "\n")
    (folder / "a.txt").write_text("\n\n" + " ".join(words[5:9]) + "\n" + " ".join(words[1:4]) + "\n\n\n" + words[0])
    return folder, sorted(folder.glob("*.txt"))


def test_matches_the_plain_reference(tok, tmp_path):
    folder, files = _corpus(tmp_path / "c", tok)
    for max_length in (3, 7, 64):
        ds = mlm_dataset(folder, tok, max_length=max_length)
        assert ds["input_ids"] == reference_sequences(files, tok, max_length)
        assert ds[EXAMPLE_INDEX] == list(range(len(ds)))
        assert all(set(t) == {0} for t in ds["token_type_ids"]) and all(set(m) == {1} for m in ds["attention_mask"])
    assert mlm_dataset(folder, tok, max_length=7, subset=3)["input_ids"] == reference_sequences(files, tok, 7)[:3]


def test_an_empty_or_blank_file_in_a_folder_is_skipped_and_an_all_blank_folder_refused(tok, tmp_path):
    """`datasets` reads the files as shards, one generator call each: one empty file is not an empty corpus."""
    folder, files = _corpus(tmp_path / "c", tok)
    (folder / "c.txt").write_text("")
    (folder / "sub").mkdir()
    (folder / "sub" / "d.txt").write_text("\n \n")
    assert mlm_dataset(folder, tok, max_length=7)["input_ids"] == reference_sequences(files, tok, 7)
    blank = tmp_path / "blank"
    blank.mkdir()
    (blank / "a.txt").write_text("")
    (blank / "b.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"is empty \(its 2 .txt files hold only blank lines\)"):
        mlm_dataset(blank, tok, max_length=7)


def test_an_edited_corpus_is_tokenised_again(tok, tmp_path):
    """The cache is keyed by the files: a changed file never reads back the old tokens."""
    corpus = tmp_path / "t.txt"
    corpus.write_text("the cat\n")
    first = mlm_dataset(corpus, tok, max_length=16)["input_ids"]
    assert mlm_dataset(corpus, tok, max_length=16)["input_ids"] == first  # read back from the cache
    corpus.write_text("the dog and the cat\n")
    os.utime(corpus, ns=(1, 1))  # even with an old modification time, the new size tells
    second = mlm_dataset(corpus, tok, max_length=16)["input_ids"]
    assert second == reference_sequences([corpus], tok, 16) != first
    stat = corpus.stat()
    corpus.write_text("the cat and the dog\n")  # the same size, its modification time set back (cp -p, rsync -t)
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert mlm_dataset(corpus, tok, max_length=16)["input_ids"] == reference_sequences([corpus], tok, 16) != second


def test_nsp_pairs_do_not_depend_on_batching(tok, tmp_path):
    """A pair's draws are seeded by (seed, piece), so the rows are the same whichever batches the
    map cuts; each row is [CLS] A [SEP] B [SEP] with B's segment ids, within max_length."""
    import numpy as np

    from spikelm_core.data.text import EXAMPLE_INDEX, _Documents, _sequences

    folder, _ = _corpus(tmp_path / "c", tok)
    ds = mlm_dataset(folder, tok, max_length=9, nsp=True, seed=4)
    assert set(ds["next_sentence_label"]) == {0, 1}
    for ids, types in zip(ds["input_ids"], ds["token_type_ids"]):
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and len(ids) <= 9
        assert types == [0] * types.index(1) + [1] * (len(ids) - types.index(1))
    pieces = [[t for t in ids[1:-1] if t != tok.sep_token_id] for ids in mlm_dataset(folder, tok, max_length=8)["input_ids"]]
    import datasets

    docs = [i // 3 for i in range(len(pieces))]  # documents of three pieces: negatives come from the others
    table = datasets.Dataset.from_dict({"piece": pieces, "doc": docs})
    kwargs = dict(cls_id=tok.cls_token_id, sep_id=tok.sep_token_id, nsp=True, seed=4, pieces=table,
                  docs=_Documents.of(np.array(docs), np.array([len(p) for p in pieces]), 6))
    whole = _sequences({"piece": pieces}, list(range(len(pieces))), **kwargs)
    cut = len(pieces) // 2
    halves = [_sequences({"piece": pieces[a:b]}, list(range(a, b)), **kwargs) for a, b in ((0, cut), (cut, len(pieces)))]
    assert whole["input_ids"] == halves[0]["input_ids"] + halves[1]["input_ids"]
    text = {d: [t for p, pd in zip(pieces, docs) if pd == d for t in p] for d in set(docs)}  # each document's tokens
    cuts = set()
    for ids, types, label, i in zip(whole["input_ids"], whole["token_type_ids"], whole["next_sentence_label"],
                                    whole[EXAMPLE_INDEX]):
        a = ids[1 : types.index(1) - 1]
        b = ids[types.index(1) : -1]
        assert pieces[i][: len(a)] == a and 1 <= len(a) < len(pieces[i])
        cuts.add(len(a))
        assert len(b) == len(pieces[i]) - len(a)  # a negative is as long as the true continuation
        if label == 0:
            assert a + b == pieces[i]
        else:  # a stretch of another document (tokens in a row, possibly across its pieces)
            found = [d for d, tokens in text.items()
                     if any(tokens[s : s + len(b)] == b for s in range(len(tokens) - len(b) + 1))]
            assert any(d != docs[i] for d in found)
    assert len(cuts) > 1  # cut at random, not at the middle
    assert mlm_dataset(folder, tok, max_length=9, nsp=True, seed=4)["input_ids"] == ds["input_ids"]
    others = [mlm_dataset(folder, tok, max_length=9, nsp=True, seed=s)["next_sentence_label"] for s in range(5, 9)]
    assert any(o != ds["next_sentence_label"] for o in others)


def test_the_cache_key_ignores_the_tokenizers_call_state(tok):
    """A tokenizer's truncation and padding state (which every call may change) is not its content."""
    import copy

    from spikelm_core.data.text import _tokenizer_key

    tok = copy.deepcopy(tok)  # the module's tokenizer stays as it is
    before = _tokenizer_key(tok)
    tok(["a b c"] * 2, truncation=True, max_length=2, padding="max_length")
    assert _tokenizer_key(tok) == before
    tok.add_tokens(["zebra-crossing"])
    assert _tokenizer_key(tok) != before


@pytest.mark.parametrize("case, message", [
    ("blank", "is empty"), ("latin-1", "line 3 is not UTF-8"), ("missing", "does not exist"), ("no txt", "no .txt files"),
])
def test_bad_corpora_are_refused(tok, tmp_path, case, message):
    path = tmp_path / "x.txt"
    if case == "blank":
        path.write_text("\n  \n\n")
    elif case == "latin-1":
        path.write_bytes(b"tea\nmilk\n" + "caf\xe9 au lait\n".encode("latin-1"))
    elif case == "no txt":
        path = tmp_path / "folder"
        path.mkdir()
        (path / "notes.md").write_text("the cat\n")
    with pytest.raises(DataError, match=message):
        mlm_dataset(path, tok, max_length=16)


def test_datasets_errors_are_unwrapped():
    """A DataError raised inside a datasets step reaches the user as itself; an OSError there is the
    cache folder's (exit 5, naming HF_DATASETS_CACHE); anything else is raised as it is."""
    from spikelm_core.data.text import _cached
    from spikelm_core.errors import OutputError

    def wrapped(inner):
        def build():
            try:
                raise inner
            except Exception as exc:
                raise RuntimeError("datasets failed") from exc
        return build

    with pytest.raises(DataError, match="bad corpus"):
        _cached(wrapped(DataError("bad corpus")))
    with pytest.raises(OutputError, match="datasets cache") as exc:
        _cached(wrapped(NotADirectoryError(20, "Not a directory")))
    assert "HF_DATASETS_CACHE" in exc.value.hint
    with pytest.raises(RuntimeError, match="datasets failed"):
        _cached(wrapped(ValueError("a bug")))


def test_a_tokenizer_without_bert_special_tokens_is_refused_naming_them(tok, tmp_path):
    from types import SimpleNamespace

    from spikelm_core.calibration import text_batches
    from spikelm_core.data.text import require_special_tokens
    from spikelm_core.errors import CheckpointError

    assert require_special_tokens(tok, ("cls", "sep"), "needs") == [tok.cls_token_id, tok.sep_token_id]
    no_mask = SimpleNamespace(cls_token_id=1, sep_token_id=2, mask_token_id=None)
    corpus = tmp_path / "c.txt"
    corpus.write_text("one line\n")
    with pytest.raises(CheckpointError, match=r"has no \[MASK\] token; masked-LM") as err:
        mlm_dataset(corpus, no_mask, 16)
    assert err.value.exit_code == 3
    with pytest.raises(CheckpointError, match=r"has no \[CLS\]/\[SEP\] tokens; an encoder"):
        text_batches(SimpleNamespace(cls_token_id=None, sep_token_id=None), "some text", seq_len=8)


def test_a_corpus_without_blank_lines_is_read_in_bounded_documents(tmp_path, monkeypatch):
    """A run of lines with no blank one ends a document every `DOCUMENT_LINES` lines: memory stays bounded,
    and every line is read once, in order."""
    from spikelm_core.data import text

    corpus = tmp_path / "flat.txt"
    corpus.write_text("".join(f"line {i}\n" for i in range(25)) + "\nafter a blank\n")
    monkeypatch.setattr(text, "DOCUMENT_LINES", 10)
    docs = [d["lines"] for d in text._documents([str(corpus)], "stamp")]
    assert [len(d) for d in docs] == [10, 10, 5, 1]
    assert [line for d in docs for line in d] == [f"line {i}" for i in range(25)] + ["after a blank"]
