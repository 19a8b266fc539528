"""Spiking Llama-family causal LM as Hugging Face models (spikelm's port of the SpikeLM placement).

The paper has no decoder-only model. spikelm applies spiking BERT's placement (spikelm-method.md
section 3) to every linear layer of a Llama decoder layer. Every tensor inside the stack is
time-first, `[T, B, L, D]`. Per layer:

    0  token embeddings (float, looked up once) repeated T times
    1  x = RMSNorm(h)                                    float
    2  Q, K, V = SpikeLinear_q/k/v(x)                    stateful neurons before the projections (one
                                                         shared pass and one GEMM when they spike alike)
    3  Q, K = RoPE(Q, K)                                 float rotation (transformers' apply_rotary_pos_emb)
    4  K <- spike(K), V <- spike(V)                      stateless spikes (`qk.neuron`, `av.neuron`),
                                                         K spiked *after* RoPE so Q.K^T stays spike-driven
    5  softmax(Q . K^T / sqrt(d_h) + causal mask) . V    float Q x ternary K; float probs x ternary V;
                                                         grouped-query attention: K/V heads repeated
    6  h = h + SpikeLinear_o(context)                    neuron before the output projection
    7  x = RMSNorm(h); g, u = SpikeLinear_gate/up(x)     neurons before gate and up (shared pass)
    8  h = h + SpikeLinear_down(SiLU(g) * u)             neuron before down; SiLU and the product float
    readout: mean over T of the last layer (its last step with `readout="last"`), then the final
    RMSNorm and the (float) LM head.

Float, outside any neuron: the embeddings, RMSNorm, RoPE, softmax, the SiLU-gate product, the
residual adds, the T-mean and the LM head. Parameter names equal transformers' `LlamaForCausalLM`,
so dense checkpoints load key for key (`spikelm convert`).

The T steps run per token: the membrane of a neuron runs over T for each element on its own, and
the K/V spikes are stateless, so a token's spikes depend only on that token's inputs. Incremental
decoding therefore caches the *spiked* K and V of every step, laid out `[B, T*H_kv, S, d_h]` in a
transformers `DynamicCache` (batch first, so beam search can reorder it), and cached generation
equals uncached generation (tested, greedy and sampling).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import (
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    repeat_kv,
)

from ...neurons import SpikingNeuron
from ..common import (
    CompilableLayer,
    SharedInputProjections,
    SpikeLinear,
    SpikeMatmul,
    TiedKeysNotSaved,
    attention_with_dropout,
    causal_mask,
    init_neuron_state,
    make_kv_spike,
    make_neuron,
    model_output,
    read_out,
    refuse_attentions,
)
from .configuration_spiking_llama import SpikingLlamaConfig


@dataclass
class SpikingLlamaModelOutput(BaseModelOutputWithPast):
    """`BaseModelOutputWithPast` plus the last layer's per-step states `[T, B, L, D]` (before the norm)."""

    spike_states: torch.FloatTensor | None = None


