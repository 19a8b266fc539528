"""Perplexity of a causal LM on one long text, in fixed windows.

    perplexity = exp( sum of -log p(token | what precedes it in its window) / number of scored tokens )

The token-weighted mean: every scored token counts once, whichever window it falls in, and the
counts are exact (no per-window averaging, so a short last window weighs what it holds).

Windows (`lm_windows`). The text is tokenised once, as a whole (no special tokens), then cut:

- A window has `seq_len` positions. With a BOS token (Llama tokenizers, SmolLM2's `<|im_start|>`)
  it is `[BOS] + seq_len - 1 text tokens`, as the amplitudes were calibrated (`calibration.text_batches`);
  each of its text tokens can be scored, the first one predicted from BOS alone. Without a BOS
  token it is `seq_len` text tokens, and its first token is context only.
- Consecutive windows start `stride` text tokens apart. The default, `seq_len - 1`, scores every
  text token exactly once: with BOS the windows do not overlap; without, they share one token (the
  last of one window is the first, context-only, token of the next). A smaller stride re-reads the
  previous window's end as context and scores only the tokens not scored before (the standard
  sliding-window perplexity: more context per token, more forwards). A larger stride would leave
  tokens unscored and is refused.
- The last window holds what is left (it may be shorter). Scored tokens: all text tokens with BOS,
  all but the first without.

`score_windows` runs a model over the windows (no padding: windows of one length are batched,
the short last one alone) and sums the negative log-likelihoods in float64. Logits are computed
only for the positions that predict scored tokens (`logits_to_keep`), and a batch holds at most
`LOGIT_BUDGET` logits, so a large vocabulary (SmolLM2: 49152) does not fill the memory.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError

LOGIT_BUDGET = 2**26
"""Most logits (batch x kept positions x vocabulary) one forward computes: 256 MB in float32."""


@dataclass(frozen=True)
class Window:
    """One forward's tokens; its last `scored` tokens are scored (each predicted from what precedes it)."""

    input_ids: tuple[int, ...]
    scored: int


def window_stride(seq_len: int, stride: int | None) -> int:
    """The stride in text tokens: `stride`, or `seq_len - 1` (every token scored once). ConfigError
    when windows that far apart would leave tokens unscored, or `seq_len` is below 2."""
    if seq_len < 2:
        raise ConfigError(f"--seq-len must be at least 2 (a token and its successor), got {seq_len}")
    widest = seq_len - 1
    if stride is None:
        return widest
    if not 1 <= stride <= widest:
        raise ConfigError(f"--stride {stride} does not fit --seq-len {seq_len}: windows {stride} tokens apart "
                          f"would leave tokens unscored",
                          hint=f"choose a stride from 1 to {widest} (seq_len - 1, the default: every token scored once)")
    return stride


def lm_windows(ids: Sequence[int], seq_len: int, *, stride: int | None = None,
               bos_token_id: int | None = None, what: str = "the text", setting: str = "--seq-len") -> list[Window]:
    """The windows of `ids` (see the module docstring). DataError (exit 4) when `ids` is shorter
    than one window, naming `setting`, the option or recipe key that gave `seq_len`; ConfigError
    (exit 2) for a bad `seq_len` / `stride`."""
    step = window_stride(seq_len, stride)
    prefix = (bos_token_id,) if bos_token_id is not None else ()
    width = _text_width(ids, seq_len, prefix, what, setting)
    windows: list[Window] = []
    done = 0 if prefix else 1  # text tokens before `done` are scored (or, the very first without BOS, never can be)
    begin = 0
    while done < len(ids):
        end = min(begin + width, len(ids))
        windows.append(Window(prefix + tuple(ids[begin:end]), end - done))
        done = end
        begin += step
    return windows


def _text_width(ids: Sequence[int], seq_len: int, prefix: tuple[int, ...], what: str, setting: str) -> int:
    """Text tokens per window of `seq_len` positions after `prefix`; DataError (exit 4) when `ids`
    is shorter than one window, naming `setting`."""
    width = seq_len - len(prefix)
    if len(ids) < width:
        framing = f" ({seq_len} positions with the BOS token)" if prefix else ""
        fits = len(ids) + len(prefix)
        raise DataError(f"{what} holds {len(ids)} tokens, fewer than one window: {setting} {seq_len} needs "
                        f"{width} text tokens{framing}",
                        hint=f"give a longer text, or {setting} {fits} or less"
                        + ("" if setting.startswith("--") else f" (-s {setting}={fits})"))
    return width


