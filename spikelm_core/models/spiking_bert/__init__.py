"""Spiking BERT: configuration and models, registered with the transformers Auto classes."""

from .configuration_spiking_bert import SpikingBertConfig
from .modeling_spiking_bert import (
    SpikeLinear,
    SpikeMatmul,
    SpikingBertForMaskedLM,
    SpikingBertForPreTraining,
    SpikingBertForSequenceClassification,
    SpikingBertModel,
    SpikingBertPreTrainedModel,
)

__all__ = [
    "SpikingBertConfig",
    "SpikeLinear",
    "SpikeMatmul",
    "SpikingBertPreTrainedModel",
    "SpikingBertModel",
    "SpikingBertForSequenceClassification",
    "SpikingBertForMaskedLM",
    "SpikingBertForPreTraining",
]
