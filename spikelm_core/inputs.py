"""The model inputs of a batch: the entries calibration and firing pass to a model's forward."""

from __future__ import annotations

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "decoder_input_ids", "decoder_attention_mask")


def model_inputs(batch: dict) -> dict:
    """The batch entries a forward takes (labels dropped: calibration and firing need no loss). A
    seq2seq batch's labels first give the decoder mask when it has none (-100: the summaries'
    padding), as the model derives it from labels itself, so firing and calibration leave it out."""
    out = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
    labels = batch.get("labels")
    if "decoder_input_ids" in out and "decoder_attention_mask" not in out and labels is not None \
            and getattr(labels, "shape", None) == out["decoder_input_ids"].shape:
        out["decoder_attention_mask"] = decoder_mask_from_labels(labels)
    return out


def decoder_mask_from_labels(labels):
    """A seq2seq batch's decoder mask from its labels: 1 for a summary token, 0 for its padding (-100).
    (The decoder input at position i predicts label i, so the two line up.)"""
    return (labels != -100).long()
