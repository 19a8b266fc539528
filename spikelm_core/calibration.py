"""Explicit amplitude calibration, and the calibration text.

spikelm's pipelines never rely on a neuron calibrating itself on whatever batch it happens to see
first (the released code's side effect, spikelm-method.md gotcha 2). They call `calibrate(model,
batch)` on a chosen batch before anything else runs: every neuron is marked uncalibrated, then one
forward in eval mode (no dropout) lets each neuron, in forward order, set a_t = k * mean|u_t| on its
own input. Under torch.distributed the means are averaged across ranks, so all ranks hold the same
amplitudes. The `calibrated` flags are saved with the model: a reloaded model never recalibrates.

Firing rates live in `spikelm_core.firing` (`measure_firing`, `record_firing`, `FiringReport`).
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .data.text import SHARED_DATA_DIR, read_utf8, require_special_tokens
from .errors import CheckpointError, ConfigError, DataError, first_details
from .firing import FiringRecorder, real_token_rows
from .inputs import model_inputs
from .log import get_logger
from .neurons import non_finite_neurons, spiking_neurons

log = get_logger("calibration")

#: config.json key `spikelm convert` writes: its amplitudes come from the calibration text, not from a
#: task's data, so a training run starting from that checkpoint calibrates again on its first batch
#: (method doc, gotcha 3), and its checkpoints no longer carry the key.
CONVERT_AMPLITUDES = ("amplitudes_from", "spikelm convert")


def is_calibrated(model: nn.Module) -> bool:
    return all(n.is_calibrated for _, n in spiking_neurons(model))


CalibrationMode = Literal["eval", "train"]
CALIBRATION_MODES: tuple[str, ...] = typing.get_args(CalibrationMode)
"""The model's mode during the calibration forward: 'eval' (spikelm's default, no dropout) or 'train'
(dropout on, as the released code's first pretraining step calibrates)."""
CalibrationTokens = Literal["all", "real"]
CALIBRATION_TOKENS: tuple[str, ...] = typing.get_args(CalibrationTokens)
"""What the calibration means average over: every position of the batch, pads included (the released
code, which pads every batch to 128), or its real tokens only (pads excluded, as firing rates count)."""


@torch.no_grad()
def calibrate(model: nn.Module, batch: dict[str, torch.Tensor], *, tokens: CalibrationTokens = "all",
              missing_only: bool = False, mode: CalibrationMode = "eval") -> None:
    """Recalibrate every neuron's amplitudes on `batch` (one forward without gradients; `mode` "eval":
    dropout off, so the amplitudes depend on the batch alone; "train": dropout on, as the released code
    calibrates inside its first training step).

    `tokens="real"` leaves the batch's pad positions out of every mean (the batch's `attention_mask`,
    read as `firing` reads it), so the amplitudes do not depend on how the batch was padded.
    `missing_only`: calibrate only the neurons not calibrated yet (a checkpoint saved with some
    uncalibrated), keeping the amplitudes the others carry."""
    if tokens not in CALIBRATION_TOKENS:
        raise ValueError(f"tokens must be one of {', '.join(CALIBRATION_TOKENS)}, got {tokens!r}")
    check_token_ids(model, batch)
    neurons = spiking_neurons(model)
    for _, n in neurons:
        if not missing_only:
            n.mark_uncalibrated()
    if mode not in CALIBRATION_MODES:
        raise ValueError(f"mode must be one of {', '.join(CALIBRATION_MODES)}, got {mode!r}")
    was_training = model.training
    model.train(mode == "train")
    recorder = None
    if tokens == "real":
        recorder = FiringRecorder(model)
        for name, n in neurons:
            n.calibration_select = _real_rows_of(recorder, name)
        recorder.start(count=False)  # the token masks only
    try:
        device = next(model.parameters()).device
        out = model(**{k: v.to(device) for k, v in model_inputs(batch).items()})
    finally:
        model.train(was_training)
        if recorder is not None:
            recorder.stop()
            for _, n in neurons:
                n.calibration_select = None
    missing = [name for name, n in neurons if not n.is_calibrated]
    if missing:  # a neuron the forward never reached (e.g. an unused head)
        raise RuntimeError(f"calibration did not reach {len(missing)} neuron(s), first: {missing[0]}")
    check_finite_neurons(model)
    check_live_output(model, out)


def check_finite_neurons(model: nn.Module, soft_reset: str = "neuron.reset soft (--reset soft)") -> None:
    """ConfigError (exit 2) when calibration left a neuron's amplitudes (or other state) non-finite:
    amplitudes that drive no spike. `soft_reset` says how the caller's command asks for soft resets.
    (Saved ones are checked as a checkpoint loads: `checkpoints.check_saved_amplitudes`.)"""
    bad = non_finite_neurons(model)
    if not bad:
        return
    official = any(getattr(n, "reset", None) == "official" for _, n in spiking_neurons(model))
    steps = max((getattr(n, "num_timesteps", 1) for _, n in spiking_neurons(model)), default=1)
    raise ConfigError(
        f"calibration gave non-finite amplitudes in {len(bad)} neuron state tensor(s)",
        details=first_details(bad),
        hint=("the 'official' reset (the released code's; docs/spikelm-method.md, 2.1) amplifies the membrane "
              f"once amplitudes pass 4, which {steps} time steps reach: use {soft_reset}, "
              "fewer time steps, or another k" if official else
              "lower neuron.k or the number of time steps, or check the model's weights for NaN"),
    )


def check_live_output(model: nn.Module, out, soft_reset: str = "neuron.reset soft (--reset soft)") -> None:
    """ConfigError (exit 2) when the calibration forward's `logits` (a model with a head) are
    non-finite, or constant across their last dimension at some position. Finite but huge
    amplitudes (the 'official' reset amplifying over many steps) overflow the float32 mean square of
    a later RMSNorm/LayerNorm, which then returns zeros: the model scores every token alike (a causal
    LM's perplexity is then exactly its vocabulary size) while every amplitude is finite."""
    scores = getattr(out, "logits", None)
    if not torch.is_tensor(scores) or not scores.is_floating_point() or scores.dim() < 2 or scores.shape[-1] < 2:
        return
    rows = scores.detach().float().reshape(-1, scores.shape[-1])
    non_finite = int((~torch.isfinite(rows)).any(-1).sum())
    constant = int((rows.amax(-1) == rows.amin(-1)).sum())
    if not non_finite and not constant:
        return
    spiking = spiking_neurons(model)
    official = any(getattr(n, "reset", None) == "official" for _, n in spiking)
    steps = max((getattr(n, "num_timesteps", 1) for _, n in spiking), default=1)
    alphas = [n.alpha.detach().abs().max() for _, n in spiking
              if torch.is_tensor(getattr(n, "alpha", None)) and n.alpha.numel()]
    what = (f"{non_finite} of {rows.shape[0]} positions give non-finite scores" if non_finite else
            f"{constant} of {rows.shape[0]} positions give every output the same score (a state overflowed "
            "float32 and a normalisation turned it to zeros)")
    raise ConfigError(
        f"after calibration the model's outputs collapsed: {what}",
        details=[f"largest amplitude: {float(max(alphas)):.4g}"] if alphas else [],
        hint=("the 'official' reset (the released code's; docs/spikelm-method.md, 2.1) amplifies the membrane "
              f"once amplitudes pass 4, which {steps} time steps reach: use {soft_reset}, "
              "fewer time steps, or another k" if official else
              "lower neuron.k or the number of time steps, or check the model's weights"),
    )


def _real_rows_of(recorder: FiringRecorder, name: str):
    """Neuron `name`'s calibration input without its pads, by the mask `recorder` holds at the time."""

    def select(x: torch.Tensor) -> torch.Tensor:
        mask = recorder.token_mask(name)
        return x if mask is None else real_token_rows(x, mask)

    return select


# -- calibration text ---------------------------------------------------------------------------

#: The default calibration text of causal LMs when it is present: WikiText-2 validation from the
#: shared data beside the checkout (found from the package, whatever the working directory).
CAUSAL_CALIBRATION_FILE = SHARED_DATA_DIR / "text" / "wikitext-2" / "valid.txt"
PACKAGED = "packaged"
"""What `calibration_text` reports as the source of the packaged text."""
#: How `spikelm convert` calibrates (and `eval`, for a dense model it converts): on the first batch
#: of `CALIBRATION_BATCH_SIZE` packed sequences of `CALIBRATION_SEQ_LEN` tokens of the calibration text.
CALIBRATION_SEQ_LEN = 128
CALIBRATION_BATCH_SIZE = 8


def packaged_calibration_text() -> str:
    """English prose written for spikelm to calibrate amplitudes (ships with the package)."""
    return (Path(__file__).parent / "resources" / "calibration.txt").read_text(encoding="utf-8")


def calibration_text(path: str | Path | None = None, *, causal: bool = False) -> tuple[str, str]:
    """(text, its source): the file `path` when given; else, for a causal LM, `CAUSAL_CALIBRATION_FILE`
    when it exists (long running text, as the LM reads at inference); else the packaged text
    (source `PACKAGED`)."""
    if path is not None:
        return read_text_file(path), str(path)
    if causal and CAUSAL_CALIBRATION_FILE.is_file():
        return read_text_file(CAUSAL_CALIBRATION_FILE), str(CAUSAL_CALIBRATION_FILE)
    return packaged_calibration_text(), PACKAGED


def read_text_file(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"calibration text '{p}' does not exist or is not a file", hint="give a UTF-8 text file")
    text = read_utf8(p)
    if not text.strip():
        raise DataError(f"calibration text '{p}' is empty", hint="give a file with at least a few sentences")
    return text


def check_token_ids(model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """CheckpointError (exit 3) when `batch` holds token ids beyond the model's embeddings: the tokenizer
    is not the model's (a bare IndexError deep in the embedding otherwise)."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    ids = batch.get("input_ids")
    if vocab is None or ids is None or ids.numel() == 0:
        return
    top = int(ids.max())
    if top >= vocab or int(ids.min()) < 0:
        raise CheckpointError(
            f"the tokenizer gives token id {top if top >= vocab else int(ids.min())}; the model's embeddings "
            f"hold ids 0-{vocab - 1}",
            hint="the tokenizer is not the model's: use the one it was trained with (drop --tokenizer, or "
            "copy the model's tokenizer files into its folder)",
        )


def text_batches(tokenizer, text: str, seq_len: int = 128, batch_size: int = 8, *, causal: bool = False,
                 max_batches: int | None = None, source: str | None = None) -> list[dict[str, torch.Tensor]]:
    """Pack `text` into full sequences of `seq_len` tokens (no padding), in batches: `[CLS] ... [SEP]`
    with token_type_ids (encoders), or with `causal=True` (decoder-only LMs) `[BOS] ...` (no BOS when
    the tokenizer has none) and no token_type_ids, the lines kept as running text (newline-separated).

    Packing avoids pad tokens, so calibration means and firing rates see only real text. The last
    partial sequence is dropped unless it is the only one. `max_batches`: at most that many batches,
    and only as much text tokenised as they need. `source`: the file the text came from, for the error
    when it holds no tokens.
    """
    if seq_len < 3:
        raise DataError(f"sequence length must be at least 3, got {seq_len}")
    if causal:
        head, tail = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else [], []
    else:
        cls_id, sep_id = require_special_tokens(tokenizer, ("cls", "sep"), "an encoder reads text framed by")
        head, tail = [cls_id], [sep_id]
    body = seq_len - len(head) - len(tail)
    needed = None if max_batches is None else max_batches * batch_size * body
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    ids: list[int] = []
    step = 64 if causal else 1  # causal: blocks of lines, so that newlines are tokenised as the LM reads them
    for i in range(0, len(lines), step):
        piece = "\n".join(lines[i : i + step]) + "\n" if causal else lines[i]
        ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
        if needed is not None and len(ids) >= needed:
            break
    if not ids:
        raise DataError(f"the calibration text{f' {source!r}' if source else ''} holds no tokens",
                        hint="give a file of real text in the model's language")
    chunks = [ids[i : i + body] for i in range(0, len(ids), body)]
    if needed is not None:
        chunks = chunks[: max_batches * batch_size]
    if len(chunks) > 1 and len(chunks[-1]) < body:
        chunks.pop()
    elif len(chunks[0]) < body:  # the only sequence, and short: the amplitudes rest on these few tokens
        log.warning("the calibration text holds %d token(s), less than one sequence of %d: the firing rates (and "
                    "amplitudes calibrated on it) rest on those alone (give a longer text)", len(chunks[0]), body)
    seqs = [[*head, *c, *tail] for c in chunks]
    batches = []
    for i in range(0, len(seqs), batch_size):
        group = seqs[i : i + batch_size]
        width = max(len(s) for s in group)
        input_ids = torch.full((len(group), width), tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for j, s in enumerate(group):
            input_ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        batch = {"input_ids": input_ids, "attention_mask": mask}
        if not causal:
            batch["token_type_ids"] = torch.zeros_like(input_ids)
        batches.append(batch)
    return batches


def text_calibration_batch(tokenizer, *, causal: bool, max_positions: int | None = None,
                           path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The batch `spikelm convert` calibrates on: the first `CALIBRATION_BATCH_SIZE` sequences of
    `CALIBRATION_SEQ_LEN` tokens (fewer for a model with fewer positions) of `calibration_text`."""
    text, where = calibration_text(path, causal=causal)
    seq_len = min(CALIBRATION_SEQ_LEN, max_positions or CALIBRATION_SEQ_LEN)
    return text_batches(tokenizer, text, seq_len=seq_len, batch_size=CALIBRATION_BATCH_SIZE, causal=causal,
                        max_batches=1, source=None if where == PACKAGED else where)[0]
