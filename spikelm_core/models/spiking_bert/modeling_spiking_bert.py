"""Spiking BERT (SpikeLM placement, spikelm-method.md section 3) as Hugging Face models.

Every tensor inside the encoder is time-first, `[T, B, L, D]`. Per layer:

    0  embeddings (float, computed once) repeated T times
    1  Q, K, V = SpikeLinear_q/k/v(h)          three stateful neurons before the projections (one
                                               shared pass and one GEMM when they spike identically)
    2  scores  = Q . spike(K)^T / sqrt(d_h)    `qk`: stateless spike on K; Q stays float
    3  softmax(scores + mask), dropout         float
    4  context = probs . spike(V)              `av`: stateless spike on V
    5  SpikeLinear_o(context), LayerNorm(+h)   neuron before the output projection
    6  GELU(SpikeLinear_1(h'))                 neuron before FFN1; exact erf GELU
    7  SpikeLinear_2(.), LayerNorm(+h')        neuron before FFN2
    readout: mean over T of the last layer; pooler and heads run on that float state.

Spike-driven ops are `SpikeLinear` (parameter names equal Hugging Face BERT's) and `SpikeMatmul`
(`attention.self.qk`, `attention.self.av`), each with a `neuron` child (see `models/common.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    BaseModelOutputWithPoolingAndCrossAttentions,
    MaskedLMOutput,
    SequenceClassifierOutput,
)
from transformers.models.bert.modeling_bert import (
    BertEmbeddings,
    BertOnlyMLMHead,
    BertPooler,
    BertPreTrainingHeads,
)
from transformers.utils import ModelOutput

from ...neurons import SpikingNeuron
from ..common import (
    CompilableLayer,
    SharedInputProjections,
    SpikeLinear,
    SpikeMatmul,
    TiedKeysNotSaved,
    UniformDropout,
    attention_with_dropout,
    init_neuron_state,
    make_kv_spike,
    make_neuron,
    model_output,
    read_out,
    token_cross_entropy,
)
from .configuration_spiking_bert import SpikingBertConfig


@dataclass
class SpikingBertModelOutput(BaseModelOutputWithPoolingAndCrossAttentions):
    """`BaseModelOutputWithPoolingAndCrossAttentions` plus the last layer's per-step states."""

    spike_states: torch.FloatTensor | None = None


@dataclass
class SpikingBertForPreTrainingOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    prediction_logits: torch.FloatTensor | None = None
    seq_relationship_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    mlm_loss: torch.FloatTensor | None = None
    """The masked-LM term of `loss` (the Trainer logs it as `loss_mlm`)."""
    nsp_loss: torch.FloatTensor | None = None
    """The next-sentence term of `loss` (`loss_nsp`); None without NSP labels."""


class SpikingBertSelfAttention(SharedInputProjections):
    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        d = config.hidden_size
        self.query = SpikeLinear(d, d, make_neuron(config))
        self.key = SpikeLinear(d, d, make_neuron(config))
        self.value = SpikeLinear(d, d, make_neuron(config))
        self.qk = SpikeMatmul(make_kv_spike(config), transpose_right=True)
        self.av = SpikeMatmul(make_kv_spike(config), transpose_right=False)
        self.dropout = UniformDropout(config.attention_probs_dropout_prob)

    def shared_projection_sets(self):
        return {"qkv": (self.query, self.key, self.value)}

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, L, D] -> [T, B, H, L, dh]
        T, B, L, _ = x.shape
        return x.view(T, B, L, self.num_heads, self.head_dim).transpose(2, 3)

    #: "fused": spike K and V, then one fused scaled-dot-product-attention kernel (the default);
    #: "reference": explicit Q.K^T / softmax / probs.V through the `qk` and `av` modules. Both give
    #: the same result; tracing (MAC counting) and `output_attentions` always take the reference.
    attention_impl = "fused"

    def forward(self, h, mask, output_attentions: bool = False):
        q, k, v = (self._heads(x) for x in self.project(h, "qkv"))
        if self.attention_impl == "fused" and not output_attentions and not torch.jit.is_tracing():
            ctx, probs = self._fused(q, k, v, mask), None
        else:
            scores = self.qk(q, k) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores + mask
            # the maps returned are the probabilities (rows summing to 1), dropout acting on the product
            # alone: distillation's attention terms (method doc 13) compare distributions, which a
            # dropped map (zeros, rows off 1) is not
            probs = torch.softmax(scores, dim=-1)
            ctx = self.av(self.dropout(probs), v)  # [T, B, H, L, dh]
        T, B, H, L, dh = ctx.shape
        ctx = ctx.transpose(2, 3).reshape(T, B, L, H * dh)
        return ctx, (probs if output_attentions else None)

    def _fused(self, q, k, v, mask):
        """softmax(Q.spike(K)^T/sqrt(dh) + mask) . spike(V), T folded into the batch of one
        `attention_with_dropout` call."""
        k, v = self.qk.neuron(k), self.av.neuron(v)
        T, B, H, L, dh = q.shape
        fold = lambda x: x.reshape(T * B, H, x.shape[-2], dh)  # noqa: E731
        attn_mask = None
        if mask is not None:
            attn_mask = mask.to(q.dtype).expand(T, *mask.shape).reshape(T * B, 1, 1, mask.shape[-1])
        ctx = attention_with_dropout(fold(q), fold(k), fold(v), attn_mask, self.dropout.p, self.training)
        return ctx.view(T, B, H, L, dh)


