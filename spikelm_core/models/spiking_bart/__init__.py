"""Spiking BART (spikelm's port of SpikeLM to encoder-decoders), registered with the Auto classes."""

from .configuration_spiking_bart import SpikingBartConfig
from .modeling_spiking_bart import (
    SpikingBartEncoderOutput,
    SpikingBartForConditionalGeneration,
    SpikingBartModel,
    SpikingBartPreTrainedModel,
)

__all__ = [
    "SpikingBartConfig",
    "SpikingBartEncoderOutput",
    "SpikingBartForConditionalGeneration",
    "SpikingBartModel",
    "SpikingBartPreTrainedModel",
]
