"""SpikeLM's elastic bi-spiking neuron and the stateless spike used on K and V.

Method: docs/spikelm-method.md, section 2 (the released code's behaviour).

- Membrane over T steps with decay 0.25 and a reset form: "official" (the released code's
  multiplicative u_t = decay * u_{t-1} * (a_{t-1} - s_{t-1}) + x_t), "soft", or "none".
- Spike s_t = a_t * clamp(round(u_t / a_t), -1, 1): ternary {-a, 0, +a}, threshold a/2.
- Elastic frequency: a_t = k * mean|u_t|, calibrated on the first batch the neuron sees (or by an
  explicit `spikelm_core.calibration.calibrate` pass), then frozen. `alpha` and `calibrated` are
  persistent buffers: a reloaded model never recalibrates.
- Straight-through backward, gradient 1 where lo*a_t <= u_t <= a_t, full BPTT through the membrane.

Ablation switches (paper's component ablation): `levels` binary ({0, a}) or ternary;
`amplitude` "elastic" (emit a) or "unit" (emit 1); `alpha_mode` "calibrated" (a_t = k mean|u_t|)
or "fixed" (a_t = fixed_alpha, a fixed threshold fixed_alpha/2).

Outlier-aware allocation (spikelm's options, off by default; docs/spiking-llama.md): a neuron before
a linear layer calibrates knowing the layer's weight W. `salient_fraction`: the top channels by
saliency, mean over tokens of (x W^T W)_c x_c, run `salient_steps` sub-steps per step (multi-level
spikes) or stay float, and the amplitudes are calibrated on the other channels. `k_candidates`: the
neuron picks the k whose spikes best reproduce x W^T (per-layer k). The mask (`salient`) and the
chosen k (`k_chosen`) are persistent buffers, like `alpha`.

Per-channel amplitudes (`channel_scale`, spikelm's option, off by default): at calibration a neuron
also records c = mean|x_c| / mean|x| per input channel (`channel_scales`, a persistent buffer), spikes
x / c and emits the spikes times c (ternary levels, per-channel amplitudes a_t * c, folded into the
next weight at inference). `spike_levels` undoes the factor for counting.
"""

from __future__ import annotations

import torch
from pydantic import ValidationError

from . import functional as F
from . import reference as R
from .base import SpikingNeuron, distributed_mean
from .settings import AlphaMode, Amplitude, Levels, NeuronSettings, Reset, SalientMode, validation_messages

#: at most this many tokens (per time step) of the calibration batch score saliency and candidate k's
ALLOCATION_TOKENS = 4096


def salient_count(fraction: float, channels: int) -> int:
    """How many of `channels` input channels are salient at `fraction`: at least one when > 0, and at
    most all but one (the spiking channels' amplitudes are means over them: an empty set has none)."""
    return 0 if fraction <= 0 else max(0, min(channels - 1, max(1, round(fraction * channels))))