class SpikingBertSelfOutput(nn.Module):
    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        self.dense = SpikeLinear(config.hidden_size, config.hidden_size, make_neuron(config))
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = UniformDropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class SpikingBertAttention(nn.Module):
    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        self.self = SpikingBertSelfAttention(config)
        self.output = SpikingBertSelfOutput(config)

    def forward(self, h, mask, output_attentions: bool = False):
        ctx, probs = self.self(h, mask, output_attentions)
        return self.output(ctx, h), probs


class SpikingBertIntermediate(nn.Module):
    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        self.dense = SpikeLinear(config.hidden_size, config.intermediate_size, make_neuron(config))
        # the checkpoint's activation (BERT's exact erf GELU, as in the released code, unless it names another)
        self.act = ACT2FN[getattr(config, "hidden_act", "gelu")]

    def forward(self, x):
        return self.act(self.dense(x))


class SpikingBertOutput(nn.Module):
    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        self.dense = SpikeLinear(config.intermediate_size, config.hidden_size, make_neuron(config))
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = UniformDropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class SpikingBertLayer(CompilableLayer):
    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        self.attention = SpikingBertAttention(config)
        self.intermediate = SpikingBertIntermediate(config)
        self.output = SpikingBertOutput(config)

    def _forward(self, h, mask, output_attentions: bool = False):
        a, probs = self.attention(h, mask, output_attentions)
        return self.output(self.intermediate(a), a), probs


