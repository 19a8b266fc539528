"""Configuration of the spiking BERT: a `BertConfig` plus the spiking fields."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import BertConfig

NEURON_KINDS = ("elastic_bi", "lif")
RESETS = ("official", "soft", "none")
LEVELS = ("ternary", "binary")
AMPLITUDES = ("elastic", "unit")
ALPHA_MODES = ("calibrated", "fixed")


@strict
class SpikingBertConfig(BertConfig):
    r"""A BERT whose every weight matmul is driven by spikes (SpikeLM, Xing et al., ICML 2024).

    All `BertConfig` fields keep their meaning (so dense BERT checkpoints load key for key); the
    spiking fields are:

    Args:
        num_timesteps (`int`, defaults to 4): T, the time steps every layer runs; the embeddings are
            repeated T times and the encoder output is the mean over T.
        neuron_kind (`str`, defaults to "elastic_bi"): "elastic_bi" (SpikeLM's ternary neuron) or
            "lif" (binary LIF, the LIF-BERT baseline).
        k (`float`, defaults to 2.0): frequency coefficient, a_t = k * mean|u_t| at calibration.
        decay (`float`, defaults to 0.25): membrane decay of the elastic bi-spiking neuron.
        reset (`str`, defaults to "official"): membrane reset form, "official" (the released code's
            multiplicative form), "soft" or "none".
        levels (`str`, defaults to "ternary"): spike levels, "ternary" {-a, 0, a} or "binary" {0, a}.
        amplitude (`str`, defaults to "elastic"): "elastic" (spikes carry a_t) or "unit" (spikes are 1).
        alpha_mode (`str`, defaults to "calibrated"): "calibrated" (a_t = k mean|u_t|) or "fixed"
            (a_t = fixed_alpha: a fixed threshold, no frequency calibration).
        fixed_alpha (`float`, defaults to 1.0): the amplitude when alpha_mode is "fixed".
        spike_kv (`bool`, defaults to True): spike K and V after their projections (SpikeLM's
            stateless spikes; LIF neurons for the LIF baseline, an assumption: the baseline code is
            not released). False keeps K and V float.
        lif_tau (`float`, defaults to 2.0), lif_v_threshold (`float`, defaults to 1.0),
        lif_v_reset (`float`, defaults to 0.0), lif_surrogate_alpha (`float`, defaults to 4.0):
            LIF neuron parameters (SpikingJelly LIFNode defaults).
    """

    model_type = "spiking_bert"

    num_timesteps: int = 4
    neuron_kind: str = "elastic_bi"
    k: float | int = 2.0
    decay: float | int = 0.25
    reset: str = "official"
    levels: str = "ternary"
    amplitude: str = "elastic"
    alpha_mode: str = "calibrated"
    fixed_alpha: float | int = 1.0
    spike_kv: bool = True
    lif_tau: float | int = 2.0
    lif_v_threshold: float | int = 1.0
    lif_v_reset: float | int = 0.0
    lif_surrogate_alpha: float | int = 4.0

    def validate_spiking(self) -> None:
        """Part of `@strict` validation: the spiking fields, naming the field at fault."""
        if self.num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {self.num_timesteps}")
        if not self.k > 0:
            raise ValueError(f"k must be > 0, got {self.k}")
        if not 0 <= self.decay <= 1:
            raise ValueError(f"decay must be in [0, 1], got {self.decay}")
        for name, allowed in (
            ("neuron_kind", NEURON_KINDS),
            ("reset", RESETS),
            ("levels", LEVELS),
            ("amplitude", AMPLITUDES),
            ("alpha_mode", ALPHA_MODES),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if not self.fixed_alpha > 0:
            raise ValueError(f"fixed_alpha must be > 0, got {self.fixed_alpha}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads ({self.num_attention_heads})"
            )


__all__ = ["SpikingBertConfig"]