def saliency_scores(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Per input channel, mean over rows of (x W^T W)_c * x_c, `x: [R, C]`, `W: [O, C]` (W = I
    without a weight: mean x_c^2). The channel's share of the output energy ||x W^T||^2 / R."""
    x = x.float()
    if weight is None:
        return (x * x).mean(0)
    w = weight.detach().float()
    return ((x @ w.t()) @ w * x).mean(0)


def output_error(diff: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """sum ||diff W^T||^2 over the rows of `diff: [R, C]` (W = I without a weight), in float64."""
    d = diff.float()
    y = d if weight is None else d @ weight.detach().float().t()
    return (y.double() ** 2).sum()


def _validate(num_timesteps, k, levels, amplitude, alpha_mode, fixed_alpha, learn_alpha=False, **more) -> None:
    """The neuron vocabulary's checks (`NeuronSettings`), as a ValueError naming the field."""
    try:
        NeuronSettings(num_timesteps=num_timesteps, k=k, levels=levels, amplitude=amplitude, alpha_mode=alpha_mode,
                       fixed_alpha=fixed_alpha, learn_alpha=learn_alpha, **more)
    except ValidationError as exc:
        raise ValueError("; ".join(validation_messages(exc))) from None


class _AmplitudeNeuron(SpikingNeuron):
    """Shared state of neurons with per-step amplitudes `alpha: [T]` and a `calibrated` flag."""

    def __init__(self, num_timesteps, k, levels, amplitude, alpha_mode, fixed_alpha, learn_alpha=False) -> None:
        super().__init__()
        _validate(num_timesteps, k, levels, amplitude, alpha_mode, fixed_alpha, learn_alpha)
        self.num_timesteps = int(num_timesteps)
        self.k = float(k)
        self.levels = levels
        self.amplitude = amplitude
        self.alpha_mode = alpha_mode
        self.fixed_alpha = float(fixed_alpha)
        self.learn_alpha = bool(learn_alpha)
        if self.learn_alpha:  # same state-dict key either way: checkpoints load across the two
            self.alpha = torch.nn.Parameter(torch.ones(self.num_timesteps))
        else:
            self.register_buffer("alpha", torch.ones(self.num_timesteps))
        self.register_buffer("calibrated", torch.tensor(False))
        # spike drop (`spike_drop`): the probability, a tensor so that changing it recompiles nothing
        self.register_buffer("spike_drop_p", torch.zeros(()), persistent=False)
        self.spike_dropping = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._calibrated_seen = False
        self.state_version += 1
        with torch.no_grad():
            if self.alpha_mode == "fixed":
                self.alpha.fill_(self.fixed_alpha)
                self.calibrated.fill_(True)
            else:
                self.alpha.fill_(1.0)
                self.calibrated.fill_(False)

    @property
    def _lo(self) -> int:
        return -1 if self.levels == "ternary" else 0

    @property
    def _unit(self) -> bool:
        return self.amplitude == "unit"

    @property
    def is_calibrated(self) -> bool:
        if self.calibrated.device.type == "meta":  # shape-only runs (MAC counting) never calibrate
            return True
        # read the flag from the device once, then remember it: no host-device sync per forward
        if not self._calibrated_seen:
            self._calibrated_seen = bool(self.calibrated)
        return self._calibrated_seen

    def _load_from_state_dict(self, *args, **kwargs):
        self._calibrated_seen = False  # the loaded `calibrated` flag is read again on the next forward
        self.state_version += 1
        super()._load_from_state_dict(*args, **kwargs)

    def _needs_calibration(self) -> bool:
        return not torch.jit.is_tracing() and not self.is_calibrated

    def mark_uncalibrated(self) -> None:
        if self.alpha_mode == "calibrated":
            self.calibrated.fill_(False)
            self._calibrated_seen = False
            self.state_version += 1

    def _set_alpha(self, alpha: torch.Tensor) -> None:
        with torch.no_grad():
            self.alpha.copy_(alpha.to(self.alpha.dtype))
            self.calibrated.fill_(True)
        self.state_version += 1

    def spike_signature(self) -> tuple | None:
        if self.learn_alpha or not self.is_calibrated:
            return None
        return (type(self), self.impl, self.num_timesteps, self.k, self.levels, self.amplitude, self.alpha_mode,
                self.fixed_alpha, *self._dynamics())

    def _dynamics(self) -> tuple:
        return ()

    def same_state(self, other) -> bool:
        return torch.equal(self.alpha, other.alpha)

    def extra_repr(self) -> str:
        return (
            f"num_timesteps={self.num_timesteps}, k={self.k}, levels={self.levels}, "
            f"amplitude={self.amplitude}, alpha_mode={self.alpha_mode}"
            + (", learn_alpha=True" if self.learn_alpha else "")
        )

    def _learning_alpha(self) -> bool:
        """LSQ gradients for alpha are wanted in this forward."""
        return self.learn_alpha and self.alpha.requires_grad and torch.is_grad_enabled()

    def _drop_spikes(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """`s`, where inside `spike_drop` (training mode only) each element is its float input `x`
        instead with probability `spike_drop_p`."""
        if not (self.spike_dropping and self.training):
            return s
        passed = torch.rand(x.shape, device=x.device) < self.spike_drop_p
        return torch.where(passed, x.to(s.dtype), s)


class BiSpikeNeuron(_AmplitudeNeuron):
    """Elastic bi-spiking neuron: `[T, ...]` currents -> `[T, ...]` spikes in {-a_t, 0, +a_t}.

    Args:
        num_timesteps: T, the length of the leading time axis.
        k: frequency coefficient; a_t = k * mean|u_t| at calibration (2 in the released code).
        decay: membrane decay tau (0.25).
        reset: "official" (released code, default), "soft" or "none".
        levels: "ternary" (default) or "binary" ({0, a}).
        amplitude: "elastic" (emit a_t, default) or "unit" (emit 1).
        alpha_mode: "calibrated" (default) or "fixed" (a_t = fixed_alpha, no calibration).
        fixed_alpha: the amplitude with alpha_mode="fixed".
        learn_alpha: train the amplitudes after calibration with LSQ gradients (method doc 2.4;
            off in the released code, where alpha stays frozen).
        salient_fraction, salient_mode, salient_steps, k_candidates: outlier-aware allocation
            (`NeuronSettings`; off by default). A salient mask needs the input width:
            `set_input_width` (called by `SpikeLinear`).
        channel_scale: per-channel amplitudes (`NeuronSettings.channel_scale`; off by default). The
            scales' buffer is made by `set_input_width`, or at calibration for a bare neuron.
    """

    def __init__(
        self,
        num_timesteps: int = 4,
        k: float = 2.0,
        decay: float = 0.25,
        reset: Reset = "official",
        levels: Levels = "ternary",
        amplitude: Amplitude = "elastic",
        alpha_mode: AlphaMode = "calibrated",
        fixed_alpha: float = 1.0,
        learn_alpha: bool = False,
        salient_fraction: float = 0.0,
        salient_mode: SalientMode = "steps",
        salient_steps: int = 2,
        k_candidates: tuple[float, ...] = (),
        channel_scale: bool = False,
    ) -> None:
        _validate(num_timesteps, k, levels, amplitude, alpha_mode, fixed_alpha, learn_alpha, reset=reset, decay=decay,
                  salient_fraction=salient_fraction, salient_mode=salient_mode, salient_steps=salient_steps,
                  k_candidates=tuple(k_candidates), channel_scale=channel_scale)
        self.decay = float(decay)
        self.reset = reset
        self.salient_fraction = float(salient_fraction)
        self.salient_mode = salient_mode
        self.salient_steps = int(salient_steps)
        self.k_candidates = tuple(float(c) for c in k_candidates)
        self.channel_scale = bool(channel_scale)
        super().__init__(num_timesteps, k, levels, amplitude, alpha_mode, fixed_alpha, learn_alpha)
        if self.k_candidates:
            self.register_buffer("k_chosen", torch.tensor(float(k)))

    # -- outlier-aware allocation ------------------------------------------------------------
    @property
    def weight_aware(self) -> bool:
        """Whether calibration reads the weight of the layer this neuron drives (allocation is on)."""
        return self.salient_fraction > 0 or bool(self.k_candidates)

    def set_input_width(self, channels: int) -> None:
        """Make room for the salient-channel mask and the channel scales of a `channels`-wide input
        (no-op without those options)."""
        if self.salient_fraction > 0 and getattr(self, "salient", None) is None:
            self.register_buffer("salient", torch.zeros(int(channels), dtype=torch.bool))
        if self.channel_scale and getattr(self, "channel_scales", None) is None:
            self.register_buffer("channel_scales", torch.ones(int(channels)))

    def _fit_input_width(self, channels: int) -> None:
        """Make the per-channel buffers (salient mask, channel scales) for `channels` input channels,
        or check that the existing ones have that width."""
        self.set_input_width(channels)
        for name in ("salient", "channel_scales"):
            buffer = getattr(self, name, None)
            if buffer is not None and buffer.numel() != channels:
                raise ValueError(f"{type(self).__name__} was built for {buffer.numel()} input channels, got {channels}")

    def _scales(self) -> torch.Tensor | None:
        """The per-channel scales c (`[C]`) with `channel_scale`, else None."""
        return getattr(self, "channel_scales", None) if self.channel_scale else None

    @torch.no_grad()
    def _calibrate_scales(self, x: torch.Tensor) -> torch.Tensor:
        """Set c = mean|x_c| / mean|x| per input channel (over every step and row of `x`, averaged
        over ranks); channels that never carry current keep a floor of 1e-3."""
        channels = x.shape[-1]
        per_channel = distributed_mean(x.abs().float().reshape(-1, channels).mean(0))
        scales = (per_channel / per_channel.mean().clamp_min(1e-12)).clamp_min(1e-3)
        self.channel_scales.copy_(scales.to(self.channel_scales.dtype))
        return self.channel_scales

    def spike_levels(self, output: torch.Tensor) -> torch.Tensor:
        """The spikes a_t * q of an output of this neuron, without the channel scales (identity
        without `channel_scale`): what firing counts and the energy audit read."""
        scales = self._scales()
        return output if scales is None else output / scales.to(output.dtype)

    @property
    def allocating(self) -> bool:
        """Whether this neuron has salient channels (outlier-aware allocation with a mask to fill)."""
        return self.salient_fraction > 0 and getattr(self, "salient", None) is not None

    def _spikes_allocated(self, x: torch.Tensor, alpha: torch.Tensor, learn_alpha: bool = False) -> torch.Tensor:
        if self.impl == "reference":
            return R.bi_spike_allocated_reference(x, alpha, self.salient, self.salient_mode, self.salient_steps,
                                                  self.decay, self.reset, self.levels, self.amplitude, learn_alpha)
        return F.bi_spike_allocated(x, alpha, self.decay, self.reset, self._lo, self._unit, self.salient,
                                    self.salient_mode, self.salient_steps, learn_alpha)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Set a_t = k * mean|u_t| from `x` (averaged over ranks under torch.distributed).

        With allocation on, `weight` (`[out, in]`, the layer this neuron drives; None = identity)
        first picks the salient channels, whose currents then stay out of the means, and with
        `k_candidates` each candidate k is tried and the one with the least output error kept.
        With `channel_scale` the channel scales c come first, and everything after reads x / c
        (and the weight W diag(c))."""
        self._check_time(x, self.num_timesteps)
        x = self._calibration_rows(x.detach())
        self._fit_input_width(x.shape[-1])
        if self.channel_scale:
            scales = self._calibrate_scales(x).to(x.dtype)
            x = x / scales
            weight = None if weight is None else weight.detach() * scales.to(weight.dtype)
        if not self.weight_aware:
            self._set_alpha(F.calibrate_bi_spike(x, self.k, self.decay, self.reset, self._lo, self._unit,
                                                 distributed_mean))
            return
        channels = x.shape[-1]
        rows = x.reshape(x.shape[0], -1, channels)[:, :ALLOCATION_TOKENS]  # [T, R, C]: what scores and errors read
        if self.salient_fraction > 0:
            scores = distributed_mean(saliency_scores(rows.reshape(-1, channels), weight))
            mask = torch.zeros(channels, dtype=torch.bool, device=x.device)
            mask[torch.topk(scores, salient_count(self.salient_fraction, channels)).indices] = True
            self.salient.copy_(mask)
        plain = x[..., ~self.salient] if self.allocating else x
        candidates = self.k_candidates or (self.k,)
        best = None
        for k in candidates:
            alpha = F.calibrate_bi_spike(plain, k, self.decay, self.reset, self._lo, self._unit, distributed_mean)
            if len(candidates) > 1:
                spikes = self._spikes_allocated(rows, alpha) if self.allocating else F.bi_spike_inline(
                    rows, alpha, self.decay, self.reset, self._lo, self._unit)
                err = float(distributed_mean(output_error((spikes - rows).reshape(-1, channels), weight)))
            else:
                err = 0.0
            if best is None or err < best[0]:
                best = (err, k, alpha)
        _, k, alpha = best
        if self.k_candidates:
            self.k_chosen.fill_(k)
        self._set_alpha(alpha)

    def same_state(self, other) -> bool:
        if not super().same_state(other):
            return False
        if self.channel_scale and not torch.equal(self.channel_scales, other.channel_scales):
            return False
        return not self.allocating or torch.equal(self.salient, other.salient)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_time(x, self.num_timesteps)
        if self._needs_calibration():
            self.calibrate(x)
        scales = self._scales()
        if scales is None:
            return self._drop_spikes(x, self._spikes(x))
        scales = scales.to(x.dtype)
        return self._drop_spikes(x, self._spikes(x / scales) * scales)

    def _spikes(self, x: torch.Tensor) -> torch.Tensor:
        """Spikes of the (rescaled) current `x` with the calibrated amplitudes, by `impl`."""
        if self.allocating:
            return self._spikes_allocated(x, self.alpha, self._learning_alpha())
        if self.impl == "reference":
            s = R.bi_spike_reference(x, self.alpha, self.decay, self.reset, self.levels, self.amplitude,
                                     self._learning_alpha())
        elif self.impl == "inline" or self._learning_alpha():
            s = F.bi_spike_inline(x, self.alpha, self.decay, self.reset, self._lo, self._unit, self._learning_alpha())
        else:
            compiled = self.impl == "compiled"
            s = F.BiSpikeFunction.apply(x, self.alpha, self.decay, self.reset, self._lo, self._unit, compiled)
        return s

    def _dynamics(self) -> tuple:
        return (self.decay, self.reset, self.salient_fraction, self.salient_mode, self.salient_steps, self.k_candidates,
                self.channel_scale)

    def extra_repr(self) -> str:
        more = ""
        if self.salient_fraction > 0:
            more += f", salient_fraction={self.salient_fraction}, salient_mode={self.salient_mode}"
            more += f", salient_steps={self.salient_steps}" if self.salient_mode == "steps" else ""
        if self.k_candidates:
            more += f", k_candidates={self.k_candidates}"
        if self.channel_scale:
            more += ", channel_scale=True"
        return f"{super().extra_repr()}, decay={self.decay}, reset={self.reset}{more}"


class TernarySpike(_AmplitudeNeuron):
    """Stateless spike per time slice (SpikeLM's K/V spikes): s_t = a_t * clamp(round(x_t/a_t), -1, 1).

    No membrane; a_t = k * mean|x_t| calibrated like `BiSpikeNeuron` (and learnt with `learn_alpha`).
    """

    def __init__(
        self,
        num_timesteps: int = 4,
        k: float = 2.0,
        levels: Levels = "ternary",
        amplitude: Amplitude = "elastic",
        alpha_mode: AlphaMode = "calibrated",
        fixed_alpha: float = 1.0,
        learn_alpha: bool = False,
    ) -> None:
        super().__init__(num_timesteps, k, levels, amplitude, alpha_mode, fixed_alpha, learn_alpha)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        self._check_time(x, self.num_timesteps)
        x = self._calibration_rows(x.detach())
        dims = tuple(range(1, x.dim()))
        means = distributed_mean(x.abs().float().mean(dims))
        self._set_alpha(self.k * means)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_time(x, self.num_timesteps)
        if self._needs_calibration():
            self.calibrate(x)
        if self.impl == "reference":
            s = R.ternary_spike_reference(x, self.alpha, self.levels, self.amplitude, self._learning_alpha())
        elif self.impl == "inline" or self._learning_alpha():
            s = F.stateless_spike_inline(x, self.alpha, self._lo, self._unit, self._learning_alpha())
        else:
            s = F.StatelessSpikeFunction.apply(x, self.alpha, self._lo, self._unit)
        return self._drop_spikes(x, s)


class spike_drop:
    """Within the block, every amplitude neuron of `model` (`BiSpikeNeuron`, `TernarySpike`) in training
    mode passes each element of its input on as it is, instead of its spike, with probability `p`, drawn
    anew per element and forward (QDrop, Wei et al. 2022, for activation quantisation; here for spikes).
    The membrane still runs on spikes; a passed element's gradient is the identity, a spike's the
    straight-through one. `distill.spike_drop` anneals `p` to 0 over the first steps, so the model ends
    fully spiking; evaluation (eval mode) never drops. Firing counts made inside the block count the
    passed elements as firing. Leaves the neurons as they were on exit.
    """

    def __init__(self, model: torch.nn.Module, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"spike_drop probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.neurons = [m for m in model.modules() if isinstance(m, _AmplitudeNeuron)]

    def __enter__(self) -> "spike_drop":
        for neuron in self.neurons:
            neuron.spike_drop_p.fill_(self.p)
            neuron.spike_dropping = self.p > 0
        return self

    def __exit__(self, *exc) -> None:
        for neuron in self.neurons:
            neuron.spike_dropping = False