class SpikingBertEncoder(nn.Module):
    def __init__(self, config: SpikingBertConfig):
        super().__init__()
        self.layer = nn.ModuleList([SpikingBertLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(self, h, mask, output_hidden_states=False, output_attentions=False):
        """`h: [T, B, L, D]` -> last `[T, B, L, D]`, per-layer states and attention probabilities."""
        states, attns = [h] if output_hidden_states else None, [] if output_attentions else None
        for layer in self.layer:
            h, probs = layer.run(h, mask, output_attentions=output_attentions, recompute=self.gradient_checkpointing)
            if output_hidden_states:
                states.append(h)
            if output_attentions:
                attns.append(probs)
        return h, states, attns


class SpikingBertPreTrainedModel(PreTrainedModel):
    config_class = SpikingBertConfig
    config: SpikingBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SpikingBertLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        init_neuron_state(module)
        if isinstance(module, BertEmbeddings):
            with torch.no_grad():
                module.position_ids.copy_(torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
                module.token_type_ids.zero_()
        elif hasattr(module, "bias") and type(module).__name__ == "BertLMPredictionHead":
            nn.init.zeros_(module.bias)

    def spiking_neurons(self):
        """(name, neuron) for every spiking neuron in the model, in forward order."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, SpikingNeuron)]


class SpikingBertModel(SpikingBertPreTrainedModel):
    """Spiking BERT encoder. Outputs are means over T (`last_hidden_state` the last step with `readout:
    last`); per-step states behind `output_spike_states`."""

    def __init__(self, config: SpikingBertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = SpikingBertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        output_spike_states: bool = False,
        return_dict=None,
        hidden_states_per_step: bool = False,
        **kwargs,
    ):
        """As `BertModel.forward`. `hidden_states` and `attentions` are means over T;
        `output_spike_states=True` adds `spike_states`, the last layer's `[T, B, L, D]` output;
        `hidden_states_per_step=True` returns `hidden_states` as `[T, B, L, D]`, one state per step."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        emb = self.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds
        )
        B, L, D = emb.shape
        T = self.config.num_timesteps
        mask = None
        if attention_mask is not None:
            mask = (1.0 - attention_mask[:, None, None, :].to(emb.dtype)) * torch.finfo(emb.dtype).min
        h = emb.unsqueeze(0).expand(T, B, L, D)  # direct encoding: the same float input at every step
        h_T, states, attns = self.encoder(h, mask, output_hidden_states, output_attentions)
        sequence_output = read_out(h_T, self.config)
        pooled = self.pooler(sequence_output) if self.pooler is not None else None
        hidden_states = None
        if states is not None:
            hidden_states = tuple(s if hidden_states_per_step or s.dim() != 4 else s.mean(0) for s in states)
        attentions = tuple(a.mean(0) for a in attns) if attns is not None else None
        out = SpikingBertModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=pooled,
            hidden_states=hidden_states,
            attentions=attentions,
            spike_states=h_T if output_spike_states else None,
        )
        return out if return_dict else out.to_tuple()


class SpikingBertForSequenceClassification(SpikingBertPreTrainedModel):
    """Classification (cross-entropy) or STS-B style regression (num_labels = 1, MSE) head."""

    def __init__(self, config: SpikingBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = SpikingBertModel(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = UniformDropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        hidden_states_per_step: bool = False,
        **kwargs,
    ):
        out = self.bert(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
            inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True, hidden_states_per_step=hidden_states_per_step,
        )
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = None
        if labels is not None:
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
            elif self.config.problem_type == "single_label_classification":
                loss = F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
            else:
                loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        result = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return model_output(result, return_dict, self.config)


class _TiedMLMHead(TiedKeysNotSaved):
    """The masked-LM decoder of `self.cls.predictions`, tied to the word embeddings (BERT's tying)."""

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias


def mlm_head_activation(transform: nn.Module, config) -> None:
    """Give the masked-LM head's transform `config.mlm_head_act` when set (default: `hidden_act`, as the
    FFN). The released pretraining config is ReLU in this head alone, its FFN's GELU being hard-coded
    (method doc, section 3): `model_config: {mlm_head_act: relu}` builds that split."""
    name = getattr(config, "mlm_head_act", None)
    if name is None:
        return
    if not isinstance(name, str) or name not in ACT2FN:
        raise ValueError(f"mlm_head_act {name!r} is not an activation transformers knows (e.g. relu, gelu)")
    transform.transform_act_fn = ACT2FN[name]


class SpikingBertForMaskedLM(_TiedMLMHead, SpikingBertPreTrainedModel):
    """Masked-LM head (float) on the T-mean of the spiking encoder; decoder tied to the embeddings."""

    def __init__(self, config: SpikingBertConfig):
        super().__init__(config)
        self.bert = SpikingBertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        mlm_head_activation(self.cls.predictions.transform, config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        out = self.bert(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
            inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.cls(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = token_cross_entropy(logits, labels)
        result = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return model_output(result, return_dict, self.config)


class SpikingBertForPreTraining(_TiedMLMHead, SpikingBertPreTrainedModel):
    """Masked-LM + next-sentence heads, as in BERT pretraining (the released SpikeLM objective)."""

    def __init__(self, config: SpikingBertConfig):
        super().__init__(config)
        self.bert = SpikingBertModel(config)
        self.cls = BertPreTrainingHeads(config)
        mlm_head_activation(self.cls.predictions.transform, config)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        labels=None,
        next_sentence_label=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        out = self.bert(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
            inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        mlm_logits, nsp_logits = self.cls(out.last_hidden_state, out.pooler_output)
        loss = mlm_loss = nsp_loss = None
        if labels is not None:
            loss = mlm_loss = token_cross_entropy(mlm_logits, labels)
            if next_sentence_label is not None:
                nsp_loss = F.cross_entropy(nsp_logits.view(-1, 2), next_sentence_label.view(-1))
                loss = loss + nsp_loss
        result = SpikingBertForPreTrainingOutput(
            loss=loss, prediction_logits=mlm_logits, seq_relationship_logits=nsp_logits,
            hidden_states=out.hidden_states, attentions=out.attentions, mlm_loss=mlm_loss, nsp_loss=nsp_loss,
        )
        return model_output(result, return_dict, self.config)


__all__ = [
    "SpikeLinear",
    "SpikeMatmul",
    "SpikingBertPreTrainedModel",
    "SpikingBertModel",
    "SpikingBertForSequenceClassification",
    "SpikingBertForMaskedLM",
    "SpikingBertForPreTraining",
    "make_neuron",
    "make_kv_spike",
]
