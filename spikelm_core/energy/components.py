"""The energy audit's vocabulary: the components a MAC is charged to, and the stacks of a BART.

Every counted op belongs to one component (per layer); reports, closed forms and tables list them
in `COMPONENTS` order. A Llama decoder layer has three FFN projections, each behind its own neuron:
`gate` and `up` (hidden -> intermediate, the two halves of what BERT calls ffn1) keep their own
components, so that each shows its own firing rate; `down` (intermediate -> hidden) is `ffn2`, the
FFN's output projection in every family.
"""

from __future__ import annotations

DEFAULT_SEQ_LEN = 128

COMPONENTS: tuple[str, ...] = (
    "q", "k", "v", "o", "ffn1", "gate", "up", "ffn2", "qk", "av",
    "cross_q", "cross_k", "cross_v", "cross_o", "cross_qk", "cross_av",
    "pooler", "head", "norm", "neuron_updates", "alpha_scale", "other",
)
"""Every component a MAC can be charged to, in report order (cross_*: BART decoder cross-attention;
gate/up: a Llama FFN's two input projections; neuron_updates and alpha_scale: the spiking side's terms
that only --count-neuron-updates and --count-alpha-scale bill, `memory.SpikingTerms`)."""
ENCODER_COMPONENTS: tuple[str, ...] = ("q", "k", "v", "o", "ffn1", "ffn2", "qk", "av")
"""The matmul work of an encoder layer; in SpikeLM each has a spiking operand (billed as AC)."""
CROSS_COMPONENTS: tuple[str, ...] = ("cross_q", "cross_k", "cross_v", "cross_o", "cross_qk", "cross_av")
"""Cross-attention of a BART decoder layer: Q/O on decoder tokens, K/V on encoder tokens, QK^T, AV."""
DECODER_COMPONENTS: tuple[str, ...] = ("q", "k", "v", "o", "qk", "av", *CROSS_COMPONENTS, "ffn1", "ffn2")
"""The matmul work of a BART decoder layer (q..av: causal self-attention)."""
STACKS: tuple[str, ...] = ("encoder", "decoder")
"""Stacks of an encoder-decoder model; a BERT's rows carry stack None."""
LLAMA_COMPONENTS: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "ffn2", "qk", "av")
"""The matmul work of a Llama decoder layer (causal self-attention with grouped-query heads; ffn2 = down_proj)."""
SPIKING_COMPONENTS = frozenset(ENCODER_COMPONENTS) | frozenset(CROSS_COMPONENTS) | frozenset(LLAMA_COMPONENTS)
"""The components whose op has a spiking operand in SpikeLM (billed as AC)."""
