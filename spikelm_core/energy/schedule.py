"""The decoding schedule: what each step of generation feeds, attends to and scores.

One home for the schedule of autoregressive generation, used by the arithmetic (`seq2seq.py`) and by
the memory traffic (`memory.py`). Generating m tokens takes m decoder forwards, step j yielding token j:

- **BART** (encoder-decoder; the encoder runs once, apart from these steps): step i feeds decoder
  position i (the start token first). With the KV cache it feeds that one token and attends to i
  self-attention keys; without it, it re-runs the prefix of i tokens. BART computes logits for every
  position it feeds (its forward has no `logits_to_keep`).
- **decoder-only** (Llama; a prompt of n tokens): step 1 runs the prompt, n tokens attending causally
  to n keys, in both modes. With the cache, step j >= 2 feeds the one token generated last (position
  n + j - 1) and attends to n + j - 1 keys; without it, step j re-runs the whole prefix of n + j - 1
  tokens. The LM head scores the last position only (transformers' `generate` passes
  `logits_to_keep=1` to a model that accepts it, as the spiking Llama does).

Causal masking does not change the count: a full forward over L tokens is billed L x L query-key
pairs (not halved, as for BART's decoder self-attention), and an incremental step its one query
against every key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One decoder forward of generation."""

    position: int
    """j = 1..m: the step that yields generated token j."""
    tokens: int
    """Tokens fed this step (the queries; every linear op runs on them)."""
    keys: int
    """Self-attention keys each query attends to (the fed tokens plus the cached ones)."""
    logits: int
    """Positions the LM head scores."""
    prompt: bool = False
    """The step runs a decoder-only model's prompt (step 1): charged once per input."""


def decoding_steps(target_len: int, *, cache: bool, prompt_len: int | None = None) -> tuple[Step, ...]:
    """The m = `target_len` steps of one generation (module docstring).

    `prompt_len` None: BART's decoder (the encoder is not a step); an int n: a decoder-only model
    with a prompt of n tokens.
    """
    for name, value in (("target_len", target_len), ("prompt_len", prompt_len if prompt_len is not None else 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if prompt_len is None:
        return tuple(Step(i, 1 if cache else i, i, 1 if cache else i) for i in range(1, target_len + 1))
    n = prompt_len
    steps = [Step(1, n, n, 1, prompt=True)]
    for j in range(2, target_len + 1):
        keys = n + j - 1
        steps.append(Step(j, 1 if cache else keys, keys, 1))
    return tuple(steps)


__all__ = ["Step", "decoding_steps"]
