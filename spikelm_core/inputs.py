"""The model inputs of a batch: the entries calibration and firing pass to a model's forward."""

from __future__ import annotations

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "decoder_input_ids", "decoder_attention_mask")


def model_inputs(batch: dict) -> dict:
    """The batch entries a forward takes (labels dropped: calibration and firing need no loss)."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}