def packed_windows(ids: Sequence[int], length: int, *, bos_token_id: int | None = None, what: str = "the text",
                   setting: str = "data.max_length") -> list[tuple[int, ...]]:
    """Training windows: `ids` cut into non-overlapping full windows of `length` positions,
    `[BOS] + length - 1` text tokens (`length` without BOS); a short tail is dropped. DataError when
    `ids` is shorter than one window, as `lm_windows`."""
    prefix = (bos_token_id,) if bos_token_id is not None else ()
    width = _text_width(ids, length, prefix, what, setting)
    return [prefix + tuple(ids[begin:begin + width]) for begin in range(0, len(ids) - width + 1, width)]


def scored_tokens(windows: Sequence[Window]) -> int:
    return sum(w.scored for w in windows)


@dataclass
class PerplexityScore:
    """Summed negative log-likelihood (nats) over `tokens` scored tokens in `windows` windows."""

    nll: float
    tokens: int
    windows: int
    tokens_read: int = 0
    """Positions the model computed (BOS and context tokens included)."""
    seconds: float = 0.0
    uniform: int = 0
    """Scored tokens whose logits were all equal (a collapsed model: its prediction there is uniform)."""

    @property
    def mean_nll(self) -> float:
        return self.nll / self.tokens if self.tokens else math.nan

    @property
    def perplexity(self) -> float:
        return perplexity(self.nll, self.tokens)

    @property
    def tokens_per_second(self) -> float | None:
        """Positions computed per second (context and BOS included: what the model read)."""
        return self.tokens_read / self.seconds if self.seconds > 0 else None


#: the largest mean negative log-likelihood whose exponential is a finite float (about 709.78)
MAX_FINITE_NLL = math.log(sys.float_info.max)


def perplexity(nll_sum: float, tokens: int) -> float:
    """exp(nll_sum / tokens): the exponential of the token-weighted mean negative log-likelihood;
    math.inf when that is beyond the largest float (a diverged model), never an OverflowError. The
    one perplexity of spikelm: a masked LM's masked-token perplexity is this too."""
    if tokens <= 0:
        raise ValueError("perplexity needs at least one scored token")
    mean = nll_sum / tokens
    return math.inf if mean > MAX_FINITE_NLL else math.exp(mean)


Progress = Callable[[int, int, int, float], None]
"""progress(windows done, windows in all, tokens read, seconds so far)."""


def _batches(windows: Sequence[Window], batch_size: int, vocab: int) -> list[list[Window]]:
    """Consecutive windows of one length, at most `batch_size` and `LOGIT_BUDGET` logits per batch."""
    out: list[list[Window]] = []
    for w in windows:
        group = out[-1] if out else None
        if group is not None and len(group[0].input_ids) == len(w.input_ids):
            keep = max(x.scored for x in (*group, w)) + 1
            if len(group) < batch_size and (len(group) + 1) * keep * vocab <= LOGIT_BUDGET:
                group.append(w)
                continue
        out.append([w])
    return out


@torch.no_grad()
def score_windows(model, windows: Sequence[Window], *, batch_size: int = 8, progress: Progress | None = None
                  ) -> PerplexityScore:
    """Sum -log p over the scored tokens of every window (eval mode, no grad, no KV cache)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    nll = torch.zeros((), dtype=torch.float64)
    read = done = uniform = 0
    start = time.perf_counter()
    try:
        for group in _batches(windows, batch_size, vocab):
            ids = torch.tensor([w.input_ids for w in group], dtype=torch.long, device=device)
            keep = max(w.scored for w in group) + 1  # positions L-keep .. L-1; the last predicts nothing
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits.float()
            for row, w in enumerate(group):
                predicting = logits[row, keep - 1 - w.scored: keep - 1]  # the positions before each scored token
                targets = ids[row, ids.shape[1] - w.scored:]
                nll += F.cross_entropy(predicting, targets, reduction="sum").double().cpu()
                uniform += int((predicting.amax(-1) == predicting.amin(-1)).sum())
            done += len(group)
            read += ids.numel()
            if progress is not None:
                progress(done, len(windows), read, time.perf_counter() - start)
    finally:
        model.train(was_training)
    return PerplexityScore(float(nll), scored_tokens(windows), len(windows), read, time.perf_counter() - start,
                           uniform)


__all__ = ["LOGIT_BUDGET", "MAX_FINITE_NLL", "PerplexityScore", "Window", "lm_windows", "perplexity", "score_windows",
           "scored_tokens", "window_stride"]
