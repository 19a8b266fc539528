"""Closed-form MAC counts of BERT, BART and Llama (energy-method.md, sections 4, 5 and 5a): the MAC
counter's reference.

Batch 1, no embeddings, LayerNorm/RMSNorm, softmax, GELU/SiLU, RoPE or bias adds. BERT-base at 128
tokens: 11,174,215,680 MACs with the pooler; BART-base (`BartModel`) at 128/128 tokens:
13,136,560,128. `count_macs` checks every standard BERT, BART or Llama count against these formulas.
"""

from __future__ import annotations

from typing import Any

from spikelm_core.energy.components import STACKS


def bert_layer_macs(hidden: int, heads: int, intermediate: int, seq_len: int) -> dict[str, int]:
    """Per-component MACs of one BERT encoder layer at batch 1 and `seq_len` tokens."""
    _check_positive(hidden=hidden, heads=heads, intermediate=intermediate, seq_len=seq_len)
    head_dim = hidden // heads
    inner = heads * head_dim  # HF: all_head_size
    d, n = hidden, seq_len
    return {
        "q": n * d * inner,
        "k": n * d * inner,
        "v": n * d * inner,
        "o": n * inner * d,
        "ffn1": n * d * intermediate,
        "ffn2": n * intermediate * d,
        "qk": heads * n * n * head_dim,
        "av": heads * n * n * head_dim,
    }


def bert_closed_form_macs(
    hidden: int, layers: int, heads: int, intermediate: int, seq_len: int, pooler: bool = True
) -> int:
    """Exact BERT MACs at batch 1: layers·(4·L·d² + 2·L·d·d_ff + 2·h·L²·d_h) (+ d² for the pooler).

    No embeddings, LayerNorm, softmax, GELU or bias adds. BERT-base at 128 tokens gives
    11,173,625,856 (+ 589,824 pooler = 11,174,215,680).
    """
    _check_positive(layers=layers)
    per_layer = sum(bert_layer_macs(hidden, heads, intermediate, seq_len).values())
    return layers * per_layer + (hidden * hidden if pooler else 0)


def bart_layer_macs(
    d_model: int, ffn_dim: int, source_len: int, target_len: int | None = None, *, stack: str = "encoder"
) -> dict[str, int]:
    """Per-component MACs of one BART layer at batch 1 (energy-method.md, section 5).

    encoder layer (n_e = source_len): 4·d²·n_e + 2·n_e²·d + 2·n_e·d·d_ff;
    decoder layer (n_d = target_len): 4·d²·n_d + 2·n_d²·d (causal self-attention, not halved)
    + 2·d²·n_d + 2·d²·n_e + 2·n_d·n_e·d (cross: Q,O | K,V | QKᵀ, AV) + 2·n_d·d·d_ff.
    The head count drops out (h·n²·d_h = n²·d).
    """
    if stack not in STACKS:
        raise ValueError(f"stack must be one of {STACKS}, got {stack!r}")
    _check_positive(d_model=d_model, ffn_dim=ffn_dim, source_len=source_len)
    d, ne = d_model, source_len
    if stack == "encoder":
        return {"q": ne * d * d, "k": ne * d * d, "v": ne * d * d, "o": ne * d * d,
                "ffn1": ne * d * ffn_dim, "ffn2": ne * ffn_dim * d, "qk": ne * ne * d, "av": ne * ne * d}
    if target_len is None:
        raise ValueError("a decoder layer needs target_len")
    _check_positive(target_len=target_len)
    nd = target_len
    return {
        "q": nd * d * d, "k": nd * d * d, "v": nd * d * d, "o": nd * d * d,
        "qk": nd * nd * d, "av": nd * nd * d,
        "cross_q": nd * d * d, "cross_k": ne * d * d, "cross_v": ne * d * d, "cross_o": nd * d * d,
        "cross_qk": nd * ne * d, "cross_av": nd * ne * d,
        "ffn1": nd * d * ffn_dim, "ffn2": nd * ffn_dim * d,
    }


