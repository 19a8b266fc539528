"""Pieces every spiking model shares: the spiking config fields, neuron factories and spike-driven ops.

Every spike-driven op is a module with a child named `neuron` that spikes its (right) operand:
`SpikeLinear` (an `nn.Linear`, so parameter names equal the dense model's and dense weights load
key for key) and `SpikeMatmul` (Q.K^T and probs.V). The energy audit and the firing-rate tracing
rely on this: each op's spiking operand is its `neuron`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..neurons import BiSpikeNeuron, LIFNeuron, SpikingNeuron, TernarySpike
from ..neurons.base import spike_identically
from ..neurons.settings import SPIKING_FIELDS, check_model_neuron_fields


@dataclass
class SpikingFields:
    r"""Spiking fields, mixed into a transformers config class.

    Args:
        num_timesteps (`int`, defaults to 4): T, the time steps every layer runs; the embeddings are
            repeated T times and the output is the mean over T.
        neuron_kind (`str`, defaults to "elastic_bi"): "elastic_bi" (SpikeLM's ternary neuron) or
            "lif" (binary LIF, the LIF-BERT baseline).
        k (`float`, defaults to 2.0): frequency coefficient k: amplitudes are calibrated to
            a_t = k * mean|u_t| (larger k: fewer spikes).
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
        learn_alpha (`bool`, defaults to False): train the amplitudes (after calibration, or from fixed_alpha) with LSQ
            gradients (method doc 2.4); False keeps them frozen, as the released code does.
        salient_fraction (`float`, defaults to 0.0), salient_mode (`str`, defaults to "steps"),
        salient_steps (`int`, defaults to 2), k_candidates (`list[float]`, optional): outlier-aware
            spike allocation of the neurons before linear layers (spikelm's options, off by
            default): `spikelm_core.neurons.settings.NeuronSettings` documents them.
        channel_scale (`bool`, defaults to False): per-channel amplitudes of the neurons before linear
            layers (spikelm's option, off by default; `NeuronSettings` documents it).
        readout (`str`, defaults to "mean"): what the heads read of the last layer's T steps, "mean"
            (the paper) or "last" (the last step; `NeuronSettings` documents it); see `read_out`.
    """

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
    learn_alpha: bool = False
    salient_fraction: float | int = 0.0
    salient_mode: str = "steps"
    salient_steps: int = 2
    k_candidates: list[float | int] | None = None
    channel_scale: bool = False
    readout: str = "mean"

    def validate_spiking(self) -> None:
        """Part of `@strict` validation: the spiking fields, checked by `NeuronSettings`."""
        check_model_neuron_fields({name: getattr(self, name, None) for name in SPIKING_FIELDS})



class TiedKeysNotSaved:
    """A model whose tied weights (an LM head tied to the embeddings, ...) are saved once, under their
    sources: after transformers' `post_init`, the keys the config ties are the keys to ignore on save,
    so the Trainer, resuming from a checkpoint or loading the best one, ties them again instead of
    warning that they are missing. Untied weights (tie_word_embeddings false) are saved as usual."""

    def post_init(self):
        super().post_init()
        self._keys_to_ignore_on_save = set(self._keys_to_ignore_on_save or ()) | set(self.all_tied_weights_keys)

def ignore_tied_keys_on_save(model) -> None:
    """What `TiedKeysNotSaved` does for spikelm's classes, on an instance of transformers' own (a dense
    model trained by spikelm): its tied keys become keys to ignore on save, so a resumed run ties them
    again instead of warning that they are missing from the checkpoint."""
    tied = set(getattr(model, "all_tied_weights_keys", None) or ())
    if tied:
        model._keys_to_ignore_on_save = set(getattr(model, "_keys_to_ignore_on_save", None) or ()) | tied


def reads_last_step(config: SpikingFields | None) -> bool:
    """Whether the heads read the last of the T steps (`readout: last`) rather than the mean over T."""
    return getattr(config, "readout", "mean") == "last"


def read_out(h: torch.Tensor, config: SpikingFields) -> torch.Tensor:
    """The float state `[B, ...]` the heads read from a per-step state `[T, B, ...]`: the mean over T,
    or with `readout: last` the last step."""
    return h[-1] if reads_last_step(config) else h.mean(0)


def make_neuron(config: SpikingFields) -> SpikingNeuron:
    """The stateful neuron placed before a linear layer."""
    if config.neuron_kind == "lif":
        return LIFNeuron(
            config.lif_tau, config.lif_v_threshold, config.lif_v_reset, config.lif_surrogate_alpha,
            num_timesteps=config.num_timesteps,
        )
    return BiSpikeNeuron(
        config.num_timesteps, k=config.k, decay=config.decay, reset=config.reset, levels=config.levels,
        amplitude=config.amplitude, alpha_mode=config.alpha_mode, fixed_alpha=config.fixed_alpha,
        learn_alpha=getattr(config, "learn_alpha", False),
        salient_fraction=getattr(config, "salient_fraction", 0.0) or 0.0,
        salient_mode=getattr(config, "salient_mode", "steps") or "steps",
        salient_steps=getattr(config, "salient_steps", 2) or 2,
        k_candidates=tuple(getattr(config, "k_candidates", None) or ()),
        channel_scale=bool(getattr(config, "channel_scale", False)),
    )


def init_neuron_state(module: nn.Module) -> None:
    """A neuron's state as a fresh neuron holds it (amplitudes 1 and uncalibrated; `fixed_alpha` and
    calibrated with `alpha_mode: fixed`; no salient channel, channel scales 1, the chosen k = k), for
    the spiking models' `_init_weights`. transformers' `from_pretrained` creates the model without
    initialising it and fills in only the tensors the checkpoint holds: a dense checkpoint holds no
    neuron state, so without this the amplitudes and the `calibrated` flag would be uninitialised
    memory (a neuron marked calibrated with arbitrary amplitudes). transformers' init functions skip
    the tensors it loaded, so saved neuron state is kept. The spike-drop probability, a
    non-persistent buffer no checkpoint holds, is set to 0 for spiking checkpoints too (uninitialised,
    it could read as non-finite to `non_finite_neurons`)."""
    from transformers import initialization as init

    from ..neurons.elastic import _AmplitudeNeuron

    if not isinstance(module, _AmplitudeNeuron):
        return
    fixed = module.alpha_mode == "fixed"
    init.constant_(module.alpha, module.fixed_alpha if fixed else 1.0)
    init.constant_(module.calibrated, fixed)
    for name, value in (("salient", False), ("channel_scales", 1.0), ("k_chosen", getattr(module, "k", 1.0)),
                        ("spike_drop_p", 0.0)):  # spike_drop_p: non-persistent, so never loaded and always set
        tensor = getattr(module, name, None)
        if torch.is_tensor(tensor):
            init.constant_(tensor, value)
    module._calibrated_seen = False  # the flag is read again on the next forward
    module.state_version += 1


def make_kv_spike(config: SpikingFields) -> nn.Module:
    """The spike applied to K or V after its projection (identity when `spike_kv` is off)."""
    if not config.spike_kv:
        return nn.Identity()
    if config.neuron_kind == "lif":
        return make_neuron(config)
    return TernarySpike(
        config.num_timesteps, k=config.k, levels=config.levels, amplitude=config.amplitude,
        alpha_mode=config.alpha_mode, fixed_alpha=config.fixed_alpha, learn_alpha=getattr(config, "learn_alpha", False),
    )


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask as an additive one: True (attend) -> 0, False (masked) -> the dtype's most
    negative value (finite, so a row with no allowed key gives uniform probabilities, never NaN)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def causal_mask(length: int, past: int, attention_mask: torch.Tensor | None, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """The additive self-attention mask of `length` new tokens after `past` cached ones, `[B or 1, 1,
    length, past + length]`: each token sees itself and the tokens before it, and, with a padding
    `attention_mask` (`[B, >= past + length]`, 1 = real token), only real tokens."""
    q_pos = torch.arange(past, past + length, device=device)
    k_pos = torch.arange(past + length, device=device)
    allowed = (k_pos[None, :] <= q_pos[:, None])[None, None]  # [1, 1, L, past+L]
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, -(past + length):]
    return additive_mask(allowed, dtype)


class UniformDropout(nn.Dropout):
    """`nn.Dropout` whose mask is drawn as `uniform > p` (`torch.rand_like`) instead of with ATen's
    `bernoulli_`: the same distribution (each element kept with probability 1 - p, to float32's
    2^-24 resolution), scaled by 1 / (1 - p) as usual, in about half the time on CPU, where
    `bernoulli_` was 15 % of a MiniLM training step. Inside a compiled layer the comparison and the
    scaling fuse with their neighbours and the backward keeps an int8 mask. The masks differ from
    `nn.Dropout`'s for one seed (another stream of random numbers), not in distribution; eager and
    compiled layers draw the same masks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return uniform_dropout(x, self.p, self.training)


def uniform_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout` with the mask drawn as `uniform > p` (see `UniformDropout`)."""
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    u = torch.rand_like(x)
    if torch.compiler.is_compiling():
        # keep where u > p as an int8 0/1 from ceil (for p < 1, u - p lies in (-1, 1)): inside a
        # compiled graph a bool mask keeps the CPU kernels from vectorising; int8 is what is saved
        keep = torch.ceil(u - p).to(torch.int8)
    else:
        keep = u > p  # the same mask, one comparison
    return x * keep * (1.0 / (1.0 - p))


_HALF = (torch.bfloat16, torch.float16)


def _half_precision(x: torch.Tensor) -> bool:
    """Whether matmuls on `x` run in bf16/fp16: `x` is, or autocast on its device lowers them."""
    device = x.device.type
    return x.dtype in _HALF or (torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) in _HALF)


def attention_with_dropout(q, k, v, attn_mask, p: float, training: bool, scale: float | None = None):
    """softmax(q k^T * scale + mask) v (scale defaults to 1 / sqrt(d)), by
    `F.scaled_dot_product_attention` except on CPU in two cases, where the same sum runs as plain
    ops (`math_attention`):

    - training with dropout: the probabilities are dropped by `uniform_dropout` (SDPA's CPU
      dropout draws a `bernoulli_` mask);
    - gradients in bf16/fp16 (a bf16 or fp16 input, or autocast to one): SDPA's CPU backward in bf16
      is several times slower than in float32 (torch 2.13, 2 cores, [64, 12, 128, 32]: forward and
      backward 282 ms against 60), the plain ops in bf16 took 158 ms (`benchmarks/bench.py --only precision`).
    """
    drop = training and p > 0.0
    if q.device.type != "cpu" or not (drop or (torch.is_grad_enabled() and _half_precision(q))):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p if training else 0.0,
                                              scale=scale)
    return math_attention(q, k, v, attn_mask, p if drop else 0.0, scale)


def math_attention(q, k, v, attn_mask, p: float = 0.0, scale: float | None = None):
    """softmax(q k^T * scale + mask) v as plain ops, the softmax in float32, its probabilities
    dropped by `uniform_dropout` when `p` > 0: the reference `attention_with_dropout` is tested against."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if attn_mask is not None:
        scores = scores + attn_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
    return torch.matmul(uniform_dropout(probs, p, True).to(v.dtype), v)


class SpikeLinear(nn.Linear):
    """`nn.Linear` driven by spikes: `linear(neuron(x))` on `x: [T, ..., in]` (T folded into the batch).

    A neuron with outlier-aware allocation (`weight_aware`) calibrates knowing this layer's weight."""

    def __init__(self, in_features: int, out_features: int, neuron: nn.Module, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.neuron = neuron
        if hasattr(neuron, "set_input_width"):
            neuron.set_input_width(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        neuron = self.neuron
        if getattr(neuron, "weight_aware", False) and neuron._needs_calibration():
            neuron.calibrate(x, weight=self.weight)
        return F.linear(neuron(x), self.weight, self.bias)


class SharedInputProjections(nn.Module):
    """A module whose `SpikeLinear`s may read one input (Q, K and V of self-attention; K and V of
    BART's cross-attention). Their neurons see the same input and, calibrated on it with the same
    settings, hold the same amplitudes, so they emit identical spikes: one neuron pass then serves
    all of them, and one GEMM multiplies the shared spikes with the concatenated weights. The
    result, its gradients and the state-dict keys are those of separate projections.

    The projections run apart whenever sharing would not be exact or would hide something: while a
    neuron is uncalibrated or learns its amplitudes (`learn_alpha`), when the amplitudes differ,
    while a hook watches a neuron (firing rates, the energy audit: each neuron's spikes are counted
    as before), inside `spike_drop` in training (each neuron draws its own mask of passed inputs),
    while TorchScript/fvcore traces the model (MACs are counted per projection), or with
    `share_input_spikes = False`. The synaptic operations (ACs) are the same either way; only the
    neuron work is done once instead of once per projection.
    """

    #: one neuron pass and one GEMM where exact (see the class docstring); False: always apart
    share_input_spikes = True

    def shared_projection_sets(self) -> dict[str, tuple["SpikeLinear", ...]]:
        """The groups of projections that read one input, by name, e.g. {"qkv": (query, key, value)}."""
        raise NotImplementedError

    def refresh_input_sharing(self) -> None:
        """Decide (eagerly, outside any compiled graph) which groups can share their input spikes;
        each decision is cached until one of its neurons' state changes."""
        for group in self.shared_projection_sets():
            self._decide(group)

    def _decide(self, group: str) -> bool:
        neurons = [lin.neuron for lin in self.shared_projection_sets()[group]]
        key = tuple((n.state_version, getattr(getattr(n, "alpha", None), "_version", 0)) for n in neurons)
        keys = self.__dict__.setdefault("_sharing_keys", {})
        if keys.get(group) != key:
            keys[group] = key
            # a plain bool attribute per group: a compiled graph guards on its value, so one graph
            # serves every layer
            self.__dict__[f"_share_{group}"] = bool(self.share_input_spikes) and spike_identically(neurons)
        return self.__dict__[f"_share_{group}"]

    def sharing(self, group: str) -> bool:
        """The cached decision for `group` (False when not decided yet)."""
        return bool(self.__dict__.get(f"_share_{group}", False))

    def project(self, h: torch.Tensor, group: str) -> tuple[torch.Tensor, ...]:
        """Each projection of `group` applied to `h`, through one shared spike pass where exact."""
        linears = self.shared_projection_sets()[group]
        if not self._can_share(group, linears):
            return tuple(lin(h) for lin in linears)
        spikes = linears[0].neuron(h)
        weight = torch.cat([lin.weight for lin in linears])
        bias = None if linears[0].bias is None else torch.cat([lin.bias for lin in linears])
        return F.linear(spikes, weight, bias).split([lin.out_features for lin in linears], dim=-1)

    def _can_share(self, group: str, linears) -> bool:
        if torch.jit.is_tracing() or not self.share_input_spikes:
            return False
        if any(lin.neuron._forward_hooks or lin.neuron._forward_pre_hooks for lin in linears):
            return False
        if any(getattr(lin.neuron, "spike_dropping", False) and lin.neuron.training for lin in linears):
            return False  # `spike_drop`: each neuron draws its own mask of passed inputs
        if not torch.compiler.is_compiling():
            return self._decide(group)
        return self.sharing(group)


class SpikeMatmul(nn.Module):
    """`left @ neuron(right)^T` (`transpose_right=True`, Q.K^T) or `left @ neuron(right)` (probs.V).

    A module of its own so that its MACs get their own fvcore scope and can be paired with the
    firing rate of its `neuron`. `spiked=True` says `right` was spiked already (a KV cache holds
    spiked K and V), so the neuron is skipped.
    """

    def __init__(self, neuron: nn.Module, transpose_right: bool):
        super().__init__()
        self.neuron = neuron
        self.transpose_right = transpose_right

    def forward(self, left: torch.Tensor, right: torch.Tensor, spiked: bool = False) -> torch.Tensor:
        if not spiked:
            right = self.neuron(right)
        return torch.matmul(left, right.transpose(-1, -2) if self.transpose_right else right)


#: `CompilableLayer.compile_policy` "auto" compiles a layer at its first training step whose input
#: holds at least this many elements (T x batch x tokens x width): a model that size trains long
#: enough for the one-off compile to pay back; a tiny model never compiles on its own
AUTO_COMPILE_MIN_ELEMENTS = 1 << 18


def _compile_env() -> str | None:
    """`SPIKELM_COMPILE` (auto | layers | none): the policy of layers left at "auto"; None if unset."""
    import os

    raw = os.environ.get("SPIKELM_COMPILE", "")
    value = raw.strip().lower()
    if value in ("auto", "layers", "none"):
        return value
    if value and raw not in _env_warned:
        from ..log import logger

        _env_warned.add(raw)
        logger.warning("SPIKELM_COMPILE=%r is not one of auto, layers, none: ignored (the recipe's "
                       "train.compile decides)", raw)
    return None


_env_warned: set[str] = set()


class CompilableLayer(nn.Module):
    """A layer whose `forward` can run as one `torch.compile`d graph (`compile_layers`).

    Subclasses implement `_forward(*args, output_attentions=False)`. Once compiled, the layer takes
    the compiled graph whenever it can, and its eager `_forward` otherwise: when attention maps are
    asked for, while a neuron records firing statistics or is not calibrated yet (calibration reads
    data on the host), and while fvcore/TorchScript traces the model. Both give the same spikes.

    `compile_policy` says when a layer compiles: "layers" (`compile_layers`, at once), "none" (never)
    or "auto", the default of a model as loaded: the layer compiles itself at its first training
    step (train mode, gradients on) whose input holds at least `AUTO_COMPILE_MIN_ELEMENTS` elements,
    so a converted model trained in a user's own loop or a plain Trainer runs compiled, while tiny
    models and inference stay eager. spikelm's pipelines decide from the planned run length instead
    (`training.pipeline.compile_if_asked`). `SPIKELM_COMPILE=layers|none` replaces "auto" (layers:
    compile at the first training step whatever the size; none: stay eager).
    """

    #: the compiled (unbound) `_forward`, or None; shared by copies of the layer
    _compiled = None
    #: "auto" | "layers" | "none" (see the class docstring); `set_compile_policy` sets it per model
    compile_policy = "auto"

    def forward(self, *args, output_attentions: bool = False):
        if self._compiled is None and self.training and torch.is_grad_enabled():
            self._maybe_auto_compile(args[0])
        if self._compiled is not None:
            for module in self._sharing_modules():  # decided here, eagerly: the graph only reads it
                module.refresh_input_sharing()
        if self._compiled is not None and not output_attentions and self._compilable_now():
            try:
                # contiguous: the first layer's input is the embeddings expanded over T (stride 0),
                # the others are not; one graph serves both
                return self._compiled(self, args[0].contiguous(), *args[1:])
            except Exception as exc:  # the compiler failed here (no C++ toolchain, unsupported op)
                from ..log import logger

                logger.warning("torch.compile failed for %s (%s: %s); it runs eagerly from now on",
                               type(self).__name__, type(exc).__name__, exc)
                self._compiled = None
                self.compile_policy = "none"
        return self._forward(*args, output_attentions=output_attentions)

    def _maybe_auto_compile(self, x: torch.Tensor) -> None:
        policy = self.compile_policy
        if policy == "auto":
            policy = _compile_env() or "auto"
        if policy == "none" or self.__dict__.get("_auto_tried"):
            return
        if policy == "auto" and x.numel() < AUTO_COMPILE_MIN_ELEMENTS:
            return
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or not self._compilable_now():
            return
        self.__dict__["_auto_tried"] = True
        if any(getattr(n, "impl", None) == "reference" for n in self._neurons()):
            return  # the reference loops were asked for: they stay eager
        from ..neurons import set_neuron_impl

        global _auto_announced
        if not _auto_announced:
            from ..log import logger

            _auto_announced = True
            logger.info("compiling the spiking layers for training (compile policy %r; the first step takes "
                        "about a minute on CPU, later runs reuse torch's cache; SPIKELM_COMPILE=none keeps "
                        "them eager)", policy)
        if _prepare_compiler():
            self.compile_forward()
            set_neuron_impl(self, "fast")

    def _sharing_modules(self) -> list:
        modules = self.__dict__.get("_sharing_cache")
        if modules is None:
            modules = self.__dict__["_sharing_cache"] = [m for m in self.modules() if isinstance(m, SharedInputProjections)]
        return modules

    def _neurons(self) -> list:
        neurons = self.__dict__.get("_neurons_cache")
        if neurons is None:
            neurons = self.__dict__["_neurons_cache"] = [m for m in self.modules() if isinstance(m, SpikingNeuron)]
        return neurons

    def run(self, *args, recompute: bool = False, **kwargs):
        """This layer's forward, the one decision every spiking stack makes per layer: with `recompute`
        (the stack's `gradient_checkpointing`, false whenever a cache is read) in training, under activation
        checkpointing (`recomputed`) once every neuron is calibrated (`checkpointable`); plainly otherwise."""
        if recompute and self.training and self.checkpointable():
            return self.recomputed(*args, **kwargs)
        return self(*args, **kwargs)

    def recomputed(self, *args, **kwargs):
        """This layer's forward on `args` and `kwargs` under activation checkpointing: nothing inside is kept for the
        backward, which runs the layer again (non-reentrant `torch.utils.checkpoint`; the caller checks
        `checkpointable` first). Early stopping of the recomputation is off: the layers run as compiled
        graphs (`compile_layers`), which torch's early stop cannot unwind (an assertion in its pack
        hook); the whole layer is recomputed either way."""
        import torch.utils.checkpoint

        with torch.utils.checkpoint.set_checkpoint_early_stop(False):
            return torch.utils.checkpoint.checkpoint(self, *args, use_reentrant=False, **kwargs)

    def checkpointable(self) -> bool:
        """Whether gradient checkpointing may recompute this layer: every neuron is calibrated. A
        neuron calibrating inside the forward would change the layer's work between the forward
        and the recomputation (it calibrates once; shared projections run apart while uncalibrated),
        which `torch.utils.checkpoint` refuses; such a step runs without checkpointing."""
        return all(n.is_calibrated for n in self._neurons())

    def _compilable_now(self) -> bool:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return False
        return all(n.is_calibrated and not n._forward_hooks for n in self._neurons())  # hooked: firing is recorded

    def compile_forward(self, **compile_kwargs) -> None:
        """Compile `_forward` (neurons should run "fast" or "inline", which the compiler traces)."""
        # fallback_random: dropout draws its masks with ATen's vectorised generator, as the eager
        # model does, instead of the compiler's per-element one (measured 9 % of a T=1 step on CPU)
        options = {"fallback_random": True, **compile_kwargs.pop("options", {})}
        self._compiled = torch.compile(type(self)._forward, options=options, **compile_kwargs)

    def uncompile_forward(self) -> None:
        self._compiled = None


#: whether the one INFO line about a model compiling itself was logged in this process
_auto_announced = False


def _prepare_compiler() -> bool:
    """Compiler settings every compiled layer needs; False where torch.compile is unavailable.

    One graph per (training/eval, grad mode, static/dynamic shapes): more than dynamo's default 8
    recompiles. Compiled code lands in torch's own on-disk cache (TORCHINDUCTOR_CACHE_DIR, by
    default /tmp/torchinductor_$USER), so a second run skips most of the compile."""
    try:
        import torch._dynamo

        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    except Exception as exc:  # no compiler backend on this platform
        from ..log import logger

        logger.warning("torch.compile is unavailable (%s); layers run eagerly", exc)
        return False
    return True


class layer_local_gradients:
    """Within the block, every `CompilableLayer` of `model` (a spiking BERT, BART or Llama layer) takes
    its tensor inputs detached: a loss on a layer's output trains that layer alone and no gradient
    crosses from one layer into the layers below it. Each layer still reads the previous spiking
    layer's output, so it learns to map the student's own (spiking) states to the teacher's: block-wise
    reconstruction, as post-training quantisation does it (BRECQ), here with all layers in one pass.
    `distill.hidden_stage_local` uses it for the hidden-state stage. Leaves the model as it was on exit.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, CompilableLayer)]
        self._handles: list = []

    @staticmethod
    def _detach(value):
        return value.detach() if isinstance(value, torch.Tensor) and value.requires_grad else value

    def _hook(self, module, args, kwargs):
        return tuple(self._detach(a) for a in args), {k: self._detach(v) for k, v in kwargs.items()}

    def __enter__(self) -> "layer_local_gradients":
        self._handles = [layer.register_forward_pre_hook(self._hook, with_kwargs=True) for layer in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def set_compile_policy(model: nn.Module, policy: str) -> int:
    """Set every `CompilableLayer`'s `compile_policy` ("auto" | "layers" | "none"); "none" also drops
    compiled graphs. Returns how many layers."""
    if policy not in ("auto", "layers", "none"):
        raise ValueError(f"compile policy must be auto, layers or none, not {policy!r}")
    layers = [m for m in model.modules() if isinstance(m, CompilableLayer)]
    for layer in layers:
        layer.compile_policy = policy
        layer.__dict__.pop("_auto_tried", None)
        if policy == "none":
            layer.uncompile_forward()
    return len(layers)


def compile_layers(model: nn.Module, *, dynamic: bool | None = None) -> int:
    """Run every `CompilableLayer` of `model` as one compiled graph; returns how many.

    The neurons run their "fast" autograd Functions, which the compiler traces into the layer's
    graph: each neuron's forward and hand-written backward are fused with their neighbours
    (LayerNorm, GELU, residual adds, dropout), and the backward keeps one int8 per element.
    Neurons with `learn_alpha` trace their plain-op form. In float32 the spikes equal the eager model's
    exactly (tests/core/models/test_compile_layers.py); under bf16 autocast the fused kernels keep their
    intermediates in float32 (inductor's default), so a level round(u / a) near a/2 may differ from the
    eager layer's bf16 quotient by one (about 0.1% of the elements: docs/spikelm-method.md, section 2).
    Falls back to the eager layers, with a warning, where torch.compile is unavailable or fails.
    """
    from ..neurons import set_neuron_impl

    layers = [m for m in model.modules() if isinstance(m, CompilableLayer)]
    if not _prepare_compiler():  # warned: no compiler backend on this platform
        set_compile_policy(model, "none")
        return 0
    for layer in layers:
        layer.compile_policy = "layers"
        layer.compile_forward(dynamic=dynamic)
    set_neuron_impl(model, "fast")  # traced into the layer graph; "compiled" would nest a compile
    return len(layers)


def model_output(out, return_dict: bool | None, config):
    """`out` as transformers models return it: the output object, or with `return_dict` False (the
    argument, else `config.return_dict`) its tuple of the fields that are set."""
    return out if (return_dict if return_dict is not None else config.return_dict) else out.to_tuple()


def refuse_attentions(kwargs, model: str) -> None:
    """ValueError for `output_attentions=True` on a model that does not return attention maps (rather
    than an output without them)."""
    if kwargs.get("output_attentions"):
        raise ValueError(f"{model} does not return attention maps (output_attentions=True); the spiking BERT "
                         "does (its eager attention)")


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of `logits` [..., V] against `labels` [...], averaged over the labels that are
    not -100 (the masked tokens of an MLM batch, the real target tokens of a seq2seq one); 0, with
    the graph kept, when a batch has none (a short batch can draw no masked token, where the plain
    mean would be 0/0 = NaN and stop the run)."""
    flat = labels.reshape(-1)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat, ignore_index=-100, reduction="sum")
    return total / (flat != -100).sum().clamp(min=1)
