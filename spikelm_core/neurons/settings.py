"""The neuron vocabulary: every neuron setting's name, choices, meaning and validity, defined once.

Recipes (`neuron:` section), the spiking model configs (`SpikingFields`), `spikelm convert` and the
CLI choices all derive from `NeuronSettings` and the `Literal` types below; nothing else restates
them. In a model config the kind is stored as `neuron_kind` (transformers configs are flat); every
other field keeps its name.
"""

from __future__ import annotations

import math
import typing
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

NeuronKind = Literal["elastic_bi", "lif", "dense"]
"""'elastic_bi': SpikeLM's elastic bi-spiking neuron (ternary); 'lif': binary LIF (the LIF-BERT
baseline); 'dense': no neurons at all (a dense model used as it is, e.g. a distillation teacher)."""
Reset = Literal["official", "soft", "none"]
Levels = Literal["ternary", "binary"]
Amplitude = Literal["elastic", "unit"]
AlphaMode = Literal["calibrated", "fixed"]
SalientMode = Literal["steps", "float"]
Readout = Literal["mean", "last"]

NEURON_KINDS: tuple[str, ...] = typing.get_args(NeuronKind)
SPIKING_KINDS: tuple[str, ...] = ("elastic_bi", "lif")
"""The kinds a spiking model can be built with ('dense' has no neurons)."""
RESETS: tuple[str, ...] = typing.get_args(Reset)
LEVELS: tuple[str, ...] = typing.get_args(Levels)
AMPLITUDES: tuple[str, ...] = typing.get_args(Amplitude)
ALPHA_MODES: tuple[str, ...] = typing.get_args(AlphaMode)
SALIENT_MODES: tuple[str, ...] = typing.get_args(SalientMode)
READOUTS: tuple[str, ...] = typing.get_args(Readout)

K_HELP = "Frequency coefficient k: amplitudes are calibrated to a_t = k * mean|u_t| (larger k: fewer spikes)."
"""The one description of k (method doc 2.3: frequency encoding)."""

LEARN_ALPHA_RULE = "learn_alpha needs kind 'elastic_bi' and amplitude 'elastic'"
ALLOCATION_RULE = ("salient_fraction and k_candidates (outlier-aware allocation) need kind 'elastic_bi' and "
                   "alpha_mode 'calibrated'")
CHANNEL_SCALE_RULE = "channel_scale needs kind 'elastic_bi' and alpha_mode 'calibrated'"


