"""Energy audit: dense MACs versus spiking ACs, priced with per-operation costs, and two memory bounds.

The arithmetic estimate ignores data movement (docs: energy-method.md); `memory` adds the bytes moved
under a weight-stationary and an event-driven bound (docs: energy-report.md).

- `costs`: `CostProfile` presets fp32/fp16/int8 (Horowitz, ISSCC 2014, 45 nm), `get_profile`.
- `components`: the component vocabulary (q, k, v, o, ffn1, gate, up, ffn2, qk, av, cross_*, pooler, head, ...).
- `closed_form`: BERT, BART and Llama closed-form MAC counts, the MAC counter's reference.
- `macs`: `count_macs` (fvcore, per module/operator/component/layer/stack).
- `estimate`: `energy_from_counts` (the arithmetic), `estimate_energy`, `with_terms` (the spiking side's
  membrane updates and alpha rescalings, `memory.SpikingTerms`, when switched on).
- `report`: `EnergyRow`/`EnergyReport` (with `totals()`), the sweep report and its JSON schema.
- `paper`: `paper_setting` / `bart_paper_setting`, measured rates applied to BERT-base / BART-base
  (none for a decoder-only model).
- `schedule`: the decoding schedule (what each generation step feeds and attends to), shared by the
  arithmetic and the memory model.
- `seq2seq`: generation energy with and without the KV cache, BART (encoder once, decoder per
  generated token) and decoder-only Llama (the prompt once, then per generated token):
  `generation_energy`, `generation_rows`, `decoder_step_rows`.
- `firing_pass`: the audit's firing pass over `spikelm_core.firing` (calibration, checks, bootstrap).
- `models`: the audited model, its dense twin and the calibration text (every checkpoint read).
- `sweep`: `run_energy(EnergyArgs)` / `estimate_energy_sweep(...)`, the k x T sweep behind
  `spikelm energy`, returning an `EnergySweepReport`.
- `memory`: the memory model (bytes per op, the two bounds, memory costs and cost files, the
  break-even firing rate, the quantised ANN, BART generation traffic): `load_memory_cost`,
  `memory_report`, `forward_ops`, `generation_ops`.
- `neurobench`: NeuroBench-compatible metrics (`neurobench_metrics`).
- `tables`: every table of the report built once as data, for the rich and Markdown renderers.
- `plots`: the PNG plots of `spikelm energy --out`.

Spike counting itself (`SpikeStats`, `spike_stats`, `spike_profile`) lives in `spikelm_core.firing`.
"""

from spikelm_core.energy.closed_form import (
    bart_closed_form_macs,
    bart_expected_macs,
    bart_layer_macs,
    bert_closed_form_macs,
    bert_layer_macs,
    llama_closed_form_macs,
    llama_layer_macs,
)
from spikelm_core.energy.components import (
    COMPONENTS,
    CROSS_COMPONENTS,
    DECODER_COMPONENTS,
    ENCODER_COMPONENTS,
    LLAMA_COMPONENTS,
    SPIKING_COMPONENTS,
    STACKS,
)
from spikelm_core.energy.costs import FP16, FP32, INT8, PROFILES, CostProfile, get_profile
from spikelm_core.energy.errors import EnergyAuditError
from spikelm_core.energy.estimate import energy_from_counts, estimate_energy, implied_mean_firing_rate, with_terms
from spikelm_core.energy.macs import MacCount, MacRow, count_macs
from spikelm_core.energy.memory import (
    MEMORY_PRESETS,
    MemoryCost,
    MemoryReport,
    SpikingTerms,
    alpha_scales,
    load_memory_cost,
    membrane_updates,
    memory_report,
)
from spikelm_core.energy.neurobench import neurobench_metrics
from spikelm_core.energy.paper import bart_paper_setting, paper_setting
from spikelm_core.energy.report import (
    ASSUMPTIONS,
    CAVEAT,
    SCHEMA,
    EnergyReport,
    EnergyRow,
    EnergyRun,
    EnergySweepReport,
    FloatMatmul,
    Interval,
    NeuronRates,
)
from spikelm_core.energy.seq2seq import (
    GenerationEnergy,
    GenerationMode,
    decoder_step_rows,
    generation_energy,
    generation_rows,
)
from spikelm_core.energy.sweep import EnergyArgs, estimate_energy_sweep, run_energy

__all__ = [
    "ASSUMPTIONS",
    "CAVEAT",
    "COMPONENTS",
    "CROSS_COMPONENTS",
    "DECODER_COMPONENTS",
    "ENCODER_COMPONENTS",
    "FP16",
    "FP32",
    "INT8",
    "LLAMA_COMPONENTS",
    "MEMORY_PRESETS",
    "PROFILES",
    "SCHEMA",
    "SPIKING_COMPONENTS",
    "STACKS",
    "CostProfile",
    "EnergyArgs",
    "EnergyAuditError",
    "EnergyReport",
    "EnergyRow",
    "EnergyRun",
    "EnergySweepReport",
    "FloatMatmul",
    "GenerationEnergy",
    "GenerationMode",
    "Interval",
    "MacCount",
    "MacRow",
    "MemoryCost",
    "MemoryReport",
    "NeuronRates",
    "SpikingTerms",
    "alpha_scales",
    "bart_closed_form_macs",
    "bart_expected_macs",
    "bart_layer_macs",
    "bart_paper_setting",
    "bert_closed_form_macs",
    "bert_layer_macs",
    "count_macs",
    "decoder_step_rows",
    "energy_from_counts",
    "estimate_energy",
    "estimate_energy_sweep",
    "generation_energy",
    "generation_rows",
    "get_profile",
    "implied_mean_firing_rate",
    "llama_closed_form_macs",
    "llama_layer_macs",
    "load_memory_cost",
    "membrane_updates",
    "memory_report",
    "neurobench_metrics",
    "paper_setting",
    "run_energy",
    "with_terms",
]
