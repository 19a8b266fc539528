"""The paper's setting: measured firing rates applied to BERT-base and BART-base (closed forms, batch 1).

A converted or small model's rates, priced on the model the paper reports, give a number that can
be set beside the paper's 3.7x (BERT-base, 128 tokens, T = 4). The MACs come from `closed_form`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from spikelm_core.energy.closed_form import bart_layer_macs, bert_layer_macs
from spikelm_core.energy.components import DEFAULT_SEQ_LEN, ENCODER_COMPONENTS
from spikelm_core.energy.costs import FP32, CostProfile
from spikelm_core.energy.estimate import FiringRates, energy_from_counts, included_items, with_terms
from spikelm_core.energy.macs import MacRow
from spikelm_core.energy.memory import Shape, SpikingTerms, forward_ops
from spikelm_core.energy.report import EnergyReport


def paper_setting(
    firing_rates: FiringRates,
    *,
    timesteps: int = 4,
    profile: CostProfile = FP32,
    seq_len: int = DEFAULT_SEQ_LEN,
    hidden: int = 768,
    layers: int = 12,
    heads: int = 12,
    intermediate: int = 3072,
    pooler: bool = True,
    float_components: Iterable[str] = (),
    terms: SpikingTerms = SpikingTerms(),
    kv_stateful: bool = False,
    rescaled: bool = True,
    stateful: bool = True,
) -> EnergyReport:
    """Energy of BERT-base at 128 tokens (closed form, batch 1) under the given firing rates.

    Comparable to the paper's claim of 3.7x at T = 4 (which implies a MAC-weighted mean rate of
    about 0.345): all encoder matmuls are ACs, the pooler is a MAC. `firing_rates` is one rate or
    a mapping keyed by component or (component, layer). Encoder components named in
    `float_components` (e.g. qk and av of a model with spike_kv off) are billed as float MACs.
    `terms` adds the spiking side's membrane updates and alpha rescalings at these shapes, for neurons
    like the audited model's (`kv_stateful`: K/V spikes with a membrane, LIF; `rescaled`: spikes with a
    per-step amplitude, `memory.rescales_outputs`; `stateful`: the other neurons keep a membrane,
    `memory.keeps_membrane`).
    """
    per_layer = bert_layer_macs(hidden, heads, intermediate, seq_len)
    floats = set(float_components)
    rows = [
        MacRow(component=c, layer=i, macs=per_layer[c], module=f"encoder.layer.{i}", op="closed form",
               steps=timesteps if c in floats else 1, spiking=False if c in floats else None)
        for i in range(layers)
        for c in ENCODER_COMPONENTS
    ]
    if pooler:
        rows.append(MacRow(component="pooler", layer=None, macs=hidden * hidden, module="pooler.dense", op="closed form"))
    report = energy_from_counts(
        rows,
        firing_rates,
        timesteps,
        profile,
        seq_len=seq_len,
        included=included_items(False, ["pooler"] if pooler else [], terms) + (
            f"closed form: d={hidden}, {layers} layers, {heads} heads, d_ff={intermediate}",
        ),
    )
    shape = Shape(hidden=hidden, heads=heads, ffn=intermediate, seq_len=seq_len, kv_stateful=kv_stateful,
                  rescaled=rescaled, stateful=stateful)
    return with_terms(report, forward_ops(report.rows, shape), terms)


BART_BASE = dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                 vocab_size=50265)
"""BART-base shapes (energy-method.md, section 5)."""


def bart_paper_setting(
    firing_rates: Mapping[Any, float],
    *,
    timesteps: int = 4,
    profile: CostProfile = FP32,
    source_len: int = 128,
    target_len: int = 128,
    lm_head: bool = True,
    float_components: Iterable[tuple[str, str]] = (),
    terms: SpikingTerms = SpikingTerms(),
    kv_stateful: bool = False,
    rescaled: bool = True,
    stateful: bool = True,
) -> EnergyReport:
    """Energy of BART-base, teacher-forced at `source_len`/`target_len` (closed form, batch 1).

    `firing_rates` is keyed by (stack, component) or component; the LM head (n_d·d·V) is a float
    MAC. (stack, component) pairs in `float_components` (e.g. K/V matmuls with spike_kv off) are
    billed as float MACs, T times. `terms` adds the spiking side's membrane updates and alpha rescalings
    (`kv_stateful`, `rescaled`, `stateful`: as for `paper_setting`).
    """
    b = BART_BASE
    floats = set(float_components)
    rows = []
    for stack, layers, ffn in (("encoder", b["encoder_layers"], b["encoder_ffn_dim"]),
                               ("decoder", b["decoder_layers"], b["decoder_ffn_dim"])):
        per_layer = bart_layer_macs(b["d_model"], ffn, source_len, target_len, stack=stack)
        for i in range(layers):
            for component, macs in per_layer.items():
                is_float = (stack, component) in floats
                rows.append(MacRow(component=component, layer=i, macs=macs, module=f"{stack}.layers.{i}",
                                   op="closed form", steps=timesteps if is_float else 1,
                                   spiking=False if is_float else None, stack=stack))
    if lm_head:
        rows.append(MacRow(component="head", layer=None, macs=target_len * b["d_model"] * b["vocab_size"],
                           module="lm_head", op="closed form", spiking=False))
    report = energy_from_counts(
        rows, firing_rates, timesteps, profile, seq_len=source_len,
        included=(f"closed form: BART-base d=768, 6+6 layers, d_ff=3072, {source_len}/{target_len} tokens"
                  + (", LM head V=50265 (MAC)" if lm_head else ""),),
    )
    shape = Shape(hidden=b["d_model"], heads=12, ffn=b["encoder_ffn_dim"], seq_len=source_len, decoder_len=target_len,
                  decoder_ffn=b["decoder_ffn_dim"], kv_stateful=kv_stateful, rescaled=rescaled,
                  stateful=stateful)
    return with_terms(report, forward_ops(report.rows, shape), terms)


PAPER_SHAPES = {
    "bert": Shape(hidden=768, heads=12, ffn=3072, seq_len=DEFAULT_SEQ_LEN),
    "bart": Shape(hidden=BART_BASE["d_model"], heads=12, ffn=BART_BASE["encoder_ffn_dim"], seq_len=128,
                  decoder_len=128, decoder_ffn=BART_BASE["decoder_ffn_dim"]),
}
"""BERT-base at 128 tokens and BART-base at 128/128 tokens, for the memory model of the paper setting."""


__all__ = ["BART_BASE", "PAPER_SHAPES", "bart_paper_setting", "paper_setting"]
