"""Configuration of the spiking BERT: a `BertConfig` plus the spiking fields."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import BertConfig

from ..common import SpikingFields


@strict
class SpikingBertConfig(BertConfig, SpikingFields):
    r"""A BERT whose every weight matmul is driven by spikes (SpikeLM, Xing et al., ICML 2024).

    All `BertConfig` fields keep their meaning (so dense BERT checkpoints load key for key); the
    spiking fields are those of `spikelm_core.models.common.SpikingFields`.
    """

    model_type = "spiking_bert"

    def validate_heads(self) -> None:
        """Part of `@strict` validation."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads ({self.num_attention_heads})"
            )


__all__ = ["SpikingBertConfig"]
