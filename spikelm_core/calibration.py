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

from pathlib import Path

import torch
from torch import nn

from .errors import DataError
from .neurons import SpikingNeuron


def spiking_neurons(model: nn.Module) -> list[tuple[str, SpikingNeuron]]:
    """(qualified name, neuron) for every spiking neuron, in registration (= forward) order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SpikingNeuron)]


def is_calibrated(model: nn.Module) -> bool:
    return all(n.is_calibrated for _, n in spiking_neurons(model))


_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "decoder_input_ids", "decoder_attention_mask")


def model_inputs(batch: dict) -> dict:
    """The batch entries a forward takes (labels dropped: calibration and firing need no loss)."""
    return {k: v for k, v in batch.items() if k in _MODEL_INPUTS}


@torch.no_grad()
def calibrate(model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """Recalibrate every neuron's amplitudes on `batch` (one forward in eval mode)."""
    neurons = spiking_neurons(model)
    for _, n in neurons:
        n.mark_uncalibrated()
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(**{k: v.to(device) for k, v in model_inputs(batch).items()})
    finally:
        model.train(was_training)
    missing = [name for name, n in neurons if not n.is_calibrated]
    if missing:  # a neuron the forward never reached (e.g. an unused head)
        raise RuntimeError(f"calibration did not reach {len(missing)} neuron(s), first: {missing[0]}")


# -- calibration text ---------------------------------------------------------------------------

def packaged_calibration_text() -> str:
    """English prose written for spikelm to calibrate amplitudes (ships with the package)."""
    return (Path(__file__).parent / "resources" / "calibration.txt").read_text(encoding="utf-8")


def read_text_file(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"calibration text '{p}' does not exist or is not a file", hint="give a UTF-8 text file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read '{p}' as UTF-8 text: {exc}") from exc
    if not text.strip():
        raise DataError(f"calibration text '{p}' is empty", hint="give a file with at least a few sentences")
    return text


def text_batches(tokenizer, text: str, seq_len: int = 128, batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Pack `text` into full `[CLS] ... [SEP]` sequences of `seq_len` tokens (no padding), in batches.

    Packing avoids pad tokens, so calibration means and firing rates see only real text. The last
    partial sequence is dropped unless it is the only one.
    """
    if seq_len < 3:
        raise DataError(f"sequence length must be at least 3, got {seq_len}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    ids: list[int] = []
    for line in lines:
        ids.extend(tokenizer(line, add_special_tokens=False)["input_ids"])
    if not ids:
        raise DataError("the calibration text holds no tokens")
    body = seq_len - 2
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    chunks = [ids[i : i + body] for i in range(0, len(ids), body)]
    if len(chunks) > 1 and len(chunks[-1]) < body:
        chunks.pop()
    seqs = [[cls_id, *c, sep_id] for c in chunks]
    batches = []
    for i in range(0, len(seqs), batch_size):
        group = seqs[i : i + batch_size]
        width = max(len(s) for s in group)
        input_ids = torch.full((len(group), width), tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for j, s in enumerate(group):
            input_ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        batches.append({"input_ids": input_ids, "attention_mask": mask,
                        "token_type_ids": torch.zeros_like(input_ids)})
    return batches
