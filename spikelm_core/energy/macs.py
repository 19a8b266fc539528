"""MAC counting for dense and spiking BERT, BART and Llama with fvcore, per module, operator, component and layer.

One fvcore "flop" is one multiply-accumulate. `count_macs` traces the model once
(`FlopCountAnalysis`, TorchScript tracing) with one fixed-shape batch and turns fvcore's
`by_module_and_operator()` table into `MacRow`s: per sample, per time step, charged to a component
(q, k, v, o, ffn1, gate, up, ffn2, qk, av, cross_*, pooler, head, norm, other) and a layer.

fvcore 0.1.5 has traps that silently give wrong numbers; each is closed here (energy-method.md,
section 7):

- `aten::scaled_dot_product_attention` (transformers' default "sdpa" attention) has no fvcore
  handle and is dropped with a log line. We count it as B·H·L·S·(E + Ev), split into qk and av.
- LayerNorm is counted by default (5 per element), and `set_op_handle(name, None)` does not
  remove a default handle. Norm handles here return 0 unless `count_norm=True`.
- Any matrix-multiply-class operator without a handle (`aten::baddbmm`, fused attention or
  transformer kernels, operators from a custom namespace, custom autograd Functions outside a
  spiking neuron) fails the audit with its name instead of being left out.
- A `torch.autograd.Function` shows up as `prim::PythonOp.<ClassName>`. Inside a spiking neuron
  (the spike function) it costs 0; the membrane update is not counted, by convention.

Spiking models run time-first ([T, B, L, D]); fvcore then counts every op T times. An op whose
first operand has the leading shape (T, B) is marked time-major and its count divided by T, so a
row's `macs` is always the per-step count of the op's dense twin; `steps` records how many steps
the op ran.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from math import prod
from typing import Any

import torch
from torch import nn

from spikelm_core.energy.closed_form import (
    bart_expected_macs,
    bert_closed_form_macs,
    bert_layer_macs,
    llama_expected_macs,
)
from spikelm_core.energy.components import (
    COMPONENTS,
    DEFAULT_SEQ_LEN,
    ENCODER_COMPONENTS,
    STACKS,
)
from spikelm_core.energy.errors import EnergyAuditError
from spikelm_core.firing import neuron_module_names
from spikelm_core.errors import ConfigError
from spikelm_core.log import get_logger

logger = get_logger("energy")

_MODULE_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), component)
    for pattern, component in (
        (r"(?:^|\.)attention\.self\.query$", "q"),
        (r"(?:^|\.)attention\.self\.key$", "k"),
        (r"(?:^|\.)attention\.self\.value$", "v"),
        (r"(?:^|\.)attention\.self\.qk$", "qk"),
        (r"(?:^|\.)attention\.self\.av$", "av"),
        (r"(?:^|\.)attention\.output\.dense$", "o"),
        (r"(?:^|\.)intermediate\.dense$", "ffn1"),
        (r"(?:^|\.)layer\.\d+\.output\.dense$", "ffn2"),
        # BART (dense and spiking): self_attn / encoder_attn, fc1 / fc2
        (r"(?:^|\.)self_attn\.q_proj$", "q"),
        (r"(?:^|\.)self_attn\.k_proj$", "k"),
        (r"(?:^|\.)self_attn\.v_proj$", "v"),
        (r"(?:^|\.)self_attn\.out_proj$", "o"),
        (r"(?:^|\.)self_attn\.qk$", "qk"),
        (r"(?:^|\.)self_attn\.av$", "av"),
        (r"(?:^|\.)encoder_attn\.q_proj$", "cross_q"),
        (r"(?:^|\.)encoder_attn\.k_proj$", "cross_k"),
        (r"(?:^|\.)encoder_attn\.v_proj$", "cross_v"),
        (r"(?:^|\.)encoder_attn\.out_proj$", "cross_o"),
        (r"(?:^|\.)encoder_attn\.qk$", "cross_qk"),
        (r"(?:^|\.)encoder_attn\.av$", "cross_av"),
        (r"(?:^|\.)layers\.\d+\.fc1$", "ffn1"),
        (r"(?:^|\.)layers\.\d+\.fc2$", "ffn2"),
        # Llama (dense and spiking): self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj (down = ffn2)
        (r"(?:^|\.)self_attn\.o_proj$", "o"),
        (r"(?:^|\.)mlp\.gate_proj$", "gate"),
        (r"(?:^|\.)mlp\.up_proj$", "up"),
        (r"(?:^|\.)mlp\.down_proj$", "ffn2"),
        (r"(?:^|\.)pooler(?:\.|$)", "pooler"),
        (r"^(?:classifier|cls|qa_outputs|lm_head|classification_head)(?:\.|$)", "head"),
    )
)
_LAYER_RE = re.compile(r"(?:^|\.)layers?\.(\d+)(?:\.|$)")
_STACK_RE = re.compile(r"(?:^|\.)(encoder|decoder)(?:\.|$)")
_CROSS_SCOPE_RE = re.compile(r"(?:^|\.)encoder_attn$")
# Scopes where HF runs the attention matmuls inline (eager: two aten::matmul per call).
_ATTENTION_SCOPE_RE = re.compile(r"(?:^|\.)(?:attention\.self|self_attn|encoder_attn)$")

_NORM_OPS = ("aten::layer_norm", "aten::group_norm", "aten::instance_norm", "aten::batch_norm")
_NORM_LABELS = frozenset(op.split("::", 1)[1] for op in _NORM_OPS)
_ATTENTION_MATMUL_OPS = frozenset({"aten::matmul", "aten::bmm", "aten::einsum", "aten::mm"})
_SDPA = "aten::scaled_dot_product_attention"

# Operators that do matrix-multiply-class work. Without a handle, fvcore only logs them and the
# count comes out too low, so the audit refuses to go on.
_MATMUL_CLASS_NAMES = frozenset(
    {
        "mm", "bmm", "baddbmm", "addbmm", "addmm", "_addmm_activation", "matmul", "mv", "addmv",
        "dot", "vdot", "inner", "outer", "ger", "addr", "kron", "tensordot", "einsum", "bilinear",
        "linear", "chain_matmul", "linalg_multi_dot", "linalg_matmul", "linalg_vecdot", "_int_mm",
        "_weight_int8pack_mm", "_sparse_mm", "sparse_mm", "_scaled_mm", "_native_multi_head_attention",
        "_transformer_encoder_layer_fwd", "_transformer_decoder_only_layer_fwd", "multi_head_attention_forward",
    }
)
_MATMUL_CLASS_RE = re.compile(r"(attention|conv|_mm$|^mm_|matmul|multi_head|transformer)")

_TIME_SUFFIX = "@T"
_SUBLABELS = ("qk", "av")


@dataclass(frozen=True)
class MacRow:
    """The MACs of one operator type in one module, per sample and per time step."""

    component: str
    """One of COMPONENTS."""
    layer: int | None
    """Encoder (or decoder) layer index, or None outside the layers (pooler, head, embeddings)."""
    macs: int
    """Per sample and per time step: the count of the op's dense twin."""
    module: str = ""
    """fvcore's module name that ran the op (the owner of the op's scope)."""
    op: str = ""
    """fvcore operator label: 'linear', 'matmul', 'sdpa', 'layer_norm', ..."""
    operand: str | None = None
    """Name of the neuron module producing the op's spiking operand; None for float ops."""
    steps: int = 1
    """How many time steps the op ran in the traced model (T for time-major ops, else 1)."""
    spiking: bool | None = None
    """True: driven by the spikes of `operand` (billed as AC); False: float (MAC); None: not
    known (a dense twin's count or a hand-built row), decided by component."""
    stack: str | None = None
    """'encoder' or 'decoder' in an encoder-decoder model (BART); None for BERT and the LM head."""


