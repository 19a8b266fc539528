"""Spiking Llama-family causal LM (spikelm's port of SpikeLM to decoders), registered with the Auto classes."""

from .configuration_spiking_llama import SpikingLlamaConfig
from .modeling_spiking_llama import (
    SpikingLlamaForCausalLM,
    SpikingLlamaModel,
    SpikingLlamaModelOutput,
    SpikingLlamaPreTrainedModel,
)

__all__ = [
    "SpikingLlamaConfig",
    "SpikingLlamaForCausalLM",
    "SpikingLlamaModel",
    "SpikingLlamaModelOutput",
    "SpikingLlamaPreTrainedModel",
]