class SpikingLlamaAttention(SharedInputProjections):
    """Spike-driven causal self-attention with grouped-query heads over `[T, B, L, D]`."""

    #: "fused" (one `attention_with_dropout` call over the spiked K/V) or "reference" (explicit `qk` /
    #: softmax / `av` modules). Both give the same result; tracing (MAC counting) always takes the reference.
    attention_impl = "fused"

    def __init__(self, config: SpikingLlamaConfig, layer_idx: int):
        super().__init__()
        d, bias = config.hidden_size, config.attention_bias
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout or 0.0
        self.q_proj = SpikeLinear(d, self.num_heads * self.head_dim, make_neuron(config), bias=bias)
        self.k_proj = SpikeLinear(d, self.num_key_value_heads * self.head_dim, make_neuron(config), bias=bias)
        self.v_proj = SpikeLinear(d, self.num_key_value_heads * self.head_dim, make_neuron(config), bias=bias)
        self.o_proj = SpikeLinear(self.num_heads * self.head_dim, d, make_neuron(config), bias=bias)
        self.qk = SpikeMatmul(make_kv_spike(config), transpose_right=True)
        self.av = SpikeMatmul(make_kv_spike(config), transpose_right=False)

    def shared_projection_sets(self):
        return {"qkv": (self.q_proj, self.k_proj, self.v_proj)}

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:  # [T, B, L, H*dh] -> [T, B, H, L, dh]
        T, B, L, _ = x.shape
        return x.view(T, B, L, heads, self.head_dim).transpose(2, 3)

    def _to_cache(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, Hkv, S, dh] -> [B, T*Hkv, S, dh]
        T, B, H, S, dh = x.shape
        return x.permute(1, 0, 2, 3, 4).reshape(B, T * H, S, dh)

    def _from_cache(self, x: torch.Tensor, T: int) -> torch.Tensor:  # [B, T*Hkv, S, dh] -> [T, B, Hkv, S, dh]
        B, _, S, dh = x.shape
        return x.view(B, T, self.num_key_value_heads, S, dh).permute(1, 0, 2, 3, 4)

    def _all_heads(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, Hkv, S, dh] -> [T, B, H, S, dh]
        T, B, _, S, dh = x.shape
        return repeat_kv(x.reshape(T * B, self.num_key_value_heads, S, dh), self.num_key_value_groups).view(
            T, B, self.num_heads, S, dh
        )

    def forward(self, h, cos, sin, mask, cache: Cache | None = None):
        """`h: [T, B, L, D]`; `cos, sin: [B, L, d_h]` (RoPE of the new positions); `mask` additive,
        `[B or 1, 1, L, S]`; `cache` holds the spiked K/V of earlier tokens. Returns `[T, B, L, D]`."""
        T = h.shape[0]
        q, k, v = self.project(h, "qkv")
        q, k, v = self._heads(q, self.num_heads), self._heads(k, self.num_key_value_heads), self._heads(
            v, self.num_key_value_heads)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)  # cos/sin [B, L, dh] -> [B, 1, L, dh]: broadcast over T, heads
        k, v = self.qk.neuron(k), self.av.neuron(v)
        if cache is not None:
            ck, cv = cache.update(self._to_cache(k), self._to_cache(v), self.layer_idx)
            k, v = self._from_cache(ck, T), self._from_cache(cv, T)
        k, v = self._all_heads(k), self._all_heads(v)
        _, B, H, L, dh = q.shape
        S = k.shape[-2]
        p = self.attention_dropout if self.training else 0.0
        if self.attention_impl == "fused" and not torch.jit.is_tracing():
            attn_mask = None if mask is None else mask.expand(T, B, 1, L, S).reshape(T * B, 1, L, S)
            ctx = attention_with_dropout(
                q.reshape(T * B, H, L, dh), k.reshape(T * B, H, S, dh), v.reshape(T * B, H, S, dh),
                attn_mask, p, self.training, scale=self.scaling,
            ).view(T, B, H, L, dh)
        else:
            scores = self.qk(q, k, spiked=True) * self.scaling
            if mask is not None:
                scores = scores + mask
            probs = F.dropout(torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype), p=p,
                              training=self.training)
            ctx = self.av(probs, v, spiked=True)
        return self.o_proj(ctx.transpose(2, 3).reshape(T, B, L, H * dh))


