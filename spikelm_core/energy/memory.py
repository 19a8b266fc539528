"""Data movement beside the arithmetic: two memory bounds, the break-even firing rate, a quantised ANN.

The arithmetic estimate (`estimate.py`) prices MACs and ACs. This module adds the bytes every op moves,
dense and spiking under the same assumptions (docs/energy-report.md, "Memory"), and prices them with
a `MemoryCost` (pJ per byte, possibly depending on the size of the buffer the bytes live in).

Every op is a `MemOp`: a linear layer (y = x Wᵀ, `weights` parameters) or an attention matmul
(Q·Kᵀ: spiking K, float Q; probs·V: spiking V, float probs). Per inference (batch 1), with b bytes
per value, T steps and the op's firing rate fr:

| traffic | dense | spiking |
|---|---|---|
| weights (parameters) | W·b | weight-stationary: W·b; event-driven: T·fr·MACs·b (one weight per AC) |
| float operand of a matmul (Q, probs) | A·b | weight-stationary: T·A·b; event-driven: T·fr·MACs·b |
| input read (the neuron's input current) | X·b | T·X·b |
| membrane read + write (stateful neurons) | 0 | 2·(T−1)·X·b |
| spikes written by the neuron and read by the op | 0 | 2·T·spike_bytes(X) |
| KV cache read (generation) | C·b | T·spike_bytes(C) |
| output written | O·b | T·O·b |

spike_bytes(n) = min(n·bits/8, fr·n·(address bits + sign bit)/8): a 2-bit map for ternary spikes (1 bit
binary) or a list of events, whichever is smaller; each op records which it used. The dense model reads
each weight once under both bounds. Float ops of the spiking model (pooler, heads) move what their dense
twin moves, once per step they run. Buffers are sized by the full tensor they hold (a spike buffer by its
2-bit map), so the price of a byte never depends on the firing rate, and the energy is piecewise affine
in it (affine between the rates where an op switches between map and events): `break_even` solves
E_spiking(r) = E_dense exactly, with every op's rate scaled in proportion to the measured ones.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spikelm_core.energy.costs import HOROWITZ_2014, PJ_PER_MJ, CostProfile
from spikelm_core.energy.errors import EnergyAuditError
from spikelm_core.errors import ConfigError

KB = 1024
MB = 1024 * 1024

BOUNDS: tuple[str, ...] = ("weight_stationary", "event_driven")
"""The two dataflow bounds (JSON keys); the CLI spells them weight-stationary / event-driven."""
BOUND_FLAGS: dict[str, str] = {"weight-stationary": "weight_stationary", "event-driven": "event_driven"}
MEMORY_CHOICES: tuple[str, ...] = ("none", "weight-stationary", "event-driven", "both")
KINDS: tuple[str, ...] = ("weights", "activations", "spikes", "membrane", "kv_cache")
"""What a byte is moved for, in report order."""
MATMULS = frozenset({"qk", "av", "cross_qk", "cross_av"})
LEMAIRE_2022 = "Lemaire et al., arXiv 2210.13107 (after Horowitz, ISSCC 2014, 45 nm)"
BYTES_PER_VALUE = {"fp32": 4, "fp16": 2, "int8": 1}
"""Bytes of a weight, activation or membrane value under each arithmetic profile."""


# ---------------------------------------------------------------------------------------------
# cost of a byte


@dataclass(frozen=True)
class MemoryCost:
    """The energy of moving one byte, flat or as a function of the size of the buffer it lives in.

    `points` ((buffer bytes, pJ per access), ...) is interpolated linearly between points and clamped
    at both ends; one point is a flat cost per access. An access moves `access_bytes` bytes.
    """

    name: str
    points: tuple[tuple[float, float], ...]
    access_bytes: float
    source: str

    def pj_per_byte(self, buffer_bytes: float) -> float:
        pts = self.points
        if len(pts) == 1 or buffer_bytes <= pts[0][0]:
            return pts[0][1] / self.access_bytes
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if buffer_bytes <= x1:
                return (y0 + (y1 - y0) * (buffer_bytes - x0) / (x1 - x0)) / self.access_bytes
        return pts[-1][1] / self.access_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.name, "access_bits": self.access_bytes * 8,
                "points": [{"buffer_bytes": x, "pj_per_access": y} for x, y in self.points], "source": self.source}


MEMORY_PRESETS: dict[str, MemoryCost] = {
    c.name: c
    for c in (
        MemoryCost("lemaire", ((8 * KB, 10.0), (32 * KB, 20.0), (1 * MB, 100.0)), 4, LEMAIRE_2022),
        MemoryCost("flat", ((0, 1.25),), 1, f"{HOROWITZ_2014}: 8 KB SRAM, 10 pJ per 64-bit read, per byte"),
        MemoryCost("sram", ((0, 100.0),), 8, f"{HOROWITZ_2014}: 1 MB SRAM"),
        MemoryCost("dram", ((0, 1300.0),), 8, f"{HOROWITZ_2014}: DRAM, the low end of 1.3-2.6 nJ"),
    )
}
DEFAULT_MEMORY_COST = "lemaire"


@dataclass(frozen=True)
class MemorySettings:
    """What `--memory-cost` resolves to: the cost of a byte, the bounds to report, what-if rates."""

    cost: MemoryCost
    bounds: tuple[str, ...] = BOUNDS
    what_if: tuple[float, ...] = ()
    """Extra mean firing rates at which each bound is evaluated (from a cost file)."""


_COST_KEYS = ("name", "source", "preset", "pj_per_byte", "pj_per_access", "access_bits", "buffer_pj", "bounds",
              "firing_rates")


def _bad(key: str, problem: str, hint: str | None = None) -> ConfigError:
    return ConfigError(f"memory cost: {key}: {problem}", hint=hint or "see docs/energy-report.md, 'Memory costs'")


def _number(value: Any) -> float | None:
    """A finite number, or None. A string that reads as one counts: YAML 1.1 (PyYAML) reads `5e-1`,
    without a dot, as a string."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _positive(data: Mapping[str, Any], key: str, *, allow_zero: bool = False) -> float:
    value = _number(data[key])
    if value is None:
        raise _bad(key, f"must be a number, got {data[key]!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise _bad(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _preset(name: Any, key: str) -> MemoryCost:
    if name not in MEMORY_PRESETS:
        close = difflib.get_close_matches(str(name), MEMORY_PRESETS, n=1)
        raise _bad(key, f"unknown preset {name!r} (known: {', '.join(MEMORY_PRESETS)})",
                   f"did you mean '{close[0]}'?" if close else "or give a YAML cost file")
    return MEMORY_PRESETS[name]


def parse_bounds(value: str | Sequence[str] | None, key: str = "--memory") -> tuple[str, ...]:
    """'both' / 'none' / 'weight-stationary' / 'event-driven' (or a list of the last two) -> JSON keys."""
    if value is None:
        return BOUNDS
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for i, item in enumerate(items):
        where = key if isinstance(value, str) else f"{key}[{i}]"
        if item == "both":
            out += BOUNDS
        elif item == "none":
            continue
        elif item in BOUND_FLAGS or item in BOUNDS:
            out.append(BOUND_FLAGS.get(item, item))
        else:
            close = difflib.get_close_matches(str(item), MEMORY_CHOICES, n=1)
            raise _bad(where, f"unknown bound {item!r} (known: {', '.join(MEMORY_CHOICES)})",
                       f"did you mean '{close[0]}'?" if close else None)
    return tuple(b for b in BOUNDS if b in out)


def load_memory_cost(spec: str | None = None, bounds: str | None = None) -> MemorySettings:
    """A preset name or a YAML cost file (`yaml.safe_load`) -> `MemorySettings`.

    A file holds exactly one of `preset`, `pj_per_byte`, `pj_per_access` (+ `access_bits`), or
    `buffer_pj` ({buffer bytes: pJ per access}, + `access_bits`), and optionally `name`, `source`,
    `bounds` (a list of weight-stationary / event-driven) and `firing_rates` (what-if mean rates in
    [0, 1]). `bounds` (the `--memory` flag), when given, wins over the file's. Any problem raises
    ConfigError (exit 2) naming the key.
    """
    spec = spec or DEFAULT_MEMORY_COST
    flag_bounds = parse_bounds(bounds) if bounds is not None else None
    if spec in MEMORY_PRESETS or not (spec.endswith((".yaml", ".yml")) or Path(spec).exists()):
        return MemorySettings(_preset(spec, "--memory-cost"), flag_bounds if flag_bounds is not None else BOUNDS)
    import yaml

    path = Path(spec)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"memory cost file {spec}: cannot read it ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"memory cost file {spec}: it is not UTF-8 text ({err.reason} at byte {err.start})",
                          hint="save it as UTF-8 YAML (docs/energy-report.md shows a cost file)") from None
    except yaml.YAMLError as err:
        from ..config.loading import yaml_problem

        raise ConfigError(f"memory cost file {spec}: {yaml_problem(err)}",
                          hint="fix the YAML there (docs/energy-report.md shows a cost file)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"memory cost file {spec}: expected a mapping of keys, got {type(data).__name__}")
    for key in data:
        if key not in _COST_KEYS:
            close = difflib.get_close_matches(str(key), _COST_KEYS, n=1)
            raise _bad(str(key), "unknown key", f"did you mean '{close[0]}'?" if close else
                       f"known keys: {', '.join(_COST_KEYS)}")
    given = [k for k in ("preset", "pj_per_byte", "pj_per_access", "buffer_pj") if k in data]
    if not given:
        raise _bad("pj_per_byte", "missing constant (give pj_per_byte, pj_per_access with access_bits, buffer_pj "
                   "with access_bits, or preset)")
    if len(given) > 1:
        raise _bad(given[1], f"give only one of {', '.join(given)}")
    name = str(data.get("name", path.stem))
    source = str(data.get("source", f"user cost file {path.name}"))
    if "access_bits" in data and given[0] in ("preset", "pj_per_byte"):
        raise _bad("access_bits", f"does not apply to {given[0]} (it sizes the access of pj_per_access and buffer_pj)",
                   "drop access_bits, or give pj_per_access / buffer_pj with it")
    if "preset" in data:
        base = _preset(data["preset"], "preset")
        cost = replace(base, name=name if "name" in data else data["preset"],
                       source=source if "source" in data else base.source)
    elif "pj_per_byte" in data:
        cost = MemoryCost(name, ((0, _positive(data, "pj_per_byte", allow_zero=True)),), 1, source)
    else:
        if "access_bits" not in data:
            raise _bad("access_bits", "missing constant (bits moved per access)")
        access = _positive(data, "access_bits") / 8
        if "pj_per_access" in data:
            cost = MemoryCost(name, ((0, _positive(data, "pj_per_access", allow_zero=True)),), access, source)
        else:
            table = data["buffer_pj"]
            if not isinstance(table, dict) or not table:
                raise _bad("buffer_pj", "must be a mapping {buffer bytes: pJ per access} with at least one entry")
            points = []
            for size, pj in table.items():
                where = f"buffer_pj.{size}"
                number = _number(size)
                if number is None or number < 0:
                    raise _bad(where, f"buffer size must be a finite number of bytes >= 0, got {size!r}")
                points.append((float(number), _positive({where: pj}, where, allow_zero=True)))
            cost = MemoryCost(name, tuple(sorted(points)), access, source)
    file_bounds = parse_bounds(data["bounds"], "bounds") if data.get("bounds") is not None else BOUNDS
    if not file_bounds:
        raise _bad("bounds", f"names no bound ({data['bounds']!r}): a cost file prices the memory bounds",
                   "list weight-stationary and/or event-driven, or drop the key (both); --memory none audits "
                   "the arithmetic alone")
    rates = data.get("firing_rates", [])
    if not isinstance(rates, list):
        rates = [rates]
    numbers = []
    for i, r in enumerate(rates):
        number = _number(r)
        if number is None or not 0 <= number <= 1:
            raise _bad(f"firing_rates[{i}]", f"a firing rate must lie in [0, 1], got {r!r}")
        numbers.append(float(number))
    return MemorySettings(cost, flag_bounds if flag_bounds is not None else file_bounds, tuple(numbers))


# ---------------------------------------------------------------------------------------------
# the ops and their traffic


@dataclass(frozen=True)
class MemOp:
    """The data one op moves, per step: a linear layer or an attention matmul.

    MACs per step = (read + cached) · fanout.
    """

    component: str
    layer: int | None
    macs: int
    """Per step (the dense twin's count)."""
    produced: int
    """Elements of the spiking operand its neuron produces (reads as current, spikes out) per step."""
    read: int
    """Elements of the operand the op reads fresh per step (spikes; the float input for a dense op)."""
    weights: int = 0
    """Parameters of a linear layer (read once per inference on the dense side)."""
    other: int = 0
    """Elements of a matmul's float operand (Q for Q·Kᵀ, probs for probs·V)."""
    out: int = 0
    """Output elements written per step."""
    cached: int = 0
    """Operand elements read from the KV cache per step (generation)."""
    firing_rate: float | None = None
    """None: a float op (pooler, heads), billed as its dense twin `steps` times."""
    steps: int = 1
    stateful: bool = True
    """The neuron in front keeps a membrane between steps (not the stateless K/V spikes of SpikeLM, nor a
    neuron with `reset: none` or decay 0: `keeps_membrane`)."""
    rescaled: bool = True
    """Its spikes carry a per-step amplitude whose rescaling of the outputs `alpha_scales` bills."""
    stack: str | None = None
    line: str | None = None
    """Generation: encoder, prompt, cross_kv, decoder or lm_head (seq2seq.LINES)."""


@dataclass(frozen=True)
class SpikingTerms:
    """Work of the spiking side that the arithmetic leaves out by convention (energy-method.md, section 3),
    and the switches that bill it. Neither term has a dense twin: both are billed on the spiking side only.

    - `neuron_updates` (--count-neuron-updates): one AC per membrane update, one per element of a stateful
      neuron for each step after the first (`membrane_updates`; syops bills them as ACs; spikelm's
      MembraneUpdates is this count, where NeuroBench's own code also counts the first step's charge);
    - `alpha_scale` (--count-alpha-scale): one MAC per output element of each spike-driven op for each step
      after the first (`alpha_scales`): the rescaling by the spike amplitude alpha that folding the first
      step's alpha into the weights leaves (priced as a MAC, an upper bound of the one multiply it is).
    """

    neuron_updates: bool = False
    alpha_scale: bool = False

    @property
    def any(self) -> bool:
        return self.neuron_updates or self.alpha_scale

    def pj(self, op: "MemOp", timesteps: int, profile: CostProfile) -> float:
        """The energy (pJ) of the terms switched on, for one op."""
        return ((profile.e_ac_pj * membrane_updates(op, timesteps) if self.neuron_updates else 0.0)
                + (profile.e_mac_pj * alpha_scales(op, timesteps) if self.alpha_scale else 0.0))


def membrane_updates(op: "MemOp", timesteps: int) -> int:
    """Membrane updates of the neuron in front of `op`: one per element it produces for each step after the
    first, (T - 1)·X, when it keeps a membrane: each later step carries the membrane forward (decay, reset, add
    the input); the first step's u = x is the stateless quantiser's work (none is billed for that), as the
    memory bounds move no membrane bytes for it. None for the stateless K/V spikes of SpikeLM, for neurons
    with `reset: none` or decay 0, for float ops, and so none at T = 1."""
    return max(timesteps - 1, 0) * op.produced if op.firing_rate is not None and op.stateful else 0


def alpha_scales(op: "MemOp", timesteps: int) -> int:
    """Rescalings by alpha of a spike-driven op: one per output element for each step after the first,
    (T - 1)·O. The first step's alpha folds into the weights (W' = alpha_0 W); each later step's output is
    W' s_t rescaled by alpha_t / alpha_0. None for float ops, for spikes with no step amplitude to rescale
    (`MemOp.rescaled`: LIF, unit or fixed amplitudes, the same at every step), and so none at T = 1."""
    return max(timesteps - 1, 0) * op.out if op.firing_rate is not None and op.rescaled else 0


def rescales_outputs(config: Mapping[str, Any]) -> bool:
    """Whether a spiking model's spikes carry a per-step amplitude alpha_t that folding into the weights
    leaves as a rescaling of the outputs: SpikeLM's elastic amplitudes, calibrated per step (or learnt).
    LIF spikes are {0, 1} and `amplitude: unit` spikes are +-1 (no alpha); a fixed alpha, the same at every
    step, folds into the weights whole. A dense config (no neuron keys) reads as SpikeLM's defaults."""
    return (config.get("neuron_kind", "elastic_bi") != "lif" and config.get("amplitude", "elastic") == "elastic"
            and (config.get("alpha_mode", "calibrated") == "calibrated" or bool(config.get("learn_alpha", False))))


def terms_not_billed(config: Mapping[str, Any]) -> dict[str, str]:
    """The `SpikingTerms` that bill nothing in a model of this config, each with the reason in words (for the
    report's lists; at T = 1 neither term bills anything in any model, which the lists say of every model)."""
    out = {}
    if not keeps_membrane(config):
        out["neuron_updates"] = "none in this model: with reset none or decay 0 no neuron keeps a membrane"
    if not rescales_outputs(config):
        out["alpha_scale"] = ("none in this model: its spikes carry no per-step amplitude (LIF, unit or a fixed "
                              "alpha)")
    return out


def keeps_membrane(config: Mapping[str, Any]) -> bool:
    """Whether the neurons in front of a spiking model's linear layers carry a membrane from one step to
    the next: LIF's always, SpikeLM's unless `reset: none` or decay 0 (u_t = x_t, the stateless quantiser).
    A dense config (no neuron keys) reads as SpikeLM's defaults."""
    return config.get("neuron_kind", "elastic_bi") == "lif" or (
        config.get("reset", "official") != "none" and float(config.get("decay", 0.25)) > 0)


@dataclass(frozen=True)
class Traffic:
    """Bytes moved and their energy: per kind, dense and spiking, for one op or a sum of ops."""

    dense: dict[str, float]
    spiking: dict[str, float]
    memory_dense_pj: float
    memory_spiking_pj: float
    arithmetic_dense_pj: float
    arithmetic_spiking_pj: float
    formats: frozenset[str] = frozenset()

    @property
    def bytes_dense(self) -> float:
        return sum(self.dense.values())

    @property
    def bytes_spiking(self) -> float:
        return sum(self.spiking.values())

    @property
    def energy_dense_pj(self) -> float:
        """Memory + arithmetic, dense side."""
        return self.memory_dense_pj + self.arithmetic_dense_pj

    @property
    def energy_spiking_pj(self) -> float:
        return self.memory_spiking_pj + self.arithmetic_spiking_pj

    def to_dict(self) -> dict[str, Any]:
        """The keys every memory row and bound total carries (bytes, mJ, bytes by kind, spike format)."""
        return {
            "bytes_dense": self.bytes_dense,
            "bytes_spiking": self.bytes_spiking,
            "memory_dense_mj": self.memory_dense_pj / PJ_PER_MJ,
            "memory_spiking_mj": self.memory_spiking_pj / PJ_PER_MJ,
            "energy_dense_mj": self.energy_dense_pj / PJ_PER_MJ,
            "energy_spiking_mj": self.energy_spiking_pj / PJ_PER_MJ,
            "spike_format": _format_label(self.formats),
            "dense_bytes": {k: self.dense[k] for k in KINDS if k not in ("spikes", "membrane")},
            "spiking_bytes": dict(self.spiking),
        }

    def __add__(self, other: "Traffic") -> "Traffic":
        return Traffic({k: self.dense.get(k, 0) + other.dense.get(k, 0) for k in KINDS},
                       {k: self.spiking.get(k, 0) + other.spiking.get(k, 0) for k in KINDS},
                       self.memory_dense_pj + other.memory_dense_pj, self.memory_spiking_pj + other.memory_spiking_pj,
                       self.arithmetic_dense_pj + other.arithmetic_dense_pj,
                       self.arithmetic_spiking_pj + other.arithmetic_spiking_pj, self.formats | other.formats)


ZERO = Traffic({k: 0.0 for k in KINDS}, {k: 0.0 for k in KINDS}, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Assumptions:
    """What every op's traffic is computed under."""

    timesteps: int
    profile: CostProfile
    cost: MemoryCost
    value_bytes: float = 4
    """Bytes of a weight, activation or membrane value."""
    spike_bits: int = 2
    """Bits per element of a spike map: 2 ternary, 1 binary."""
    activation_bytes: float | None = None
    """Bytes of a float activation on the dense side (None: value_bytes); the quantised ANN uses q/8."""
    terms: SpikingTerms = SpikingTerms()
    """The spiking side's terms billed beside its ACs (--count-neuron-updates, --count-alpha-scale)."""

    @property
    def sign_bits(self) -> int:
        return 1 if self.spike_bits == 2 else 0


def address_bits(elements: int) -> int:
    """Bits that address one element of a tensor of `elements` elements."""
    return max(1, math.ceil(math.log2(elements))) if elements > 1 else 1


def spike_bytes(elements: float, tensor: int, rate: float, a: Assumptions) -> tuple[float, str]:
    """(bytes, format) of `elements` spikes of a tensor of `tensor` elements at firing rate `rate`."""
    bitmap = elements * a.spike_bits / 8
    events = rate * elements * (address_bits(tensor) + a.sign_bits) / 8
    return (events, "events") if events < bitmap else (bitmap, f"{'ternary 2-bit' if a.spike_bits == 2 else '1-bit'} map")


def op_traffic(op: MemOp, bound: str, a: Assumptions, rate_scale: float = 1.0) -> Traffic:
    """Bytes and energy of one op, dense and spiking, under `bound` (the table of the module docstring).

    `rate_scale` multiplies the op's firing rate (the break-even search); a scaled rate may exceed 1.
    """
    T, b, cost = a.timesteps, a.value_bytes, a.cost
    act = a.activation_bytes if a.activation_bytes is not None else b
    price = cost.pj_per_byte
    dense = {"weights": op.weights * b, "activations": (op.read + op.other + op.out) * act, "kv_cache": op.cached * act}
    dense_pj = (dense["weights"] * price(op.weights * b) + op.read * act * price(op.read * act)
                + op.other * act * price(op.other * act) + op.out * act * price(op.out * act)
                + dense["kv_cache"] * price(op.cached * act))
    e_mac, e_ac = a.profile.e_mac_pj, a.profile.e_ac_pj
    if op.firing_rate is None:  # a float op: its dense twin's traffic, once per step it runs
        s = op.steps
        spiking = {"weights": op.weights * b, "activations": s * dense["activations"],
                   "kv_cache": s * dense["kv_cache"]}
        spiking_pj = dense["weights"] * price(op.weights * b) + s * (dense_pj - dense["weights"] * price(op.weights * b))
        return Traffic(_full(dense), _full(spiking), dense_pj, spiking_pj, e_mac * op.macs, e_mac * s * op.macs)
    fr = op.firing_rate * rate_scale
    acs = T * fr * op.macs
    tensor = max(op.produced, op.read + op.cached, 1)
    map_bytes = lambda n: n * a.spike_bits / 8  # noqa: E731  the spike buffer is sized as the full map
    written, fmt = spike_bytes(T * op.produced, tensor, fr, a)
    fresh, fmt_read = spike_bytes(T * op.read, tensor, fr, a)
    cached, fmt_cache = spike_bytes(T * op.cached, tensor, fr, a)
    if bound == "weight_stationary":
        weights, other = op.weights * b, T * op.other * b
    else:
        weights = acs * b if op.weights else 0.0
        other = acs * b if op.other else 0.0
    membrane = 2 * max(T - 1, 0) * op.produced * b if op.stateful else 0.0
    spiking = {"weights": weights, "activations": T * op.produced * b + other + T * op.out * b,
               "spikes": written + fresh, "membrane": membrane, "kv_cache": cached}
    spiking_pj = (weights * price(op.weights * b) + T * op.produced * b * price(op.produced * b)
                  + other * price(op.other * b) + T * op.out * b * price(op.out * b)
                  + written * price(map_bytes(op.produced)) + fresh * price(map_bytes(op.read))
                  + membrane * price(op.produced * b) + cached * price(map_bytes(op.cached)))
    formats = frozenset(f for f, n in ((fmt, op.produced), (fmt_read, op.read), (fmt_cache, op.cached)) if n)
    return Traffic(_full(dense), _full(spiking), dense_pj, spiking_pj, e_mac * op.macs,
                   e_ac * acs + a.terms.pj(op, T, a.profile), formats)


def _full(d: Mapping[str, float]) -> dict[str, float]:
    return {k: float(d.get(k, 0.0)) for k in KINDS}


def total_traffic(ops: Iterable[MemOp], bound: str, a: Assumptions, rate_scale: float = 1.0) -> Traffic:
    out = ZERO
    for op in ops:
        out = out + op_traffic(op, bound, a, rate_scale)
    return out


# ---------------------------------------------------------------------------------------------
# the break-even firing rate


def _switch_scales(ops: Sequence[MemOp], a: Assumptions) -> list[float]:
    """Rate scales at which some op's spikes switch between map and events (the kinks of E(scale))."""
    out = set()
    for op in ops:
        if op.firing_rate:
            tensor = max(op.produced, op.read + op.cached, 1)
            out.add(a.spike_bits / (address_bits(tensor) + a.sign_bits) / op.firing_rate)
    return sorted(out)


def break_even_scale(ops: Sequence[MemOp], bound: str, a: Assumptions, target_pj: float) -> float | None:
    """The rate scale s >= 0 at which the spiking energy (arithmetic + memory) equals `target_pj`.

    E(s) is non-decreasing and affine between the kinks of `_switch_scales`, so each piece is
    solved exactly. None when the spiking side costs more than the target even without spikes.
    """
    energy = lambda s: total_traffic(ops, bound, a, s).energy_spiking_pj  # noqa: E731
    e0 = energy(0.0)
    if e0 > target_pj:
        return None
    knots = [0.0] + [k for k in _switch_scales(ops, a) if k > 0]
    values = [e0] + [energy(k) for k in knots[1:]]
    for (s0, e_a), (s1, e_b) in zip(zip(knots, values), zip(knots[1:], values[1:])):
        if e_b >= target_pj:
            return s0 if e_b == e_a else s0 + (target_pj - e_a) * (s1 - s0) / (e_b - e_a)
    s0, e_a = knots[-1], values[-1]
    e_b = energy(s0 + 1.0)
    if e_b <= e_a:
        return None if e_a < target_pj else s0
    return s0 + (target_pj - e_a) / (e_b - e_a)


def mean_rate(ops: Iterable[MemOp]) -> float | None:
    """MAC-weighted mean firing rate of the spiking ops (as the arithmetic report's)."""
    spiking = [op for op in ops if op.firing_rate is not None and op.macs]
    macs = sum(op.macs for op in spiking)
    return sum(op.firing_rate * op.macs for op in spiking) / macs if macs else None


def rate_profile(ops: Sequence[MemOp]) -> tuple[Sequence[MemOp], float | None]:
    """The ops whose rates a what-if mean rate scales, and their mean: the traced rates, or where no
    spiking op fired (a mean of 0) every spiking op at rate 1, so a mean rate r is r at every op
    (a traced profile of zeros cannot be scaled to any other mean)."""
    mean = mean_rate(ops)
    if mean != 0:
        return ops, mean
    return [replace(op, firing_rate=1.0) if op.firing_rate is not None else op for op in ops], 1.0


def qann_bits(timesteps: int, spike_bits: int = 2) -> int:
    """Bits of the quantised ANN of the same effective precision: ceil(log2(2T+1)) ternary, ceil(log2(T+1)) binary."""
    levels = 2 * timesteps + 1 if spike_bits == 2 else timesteps + 1
    return max(1, math.ceil(math.log2(levels)))


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class MemoryRow:
    """One component's traffic (summed over layers) under one bound."""

    component: str
    stack: str | None
    traffic: Traffic

    def to_dict(self) -> dict[str, Any]:
        return {**({"stack": self.stack} if self.stack is not None else {}), "component": self.component,
                **self.traffic.to_dict()}


def _format_label(formats: frozenset[str]) -> str | None:
    if not formats:
        return None
    return next(iter(formats)) if len(formats) == 1 else "mixed: " + ", ".join(sorted(formats))


def _ratio(dense: float, spiking: float) -> float | None:
    return dense / spiking if spiking > 0 else None


@dataclass(frozen=True)
class BoundReport:
    """Dense versus spiking energy (arithmetic + memory) of one inference under one bound."""

    bound: str
    total: Traffic
    rows: tuple[MemoryRow, ...]
    mean_firing_rate: float | None
    break_even_firing_rate: float | None
    """MAC-weighted mean rate at which the spiking energy equals the dense energy (None: never)."""
    qann: dict[str, Any]
    curve: tuple[tuple[float, float], ...]
    """(mean firing rate, spiking energy in mJ) from 0 to 1, for the plot."""
    what_if: tuple[tuple[float, float], ...] = ()

    @property
    def energy_dense_mj(self) -> float:
        return self.total.energy_dense_pj / PJ_PER_MJ

    @property
    def energy_spiking_mj(self) -> float:
        return self.total.energy_spiking_pj / PJ_PER_MJ

    @property
    def ratio(self) -> float | None:
        return _ratio(self.energy_dense_mj, self.energy_spiking_mj)

    def to_dict(self) -> dict[str, Any]:
        t = self.total
        return {
            **t.to_dict(),
            "arithmetic_dense_mj": t.arithmetic_dense_pj / PJ_PER_MJ,
            "arithmetic_spiking_mj": t.arithmetic_spiking_pj / PJ_PER_MJ,
            "ratio": self.ratio,
            "mean_firing_rate": self.mean_firing_rate,
            "break_even_firing_rate": self.break_even_firing_rate,
            "quantised_ann": dict(self.qann),
            "curve": {"firing_rate": [p[0] for p in self.curve], "energy_spiking_mj": [p[1] for p in self.curve]},
            "what_if": [{"firing_rate": r, "energy_spiking_mj": e, "ratio": _ratio(self.energy_dense_mj, e)}
                        for r, e in self.what_if],
            "components": [row.to_dict() for row in self.rows],
        }


@dataclass(frozen=True)
class GenerationMemory:
    """One generation (a BART summary, or a decoder-only continuation) under one bound, with and
    without the KV cache: per summary and per token."""

    target_len: int
    modes: dict[str, dict[str, Traffic]]
    """mode -> line -> traffic (lines of seq2seq.LINES)."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for mode, lines in self.modes.items():
            total = ZERO
            for t in lines.values():
                total = total + t
            out[mode] = {"per_summary": _traffic_totals(total), "per_token": _traffic_totals(total, self.target_len),
                         "lines": [{"line": line, **_traffic_totals(t)} for line, t in lines.items()]}
        return out


def _traffic_totals(t: Traffic, per: int = 1) -> dict[str, Any]:
    dense, spiking = t.energy_dense_pj / PJ_PER_MJ / per, t.energy_spiking_pj / PJ_PER_MJ / per
    return {"bytes_dense": t.bytes_dense / per, "bytes_spiking": t.bytes_spiking / per,
            "kv_cache_bytes_dense": t.dense["kv_cache"] / per, "kv_cache_bytes_spiking": t.spiking["kv_cache"] / per,
            "energy_dense_mj": dense, "energy_spiking_mj": spiking, "ratio": _ratio(dense, spiking)}


@dataclass(frozen=True)
class MemoryReport:
    """Both bounds for one (k, T) run, and their common assumptions."""

    assumptions: Assumptions
    bounds: dict[str, BoundReport]
    generation: dict[str, GenerationMemory] = field(default_factory=dict)
    """BART and decoder-only models: per bound."""

    def summary(self) -> dict[str, Any]:
        """Per bound the totals alone (no rows, curve or generation): the paper setting's `memory`."""
        keys = ("bytes_dense", "bytes_spiking", "energy_dense_mj", "energy_spiking_mj", "ratio",
                "break_even_firing_rate", "spike_format", "quantised_ann")
        return {bound: {k: v for k, v in report.to_dict().items() if k in keys} for bound, report in self.bounds.items()}

    def to_dict(self) -> dict[str, Any]:
        a = self.assumptions
        return {
            "value_bytes": a.value_bytes,
            "spike_bits": a.spike_bits,
            "quantised_ann_bits": qann_bits(a.timesteps, a.spike_bits),
            **{bound: {**report.to_dict(),
                       **({"generation": self.generation[bound].to_dict()} if bound in self.generation else {})}
               for bound, report in self.bounds.items()},
        }


def _rows(ops: Sequence[MemOp], bound: str, a: Assumptions) -> tuple[MemoryRow, ...]:
    groups: dict[tuple[str | None, str], Traffic] = {}
    for op in ops:
        key = (op.stack, op.component)
        groups[key] = groups.get(key, ZERO) + op_traffic(op, bound, a)
    return tuple(MemoryRow(component, stack, t) for (stack, component), t in groups.items())


def bound_report(ops: Sequence[MemOp], bound: str, a: Assumptions, what_if: Sequence[float] = (),
                 qann_ops: Sequence[MemOp] | None = None) -> BoundReport:
    """One bound: totals, per-component rows (they sum to the totals), break-even, QANN, the curve."""
    rows = _rows(ops, bound, a)
    total = ZERO
    for row in rows:
        total = total + row.traffic
    dense_pj = total.energy_dense_pj
    mean = mean_rate(ops)
    profile, profile_mean = rate_profile(ops)
    scale = break_even_scale(profile, bound, a, dense_pj)
    at = lambda r: total_traffic(profile, bound, a, r / profile_mean).energy_spiking_pj / PJ_PER_MJ  # noqa: E731
    curve: tuple[tuple[float, float], ...] = ()
    what: tuple[tuple[float, float], ...] = ()
    if profile_mean:
        curve = tuple((r / 20, at(r / 20)) for r in range(21))
        what = tuple((r, at(r)) for r in what_if)
    qann = quantised_ann(qann_ops if qann_ops is not None else ops, bound, a, total)
    break_even = None if scale is None or not profile_mean else scale * profile_mean
    return BoundReport(bound, total, rows, mean, break_even, qann, curve, what)


def quantised_ann(ops: Sequence[MemOp], bound: str, a: Assumptions, snn: Traffic) -> dict[str, Any]:
    """The dense model with activations moved at q = ceil(log2(2T+1)) bits (Yan et al., arXiv 2409.08290).

    Weights and arithmetic stay those of the dense model (E_MAC per MAC: an upper bound, since a q-bit
    multiplier costs less), so the comparison is conservative in the spiking model's favour.
    """
    q = qann_bits(a.timesteps, a.spike_bits)
    qa = replace(a, activation_bytes=q / 8)
    t = total_traffic(ops, bound, qa)
    e_qann = t.energy_dense_pj
    profile, mean = rate_profile(ops)
    scale = break_even_scale(profile, bound, a, e_qann)
    e_snn = snn.energy_spiking_pj
    return {"bits": q, "bytes": t.bytes_dense, "energy_mj": e_qann / PJ_PER_MJ,
            "ratio": _ratio(e_qann, e_snn),
            "break_even_firing_rate": None if scale is None or not mean else scale * mean}


def memory_report(ops: Sequence[MemOp], a: Assumptions, bounds: Sequence[str] = BOUNDS, what_if: Sequence[float] = (),
                  generation: Mapping[str, Mapping[str, Sequence[MemOp]]] | None = None,
                  target_len: int | None = None) -> MemoryReport:
    """Both bounds of one inference; `generation`: mode -> line -> ops of one generation (BART, Llama)."""
    reports = {bound: bound_report(ops, bound, a, what_if) for bound in bounds}
    gen: dict[str, GenerationMemory] = {}
    if generation is not None and target_len:
        for bound in bounds:
            gen[bound] = GenerationMemory(target_len, {
                mode: {line: total_traffic(line_ops, bound, a) for line, line_ops in lines.items()}
                for mode, lines in generation.items()})
    return MemoryReport(a, reports, gen)


# ---------------------------------------------------------------------------------------------
# geometry: the ops of a BERT, BART or Llama forward, and of one generation step


@dataclass(frozen=True)
class Shape:
    """The shapes the MAC rows do not carry: model width, heads, token counts, linear layer sizes."""

    hidden: int
    heads: int
    ffn: int
    seq_len: int
    """Tokens (BART: source tokens n_e)."""
    decoder_len: int | None = None
    decoder_ffn: int | None = None
    linear_shapes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """module name -> (in_features, out_features), when the model is at hand."""
    kv_stateful: bool = False
    """K/V spikes come from neurons with a membrane (LIF); SpikeLM's are stateless."""
    kv_heads: int | None = None
    """K/V heads of grouped-query attention (Llama); None: as many as `heads`."""
    decoder_heads: int | None = None
    """Attention heads of a BART decoder; None: as many as `heads` (the encoder's)."""
    rescaled: bool = True
    """The spikes carry a per-step amplitude (`rescales_outputs`)."""
    stateful: bool = True
    """The neurons in front of the linear layers keep a membrane between steps (`keeps_membrane`)."""
    causal: bool = False
    """A decoder-only model (Llama): `seq_len` tokens, generation continues a prompt of that length."""


def _tokens(component: str, stack: str | None, s: Shape) -> int:
    if component in ("cross_k", "cross_v") or stack == "encoder" or (stack is None and s.decoder_len is None):
        return 1 if component in ("pooler", "head") and s.decoder_len is None else s.seq_len
    return s.decoder_len or s.seq_len


def _heads(stack: str | None, s: Shape) -> int:
    """Attention heads of the ops of `stack` (a BART decoder may have other heads than its encoder)."""
    return s.decoder_heads if stack == "decoder" and s.decoder_heads else s.heads


def _in_features(component: str, stack: str | None, s: Shape) -> int:
    if component == "ffn2":
        return s.decoder_ffn if stack == "decoder" and s.decoder_ffn else s.ffn
    return s.hidden


def row_op(component: str, layer: int | None, stack: str | None, macs: int, firing_rate: float | None, steps: int,
           module: str, s: Shape) -> MemOp:
    """The MemOp of one MAC row (per step), its shape from `s`; refuses a count that does not factor."""
    common = dict(component=component, layer=layer, macs=macs, firing_rate=firing_rate, steps=steps, stack=stack,
                  rescaled=s.rescaled)
    if component in MATMULS:
        cross = component.startswith("cross_")
        n_q = s.decoder_len if stack == "decoder" and s.decoder_len else s.seq_len
        n_k = s.seq_len if cross or stack != "decoder" else n_q
        heads = _heads(stack, s)
        inner, rest = divmod(macs, n_q * n_k)
        kv_inner, kv_rest = divmod(inner * (s.kv_heads or heads), heads)
        if rest or kv_rest:
            raise EnergyAuditError(f"{module or component}: {macs:,} MACs do not factor as {n_q} x {n_k} x width")
        # grouped-query attention: the spiked K/V holds H_kv heads, read once per group of query heads
        operand = n_k * kv_inner
        probs = heads * n_q * n_k
        other, out = (n_q * inner, probs) if component.endswith("qk") else (probs, n_q * inner)
        return MemOp(produced=operand, read=operand, other=other, out=out, stateful=s.kv_stateful, **common)
    if module in s.linear_shapes:
        fan_in, fan_out = s.linear_shapes[module]
        tokens, rest = divmod(macs, fan_in * fan_out)
    else:
        tokens, fan_in = _tokens(component, stack, s), _in_features(component, stack, s)
        fan_out, rest = divmod(macs, tokens * fan_in)
    if rest or not tokens:
        raise EnergyAuditError(f"{module or component}: {macs:,} MACs do not factor as tokens x in x out")
    return MemOp(produced=tokens * fan_in if firing_rate is not None else 0, read=tokens * fan_in,
                 weights=fan_in * fan_out, out=tokens * fan_out, stateful=s.stateful, **common)


def forward_ops(rows: Iterable[Any], s: Shape) -> list[MemOp]:
    """MemOps of one forward from the energy report's rows (`EnergyRow`: macs, rate, steps, module).

    Rows with no traffic model (LayerNorm when counted, 'other') keep their arithmetic only.
    """
    ops = []
    for r in rows:
        if not r.macs:
            continue
        steps = r.spiking_macs // r.macs if r.firing_rate is None and r.macs else 1
        if r.component in ("norm", "other"):
            ops.append(MemOp(r.component, r.layer, r.macs, 0, 0, firing_rate=r.firing_rate, steps=steps,
                             stack=r.stack))
            continue
        ops.append(row_op(r.component, r.layer, r.stack, r.macs, r.firing_rate, max(steps, 1), r.module, s))
    return ops


def generation_ops(forward: Sequence[MemOp], s: Shape, target_len: int, *, cache: bool,
                   last_only: bool = False) -> dict[str, list[MemOp]]:
    """The MemOps of one generation of `target_len` tokens, per line, step by step (`schedule.decoding_steps`,
    the schedule of seq2seq.py), from the teacher-forced forward's ops (their rates and widths).

    BART: the encoder once; with the cache, cross K/V and their spikes once, each step one token reading
    the cached K/V; without it, every step the prefix. Decoder-only (`s.causal`): step 1 runs the prompt
    (its K/V spikes written, nothing read from a cache); later steps feed one token that reads the n + j - 1
    cached K/V (cache) or re-run the prefix (no cache); the LM head scores one position per step.

    `last_only`: the ops of the last step alone, as `seq2seq.decoder_step_rows` prices it (no encoder; BART's
    cross K/V recomputed without the cache, nothing of them with it).
    """
    from spikelm_core.energy.schedule import decoding_steps

    n_e = s.seq_len
    n = s.seq_len if s.causal else s.decoder_len or 1  # the decoder length of the forward
    steps = decoding_steps(target_len, cache=cache, prompt_len=n if s.causal else None)
    if last_only:
        steps = steps[-1:]
    lines: dict[str, list[MemOp]] = {"encoder": [], "prompt": [], "cross_kv": [], "decoder": [], "lm_head": []}

    def line_of(op: MemOp, step) -> str:
        if op.stack is None and op.component == "head":
            return "lm_head"
        return "prompt" if step.prompt else "decoder"

    for op in forward:
        if op.stack == "encoder":
            if not last_only:
                lines["encoder"].append(op)
            continue
        if op.component in ("cross_k", "cross_v"):
            runs = (0 if cache else 1) if last_only else (1 if cache else target_len)
            lines["cross_kv"] += [replace(op, line="cross_kv")] * runs
            continue
        if op.component.startswith("cross_") and op.component in MATMULS:
            inner = op.produced // n_e
            made = replace(op, macs=0, read=0, other=0, out=0, line="cross_kv")  # the cross K/V spikes
            if cache and not last_only:  # cached, made once
                lines["cross_kv"].append(made)
            for step in steps:
                if not cache:  # made again every step, in the cross K/V line as with the cache
                    lines["cross_kv"].append(made)
                n_q = step.tokens
                probs = _heads(op.stack, s) * n_q * n_e
                other, out = (n_q * inner, probs) if op.component.endswith("qk") else (probs, n_q * inner)
                read = (dict(produced=0, read=0, cached=n_e * inner) if cache
                        else dict(produced=0, read=n_e * inner))
                lines["decoder"].append(replace(op, macs=n_e * inner * n_q, other=other, out=out, line="decoder",
                                                **read))
            continue
        if op.component in ("norm", "other"):
            per = op.macs // n
            for step in steps:
                line = line_of(op, step)
                tokens = step.logits if line == "lm_head" else step.tokens
                lines[line].append(replace(op, macs=per * tokens, line=line))
            continue
        if op.component in MATMULS:  # self-attention: n x n in the forward
            width = op.macs // (n * n)  # query width H·d_h
            kv = op.produced // n  # K/V width H_kv·d_h (grouped-query heads)
            for step in steps:
                n_q, n_k = step.tokens, step.keys
                probs = _heads(op.stack, s) * n_q * n_k
                other, out = (n_q * width, probs) if op.component.endswith("qk") else (probs, n_q * width)
                if cache and not step.prompt:  # the new K/V spikes are written, all n_k read from the cache
                    read = dict(produced=n_q * kv, read=0, cached=n_k * kv)
                else:
                    read = dict(produced=n_k * kv, read=n_k * kv, cached=0)
                lines[line_of(op, step)].append(replace(op, macs=n_k * width * n_q, other=other, out=out,
                                                        line=line_of(op, step), **read))
            continue
        tokens = op.macs // op.weights  # a linear op: MACs = tokens x in x out, weights = in x out
        fan_in = op.read // tokens
        fan_out = op.weights // fan_in
        for step in steps:
            line = line_of(op, step)
            m = step.logits if line == "lm_head" else step.tokens
            lines[line].append(replace(op, macs=m * fan_in * fan_out, read=m * fan_in,
                                       produced=m * fan_in if op.firing_rate is not None else 0,
                                       out=m * fan_out, line=line))
    return {line: ops for line, ops in lines.items() if ops}


def shape_of(config: Mapping[str, Any], seq_len: int, decoder_len: int | None,
             linear_shapes: Mapping[str, tuple[int, int]] | None = None) -> Shape:
    """The `Shape` of a BERT, BART or Llama config (a config.json dict)."""
    from spikelm_core.checkpoints import family_of

    family = family_of(config.get("model_type"))
    common = dict(seq_len=seq_len, linear_shapes=dict(linear_shapes or {}),  # and what the neurons keep
                  kv_stateful=config.get("neuron_kind") == "lif", rescaled=rescales_outputs(config),
                  stateful=keeps_membrane(config))
    if family is not None and family.causal:
        heads = int(config["num_attention_heads"])
        return Shape(hidden=int(config["hidden_size"]), heads=heads, ffn=int(config["intermediate_size"]),
                     kv_heads=int(config.get("num_key_value_heads") or heads), causal=True, **common)
    if decoder_len is not None:
        return Shape(hidden=int(config["d_model"]), heads=int(config.get("encoder_attention_heads", 1)),
                     decoder_heads=int(config.get("decoder_attention_heads") or config.get("encoder_attention_heads", 1)),
                     ffn=int(config["encoder_ffn_dim"]), decoder_len=decoder_len,
                     decoder_ffn=int(config["decoder_ffn_dim"]), **common)
    return Shape(hidden=int(config["hidden_size"]), heads=int(config["num_attention_heads"]),
                 ffn=int(config["intermediate_size"]), **common)


def linear_shapes(model) -> dict[str, tuple[int, int]]:
    """module name -> (in_features, out_features) of every linear layer of `model` (a torch.compile'd model's
    inner one: the names the MAC rows carry), for `shape_of`."""
    import torch

    inner = getattr(model, "_orig_mod", model)
    return {name: (m.in_features, m.out_features) for name, m in inner.named_modules()
            if isinstance(m, torch.nn.Linear)}


def value_bytes(profile: CostProfile) -> int:
    """Bytes per value of the arithmetic profile's precision (fp32 4, fp16 2, int8 1)."""
    return BYTES_PER_VALUE.get(profile.name.split("+", 1)[0], 4)


__all__ = [
    "BOUNDS",
    "DEFAULT_MEMORY_COST",
    "KINDS",
    "MEMORY_CHOICES",
    "MEMORY_PRESETS",
    "Assumptions",
    "BoundReport",
    "GenerationMemory",
    "MemOp",
    "MemoryCost",
    "MemoryReport",
    "MemorySettings",
    "Shape",
    "Traffic",
    "address_bits",
    "break_even_scale",
    "bound_report",
    "forward_ops",
    "generation_ops",
    "load_memory_cost",
    "mean_rate",
    "memory_report",
    "op_traffic",
    "parse_bounds",
    "qann_bits",
    "quantised_ann",
    "row_op",
    "shape_of",
    "spike_bytes",
    "total_traffic",
]
