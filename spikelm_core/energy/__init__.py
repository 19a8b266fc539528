"""Energy audit: dense MACs versus spiking ACs, priced with per-operation costs.

A theoretical, arithmetic-only estimate that ignores data movement (docs: energy-method.md).

- `costs`: `CostProfile` presets fp32/fp16/int8 (Horowitz, ISSCC 2014, 45 nm), `get_profile`.
- `macs`: `count_macs` (fvcore, per module/operator/component/layer/stack), BERT and BART closed forms.
- `firing`: spike counts per neuron from forward hooks (`collect_firing_rates`).
- `estimate`: `energy_from_counts` (the arithmetic), `estimate_energy`, `paper_setting`.
- `seq2seq`: BART generation energy (encoder once, decoder per generated token, with and without
  the KV cache): `generation_energy`, `generation_rows`, `decoder_step_rows`, `bart_paper_setting`.
- `sweep`: `run_energy(EnergyArgs)` / `estimate_energy_sweep(...)`, the k x T sweep behind
  `spikelm energy`, returning an `EnergySweepReport` (JSON schema: `EnergySweepReport.to_dict`).
"""

from spikelm_core.energy.costs import FP16, FP32, INT8, PROFILES, CostProfile, get_profile
from spikelm_core.energy.errors import EnergyAuditError
from spikelm_core.energy.estimate import (
    ASSUMPTIONS,
    CAVEAT,
    EnergyReport,
    EnergyRow,
    energy_from_counts,
    estimate_energy,
    implied_mean_firing_rate,
    paper_setting,
)
from spikelm_core.energy.firing import (
    FiringRateRecorder,
    SpikeProfile,
    SpikeStats,
    collect_firing_rates,
    neuron_module_names,
    spike_profile,
    spike_stats,
)
from spikelm_core.energy.macs import (
    COMPONENTS,
    CROSS_COMPONENTS,
    DECODER_COMPONENTS,
    ENCODER_COMPONENTS,
    SPIKING_COMPONENTS,
    STACKS,
    MacCount,
    MacRow,
    bart_closed_form_macs,
    bart_expected_macs,
    bart_layer_macs,
    bert_closed_form_macs,
    bert_layer_macs,
    count_macs,
)
from spikelm_core.energy.seq2seq import (
    GenerationEnergy,
    GenerationMode,
    bart_paper_setting,
    decoder_step_rows,
    generation_energy,
    generation_rows,
)
from spikelm_core.energy.sweep import (
    SCHEMA,
    EnergyArgs,
    EnergyRun,
    EnergySweepReport,
    FloatMatmul,
    Interval,
    NeuronRates,
    estimate_energy_sweep,
    run_energy,
)

__all__ = [
    "ASSUMPTIONS",
    "CAVEAT",
    "COMPONENTS",
    "CROSS_COMPONENTS",
    "DECODER_COMPONENTS",
    "ENCODER_COMPONENTS",
    "STACKS",
    "GenerationEnergy",
    "GenerationMode",
    "bart_closed_form_macs",
    "bart_expected_macs",
    "bart_layer_macs",
    "bart_paper_setting",
    "decoder_step_rows",
    "generation_energy",
    "generation_rows",
    "SCHEMA",
    "FP16",
    "FP32",
    "INT8",
    "PROFILES",
    "SPIKING_COMPONENTS",
    "CostProfile",
    "EnergyArgs",
    "EnergyAuditError",
    "EnergyReport",
    "EnergyRow",
    "EnergyRun",
    "EnergySweepReport",
    "FiringRateRecorder",
    "FloatMatmul",
    "Interval",
    "MacCount",
    "MacRow",
    "NeuronRates",
    "SpikeProfile",
    "SpikeStats",
    "bert_closed_form_macs",
    "bert_layer_macs",
    "collect_firing_rates",
    "count_macs",
    "energy_from_counts",
    "estimate_energy",
    "estimate_energy_sweep",
    "get_profile",
    "implied_mean_firing_rate",
    "neuron_module_names",
    "paper_setting",
    "run_energy",
    "spike_profile",
    "spike_stats",
]