@dataclass(frozen=True)
class MacCount:
    """The MAC audit of one model at one fixed input shape."""

    rows: tuple[MacRow, ...]
    seq_len: int
    batch_size: int
    """Batch of the traced input; every count in `rows` is already divided by it."""
    num_timesteps: int
    """T of the traced model (1 for a dense model)."""
    count_norm: bool
    model_class: str
    attn_implementation: str | None
    fvcore_total: int
    """fvcore's raw total for the whole traced batch (all time steps)."""
    closed_form_total: int | None
    """The BERT closed form this count was checked against (per step), or None if not checked."""
    ignored_ops: tuple[tuple[str, int], ...]
    """Operators fvcore saw and, by convention, does not count (adds, GELU, softmax, ...)."""
    decoder_len: int | None = None
    """Decoder tokens of the traced batch (encoder-decoder models; `seq_len` is then the source)."""
    decoder_only: bool = False
    """A decoder-only causal LM (Llama): one stack, no `stack` on its rows, generated token by token."""

    @property
    def total(self) -> int:
        """All counted MACs per sample and time step (the dense twin's total)."""
        return sum(row.macs for row in self.rows)

    @property
    def encoder_total(self) -> int:
        """Q/K/V/O, FFN and attention matmuls of all encoder layers."""
        return self.component_total(*ENCODER_COMPONENTS)

    def component_total(self, *components: str) -> int:
        unknown = set(components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown component(s) {sorted(unknown)}; known: {COMPONENTS}")
        return sum(row.macs for row in self.rows if row.component in components)

    def by_component(self) -> dict[str, int]:
        """Total MACs per component, in COMPONENTS order; components with no rows are left out."""
        totals: dict[str, int] = defaultdict(int)
        for row in self.rows:
            totals[row.component] += row.macs
        return {c: totals[c] for c in COMPONENTS if c in totals}

    def stack_total(self, stack: str | None) -> int:
        """All MACs charged to one stack ('encoder', 'decoder'; None: outside both, e.g. the LM head)."""
        return sum(row.macs for row in self.rows if row.stack == stack)

    def by_stack(self) -> dict[str | None, dict[str, int]]:
        """Per stack (None = outside the stacks), MACs per component, in COMPONENTS order."""
        table: dict[str | None, dict[str, int]] = {}
        for row in self.rows:
            per = table.setdefault(row.stack, {})
            per[row.component] = per.get(row.component, 0) + row.macs
        order = [s for s in (*STACKS, None) if s in table] + [s for s in table if s not in (*STACKS, None)]
        return {s: {c: table[s][c] for c in COMPONENTS if c in table[s]} for s in order}

    def by_layer(self) -> dict[int | None, dict[str, int]]:
        """Per layer (None = outside the encoder), MACs per component."""
        table: dict[int | None, dict[str, int]] = {}
        for row in self.rows:
            per = table.setdefault(row.layer, {})
            per[row.component] = per.get(row.component, 0) + row.macs
        order = sorted((k for k in table if k is not None)) + ([None] if None in table else [])
        return {k: {c: table[k][c] for c in COMPONENTS if c in table[k]} for k in order}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        data = asdict(self)
        data["ignored_ops"] = dict(self.ignored_ops)
        data["total"] = self.total
        data["encoder_total"] = self.encoder_total
        data["by_component"] = self.by_component()
        return data


# ---------------------------------------------------------------------------------------------
# fvcore handles


def _get_shape(value: Any) -> list[int] | None:
    try:
        return list(value.type().sizes()) if value.isCompleteTensor() else None
    except RuntimeError:
        return None


def _first_tensor_shape(inputs: list[Any]) -> list[int] | None:
    for value in inputs:
        shape = _get_shape(value)
        if shape is not None:
            return shape
        if value.type().kind() == "ListType":  # einsum: the operands arrive as one list
            for item in value.node().inputs():
                shape = _get_shape(item)
                if shape is not None:
                    return shape
    return None


def _owner_scope(outputs: list[Any]) -> str:
    """The module fvcore charges an op to: the innermost scope of the node."""
    return outputs[0].node().scopeName().split("/")[-1]


def _as_int(count: Any) -> int:
    if isinstance(count, Counter):
        count = sum(count.values())
    if isinstance(count, float):
        if not count.is_integer():
            raise EnergyAuditError(f"fvcore returned a fractional MAC count {count}")
        count = int(count)
    return int(count)


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> tuple[int, int]:
    """scaled_dot_product_attention: B·H·L·S·E for Q·Kᵀ and B·H·L·S·Ev for probs·V."""
    q, k, v = (_get_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        raise EnergyAuditError("aten::scaled_dot_product_attention with unknown operand shapes")
    *batch, length, e = q
    source, ev = k[-2], v[-1]
    n = prod(batch) * length * source
    return n * e, n * ev


class _Handles:
    """Handles for one analysis; they tag ops with their component hints and time axis.

    Labels carry two optional tags: '.qk'/'.av' for attention matmuls charged to an attention
    scope, and '@T' for time-major ops (count includes the T axis).
    """

    def __init__(self, num_timesteps: int, batch_size: int, neuron_scopes: set[str]):
        self.num_timesteps = num_timesteps
        self.batch_size = batch_size
        self.neuron_scopes = neuron_scopes
        self.attention_calls: Counter[str] = Counter()
        self.foreign_python_ops: dict[str, set[str]] = defaultdict(set)

    def _time_tag(self, inputs: list[Any]) -> str:
        if self.num_timesteps == 1:
            return ""
        shape = _first_tensor_shape(inputs)
        if shape is not None and len(shape) >= 3 and shape[0] == self.num_timesteps and shape[1] == self.batch_size:
            return _TIME_SUFFIX
        return ""

    def counting(self, label: str, fn: Callable[[list[Any], list[Any]], Any], attention_matmul: bool = False):
        def handle(inputs: list[Any], outputs: list[Any]) -> Counter[str]:
            count = _as_int(fn(inputs, outputs))
            key = label
            if attention_matmul:
                scope = _owner_scope(outputs)
                if _ATTENTION_SCOPE_RE.search(scope):
                    # HF eager attention: Q·Kᵀ runs first, probs·V second, in every call.
                    key += "." + _SUBLABELS[self.attention_calls[scope] % 2]
                    self.attention_calls[scope] += 1
            return Counter({key + self._time_tag(inputs): count})

        return handle

    def sdpa(self, inputs: list[Any], outputs: list[Any]) -> Counter[str]:
        qk, av = _sdpa_macs(inputs, outputs)
        tag = self._time_tag(inputs)
        return Counter({f"sdpa.qk{tag}": qk, f"sdpa.av{tag}": av})

    def python_op(self, name: str):
        def handle(inputs: list[Any], outputs: list[Any]) -> int:
            scope = _owner_scope(outputs)
            if not any(scope == n or scope.startswith(n + ".") for n in self.neuron_scopes):
                self.foreign_python_ops[name].add(scope or "<root>")
            return 0  # spike function: its membrane update is not counted, by convention

        return handle


def _all_autograd_functions() -> set[str]:
    """Class names of every `torch.autograd.Function` subclass defined so far (the PythonOp names)."""
    seen: set[type] = set()
    stack: list[type] = [torch.autograd.Function]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
    return {cls.__name__ for cls in seen}


def _is_matmul_class(kind: str) -> bool:
    base = kind.split("::", 1)[-1]
    return base in _MATMUL_CLASS_NAMES or bool(_MATMUL_CLASS_RE.search(base.lstrip("_")))


def _is_unverifiable(kind: str) -> bool:
    """Operators the audit cannot vouch for: matmul-class, custom namespace, custom autograd."""
    if kind.startswith("prim::PythonOp"):
        return True
    namespace = kind.split("::", 1)[0]
    if namespace not in ("aten", "prim"):
        return True  # torch.library custom op or extension kernel: may hide a matmul
    return _is_matmul_class(kind)


# ---------------------------------------------------------------------------------------------
# Model helpers


def _model_config(model: nn.Module) -> Any:
    return getattr(model, "config", None)


def _default_inputs(
    model: nn.Module, seq_len: int, batch_size: int, decoder_len: int | None = None
) -> tuple[torch.Tensor | None, ...]:
    """input_ids only: no padding, so no mask is needed (and sdpa masks cannot run on 'meta').

    An encoder-decoder model gets `(input_ids, None, decoder_input_ids)` (BART's positional order).
    """
    config = _model_config(model)
    vocab = int(getattr(config, "vocab_size", 0) or 2)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    ids = (torch.arange(batch_size * seq_len, device=device) % max(vocab - 1, 1) + 1).view(batch_size, seq_len)
    if decoder_len is None:
        return (ids,)
    dec = (torch.arange(batch_size * decoder_len, device=device) % max(vocab - 1, 1) + 1).view(batch_size, decoder_len)
    return (ids, None, dec)


def _component_of(module: str, label: str) -> str:
    op = label.split(".", 1)[0]
    if op in _NORM_LABELS:
        return "norm"
    if label.endswith(".qk") or label.endswith(".av"):
        sub = label.rsplit(".", 1)[1]
        return f"cross_{sub}" if _CROSS_SCOPE_RE.search(module) else sub
    for pattern, component in _MODULE_RULES:
        if pattern.search(module):
            return component
    return "other"


def _stack_of(module: str) -> str | None:
    match = _STACK_RE.search(module)
    return match.group(1) if match else None


def _is_encoder_decoder(config: Any) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


def is_decoder_only(config: Any) -> bool:
    """A decoder-only causal LM of a spikelm family (Llama, dense or spiking)."""
    from spikelm_core.checkpoints import family_of

    family = family_of(getattr(config, "model_type", None))
    return bool(family is not None and family.causal)


def _is_standard_llama(config: Any) -> bool:
    needed = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
              "intermediate_size")
    if config is None or not all(isinstance(getattr(config, k, None), int) for k in needed):
        return False
    return is_decoder_only(config) and config.num_attention_heads % config.num_key_value_heads == 0


def _is_standard_bart(config: Any) -> bool:
    needed = ("d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "decoder_ffn_dim",
              "encoder_attention_heads", "decoder_attention_heads")
    if config is None or not all(isinstance(getattr(config, k, None), int) for k in needed):
        return False
    if getattr(config, "model_type", None) not in ("bart", "spiking_bart"):
        return False
    return config.d_model % config.encoder_attention_heads == 0 and config.d_model % config.decoder_attention_heads == 0


def _layer_of(module: str) -> int | None:
    match = _LAYER_RE.search(module)
    return int(match.group(1)) if match else None


def _exclusive_counts(counts: Mapping[str, Counter[str]]) -> dict[str, Counter[str]]:
    """fvcore charges each op to its module and all ancestors; keep only the owner's share."""
    exclusive = {name: Counter(c) for name, c in counts.items()}
    for name, c in counts.items():
        if name == "":
            continue
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        if parent in exclusive:
            exclusive[parent].subtract(c)
    for name, c in exclusive.items():
        negative = {k: v for k, v in c.items() if v < 0}
        if negative:
            raise EnergyAuditError(f"inconsistent fvcore module counts under '{name}': {negative}")
    return {name: +c for name, c in exclusive.items()}


def _deepest_modules(unsupported: Mapping[str, Counter[str]], kind: str) -> list[str]:
    """The modules that ran `kind` themselves (fvcore also lists every ancestor)."""
    having = {name for name, c in unsupported.items() if c.get(kind)}

    def is_ancestor(name: str, other: str) -> bool:
        return other != name and (name == "" or other.startswith(name + "."))

    deepest = sorted(n for n in having if not any(is_ancestor(n, m) for m in having))
    return [n or "<root>" for n in deepest] or ["<root>"]


def _is_standard_bert(config: Any) -> bool:
    needed = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    if config is None or not all(isinstance(getattr(config, k, None), int) for k in needed):
        return False
    if getattr(config, "model_type", None) not in ("bert", "spiking_bert"):
        return False
    if getattr(config, "add_cross_attention", False) or getattr(config, "is_decoder", False):
        return False
    return config.hidden_size % config.num_attention_heads == 0


# ---------------------------------------------------------------------------------------------
# Entry point


def count_macs(
    model: nn.Module,
    *,
    seq_len: int = DEFAULT_SEQ_LEN,
    batch_size: int = 1,
    count_norm: bool = False,
    num_timesteps: int | None = None,
    inputs: tuple[torch.Tensor | None, ...] | None = None,
    check_closed_form: bool = True,
    decoder_len: int | None = None,
) -> MacCount:
    """Count the MACs of `model` per sample and per time step, with fvcore.

    Args:
        model: a dense Hugging Face BERT (any head), BART or Llama, or its spiking twin (time-first;
            each spiking op a module whose child `neuron` is a `SpikingNeuron`). A `torch.compile`d
            model is analysed through its `_orig_mod`. It may live on the 'meta' device (shapes
            only, fast); its train/eval mode is restored afterwards.
        seq_len: fixed sequence length of the traced batch (no padding).
        batch_size: traced batch; counts are divided by it. Must differ from T when T > 1.
        count_norm: also count LayerNorm (fvcore's 5 per element); off by convention.
        num_timesteps: T of a spiking model; default `model.config.num_timesteps` when the model
            holds spiking neurons, else 1.
        inputs: positional inputs for the trace, default `(input_ids,)` of shape [batch, seq_len].
        check_closed_form: for a standard BERT shape, require the encoder (+ pooler) count to
            equal `bert_closed_form_macs`; for a BART (dense or spiking), every (stack, component)
            and the LM head to equal `bart_layer_macs` (sum: `bart_closed_form_macs`); for a Llama
            (dense or spiking, grouped-query heads included), every component and the LM head to
            equal `llama_layer_macs` (sum: `llama_closed_form_macs`).
        decoder_len: decoder tokens of an encoder-decoder model (BART); default `seq_len`. The
            model is traced with `use_cache=False` (a Cache output breaks the tracer) and inputs
            `(input_ids, None, decoder_input_ids)`; rows carry their stack ('encoder'/'decoder').
            A decoder-only model (Llama) is traced over `seq_len` tokens with `use_cache=False` too.

    Raises:
        EnergyAuditError: a matmul-class or custom operator without a handle, a trace failure,
            or a count that disagrees with the closed form.
        ConfigError: bad seq_len, batch_size or num_timesteps.
    """
    with warnings.catch_warnings():  # fvcore's import runs torch.jit.script (deprecated)
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

    model = getattr(model, "_orig_mod", model)
    config = _model_config(model)
    seq2seq = _is_encoder_decoder(config)
    decoder_only = is_decoder_only(config)
    if seq2seq and decoder_len is None:
        decoder_len = seq_len
    checked = [("seq_len", seq_len), ("batch_size", batch_size)]
    if decoder_len is not None:
        if not seq2seq:
            raise ConfigError(f"decoder_len applies to encoder-decoder models only, not {type(model).__name__}")
        checked.append(("decoder_len", decoder_len))
    problems = [
        f"{name} must be a positive integer, got {value!r}"
        for name, value in checked
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0
    ]
    neuron_scopes = set(neuron_module_names(model))
    if num_timesteps is None:
        num_timesteps = int(getattr(config, "num_timesteps", 1) or 1) if neuron_scopes else 1
    elif isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps <= 0:
        problems.append(f"num_timesteps must be a positive integer, got {num_timesteps!r}")
    if not problems and num_timesteps > 1 and batch_size == num_timesteps:
        problems.append(f"batch_size ({batch_size}) must differ from num_timesteps ({num_timesteps})")
    if problems:
        raise ConfigError("bad MAC-count settings", details=problems, hint="the defaults are seq_len=128, batch_size=1")

    default_inputs = inputs is None
    if inputs is None:
        inputs = _default_inputs(model, seq_len, batch_size, decoder_len)
    handles = _Handles(num_timesteps, batch_size, neuron_scopes)
    analysis = FlopCountAnalysis(model, inputs)
    for kind, fn in _DEFAULT_SUPPORTED_OPS.items():
        label = kind.split("::", 1)[1].lstrip("_")
        if kind in _NORM_OPS and not count_norm:
            analysis.set_op_handle(kind, lambda inputs, outputs: 0)  # None would NOT remove it
        else:
            analysis.set_op_handle(kind, handles.counting(label, fn, kind in _ATTENTION_MATMUL_OPS))
    analysis.set_op_handle(_SDPA, handles.sdpa)
    for name in _all_autograd_functions():
        analysis.set_op_handle(f"prim::PythonOp.{name}", handles.python_op(name))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")

    was_training = model.training
    had_cache = getattr(config, "use_cache", None) if seq2seq or decoder_only else None
    model.eval()
    try:
        if had_cache is not None:
            config.use_cache = False  # a Cache output (EncoderDecoderCache, DynamicCache) breaks the tracer
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            counts = analysis.by_module_and_operator()
    except EnergyAuditError:
        raise
    except Exception as err:  # the tracer's own failures, on a user model
        raise EnergyAuditError(
            f"could not trace {type(model).__name__} for the MAC count: {type(err).__name__}: {err}",
            hint="analyse the uncompiled model with a plain tensor input; for encoder-decoder models set use_cache=False",
        ) from err
    finally:
        model.train(was_training)
        if had_cache is not None:
            config.use_cache = had_cache

    unsupported = {name: analysis.unsupported_ops(name) for name in counts}
    root_unsupported = analysis.unsupported_ops("")
    bad = [kind for kind in root_unsupported if _is_unverifiable(kind)]
    details = [
        f"{kind} ({root_unsupported[kind]}x, in {', '.join(repr(m) for m in _deepest_modules(unsupported, kind))})"
        for kind in sorted(bad)
    ]
    details += [
        f"prim::PythonOp.{name} (custom autograd Function outside a spiking neuron, in "
        f"{', '.join(repr(s) for s in sorted(scopes))})"
        for name, scopes in sorted(handles.foreign_python_ops.items())
    ]
    if details:
        names = sorted(bad) + [f"prim::PythonOp.{n}" for n in sorted(handles.foreign_python_ops)]
        raise EnergyAuditError(
            f"MAC audit of {type(model).__name__} refused: operator(s) with no MAC count: {', '.join(names)}",
            details=details,
            hint="fvcore would leave these out silently and the count would be too low; "
            + ("build the model with attn_implementation='eager' or 'sdpa', or " if any("attention" in n for n in names) else "")
            + "add a handle for the operator in spikelm_core/energy/macs.py",
        )
    ignored = tuple(sorted(root_unsupported.items()))
    if ignored:
        logger.debug("operators not counted by convention: %s", dict(ignored))

    rows = _rows_from_counts(_exclusive_counts(counts), counts.get("", Counter()), num_timesteps, batch_size, neuron_scopes,
                             seq2seq=seq2seq)
    result = MacCount(
        rows=rows,
        seq_len=seq_len,
        batch_size=batch_size,
        num_timesteps=num_timesteps,
        count_norm=count_norm,
        model_class=type(model).__name__,
        attn_implementation=getattr(config, "_attn_implementation", None),
        fvcore_total=int(sum(counts.get("", Counter()).values())),
        closed_form_total=None,
        ignored_ops=ignored,
        decoder_len=decoder_len,
        decoder_only=decoder_only,
    )
    if check_closed_form and default_inputs and _is_standard_bert(config):
        result = _check_closed_form(result, config, model)
    elif check_closed_form and default_inputs and seq2seq and _is_standard_bart(config):
        result = _check_bart_closed_form(result, config)
    elif check_closed_form and default_inputs and decoder_only and _is_standard_llama(config):
        result = _check_llama_closed_form(result, config)
    return result


def _rows_from_counts(
    exclusive: Mapping[str, Counter[str]],
    root: Counter[str],
    num_timesteps: int,
    batch_size: int,
    neuron_scopes: set[str],
    *,
    seq2seq: bool = False,
) -> tuple[MacRow, ...]:
    rows = []
    for module, ops in exclusive.items():
        for label, count in sorted(ops.items()):
            time_major = label.endswith(_TIME_SUFFIX)
            base_label = label[: -len(_TIME_SUFFIX)] if time_major else label
            steps = num_timesteps if time_major else 1
            divisor = batch_size * steps
            if count % divisor:
                raise EnergyAuditError(
                    f"MAC count {count} of '{base_label}' in '{module}' is not divisible by batch x steps = {divisor}",
                    hint="trace with batch_size=1, or check the model's time axis (inputs must be [T, B, ...])",
                )
            operand = next((n for n in (f"{module}.neuron" if module else "neuron",) if n in neuron_scopes), None)
            rows.append(
                MacRow(
                    component=_component_of(module, base_label),
                    layer=_layer_of(module),
                    macs=count // divisor,
                    module=module,
                    op=base_label.split(".", 1)[0],
                    operand=operand,
                    steps=steps,
                    spiking=(operand is not None) if neuron_scopes else None,
                    stack=_stack_of(module) if seq2seq else None,
                )
            )
    if sum(ops_total for ops_total in (sum(c.values()) for c in exclusive.values())) != sum(root.values()):
        raise EnergyAuditError("per-module MAC counts do not add up to fvcore's total")
    rows.sort(key=lambda r: (STACKS.index(r.stack) if r.stack in STACKS else len(STACKS), r.layer is None, r.layer if r.layer is not None else 0, COMPONENTS.index(r.component), r.module, r.op))
    return tuple(rows)


_CLOSED_FORM_HINT = ("an operator is probably uncounted or charged to the wrong module; "
                     "pass check_closed_form=False only for a deliberately non-standard model")


def _check_closed_form(result: MacCount, config: Any, model: nn.Module) -> MacCount:
    has_pooler = any(name == "pooler" or name.endswith(".pooler") for name, _ in model.named_modules())
    expected_core = bert_closed_form_macs(
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.intermediate_size,
        result.seq_len,
        pooler=False,
    )
    expected_pooler = config.hidden_size**2 if has_pooler else 0
    core, pooler = result.encoder_total, result.component_total("pooler")
    if core != expected_core or pooler != expected_pooler:
        layer = bert_layer_macs(config.hidden_size, config.num_attention_heads, config.intermediate_size, result.seq_len)
        got = result.by_component()
        raise EnergyAuditError(
            f"MAC count of {result.model_class} disagrees with the BERT closed form: "
            f"fvcore {core + pooler:,} vs closed form {expected_core + expected_pooler:,}",
            details=[f"encoder: fvcore {core:,} vs closed form {expected_core:,}", f"pooler: fvcore {pooler:,} vs {expected_pooler:,}"]
            + [
                f"{c}: fvcore {got.get(c, 0):,} vs {config.num_hidden_layers * layer[c]:,}"
                for c in ENCODER_COMPONENTS
                if got.get(c, 0) != config.num_hidden_layers * layer[c]
            ],
            hint=_CLOSED_FORM_HINT,
        )
    return replace(result, closed_form_total=expected_core + expected_pooler)


def _check_bart_closed_form(result: MacCount, config: Any) -> MacCount:
    n_e, n_d = result.seq_len, result.decoder_len or result.seq_len
    expected = bart_expected_macs(config, n_e, n_d)
    has_head = any(r.component == "head" for r in result.rows)
    head = n_d * config.d_model * config.vocab_size if has_head else 0
    got: dict[tuple[str | None, str], int] = defaultdict(int)
    for row in result.rows:
        if row.component != "norm":
            got[(row.stack, row.component)] += row.macs
    want = {**expected, **({(None, "head"): head} if has_head else {})}
    return _against_closed_form(result, "BART", got, want, name=lambda key: f"{key[0] or '-'} {key[1]}")


def _check_llama_closed_form(result: MacCount, config: Any) -> MacCount:
    """Every component of every layer and the LM head against `llama_layer_macs` (grouped-query heads)."""
    want = llama_expected_macs(config, result.seq_len)
    if any(r.component == "head" for r in result.rows):
        want["head"] = result.seq_len * config.hidden_size * config.vocab_size
    got: dict[str, int] = defaultdict(int)
    for row in result.rows:
        if row.component != "norm":
            got[row.component] += row.macs
    return _against_closed_form(result, "Llama", got, want)


def _against_closed_form(result: MacCount, family: str, got: Mapping, want: Mapping, name=str) -> MacCount:
    """`result` with its closed-form total, or EnergyAuditError listing every entry where fvcore's
    count `got` and the closed form `want` disagree, either way (`name` spells an entry's key)."""
    diffs = [f"{name(key)}: fvcore {got.get(key, 0):,} vs closed form {macs:,}" for key, macs in want.items()
             if got.get(key, 0) != macs]
    diffs += [f"{name(key)}: fvcore {macs:,}, not in the closed form" for key, macs in got.items()
              if key not in want and macs]
    if diffs:
        raise EnergyAuditError(
            f"MAC count of {result.model_class} disagrees with the {family} closed form "
            f"(fvcore {sum(got.values()):,} vs closed form {sum(want.values()):,})",
            details=diffs,
            hint=_CLOSED_FORM_HINT,
        )
    return replace(result, closed_form_total=sum(want.values()))
