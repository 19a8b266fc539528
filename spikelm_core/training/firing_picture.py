"""`spikelm eval --plot-firing`: the firing rate per token and layer of one input.

The input is a free sentence (`text`) or one example of the task's first dev split (`example`, 0 by
default), tokenised exactly as `eval` tokenises it. The model is loaded, converted and calibrated
as `run_eval` does (`Evaluation.load`, `Evaluation.calibration_batch`: the calibration text), then runs once with every neuron
recorded (`spikelm_core.firing.token_firing`).

- GLUE (spiking BERT): one panel, the input tokens.
- Summarisation (spiking BART): a dev example gives two panels: the source (encoder layers, and the
  cross-attention K/V spikes of each decoder layer, which read encoder states) and the target (the
  decoder layers, teacher-forced with the reference summary: the decoder reads it shifted right, as
  in training). A free sentence has no reference, so only the encoder runs: one panel.
- Language modelling (spiking Llama, wikitext2): one panel, a perplexity window (`[BOS]` + text
  tokens, `example` counts windows) or the free text after `[BOS]`, cut at `data.seq_len` positions.
  A masked LM (spiking BERT) on that text: one panel, a scored sequence unmasked (`[CLS]` ... `[SEP]`,
  `example` counts sequences) or the free text framed so, cut at `data.max_length` tokens.

`spikelm_core.firing_plots` draws the picture and writes it with its JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..calibration import spiking_neurons
from ..config import EvalConfig
from ..errors import ConfigError
from ..firing import TokenFiring, token_firing
from .args import check_device
from .families import evaluation_for
from .mlm import MaskedLmEvaluation
from .pipeline import calibrate_if_needed, check_not_empty, max_length, preflight
from .precision import precision_name, resolve_bf16
from .rundir import seed_everything

FIRING_PICTURE_SCHEMA = "spikelm.firing_tokens/1"


@dataclass
class FiringPicture:
    """Firing per token and layer of one input: what `--plot-firing` draws and writes as JSON."""

    model: str
    task: str
    timesteps: int | None
    input: dict[str, Any]
    """{'kind': 'text', 'text': ...} or {'kind': 'example', 'split': ..., 'index': ...}."""
    panels: tuple[TokenFiring, ...]
    notes: list[str] = field(default_factory=list)
    schema: str = FIRING_PICTURE_SCHEMA

    def describe_input(self) -> str:
        if self.input["kind"] == "text":
            return "free text"
        return f"{self.input['split']} example {self.input['index']}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "model": self.model,
            "task": self.task,
            "timesteps": self.timesteps,
            "input": dict(self.input),
            "notes": list(self.notes),
            "panels": [panel.to_dict() for panel in self.panels],
        }


def run_firing_picture(cfg: EvalConfig, *, text: str | None = None, example: int | None = None) -> FiringPicture:
    """Per-token firing of `cfg.model` on `text`, or on dev example `example` (default 0) of `cfg.task`.

    Raises ConfigError for an empty text, both inputs at once, an example index out of range or a
    model without spiking neurons (`neuron.kind: dense`).
    """
    if text is not None and example is not None:
        raise ConfigError("give --firing-text or --firing-example, not both")
    if text is not None and not text.strip():
        raise ConfigError("--firing-text is empty",
                          hint="give a sentence, or leave it out to picture the first dev example")
    if example is not None and example < 0:
        raise ConfigError(f"--firing-example must be 0 or more, got {example}")
    evaluation = evaluation_for(cfg)
    check_device(cfg.device, "device")
    seed_everything(cfg.seed)
    preflight("eval", cfg.model, evaluation.check_data, evaluation.model_fix)
    loaded = evaluation.load()
    model = loaded.model
    tokenizer = getattr(loaded, "tokenizer", None)
    if text is not None and tokenizer is not None and not tokenizer(text, add_special_tokens=False)["input_ids"]:
        raise ConfigError(f"--firing-text {text!r} holds no token the model's tokenizer reads (control or "
                          "zero-width characters only)", hint="give a sentence")
    if not spiking_neurons(model):
        raise ConfigError(
            f"'{cfg.model}' has no spiking neurons (neuron.kind is dense): there is no firing to picture",
            hint="picture a spiking checkpoint, or convert this one with spiking neurons: -s neuron.kind=elastic_bi "
            "(a dense training run's model, a teacher, is scored dense unless neuron is set)",
        )
    data = evaluation.load_data(loaded)
    check_not_empty(cfg.task, data)
    calibrate_if_needed(model, lambda: evaluation.calibration_batch(loaded, data), loaded.converted)  # as run_eval
    split = evaluation.split_names[0]
    if text is None:
        example = example or 0
        size = len(data[split])
        if example >= size:
            subset = f" (data.eval_subset={cfg.data.eval_subset})" if cfg.data.eval_subset is not None else ""
            raise ConfigError(f"--firing-example {example} is out of range: the {cfg.task} {split} split has "
                              f"{size} example(s){subset}", hint=f"choose an index from 0 to {size - 1}")
    masked = isinstance(evaluation, MaskedLmEvaluation)
    if cfg.task_family == "glue":
        batch, labels = _glue_input(cfg, loaded, data[split], text, example)
    elif masked:
        batch, labels = _mlm_input(evaluation, loaded, data[split], text, example)
    elif cfg.task_family == "lm":
        batch, labels = _lm_input(evaluation, loaded, data[split], text, example)
    else:
        batch, labels = _summary_input(cfg, loaded, data[split], text, example)
    device = next(model.parameters()).device.type
    bf16 = resolve_bf16(cfg.bf16, device, "eval")
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):  # as eval scores (and counts)
        panels = token_firing(model, batch, **labels)
    notes = [f"precision: {precision_name(bf16)} (eval.bf16), as eval scores"] if bf16 else []
    if cfg.task_family == "summarization" and text is None:
        notes.append("source: encoder layers, then each decoder layer's cross-attention K/V spikes "
                     "(they read the source)")
        notes.append("target: decoder layers, teacher-forced with the reference summary (shifted right)")
    elif cfg.task_family == "summarization":
        notes.append("free text: encoder only (no reference summary to teacher-force the decoder)")
    if text is not None:
        kept = int(batch["input_ids"].shape[1])
        if cfg.task_family == "lm" and not masked:
            whole = len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"]) + (
                loaded.tokenizer.bos_token_id is not None)
            setting = "--seq-len (data.seq_len)"
        else:
            whole = len(loaded.tokenizer(text)["input_ids"])
            setting = "data.max_length"
        if whole > kept:
            notes.append(f"free text cut at {kept} of its {whole} tokens ({setting})")
    return FiringPicture(
        model=str(cfg.model), task=str(cfg.task), timesteps=getattr(model.config, "num_timesteps", None),
        input=({"kind": "text", "text": text} if text is not None
               else {"kind": "example", "split": split, "index": example}),
        panels=panels, notes=notes,
    )


def _tokens(tokenizer, ids: torch.Tensor) -> list[str]:
    return [str(t) for t in tokenizer.convert_ids_to_tokens(ids[0].tolist())]


def _glue_input(cfg, loaded, dataset, text, example):
    """One tokenised sentence (pair), as `eval` feeds it: `tokenize_glue`'s columns, or the free text."""
    if text is not None:
        row = dict(loaded.tokenizer(text, truncation=True, max_length=max_length(cfg, loaded.model)))
    else:
        row = dataset[example]
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in row]
    batch = {k: torch.tensor([list(row[k])], dtype=torch.long) for k in keys}
    return batch, {"source_tokens": _tokens(loaded.tokenizer, batch["input_ids"])}


