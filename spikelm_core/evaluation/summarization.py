"""Summarisation evaluation: beam-search generation and ROUGE-1/2/L/Lsum, with firing rates."""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field

import torch

from ..data.summarization import check_lengths
from ..errors import ConfigError
from ..firing import FiringReport, record_firing
from ..log import get_logger, hms
from .metrics import rouge_intervals, rouge_scores

log = get_logger("evaluation")
#: seconds between the progress lines of a generation pass (`generate_summaries`)
PROGRESS_EVERY_S = 10.0


@dataclass
class SummarizationResult:
    """ROUGE F-measures x 100 over `num_examples`, plus the spiking model's firing during generation
    (`spikelm_core.firing`: pads excluded; per layer keyed 'encoder.layers.N' / 'decoder.layers.N')."""

    rouge: dict[str, float]
    num_examples: int
    num_beams: int
    mean_firing_rate: float | None
    layer_firing_rates: dict[str, float] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)
    """The first few (document start, reference, prediction) triples."""
    rouge_intervals: dict[str, list[float]] = field(default_factory=dict)
    """Per ROUGE type, its 95% bootstrap interval [low, high] (`metrics.rouge_intervals`)."""
    empty_predictions: int = 0
    """Generated summaries with no text once special tokens are removed: each scores ROUGE 0."""
    seconds: float = 0.0
    firing: FiringReport | None = field(default=None, repr=False)
    """The whole firing report (None for a dense model); `to_dict` leaves it out."""

    def to_dict(self) -> dict:
        out = asdict(self)
        out.pop("firing")
        return out


def lead_sentences(document: str, n: int = 1) -> str:
    """The first `n` lines (sentences, in the stored data) of a document: the lead-n baseline."""
    lines = [line.strip() for line in document.split("\n") if line.strip()]
    return "\n".join(lines[:n])


def _one_sentence_per_line(text: str) -> str:
    """One sentence per line, for rougeLsum: generated summaries come as one line, and references
    may too (any user's data), so both sides are split the same way, on sentence ends."""
    return "\n".join(s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip())


@torch.no_grad()
def generate_summaries(
    model, tokenizer, documents: list[str], *, num_beams: int = 4, max_source_length: int = 512,
    max_new_tokens: int = 64, batch_size: int = 8, length_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
    min_new_tokens: int = 0,
) -> list[str]:
    """Beam-search summaries of `documents` (model in eval mode, KV cache on), with these settings
    whatever the checkpoint's generation_config says (so a dense and a spiking model are generated for
    alike). A pass of more than one
    batch logs its progress (`summaries 64/400 | 1.2 documents/s | eta 0:05:00`) every
    `PROGRESS_EVERY_S` seconds and at its end: beam search over a large dev set takes minutes."""
    if num_beams < 1:
        raise ConfigError(f"beam size must be >= 1, got {num_beams}")
    if max_new_tokens < 1:
        raise ConfigError(f"max new tokens must be >= 1, got {max_new_tokens}")
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise ConfigError(f"min new tokens must be between 0 and max new tokens ({max_new_tokens}), got {min_new_tokens}")
    model.eval()
    device = next(model.parameters()).device
    cfg = model.config
    gen_kwargs = dict(
        num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=False,
        early_stopping=num_beams > 1,
        length_penalty=length_penalty, no_repeat_ngram_size=no_repeat_ngram_size, use_cache=True,
        pad_token_id=cfg.pad_token_id, eos_token_id=cfg.eos_token_id, decoder_start_token_id=cfg.decoder_start_token_id,
    )
    out: list[str] = []
    start = last = time.perf_counter()
    for i in range(0, len(documents), batch_size):
        enc = tokenizer(documents[i : i + batch_size], max_length=max_source_length, truncation=True,
                        padding=True, return_tensors="pt")
        ids = model.generate(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                             **gen_kwargs)
        out.extend(tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True))
        now = time.perf_counter()
        if len(documents) > batch_size and (now - last >= PROGRESS_EVERY_S or len(out) == len(documents)):
            last = now
            log.info("%s", progress_line(len(out), len(documents), now - start))
    return [s.strip() for s in out]


def progress_line(done: int, total: int, seconds: float) -> str:
    """`summaries 64/400 | 1.2 documents/s | eta 0:05:00` (`| 41.0 s` once done)."""
    parts = [f"summaries {done}/{total}"]
    if seconds > 0 and done:
        parts.append(f"{done / seconds:.1f} documents/s")
        parts.append(f"eta {hms(round(seconds / done * (total - done)))}" if done < total else f"{seconds:.1f} s")
    return " | ".join(parts)


def evaluate_summarization(
    model, tokenizer, dataset, *, num_beams: int = 4, max_source_length: int = 512, max_new_tokens: int = 64,
    batch_size: int = 8, keep_examples: int = 3, length_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
    min_new_tokens: int = 0,
) -> SummarizationResult:
    """Generate a summary for every `document` of `dataset` and score it against `summary` with ROUGE."""
    start = time.perf_counter()
    documents, references = list(dataset["document"]), list(dataset["summary"])
    check_lengths(getattr(model.config, "max_position_embeddings", None), max_source_length=max_source_length,
                  max_new_tokens=max_new_tokens)
    with record_firing(model) as firing:
        predictions = generate_summaries(
            model, tokenizer, documents, num_beams=num_beams, max_source_length=max_source_length,
            max_new_tokens=max_new_tokens, batch_size=batch_size, length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size, min_new_tokens=min_new_tokens,
        )
    split_predictions = [_one_sentence_per_line(p) for p in predictions]
    split_references = [_one_sentence_per_line(r) for r in references]
    scores = rouge_scores(split_predictions, split_references)
    return SummarizationResult(
        rouge=scores,
        num_examples=len(documents),
        num_beams=num_beams,
        mean_firing_rate=firing.mean_rate if firing.neurons else None,
        layer_firing_rates=firing.layer_rates(),
        examples=[{"document": d[:300], "reference": r, "prediction": p}
                  for d, r, p in list(zip(documents, references, predictions))[:keep_examples]],
        empty_predictions=sum(1 for p in predictions if not p.strip()),
        rouge_intervals=rouge_intervals(split_predictions, split_references),
        seconds=time.perf_counter() - start,
        firing=firing if firing.neurons else None,
    )
