"""GLUE-format fixtures and tiny spiking models for the training tests (written in tmp dirs).

Sentences use only words of the tiny WordPiece vocabulary in conftest.py, so tokenisation
produces real ids; labels follow a learnable rule (the word 'river' means positive).
"""

from __future__ import annotations

import random
from pathlib import Path

WORDS = "the a of and to in is was it for on that with as at by rose bridge farmers".split()


def _sentence(rng: random.Random, positive: bool) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
    if positive:
        words.insert(rng.randint(0, len(words)), "river")
    return " ".join(words)


def write_glue(root: Path, tasks=("sst2",), n_train: int = 23, n_dev: int = 11, seed: int = 0) -> Path:
    """Write small GLUE-layout TSVs for `tasks` under `root` (the GLUE root); returns root."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        if task == "sst2":
            d = root / "SST-2"
            d.mkdir(exist_ok=True)
            for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
                rows = ["sentence\tlabel"]
                for i in range(n):
                    y = i % 2
                    rows.append(f"{_sentence(rng, bool(y))}\t{y}")
                (d / name).write_text("\n".join(rows) + "\n")
        elif task == "stsb":
            d = root / "STS-B"
            d.mkdir(exist_ok=True)
            head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
            for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
                rows = [head]
                for i in range(n):
                    score = (i * 7) % 6 * 1.0
                    rows.append(f"{i}\tg\tf\t2012\t{i}\ts\ts\t{_sentence(rng, score > 2)}\t{_sentence(rng, False)}\t{score}")
                (d / name).write_text("\n".join(rows) + "\n")
        elif task in ("mnli", "rte", "qnli", "qqp", "mrpc"):
            spec = {
                "mnli": ("MNLI", ["index", "sentence1", "sentence2", "gold_label"], ["entailment", "neutral", "contradiction"],
                         ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv")),
                "rte": ("RTE", ["index", "sentence1", "sentence2", "label"], ["entailment", "not_entailment"],
                        ("train.tsv", "dev.tsv")),
                "qnli": ("QNLI", ["index", "question", "sentence", "label"], ["entailment", "not_entailment"],
                         ("train.tsv", "dev.tsv")),
                "qqp": ("QQP", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], ["0", "1"],
                        ("train.tsv", "dev.tsv")),
                "mrpc": ("MRPC", ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], ["0", "1"],
                         ("train.tsv", "dev.tsv")),
            }[task]
            dir_name, cols, labels, files = spec
            d = root / dir_name
            d.mkdir(exist_ok=True)
            for name in files:
                n = n_train if name == "train.tsv" else n_dev
                rows = ["\t".join(cols)]
                for i in range(n):
                    y = labels[i % len(labels)]
                    a, b = _sentence(rng, i % 2 == 0), _sentence(rng, False)
                    if task == "qqp":
                        rows.append(f"{i}\t{2 * i}\t{2 * i + 1}\t{a}\t{b}\t{y}")
                    elif task == "mrpc":
                        rows.append(f"{y}\t{i}\t{i + 1000}\t{a}\t{b}")
                    else:
                        rows.append(f"{i}\t{a}\t{b}\t{y}")
                (d / name).write_text("\n".join(rows) + "\n")
        else:
            raise ValueError(task)
    return root


def write_text_corpus(path: Path, n_lines: int = 40, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        lines.append(_sentence(rng, i % 3 == 0))
        if i % 10 == 9:
            lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_tokenizer(vocab_path: Path):
    """A WordPiece tokenizer over conftest's tiny vocabulary. (transformers 5 ignores
    `vocab_file=`, so the vocabulary is passed as a dict.)"""
    from transformers import BertTokenizer

    from tests.conftest import write_tiny_vocab

    write_tiny_vocab(vocab_path)
    vocab: dict[str, int] = {}
    for tok in vocab_path.read_text().split("\n"):
        if tok and tok not in vocab:
            vocab[tok] = len(vocab)
    return BertTokenizer(vocab=vocab, do_lower_case=True)


def make_tiny_dense(d: Path, head: str | None = None, num_labels: int = 2, seed: int = 0, **overrides) -> Path:
    """Save a tiny dense BERT (TINY sizes) with a working tokenizer in `d`.

    head: None (BertModel), 'cls' (BertForSequenceClassification) or 'mlm' (BertForMaskedLM).
    """
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel

    from tests.conftest import TINY

    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    sizes = {**TINY, **overrides}
    if head == "cls":
        model = BertForSequenceClassification(BertConfig(**sizes, num_labels=num_labels))
    elif head == "mlm":
        model = BertForMaskedLM(BertConfig(**sizes))
    else:
        model = BertModel(BertConfig(**sizes))
    model.save_pretrained(d)
    tiny_tokenizer(d / "vocab.txt").save_pretrained(d)
    return d


# -- pytest fixtures (imported by the training test modules) ----------------------------------------
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """dense: tiny BertModel; teacher: tiny BertForSequenceClassification (2 labels); mlm_teacher;
    glue: GLUE root with SST-2, STS-B, MNLI; corpus: a small text file."""
    root = tmp_path_factory.mktemp("training")
    return {
        "dense": make_tiny_dense(root / "dense"),
        "teacher": make_tiny_dense(root / "teacher", "cls", seed=1),
        "mlm_teacher": make_tiny_dense(root / "mlm_teacher", "mlm", seed=1),
        "glue": write_glue(root / "glue", tasks=("sst2", "stsb", "mnli")),
        "corpus": write_text_corpus(root / "corpus.txt"),
    }


def finetune_overrides(dirs, *extra: str) -> list[str]:
    return [
        f"model={dirs['dense']}", "data.source=glue/sst2", f"data.data_dir={dirs['glue']}", "data.max_length=16",
        "neuron.num_timesteps=3", "train.batch_size=5", "train.eval_batch_size=11", "train.logging_steps=1",
        "train.device=cpu", *extra,
    ]
