"""Spiking BART as Hugging Face models (spikelm's port; spikelm-method.md section 4, docs/spiking-bart.md).

The paper reports a spiking BART-base on summarisation but released no BART code. spikelm applies
the BERT placement to every linear layer of the encoder-decoder:

- a stateful neuron before every projection: self-attention Q/K/V/O (encoder and causal decoder),
  cross-attention Q/K/V/O, FFN1 and FFN2 (`SpikeLinear`, parameter names equal Hugging Face BART's);
- stateless spikes on every K and V after projection, the cross-attention K/V computed from encoder
  states included (`SpikeMatmul` modules `qk` and `av`);
- float: embeddings, LayerNorm, softmax, GELU, residuals, the LM head;
- embeddings repeated T times; decoder step t cross-attends to encoder step t
  (`encoder_readout="per_step"`, or to the encoder's mean with "mean"); mean over T (the last step with
  `readout="last"`) only at the decoder output, before the LM head.

Incremental decoding caches the *spiked* K and V of every step, laid out `[B, T*H, S, d_h]` in the
transformers `Cache` objects (batch first, so beam search can reorder it). Spikes on K and V are
stateless and the neurons' membranes run over T for each token independently, so the cache is exact:
cached and uncached decoding give the same tokens (tested).

Encoder outputs carry both the mean over T (`last_hidden_state`, `[B, S, D]`, what transformers
expects) and the per-step states (`step_hidden_states`, `[B, T, S, D]`, batch first so that
`generate()` can expand them for beams).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput
from transformers.models.bart.modeling_bart import (
    BartLearnedPositionalEmbedding,
    BartScaledWordEmbedding,
    shift_tokens_right,
)

from ...inputs import decoder_mask_from_labels
from ...neurons import SpikingNeuron
from ..common import (
    CompilableLayer,
    SharedInputProjections,
    SpikeLinear,
    SpikeMatmul,
    TiedKeysNotSaved,
    additive_mask,
    attention_with_dropout,
    causal_mask,
    init_neuron_state,
    make_kv_spike,
    make_neuron,
    model_output,
    read_out,
    refuse_attentions,
    uniform_dropout,
    token_cross_entropy,
)
from .configuration_spiking_bart import SpikingBartConfig


@dataclass
class SpikingBartEncoderOutput(BaseModelOutput):
    """`last_hidden_state` is the mean over T; `step_hidden_states` `[B, T, S, D]` the per-step states."""

    step_hidden_states: torch.FloatTensor | None = None


class SpikingBartAttention(SharedInputProjections):
    """Spike-driven multi-head attention over `[T, B, L, D]` (self, causal self, or cross). Q, K and V
    of self-attention, and K and V of cross-attention, share one spike pass where exact
    (`SharedInputProjections`)."""

    #: "fused" (one `attention_with_dropout` call over spiked K/V) or "reference" (explicit qk / softmax /
    #: av modules).
    attention_impl = "fused"

    def __init__(self, config: SpikingBartConfig, num_heads: int, layer_idx: int | None = None):
        super().__init__()
        d = config.d_model
        self.num_heads = num_heads
        self.head_dim = d // num_heads
        self.layer_idx = layer_idx
        self.dropout = config.attention_dropout
        self.k_proj = SpikeLinear(d, d, make_neuron(config))
        self.v_proj = SpikeLinear(d, d, make_neuron(config))
        self.q_proj = SpikeLinear(d, d, make_neuron(config))
        self.out_proj = SpikeLinear(d, d, make_neuron(config))
        self.qk = SpikeMatmul(make_kv_spike(config), transpose_right=True)
        self.av = SpikeMatmul(make_kv_spike(config), transpose_right=False)

    def shared_projection_sets(self):
        return {"qkv": (self.q_proj, self.k_proj, self.v_proj), "kv": (self.k_proj, self.v_proj)}

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, L, D] -> [T, B, H, L, dh]
        T, B, L, _ = x.shape
        return x.view(T, B, L, self.num_heads, self.head_dim).transpose(2, 3)

    def _to_cache(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, H, S, dh] -> [B, T*H, S, dh]
        T, B, H, S, dh = x.shape
        return x.permute(1, 0, 2, 3, 4).reshape(B, T * H, S, dh)

    def _from_cache(self, x: torch.Tensor, T: int) -> torch.Tensor:  # [B, T*H, S, dh] -> [T, B, H, S, dh]
        B, _, S, dh = x.shape
        return x.view(B, T, self.num_heads, S, dh).permute(1, 0, 2, 3, 4)

    def forward(self, h, key_value_states=None, mask=None, past=None, cached_kv=None, want_kv: bool = False):
        """`h: [T, B, L, D]`; `key_value_states: [T, B, S, D]` for cross-attention; `mask` additive,
        broadcastable to `[T, B, H, L, S]`. Incremental decoding passes tensors, never a cache
        object, so that a compiled layer can run it: `past` the cached spiked (K, V) of the tokens
        before (self-attention), `cached_kv` cross-attention's cached (K, V) used instead of
        projecting `key_value_states` again, both in the cache layout `[B, T*H, S, d_h]`.
        Returns `[T, B, L, D]` and, with `want_kv`, the (K, V) to cache, in that layout: the new
        tokens' (self-attention) or all of them (cross-attention)."""
        T = h.shape[0]
        kv = None
        if cached_kv is not None:
            q = self._heads(self.q_proj(h))
            k, v = self._from_cache(cached_kv[0], T), self._from_cache(cached_kv[1], T)
        else:
            if key_value_states is not None:
                q = self._heads(self.q_proj(h))
                k, v = self.project(key_value_states, "kv")
            else:
                q, k, v = self.project(h, "qkv")
                q = self._heads(q)
            k, v = self.qk.neuron(self._heads(k)), self.av.neuron(self._heads(v))
            if want_kv:
                kv = (self._to_cache(k), self._to_cache(v))
            if past is not None:
                k = torch.cat([self._from_cache(past[0], T), k], dim=-2)
                v = torch.cat([self._from_cache(past[1], T), v], dim=-2)
        if self.attention_impl == "fused" and not torch.jit.is_tracing():
            Tq, B, H, L, dh = q.shape
            S = k.shape[-2]
            attn_mask = None if mask is None else mask.expand(T, B, 1, L, S).reshape(T * B, 1, L, S)
            ctx = attention_with_dropout(
                q.reshape(T * B, H, L, dh), k.reshape(T * B, H, S, dh), v.reshape(T * B, H, S, dh),
                attn_mask, self.dropout, self.training,
            ).view(T, B, H, L, dh)
        else:
            scores = self.qk(q, k, spiked=True) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores + mask
            probs = uniform_dropout(torch.softmax(scores, dim=-1), p=self.dropout, training=self.training)
            ctx = self.av(probs, v, spiked=True)
        T, B, H, L, dh = ctx.shape
        out = self.out_proj(ctx.transpose(2, 3).reshape(T, B, L, H * dh))
        return (out, kv) if want_kv else out