class NeuronSettings(BaseModel):
    """Spiking neuron placed before every weight matmul (method doc sections 2 and 5)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    kind: NeuronKind = "elastic_bi"
    """'elastic_bi' = SpikeLM elastic bi-spiking neuron; 'lif' = binary LIF baseline; 'dense' = no
    spiking neurons: finetune/eval use a dense model as it is (e.g. a distillation teacher)."""
    num_timesteps: int = Field(4, ge=1)
    """Time steps T; the input is repeated T times (direct encoding). T = 1 has no dynamics."""
    k: float = Field(2.0, gt=0, allow_inf_nan=False, description=K_HELP)
    decay: float = Field(0.25, ge=0, le=1)
    """Membrane decay tau of the bi-spiking neuron, in [0, 1]."""
    reset: Reset = "official"
    """Membrane reset: 'official' = the released code's multiplicative reset; 'soft' = subtract the
    spike; 'none' = no membrane carried between steps."""
    levels: Levels = "ternary"
    """Spike levels: 'ternary' = {-1, 0, +1} (bidirectional); 'binary' = {0, +1} (ablation)."""
    amplitude: Amplitude = "elastic"
    """Spike amplitude: 'elastic' = alpha_t * q_t; 'unit' = q_t (ablation)."""
    alpha_mode: AlphaMode = "calibrated"
    """'calibrated' = alpha from data (k * mean|u|); 'fixed' = `fixed_alpha` (ablation)."""
    fixed_alpha: float = Field(1.0, gt=0, allow_inf_nan=False)
    """Amplitude used when alpha_mode is 'fixed'."""
    spike_kv: bool = True
    """Spike keys and values (stateless) before attention; queries are never spiked."""
    learn_alpha: bool = False
    """Train the amplitudes with LSQ gradients (method doc 2.4; off in the released code, where they
    stay frozen): after calibration, or with alpha_mode 'fixed' from `fixed_alpha` (the '+ elastic
    amplitude' ablation row: a learnt amplitude without frequency calibration). Needs kind
    'elastic_bi' and amplitude 'elastic'."""
    salient_fraction: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False)
    """Outlier-aware spike allocation (spikelm's option, after SpikeLLM; 0 = off, as in the paper): at
    calibration, the top fraction of each linear layer's input channels by saliency, mean over tokens
    of (x W^T W)_c * x_c, get `salient_mode`; the others spike as usual, with amplitudes calibrated on
    them alone. Elastic bi-spiking neurons before weight matmuls only (not the K/V spikes)."""
    salient_mode: SalientMode = "steps"
    """What salient channels get: 'steps' = `salient_steps` sub-steps per time step (multi-level spikes
    q * a_t, |q| <= salient_steps: the sum of that many ternary sub-spikes); 'float' = no spike, the
    projection reads the float input on those channels."""
    salient_steps: int = Field(2, ge=2, le=64)
    """Sub-steps per time step of a salient channel with salient_mode 'steps' (2: the channel has 2T steps)."""
    k_candidates: tuple[float, ...] = ()
    """Per-layer k (spikelm's option; empty = off): at calibration each linear layer's input neuron picks,
    from these values, the k whose spikes best reproduce the layer's float output on the calibration
    batch (least sum over t of ||(s_t - x_t) W^T||^2); `k` then only serves the K/V spikes."""

    channel_scale: bool = False
    """Per-channel amplitudes (spikelm's option; off in the paper, whose amplitude is one scalar per
    neuron and step): at calibration each neuron before a linear layer also records, per input channel,
    c = mean|x_c| / mean|x| and spikes the rescaled current x / c; its spikes are ternary times a_t * c,
    and c folds into the layer's weight columns (W diag(c)), so inference stays addition-only. Lets
    the few wide channels of a LayerNorm output spike at their own scale instead of saturating."""
    readout: Readout = "mean"
    """How the heads read the T steps of the model's last layer: 'mean' = the mean over T (the paper,
    method doc 2.6); 'last' = the last step alone (spikelm's option; docs/transfer-study-log.md measures it).
    Hidden states returned for distillation stay means over T either way."""

    @model_validator(mode="after")
    def _learn_alpha_rule(self) -> "NeuronSettings":
        if self.learn_alpha and not (self.kind == "elastic_bi" and self.amplitude == "elastic"):
            raise ValueError(LEARN_ALPHA_RULE)
        return self

    @model_validator(mode="after")
    def _allocation_rule(self) -> "NeuronSettings":
        bad = [k for k in self.k_candidates if not (math.isfinite(k) and k > 0)]
        if bad:
            raise ValueError(f"k_candidates must be positive finite numbers, got {bad[0]!r}")
        if (self.salient_fraction > 0 or self.k_candidates) and not (
            self.kind == "elastic_bi" and self.alpha_mode == "calibrated"
        ):
            raise ValueError(ALLOCATION_RULE)
        if self.channel_scale and not (self.kind == "elastic_bi" and self.alpha_mode == "calibrated"):
            raise ValueError(CHANNEL_SCALE_RULE)
        return self

    @property
    def allocates(self) -> bool:
        """Whether outlier-aware allocation (salient channels or per-layer k) is on."""
        return self.salient_fraction > 0 or bool(self.k_candidates)

    @property
    def spiking(self) -> bool:
        return self.kind != "dense"

    def model_fields_dict(self) -> dict[str, Any]:
        """The settings as spiking model-config fields (`kind` stored as `neuron_kind`)."""
        fields = self.model_dump()
        fields["neuron_kind"] = fields.pop("kind")
        fields["k_candidates"] = list(fields["k_candidates"])  # JSON-shaped: model configs are saved as JSON
        return fields

    @classmethod
    def from_model_config(cls, config: Any) -> "NeuronSettings":
        """The settings a spiking model config (or its dict) carries."""
        get = config.get if isinstance(config, Mapping) else lambda key, default=None: getattr(config, key, default)
        values = {name: get(name) for name in cls.model_fields if name != "kind" and get(name) is not None}
        values["kind"] = get("neuron_kind", "elastic_bi")
        return cls(**values)


#: The settings of SpikeLM's elastic bi-spiking neuron that a LIF neuron does not read (its spikes are {0, 1}
#: at its own threshold): left out where a LIF model's settings are reported.
ELASTIC_ONLY: tuple[str, ...] = ("k", "decay", "reset", "levels", "amplitude", "alpha_mode", "fixed_alpha",
                                 "learn_alpha", "salient_fraction", "salient_mode", "salient_steps", "k_candidates",
                                 "channel_scale")

#: The LIF neuron's own constants, as model-config fields.
LIF_CONSTANTS: tuple[str, ...] = ("lif_tau", "lif_v_threshold", "lif_v_reset", "lif_surrogate_alpha")
#: Model-config names of the neuron settings, then the LIF neuron's own constants.
SPIKING_FIELDS: tuple[str, ...] = tuple(
    "neuron_kind" if name == "kind" else name for name in NeuronSettings.model_fields
) + LIF_CONSTANTS


def validation_messages(exc: ValidationError, prefix: str = "") -> list[str]:
    """'path: message' lines of a pydantic ValidationError (paths dotted, prefixed)."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        path = ".".join(p for p in (prefix, loc) if p)
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        out.append(f"{path}: {msg}" if path else msg)
    return out


def check_model_neuron_fields(values: Mapping[str, Any]) -> None:
    """Validate the spiking fields of a model config with `NeuronSettings`; ValueError naming the
    field at fault. The kind must be a spiking one, the LIF constants finite and lif_tau positive."""
    kind = values.get("neuron_kind", "elastic_bi")
    if kind not in SPIKING_KINDS:
        raise ValueError(f"neuron_kind must be one of {', '.join(SPIKING_KINDS)}; got {kind!r}")
    for name in LIF_CONSTANTS:
        value = values.get(name)
        if value is not None and (isinstance(value, bool) or not math.isfinite(float(value))):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    tau = values.get("lif_tau")
    if tau is not None and float(tau) <= 0:  # the membrane's time constant divides the input
        raise ValueError(f"lif_tau must be positive, got {tau!r}")
    try:
        NeuronSettings.from_model_config(values)
    except ValidationError as exc:
        raise ValueError("; ".join(validation_messages(exc))) from None


__all__ = [
    "ALLOCATION_RULE",
    "CHANNEL_SCALE_RULE",
    "ALPHA_MODES",
    "AMPLITUDES",
    "AlphaMode",
    "Amplitude",
    "K_HELP",
    "LEVELS",
    "Levels",
    "NEURON_KINDS",
    "NeuronKind",
    "NeuronSettings",
    "READOUTS",
    "RESETS",
    "Readout",
    "Reset",
    "SALIENT_MODES",
    "SalientMode",
    "SPIKING_FIELDS",
    "SPIKING_KINDS",
    "check_model_neuron_fields",
    "validation_messages",
]
