"""Dense checkpoint -> spiking model conversion."""

from .bert import ConvertResult, NeuronSettings, convert_bert, load_dense_state_dict, spiking_model_from_dense

__all__ = ["ConvertResult", "NeuronSettings", "convert_bert", "load_dense_state_dict", "spiking_model_from_dense"]
