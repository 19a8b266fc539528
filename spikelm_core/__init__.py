"""spikelm core library: spiking neurons, spiking BERT, BART and Llama as Hugging Face models, conversion,
calibration, training, evaluation and energy audit (SpikeLM, Xing et al., ICML 2024).

Importing the package registers the spiking models with the transformers Auto classes, so
`AutoModel.from_pretrained(dir)` loads a saved spiking model. It never imports typer or rich.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)

from .models.spiking_bart import SpikingBartConfig, SpikingBartForConditionalGeneration, SpikingBartModel

from .models.spiking_bert import (
    SpikingBertConfig,
    SpikingBertForMaskedLM,
    SpikingBertForPreTraining,
    SpikingBertForSequenceClassification,
    SpikingBertModel,
)
from .models.spiking_llama import SpikingLlamaConfig, SpikingLlamaForCausalLM, SpikingLlamaModel

__version__ = "0.2.0.dev0"


def _register() -> None:
    AutoConfig.register(SpikingBertConfig.model_type, SpikingBertConfig, exist_ok=True)
    AutoConfig.register(SpikingBartConfig.model_type, SpikingBartConfig, exist_ok=True)
    AutoModel.register(SpikingBartConfig, SpikingBartModel, exist_ok=True)
    AutoModelForSeq2SeqLM.register(SpikingBartConfig, SpikingBartForConditionalGeneration, exist_ok=True)
    AutoConfig.register(SpikingLlamaConfig.model_type, SpikingLlamaConfig, exist_ok=True)
    AutoModel.register(SpikingLlamaConfig, SpikingLlamaModel, exist_ok=True)
    AutoModelForCausalLM.register(SpikingLlamaConfig, SpikingLlamaForCausalLM, exist_ok=True)
    for auto, cls in (
        (AutoModel, SpikingBertModel),
        (AutoModelForSequenceClassification, SpikingBertForSequenceClassification),
        (AutoModelForMaskedLM, SpikingBertForMaskedLM),
        (AutoModelForPreTraining, SpikingBertForPreTraining),
    ):
        auto.register(SpikingBertConfig, cls, exist_ok=True)


_register()

__all__ = [
    "SpikingBertConfig",
    "SpikingBertModel",
    "SpikingBertForSequenceClassification",
    "SpikingBertForMaskedLM",
    "SpikingBertForPreTraining",
    "SpikingBartConfig",
    "SpikingBartModel",
    "SpikingBartForConditionalGeneration",
    "SpikingLlamaConfig",
    "SpikingLlamaModel",
    "SpikingLlamaForCausalLM",
    "__version__",
]