def bart_closed_form_macs(
    d_model: int,
    encoder_layers: int,
    decoder_layers: int,
    encoder_ffn_dim: int,
    decoder_ffn_dim: int,
    source_len: int,
    target_len: int,
    vocab_size: int | None = None,
) -> int:
    """Exact BART MACs at batch 1: encoder and decoder stacks (+ the LM head n_d·d·V if `vocab_size`).

    No embeddings, LayerNorm, softmax, GELU or bias adds. BART-base (d 768, 6 + 6 layers, d_ff 3072)
    at 128/128 gives 13,136,560,128 (BartModel); the LM head (V = 50,265) adds 4,941,250,560.
    """
    _check_positive(encoder_layers=encoder_layers, decoder_layers=decoder_layers)
    enc = sum(bart_layer_macs(d_model, encoder_ffn_dim, source_len, stack="encoder").values())
    dec = sum(bart_layer_macs(d_model, decoder_ffn_dim, source_len, target_len, stack="decoder").values())
    head = 0
    if vocab_size is not None:
        _check_positive(vocab_size=vocab_size)
        head = target_len * d_model * vocab_size
    return encoder_layers * enc + decoder_layers * dec + head


def llama_layer_macs(
    hidden: int, heads: int, kv_heads: int, head_dim: int, intermediate: int, seq_len: int, keys: int | None = None
) -> dict[str, int]:
    """Per-component MACs of one Llama decoder layer at batch 1 (energy-method.md, section 5a).

    `seq_len` (L) query tokens attend to `keys` (S, default L) keys; D hidden, H heads of d_h,
    H_kv K/V heads (grouped-query attention: H_kv divides H), I intermediate:

        q = L·D·H·d_h;  k = v = L·D·H_kv·d_h;  o = L·H·d_h·D
        qk = av = H·L·S·d_h   (K/V heads repeated to the H query heads; causal masking not halved)
        gate = up = L·D·I;  ffn2 (down_proj) = L·I·D
    """
    _check_positive(hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim, intermediate=intermediate,
                    seq_len=seq_len)
    if heads % kv_heads:
        raise ValueError(f"kv_heads ({kv_heads}) must divide heads ({heads})")
    n = seq_len
    s = n if keys is None else keys
    _check_positive(keys=s)
    d, i = hidden, intermediate
    return {
        "q": n * d * heads * head_dim,
        "k": n * d * kv_heads * head_dim,
        "v": n * d * kv_heads * head_dim,
        "o": n * heads * head_dim * d,
        "gate": n * d * i,
        "up": n * d * i,
        "ffn2": n * i * d,
        "qk": heads * n * s * head_dim,
        "av": heads * n * s * head_dim,
    }


def llama_closed_form_macs(
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    intermediate: int,
    seq_len: int,
    vocab_size: int | None = None,
) -> int:
    """Exact Llama MACs at batch 1 over `seq_len` tokens: the layers (+ the LM head L·D·V if `vocab_size`).

    No embeddings, RMSNorm, RoPE, softmax, SiLU, the gate product or residual adds. With
    `tie_word_embeddings` the LM head reuses the embedding matrix; it is still L·D·V MACs.
    """
    _check_positive(layers=layers)
    per_layer = sum(llama_layer_macs(hidden, heads, kv_heads, head_dim, intermediate, seq_len).values())
    head = 0
    if vocab_size is not None:
        _check_positive(vocab_size=vocab_size)
        head = seq_len * hidden * vocab_size
    return layers * per_layer + head


def llama_expected_macs(config: Any, seq_len: int) -> dict[str, int]:
    """Closed-form MACs per component of a Llama config (all layers), batch 1, no LM head."""
    layer = llama_layer_macs(config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                             config.head_dim, config.intermediate_size, seq_len)
    return {component: config.num_hidden_layers * macs for component, macs in layer.items()}


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def bart_expected_macs(config: Any, source_len: int, target_len: int) -> dict[tuple[str | None, str], int]:
    """Closed-form MACs per (stack, component) of a BART config (all layers), batch 1, no LM head."""
    expected: dict[tuple[str | None, str], int] = {}
    for stack, layers, ffn in (("encoder", config.encoder_layers, config.encoder_ffn_dim),
                               ("decoder", config.decoder_layers, config.decoder_ffn_dim)):
        for component, macs in bart_layer_macs(config.d_model, ffn, source_len, target_len, stack=stack).items():
            expected[(stack, component)] = layers * macs
    return expected
