"""Dense checkpoint -> spiking model conversion (BERT and BART)."""

from .bert import (
    ConvertResult,
    NeuronSettings,
    convert_model,
    layer_firing_rates,
    load_dense_state_dict,
    load_tokenizer,
    read_config,
    spiking_model_from_dense,
)

__all__ = [
    "ConvertResult",
    "NeuronSettings",
    "convert_model",
    "layer_firing_rates",
    "load_dense_state_dict",
    "load_tokenizer",
    "read_config",
    "spiking_model_from_dense",
]