def _lm_input(evaluation, loaded, windows, text, example):
    """A perplexity window, or `[BOS]` + the free text (at most the evaluation's window length)."""
    if text is not None:
        bos = loaded.tokenizer.bos_token_id
        ids = ([bos] if bos is not None else []) + list(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])
        ids = ids[: evaluation.seq_len]
    else:
        ids = list(windows[example].input_ids)
    batch = {"input_ids": torch.tensor([ids], dtype=torch.long)}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    return batch, {"source_tokens": _tokens(loaded.tokenizer, batch["input_ids"])}


def _mlm_input(evaluation, loaded, rows, text, example):
    """A scored masked-LM sequence, unmasked (`[CLS]` text `[SEP]`), or the free text framed so (at
    most `data.max_length` tokens)."""
    if text is not None:
        enc = loaded.tokenizer(text, max_length=evaluation.max_length, truncation=True)
        ids, types = enc["input_ids"], enc.get("token_type_ids") or [0] * len(enc["input_ids"])
    else:
        ids, types = list(rows[example]["input_ids"]), list(rows[example]["token_type_ids"])
    batch = {"input_ids": torch.tensor([ids], dtype=torch.long), "token_type_ids": torch.tensor([types])}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    return batch, {"source_tokens": _tokens(loaded.tokenizer, batch["input_ids"])}


def _summary_input(cfg, loaded, raw, text, example):
    """The document (and, for a dev example, the reference summary as the decoder's input)."""
    from ..data.summarization import tokenize_summarization

    tokenizer, model = loaded.tokenizer, loaded.model
    if text is not None:
        enc = tokenizer(text, max_length=cfg.data.max_length, truncation=True)
        batch = {"input_ids": torch.tensor([enc["input_ids"]]), "attention_mask": torch.tensor([enc["attention_mask"]])}
        return batch, {"source_tokens": _tokens(tokenizer, batch["input_ids"])}
    row = tokenize_summarization(raw.select([example]), tokenizer, cfg.data.max_length, cfg.data.max_target_length,
                                 model_max_positions=model.config.max_position_embeddings)[0]
    labels = torch.tensor([row["labels"]])
    batch = {"input_ids": torch.tensor([row["input_ids"]]), "attention_mask": torch.tensor([row["attention_mask"]]),
             "decoder_input_ids": model.prepare_decoder_input_ids_from_labels(labels=labels)}
    return batch, {"source_tokens": _tokens(tokenizer, batch["input_ids"]),
                   "target_tokens": _tokens(tokenizer, batch["decoder_input_ids"])}


__all__ = ["FIRING_PICTURE_SCHEMA", "FiringPicture", "run_firing_picture"]
