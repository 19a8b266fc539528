"""Test set-up: offline hub flags before anything imports transformers; tiny odd-sized models."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# a model as loaded compiles its spiking layers at its first large training step: tests that want
# that say so (tests/core/models/test_compile_layers.py)
os.environ.setdefault("SPIKELM_COMPILE", "none")
# the CLI's piped stdout is PIPE_WIDTH wide unless COLUMNS says otherwise: tests read that width
os.environ.pop("COLUMNS", None)

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


def make_tiny_bart(folder: Path):
    """(an untrained tiny dense BART for generation, its WordPiece tokenizer), seeded; the vocabulary
    file goes to `folder`."""
    from transformers import BartConfig, BartForConditionalGeneration, BertTokenizerFast

    from tests.core.models.test_spiking_bart import BART_TINY

    tok = BertTokenizerFast(vocab=str(write_tiny_vocab(folder / "vocab.txt")), do_lower_case=True)
    cfg = BartConfig(**{**BART_TINY, "pad_token_id": tok.pad_token_id, "bos_token_id": tok.cls_token_id,
                        "eos_token_id": tok.sep_token_id, "decoder_start_token_id": tok.cls_token_id})
    torch.manual_seed(0)
    return BartForConditionalGeneration(cfg), tok


def write_tiny_bart(folder: Path) -> Path:
    """`make_tiny_bart`'s model and tokenizer saved in `folder`/model; returns that directory."""
    model, tok = make_tiny_bart(folder)
    model.save_pretrained(folder / "model")
    tok.save_pretrained(folder / "model")
    return folder / "model"


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


#: Tiny odd-sized Llama: grouped-query attention (3 query heads share 1 K/V head), head_dim 8.
LLAMA_TINY = dict(
    vocab_size=101, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1,
    intermediate_size=40, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)


def tiny_llama_tokenizer():
    """A word-level fast tokenizer over `LLAMA_TINY`'s 101 ids, with <s>/</s>/<pad> (no [CLS]/[SEP])."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    words = "the a of and to in is was it for on that with as at by river rose bridge farmers".split()
    for token in [*words, *"abcdefghijklmnopqrstuvwxyz.,="]:
        vocab.setdefault(token, len(vocab))
    while len(vocab) < LLAMA_TINY["vocab_size"]:
        vocab[f"w{len(vocab)}"] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


@pytest.fixture(scope="session")
def tiny_dense_llama_dir(tmp_path_factory) -> Path:
    """A tiny dense `LlamaForCausalLM` (untied LM head) with a word-level tokenizer, saved with save_pretrained."""
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny_dense_llama")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**LLAMA_TINY)).save_pretrained(d)
    tiny_llama_tokenizer().save_pretrained(d)
    return d


def write_tiny_gguf(path: Path, arch: str = "llama", *, layers: int = 2, hidden: int = 24, heads: int = 3,
                    kv_heads: int = 1, ffn: int = 40) -> Path:
    """A tiny fp32 GGUF file as llama.cpp lays one out (header, metadata, a byte-level BPE tokenizer,
    `blk.N.*` tensors, no `output.weight`: tied embeddings). Needs the `gguf` package."""
    import numpy as np
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = ["<pad>", "<s>", "</s>", *bytes_to_unicode().values(), "th", "the"]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(layers)
    writer.add_context_length(64)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_merges(["t h", "th e"])
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    rng = np.random.default_rng(0)
    dh = hidden // heads

    def weight(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(len(tokens), hidden))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(heads * dh, hidden))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(kv_heads * dh, hidden))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(kv_heads * dh, hidden))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(hidden, heads * dh))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(hidden, ffn))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
