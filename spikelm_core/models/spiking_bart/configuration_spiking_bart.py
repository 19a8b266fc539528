"""Configuration of the spiking BART: a `BartConfig` plus the spiking fields."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import BartConfig

from ..common import SpikingFields

ENCODER_READOUTS = ("per_step", "mean")


@strict
class SpikingBartConfig(BartConfig, SpikingFields):
    r"""A BART whose every weight matmul is driven by spikes: spikelm's port of SpikeLM to
    encoder-decoder models (the paper reports a spiking BART-base; no BART code was released, so
    the placement is an assumption documented in docs/spiking-bart.md).

    All `BartConfig` fields keep their meaning, so dense BART checkpoints load key for key. The
    spiking fields are those of `spikelm_core.models.common.SpikingFields`, plus:

    Args:
        encoder_readout (`str`, defaults to "per_step"): what the decoder cross-attends to.
            "per_step": decoder step t attends to encoder step t; "mean": every decoder step attends
            to the encoder's mean over T.
    """

    model_type = "spiking_bart"

    encoder_readout: str = "per_step"

    def validate_readout(self) -> None:
        """Part of `@strict` validation."""
        if self.encoder_readout not in ENCODER_READOUTS:
            raise ValueError(f"encoder_readout must be one of {', '.join(ENCODER_READOUTS)}; got {self.encoder_readout!r}")
        if self.d_model % self.encoder_attention_heads or self.d_model % self.decoder_attention_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be a multiple of encoder_attention_heads "
                f"({self.encoder_attention_heads}) and decoder_attention_heads ({self.decoder_attention_heads})"
            )


__all__ = ["SpikingBartConfig"]