class _SpikingBartLayer(nn.Module):
    """The feed-forward sublayer both stacks share: neuron -> fc1 -> activation (GELU) -> neuron -> fc2, residual,
    LayerNorm."""

    def _init_ffn(self, config: SpikingBartConfig, ffn_dim: int) -> None:
        d = config.d_model
        self.fc1 = SpikeLinear(d, ffn_dim, make_neuron(config))
        self.fc2 = SpikeLinear(ffn_dim, d, make_neuron(config))
        self.final_layer_norm = nn.LayerNorm(d)
        self.dropout, self.activation_dropout = config.dropout, config.activation_dropout
        self.act = ACT2FN[getattr(config, "activation_function", "gelu")]  # the checkpoint's (BART's: GELU)

    def _ffn(self, h):
        x = uniform_dropout(self.act(self.fc1(h)), p=self.activation_dropout, training=self.training)
        x = uniform_dropout(self.fc2(x), p=self.dropout, training=self.training)
        return self.final_layer_norm(h + x)


class SpikingBartEncoderLayer(_SpikingBartLayer, CompilableLayer):
    """Self-attention and FFN; runs as one compiled graph after `compile_layers` (`CompilableLayer`)."""

    def __init__(self, config: SpikingBartConfig, layer_idx: int):
        super().__init__()
        self.self_attn = SpikingBartAttention(config, config.encoder_attention_heads, layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        self._init_ffn(config, config.encoder_ffn_dim)

    def _forward(self, h, mask, output_attentions: bool = False):
        x = uniform_dropout(self.self_attn(h, mask=mask), p=self.dropout, training=self.training)
        return self._ffn(self.self_attn_layer_norm(h + x))


class SpikingBartDecoderLayer(_SpikingBartLayer, CompilableLayer):
    """Causal self-attention, cross-attention and FFN. `forward` reads and writes the KV cache
    eagerly; the layer's work in between (`_forward`, over tensors only) runs as one compiled graph
    after `compile_layers`, the same graph for every decoding step (shapes dynamic)."""

    def __init__(self, config: SpikingBartConfig, layer_idx: int):
        super().__init__()
        d = config.d_model
        self.layer_idx = layer_idx
        self.self_attn = SpikingBartAttention(config, config.decoder_attention_heads, layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = SpikingBartAttention(config, config.decoder_attention_heads, layer_idx)
        self.encoder_attn_layer_norm = nn.LayerNorm(d)
        self._init_ffn(config, config.decoder_ffn_dim)

    def forward(self, h, self_mask, enc_states, enc_mask, cache: Cache | None = None):
        if cache is None:
            return CompilableLayer.forward(self, h, self_mask, enc_states, enc_mask, None, None, False)
        self_cache, cross_cache, updated = cache, None, False
        if isinstance(cache, EncoderDecoderCache):
            self_cache, cross_cache = cache.self_attention_cache, cache.cross_attention_cache
            updated = cache.is_updated.get(self.layer_idx, False)
        past = _cached(self_cache, self.layer_idx)
        cross = _cached(cross_cache, self.layer_idx) if updated else None
        out, self_kv, cross_kv = CompilableLayer.forward(self, h, self_mask, enc_states, enc_mask, past, cross, True)
        self_cache.update(*self_kv, self.layer_idx)
        if cross_cache is not None and not updated:
            cross_cache.update(*cross_kv, self.layer_idx)
            cache.is_updated[self.layer_idx] = True
        return out

    def _forward(self, h, self_mask, enc_states, enc_mask, past, cross, want_kv: bool, output_attentions: bool = False):
        """The layer over tensors. `past`/`cross`: cached (K, V) of the self-attention (tokens before)
        and of the cross-attention (None: computed from `enc_states`). With `want_kv` returns
        (output, self-attention (K, V) of the new tokens, cross-attention (K, V)), else the output."""
        x = self.self_attn(h, mask=self_mask, past=past, want_kv=want_kv)
        if want_kv:
            x, self_kv = x
        h = self.self_attn_layer_norm(h + uniform_dropout(x, p=self.dropout, training=self.training))
        x = self.encoder_attn(h, key_value_states=enc_states, mask=enc_mask, cached_kv=cross,
                              want_kv=want_kv and cross is None)
        cross_kv = cross
        if want_kv and cross is None:
            x, cross_kv = x
        h = self.encoder_attn_layer_norm(h + uniform_dropout(x, p=self.dropout, training=self.training))
        h = self._ffn(h)
        return (h, self_kv, cross_kv) if want_kv else h


def _cached(layer_cache, idx: int):
    """The (K, V) a `DynamicCache` holds for layer `idx`, or None before its first update."""
    if layer_cache is None or idx >= len(layer_cache.layers):
        return None
    layer = layer_cache.layers[idx]
    keys = getattr(layer, "keys", None)
    if keys is None or not getattr(layer, "is_initialized", True) or keys.numel() == 0:
        return None
    return keys, layer.values


class SpikingBartPreTrainedModel(PreTrainedModel):
    config_class = SpikingBartConfig
    config: SpikingBartConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True  # each stack recomputes its calibrated layers (`_SpikingBartStack`)
    _no_split_modules = ["SpikingBartEncoderLayer", "SpikingBartDecoderLayer"]
    _keys_to_ignore_on_load_unexpected = ["encoder.version", "decoder.version"]

    def _init_weights(self, module):
        super()._init_weights(module)
        init_neuron_state(module)
        if isinstance(module, SpikingBartForConditionalGeneration):
            with torch.no_grad():
                module.final_logits_bias.zero_()

    def spiking_neurons(self):
        """(name, neuron) for every spiking neuron in the model, in registration order."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, SpikingNeuron)]


class _SpikingBartStack(SpikingBartPreTrainedModel):
    """What the encoder and decoder stacks share: token and position embeddings (tokens tied to
    the model's shared table), `layernorm_embedding`, the layers, and direct encoding over T."""

    def __init__(self, config: SpikingBartConfig, embed_tokens: nn.Embedding | None, layer_cls, num_layers: int):
        super().__init__(config)
        d = config.d_model
        scale = math.sqrt(d) if config.scale_embedding else 1.0
        self.embed_tokens = BartScaledWordEmbedding(config.vocab_size, d, config.pad_token_id, embed_scale=scale)
        if embed_tokens is not None:
            self.embed_tokens.weight = embed_tokens.weight
        self.embed_positions = BartLearnedPositionalEmbedding(config.max_position_embeddings, d)
        self.layers = nn.ModuleList([layer_cls(config, i) for i in range(num_layers)])
        self.layernorm_embedding = nn.LayerNorm(d)
        self.dropout = config.dropout
        self.gradient_checkpointing = False  # training: recompute each calibrated layer in the backward
        self.post_init()

    def _steps(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Float embeddings `[B, L, D]`, computed once and repeated over T: `[T, B, L, D]`."""
        h = uniform_dropout(self.layernorm_embedding(embeds + positions), p=self.dropout, training=self.training)
        return h.unsqueeze(0).expand(self.config.num_timesteps, *h.shape)


class SpikingBartEncoder(_SpikingBartStack):
    def __init__(self, config: SpikingBartConfig, embed_tokens: nn.Embedding | None = None):
        super().__init__(config, embed_tokens, SpikingBartEncoderLayer, config.encoder_layers)

    def forward(
        self, input_ids=None, attention_mask=None, inputs_embeds=None, output_hidden_states=None, **kwargs
    ) -> SpikingBartEncoderOutput:
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        h = self._steps(inputs_embeds, self.embed_positions(inputs_embeds[..., 0]))
        mask = None
        if attention_mask is not None:
            mask = additive_mask(attention_mask.bool()[:, None, None, :], h.dtype)  # [B, 1, 1, S]
        states = [h.mean(0)] if output_hidden_states else None
        for layer in self.layers:
            h = layer.run(h, mask, recompute=self.gradient_checkpointing)
            if states is not None:
                states.append(h.mean(0))
        return SpikingBartEncoderOutput(
            last_hidden_state=h.mean(0), step_hidden_states=h.transpose(0, 1),
            hidden_states=tuple(states) if states is not None else None,
        )


class SpikingBartDecoder(_SpikingBartStack):
    def __init__(self, config: SpikingBartConfig, embed_tokens: nn.Embedding | None = None):
        super().__init__(config, embed_tokens, SpikingBartDecoderLayer, config.decoder_layers)

    def forward(self, input_ids, encoder_states, encoder_attention_mask=None, attention_mask=None, cache=None,
                output_hidden_states=False):
        """`encoder_states: [T, B, S, D]`. Returns the per-step output `[T, B, L, D]` and, if asked,
        the T-means of the embedding output and of every layer's output."""
        L = input_ids.shape[1]
        past = cache.get_seq_length() if cache is not None else 0
        h = self._steps(self.embed_tokens(input_ids), self.embed_positions(input_ids, past))
        self_mask = causal_mask(L, past, attention_mask, h.dtype, h.device)  # decoder padding over all keys so far
        enc_mask = None
        if encoder_attention_mask is not None:
            enc_mask = additive_mask(encoder_attention_mask.bool()[:, None, None, :], h.dtype)
        states = [h.mean(0)] if output_hidden_states else None
        for layer in self.layers:
            h = layer.run(h, self_mask, encoder_states, enc_mask, cache,
                          recompute=self.gradient_checkpointing and cache is None)
            if states is not None:
                states.append(h.mean(0))
        return h, (tuple(states) if states is not None else None)


class SpikingBartModel(SpikingBartPreTrainedModel):
    _tied_weights_keys = {
        "decoder.embed_tokens.weight": "shared.weight",
        "encoder.embed_tokens.weight": "shared.weight",
    }

    def __init__(self, config: SpikingBartConfig):
        super().__init__(config)
        scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.shared = BartScaledWordEmbedding(config.vocab_size, config.d_model, config.pad_token_id, embed_scale=scale)
        # one token table for the encoder and the decoder whatever `tie_word_embeddings` says (which unties the
        # LM head alone), as transformers 4 and every spikelm BART saved it: their checkpoints hold `shared`
        # only; a checkpoint whose stack tables differ is refused when loaded (`checkpoints._check_tied`)
        self.encoder = SpikingBartEncoder(config, self.shared)
        self.decoder = SpikingBartDecoder(config, self.shared)
        self.post_init()

    def get_input_embeddings(self):
        return self.shared

    def set_input_embeddings(self, value):
        self.shared = value
        self.encoder.embed_tokens = self.shared
        self.decoder.embed_tokens = self.shared

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        """transformers' ties, and the stacks' token tables tied to `shared` whatever `tie_word_embeddings` says
        (transformers 5 would untie them with the LM head, and load a checkpoint that holds `shared` alone,
        as every spikelm BART is saved, with two random tables)."""
        keys = super().get_expanded_tied_weights_keys(all_submodels)
        return keys if all_submodels else {**self._tied_weights_keys, **keys}

    def get_encoder(self):
        return self.encoder

    def _encoder_steps(self, enc: BaseModelOutput) -> torch.Tensor:
        """The `[T, B, S, D]` states the decoder cross-attends to."""
        T = self.config.num_timesteps
        steps = getattr(enc, "step_hidden_states", None)
        if self.config.encoder_readout == "per_step":
            if steps is None:  # never fall back to the mean unasked: the decoder would read other states
                raise ValueError("encoder_readout 'per_step' reads the encoder's per-step states: pass encoder_outputs "
                                 "as the encoder's own output (SpikingBartEncoderOutput); a tuple or a plain "
                                 "BaseModelOutput has none")
            return steps.transpose(0, 1)
        mean = enc.last_hidden_state
        return mean.unsqueeze(0).expand(T, *mean.shape)

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        encoder_outputs=None,
        cache=None,
        use_cache=None,
        output_hidden_states=None,
        return_dict=None,
        past_key_values=None,
        **kwargs,
    ):
        refuse_attentions(kwargs, "spiking BART")
        cache = cache if cache is not None else past_key_values
        output_hidden_states = bool(output_hidden_states)
        if decoder_input_ids is None:
            if input_ids is None:
                raise ValueError("pass input_ids or decoder_input_ids")
            decoder_input_ids = shift_tokens_right(input_ids, self.config.pad_token_id, self.config.decoder_start_token_id)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = SpikingBartEncoderOutput(last_hidden_state=encoder_outputs[0])
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if use_cache and cache is None and not self.training:
            cache = EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
        if not use_cache:
            cache = None
        h, dec_states = self.decoder(
            decoder_input_ids, self._encoder_steps(encoder_outputs), attention_mask, decoder_attention_mask, cache,
            output_hidden_states=output_hidden_states,
        )
        return model_output(Seq2SeqModelOutput(
            last_hidden_state=read_out(h, self.config),
            cache=cache,
            decoder_hidden_states=dec_states,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
        ), return_dict, self.config)


class SpikingBartForConditionalGeneration(TiedKeysNotSaved, SpikingBartPreTrainedModel, GenerationMixin):
    """Spiking BART with the (float) LM head, for summarisation; works with `generate()`."""

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}
    _keys_to_ignore_on_load_missing = ["final_logits_bias"]

    def __init__(self, config: SpikingBartConfig):
        super().__init__(config)
        self.model = SpikingBartModel(config)
        self.register_buffer("final_logits_bias", torch.zeros((1, config.vocab_size)))
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_encoder(self):
        return self.model.encoder

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """Resize the shared table and the LM head (transformers), and `final_logits_bias` with them:
        cut to the new vocabulary, or padded with zeros for the new tokens."""
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        vocab = embeddings.weight.shape[0]
        bias = self.final_logits_bias
        kept = bias[:, :vocab]
        pad = bias.new_zeros((1, max(vocab - bias.shape[1], 0)))
        self.final_logits_bias = torch.cat([kept, pad], dim=1)
        return embeddings

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        encoder_outputs=None,
        cache=None,
        labels=None,
        use_cache=None,
        output_hidden_states=None,
        return_dict=None,
        past_key_values=None,
        **kwargs,
    ):
        refuse_attentions(kwargs, "spiking BART")
        if labels is not None:
            use_cache = False
            if decoder_input_ids is None:
                decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)
            if decoder_attention_mask is None:  # the summary's padding (labels -100): pads fire no counted spike
                decoder_attention_mask = decoder_mask_from_labels(labels)  # (causal: real tokens never see them)
        out = self.model(
            input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask, encoder_outputs=encoder_outputs,
            cache=cache if cache is not None else past_key_values, use_cache=use_cache,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.lm_head(out.last_hidden_state) + self.final_logits_bias
        loss = None
        if labels is not None:
            loss = token_cross_entropy(logits, labels)
        return model_output(Seq2SeqLMOutput(
            loss=loss, logits=logits, cache=out.cache, decoder_hidden_states=out.decoder_hidden_states,
            encoder_last_hidden_state=out.encoder_last_hidden_state, encoder_hidden_states=out.encoder_hidden_states,
        ), return_dict, self.config)

    def prepare_inputs_for_generation(self, input_ids, *args, **kwargs):
        """`generate()`'s step inputs, with a decoder mask that marks the tokens fed after a sequence's
        end (its EOS, and the pads after it, in a batch still generating) as padding: their spikes
        are no work a lone sequence would do, so firing rates leave them out. The tokens generated
        are the same (causal attention: no real token sees them)."""
        if kwargs.get("decoder_attention_mask") is None:
            kwargs["decoder_attention_mask"] = self._live_decoder_tokens(input_ids)
        return super().prepare_inputs_for_generation(input_ids, *args, **kwargs)

    def _live_decoder_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """`[B, L]` 1 for each decoder token up to its sequence's first EOS (the start token, position 0,
        always counts, even where it is the EOS id), 0 from the token after that EOS on."""
        eos = self.generation_config.eos_token_id
        eos = self.config.eos_token_id if eos is None else eos
        live = torch.ones_like(ids)
        if eos is None or ids.shape[1] < 2:
            return live
        ended = torch.isin(ids[:, 1:], torch.as_tensor(eos, device=ids.device).reshape(-1))
        live[:, 1:] = (ended.long().cumsum(1) == 0).long()  # an EOS fed back as input is already past the end
        return live

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor):
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)


__all__ = [
    "SpikingBartConfig",
    "SpikingBartPreTrainedModel",
    "SpikingBartModel",
    "SpikingBartForConditionalGeneration",
    "SpikingBartEncoderOutput",
]