class SpikingLlamaMLP(SharedInputProjections):
    """down(SiLU(gate(x)) * up(x)) with a neuron before each projection; gate and up read one input
    and share one spike pass where exact. The activation and the product are float."""

    def __init__(self, config: SpikingLlamaConfig):
        super().__init__()
        d, ffn, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = SpikeLinear(d, ffn, make_neuron(config), bias=bias)
        self.up_proj = SpikeLinear(d, ffn, make_neuron(config), bias=bias)
        self.down_proj = SpikeLinear(ffn, d, make_neuron(config), bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def shared_projection_sets(self):
        return {"gate_up": (self.gate_proj, self.up_proj)}

    def forward(self, x):
        gate, up = self.project(x, "gate_up")
        return self.down_proj(self.act_fn(gate) * up)


class SpikingLlamaDecoderLayer(CompilableLayer):
    def __init__(self, config: SpikingLlamaConfig, layer_idx: int):
        super().__init__()
        self.self_attn = SpikingLlamaAttention(config, layer_idx)
        self.mlp = SpikingLlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, h, cos, sin, mask, cache: Cache | None = None):
        if cache is not None:  # the cache is updated in place: always eager
            return self._forward(h, cos, sin, mask, cache)
        return super().forward(h, cos, sin, mask, None)

    def _forward(self, h, cos, sin, mask, cache=None, output_attentions: bool = False):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class SpikingLlamaPreTrainedModel(PreTrainedModel):
    config_class = SpikingLlamaConfig
    config: SpikingLlamaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SpikingLlamaDecoderLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        init_neuron_state(module)

    def spiking_neurons(self):
        """(name, neuron) for every spiking neuron in the model, in forward order."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, SpikingNeuron)]


class SpikingLlamaModel(SpikingLlamaPreTrainedModel):
    """The spiking decoder stack. `last_hidden_state` is RMSNorm of the mean over T of the last layer
    (of its last step with `readout="last"`)."""

    def __init__(self, config: SpikingLlamaConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([SpikingLlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache: Cache | None = None,
        inputs_embeds=None,
        use_cache=None,
        output_hidden_states=None,
        output_spike_states: bool = False,
        return_dict=None,
        past_key_values=None,
        **kwargs,
    ) -> SpikingLlamaModelOutput:
        """As `LlamaModel.forward`. `attention_mask` is the `[B, past + L]` padding mask (1 = real
        token); `hidden_states` are laid out as transformers' Llama lays them out: the embeddings, the
        T-mean of every layer's output but the last, then `last_hidden_state` (after the final norm),
        so a dense teacher's hidden states compare entry for entry;
        `output_spike_states=True` adds the last layer's per-step `[T, B, L, D]` output."""
        refuse_attentions(kwargs, "spiking Llama")
        cache = cache if cache is not None else past_key_values
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        emb = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        # no cache while training, nor while a tracer (the energy audit's MAC count) runs: a Cache output breaks it
        if use_cache and cache is None and not self.training and not torch.jit.is_tracing():
            cache = DynamicCache(config=self.config)
        if not use_cache:
            cache = None
        B, L, D = emb.shape
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None and attention_mask is not None and attention_mask.shape[-1] >= past + L:
            # positions count real tokens only: a left-padded row gets the positions it has alone. K is
            # spiked after RoPE, so (unlike a dense Llama) the spiking model is not invariant to a shift of
            # every position, and generate() passes no position_ids
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, -L:].to(emb.device)
        if position_ids is None:
            position_ids = torch.arange(past, past + L, device=emb.device).unsqueeze(0).expand(B, L)
        cos, sin = self.rotary_emb(emb, position_ids)  # [B, L, d_h], float
        mask = causal_mask(L, past, attention_mask, emb.dtype, emb.device)
        h = emb.unsqueeze(0).expand(self.config.num_timesteps, B, L, D)  # direct encoding: the same input at every step
        states = [emb] if output_hidden_states else None
        for layer in self.layers:
            h = layer.run(h, cos, sin, mask, cache, recompute=self.gradient_checkpointing and cache is None)
            if states is not None:
                states.append(h.mean(0))
        last = self.norm(read_out(h, self.config))
        if states is not None:
            states[-1] = last  # transformers' Llama: the final entry is the normed output
        return model_output(SpikingLlamaModelOutput(
            last_hidden_state=last,
            cache=cache,
            hidden_states=tuple(states) if states is not None else None,
            spike_states=h if output_spike_states else None,
        ), return_dict, self.config)


class SpikingLlamaForCausalLM(TiedKeysNotSaved, SpikingLlamaPreTrainedModel, GenerationMixin):
    """Spiking Llama with the (float) LM head; works with `generate()` (KV-cached or not)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: SpikingLlamaConfig):
        super().__init__(config)
        self.model = SpikingLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache: Cache | None = None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_hidden_states=None,
        logits_to_keep: int | torch.Tensor = 0,
        return_dict=None,
        past_key_values=None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """As `LlamaForCausalLM.forward`: `labels` are the input ids (shifted inside the loss; -100 is
        ignored); `logits_to_keep` > 0 computes the logits of the last positions only."""
        refuse_attentions(kwargs, "spiking Llama")
        if labels is not None:
            use_cache = False
        out = self.model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids,
            cache=cache if cache is not None else past_key_values, inputs_embeds=inputs_embeds,
            use_cache=use_cache, output_hidden_states=output_hidden_states, return_dict=True,
        )
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
        else:
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return model_output(CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache,
                                                   hidden_states=out.hidden_states), return_dict, self.config)


__all__ = [
    "SpikingLlamaPreTrainedModel",
    "SpikingLlamaModel",
    "SpikingLlamaForCausalLM",
    "SpikingLlamaModelOutput",
]
