"""Test set-up: offline hub flags before anything imports transformers; tiny odd-sized models."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: Tiny odd sizes: every shape bug shows (no dimension equals another).
TINY = dict(
    vocab_size=99, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37,
    max_position_embeddings=64, type_vocab_size=2,
)


def write_tiny_vocab(path: Path, n: int = 99) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = "the a of and to in is was it for on that with as at by river rose bridge farmers".split()
    letters = list("abcdefghijklmnopqrstuvwxyz")
    toks = specials + words + letters + [f"##{c}" for c in letters]
    toks += [f"w{i}" for i in range(n - len(toks))]
    path.write_text("\n".join(toks[:n]) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_dense_bert_dir(tmp_path_factory) -> Path:
    """A tiny dense `BertModel` with a WordPiece tokenizer, saved with save_pretrained."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny_dense_bert")
    torch.manual_seed(0)
    model = BertModel(BertConfig(**TINY))
    model.save_pretrained(d)
    tok = BertTokenizerFast(vocab=str(write_tiny_vocab(d / "vocab.txt")), do_lower_case=True)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
