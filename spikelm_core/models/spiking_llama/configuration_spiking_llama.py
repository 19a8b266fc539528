"""Configuration of the spiking Llama: a `LlamaConfig` plus the spiking fields."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig

from ..common import SpikingFields


@strict
class SpikingLlamaConfig(LlamaConfig, SpikingFields):
    r"""A Llama-family decoder whose every weight matmul is driven by spikes: spikelm's port of
    SpikeLM's placement to causal LMs (the paper has no decoder-only model; the placement is an
    assumption documented in `modeling_spiking_llama`).

    All `LlamaConfig` fields keep their meaning (grouped-query attention through
    `num_key_value_heads`, `head_dim`, `rope_parameters`, `tie_word_embeddings`, ...), so dense
    Llama checkpoints load key for key; the spiking fields are those of
    `spikelm_core.models.common.SpikingFields`.
    """

    model_type = "spiking_llama"

    def validate_key_value_heads(self) -> None:
        """Part of `@strict` validation."""
        if self.num_key_value_heads < 1 or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_key_value_heads "
                f"({self.num_key_value_heads})"
            )


__all__ = ["SpikingLlamaConfig"]
