"""Build task configs from recipes, `-s key=value` overrides and flags; save them for replay.

Precedence: dataclass defaults < recipe YAML < `-s key=value` overrides (in order given; each
value parsed with `yaml.safe_load`) < dedicated flags (keyword arguments of `load_config`;
None means "flag not given").

Everything is merged into one plain nested dict first, then checked against the schema in one
pass. Every problem found on the way (unreadable or malformed recipe, a recipe for another
command, `-s` without `=`, unknown keys with a did-you-mean, wrong types, Literal values out of
their choices, missing required fields and the `__post_init__` checks) becomes one detail line
of a single `ConfigError`, written with the user's dotted key.

Coercions, beyond exact types: an int is a valid float; a numeric string is a valid float
(PyYAML reads `2e-5` as a string, because YAML 1.1 floats need a dot); an integral float or
numeric string is a valid int (`save_steps: 5e4`); YAML 1.1 booleans (`no`, `off`) are taken
as the matching Literal choice (`eval_strategy: no`); a single string is a one-element list.

`save_config` writes `run_config.yaml` atomically (temporary file + `os.replace`), and
`load_config(cls, "run_config.yaml", [])` returns an equal config: a run replays itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from spikelm_core.config.schema import TASK_CONFIGS, ConfigProblems
from spikelm_core.errors import ConfigError

__all__ = [
    "load_config",
    "config_from_dict",
    "parse_overrides",
    "config_to_dict",
    "save_config",
    "diff_configs",
]

T = TypeVar("T")

_INVALID = object()  # marks a value that failed its check (the problem is already recorded)

# Names from other tools, mapped to ours, for did-you-mean hints only (never accepted).
_KEY_ALIASES = {
    "learning_rate": "lr",
    "lr_scheduler_type": "lr_schedule",
    "scheduler": "lr_schedule",
    "warmup": "warmup_steps",
    "num_warmup_steps": "warmup_steps",
    "num_train_epochs": "epochs",
    "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "gradient_accumulation_steps": "grad_accum_steps",
    "max_grad_norm": "grad_clip",
    "evaluation_strategy": "eval_strategy",
    "output_dir": "out_dir",
    "max_seq_length": "max_length",
    "max_seq_len": "max_length",
    "T": "num_timesteps",
    "timesteps": "num_timesteps",
    "time_steps": "num_timesteps",
    "task_name": "glue_task",
    "dataloader_num_workers": "num_workers",
    "mask_probability": "mlm_probability",
}

_NUMBER = re.compile(r"[-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_KEY = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


# ------------------------------------------------------------------------------ type helpers


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _type_name(tp: Any) -> str:
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        names = " or ".join(_type_name(a) for a in args)
        return f"{names} or null" if len(args) < len(typing.get_args(tp)) else names
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if origin in (tuple, list):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict or tp is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    return "null" if value is None else repr(value)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _literal_from_bool(value: bool, choices: tuple[Any, ...]) -> Any:
    """YAML 1.1 reads `no`/`off` as False and `yes`/`on` as True; map back to a string choice."""
    spellings = ("no", "off", "false") if value is False else ("yes", "on", "true")
    for spelling in spellings:
        if spelling in choices:
            return spelling
    return _INVALID


def _coerce(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    """Check scalar/list/dict `value` against annotation `tp`, converting where documented;
    else record a problem and return `_INVALID`. Sections are handled by `_build`."""
    origin = typing.get_origin(tp)

    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            errors.append(f"{path}: expected {_type_name(tp)}, got null")
            return _INVALID
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            sub: list[str] = []
            coerced = _coerce(value, inner[0], path, sub)
            plain, optional = f"{path}: expected {_type_name(inner[0])}", f"{path}: expected {_type_name(tp)}"
            errors.extend(optional + m[len(plain):] if m.startswith(plain) else m for m in sub)
            return coerced
        raise TypeError(f"unsupported union in schema at {path}: {tp}")  # schema bug

    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
            mapped = _literal_from_bool(value, choices)
            if mapped is not _INVALID:
                return mapped
        if not isinstance(value, bool) and value in choices:
            return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        if isinstance(value, bool):
            suggestion = " (YAML reads yes/no/on/off/true/false as booleans; quote the value)"
        errors.append(f"{path}: expected {_type_name(tp)}, got {_show(value)}{suggestion}")
        return _INVALID

    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            number = float(value.replace("_", ""))
            if number.is_integer():
                return int(number)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value.replace("_", ""))
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list):
        item_tp = typing.get_args(tp)[0]
        items = [value] if isinstance(value, str) else value
        if isinstance(items, (list, tuple)):
            out = [_coerce(v, item_tp, f"{path}[{i}]", errors) for i, v in enumerate(items)]
            if any(v is _INVALID for v in out):
                return _INVALID
            return tuple(out) if origin is tuple else out
    elif origin is dict or tp is dict:
        if isinstance(value, Mapping):
            bad = [k for k in value if not isinstance(k, str)]
            if bad:
                errors.append(f"{path}: keys must be strings, got {', '.join(map(_show, bad))}")
                return _INVALID
            return dict(value)
    elif tp is Any:
        return value
    else:
        raise TypeError(f"unsupported type in schema at {path}: {tp}")  # schema bug

    errors.append(f"{path}: expected {_type_name(tp)}, got {_show(value)}")
    return _INVALID


# -------------------------------------------------------------------------- did you mean


def _schema_paths(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a config class, sections included."""
    paths = []
    for name, tp in _hints(cls).items():
        path = _join(prefix, name)
        paths.append(path)
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)] if _is_union(tp) else [tp]
        for sub in inner:
            if dataclasses.is_dataclass(sub):
                paths.extend(_schema_paths(sub, path))
    return paths


def _suggest(key: str, path: str, siblings: Sequence[str], root: type) -> str:
    """' (did you mean 'train.warmup_steps'?)' or ''."""
    alias = _KEY_ALIASES.get(key) or _KEY_ALIASES.get(key.lower())
    if alias in siblings:
        return f" (did you mean {_join(path, alias)!r}?)"
    everywhere = _schema_paths(root)
    leaf_matches = [p for p in everywhere if p.rsplit(".", 1)[-1] in {key, alias}]
    if leaf_matches:
        return f" (did you mean {leaf_matches[0]!r}?)"
    close = difflib.get_close_matches(key, list(siblings), n=1, cutoff=0.5)
    if close:
        return f" (did you mean {_join(path, close[0])!r}?)"
    close = difflib.get_close_matches(_join(path, key), everywhere, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -------------------------------------------------------------------------------- building


def _section_type(tp: Any) -> type | None:
    """The dataclass behind a section annotation (`TrainArgs` or `DistillArgs | None`)."""
    if dataclasses.is_dataclass(tp):
        return tp
    if _is_union(tp):
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return inner[0] if inner else None
    return None


def _touches(involved: frozenset[str], invalid: set[str]) -> bool:
    """Whether a check reading `involved` paths reads any replaced (`invalid`) path."""
    return any(a == b or a.startswith(b + ".") or b.startswith(a + ".") for a in involved for b in invalid)


def _partial(cls: type, kwargs: dict[str, Any]) -> Any:
    """An instance holding `kwargs` without running `__post_init__`: a stand-in that lets the
    enclosing section run its own checks on the values that were fine."""
    obj = object.__new__(cls)
    for name, value in kwargs.items():
        object.__setattr__(obj, name, value)
    return obj


def _build(
    cls: type[T], raw: Mapping[str, Any], path: str, errors: list[str], *, base: Any, root: type
) -> tuple[Any, set[str]]:
    """One dataclass from a mapping, recording every problem in `errors`.

    Missing keys come from `base` (an instance: task-specific section defaults) or the field
    defaults. Returns `(instance, invalid)`: `invalid` holds the paths (relative to `cls`) whose
    values were bad and replaced by their default; when it is non-empty the instance is a
    stand-in built without `__post_init__`, or `_INVALID` when no stand-in could be made.

    `__post_init__` runs even when some values were bad, so that its remaining problems are
    reported in the same pass; problems that read a replaced value are dropped, as they would
    only describe the stand-in.
    """
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in raw:
        if key not in fields:
            errors.append(f"{_join(path, key)}: unknown key{_suggest(str(key), path, list(fields), root)}")
    kwargs: dict[str, Any] = {}
    invalid: set[str] = set()
    for name, spec in fields.items():
        field_path = _join(path, name)
        if base is not None:
            default = getattr(base, name)
        elif spec.default is not dataclasses.MISSING:
            default = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            default = spec.default_factory()
        else:
            default = dataclasses.MISSING
        if name not in raw:
            if default is dataclasses.MISSING:
                errors.append(f"{field_path}: required, no default")
                invalid.add(name)
            kwargs[name] = default
            continue
        value, section = raw[name], _section_type(hints[name])
        if section is not None and value is not None:
            if not isinstance(value, Mapping):
                errors.append(f"{field_path}: expected a mapping of {section.__name__} keys, got {_show(value)}")
                invalid.add(name)
                kwargs[name] = default
                continue
            nested_base = default if dataclasses.is_dataclass(default) else None
            built, sub_invalid = _build(section, value, field_path, errors, base=nested_base, root=root)
            if built is _INVALID:
                invalid.add(name)
                kwargs[name] = default
            else:
                invalid.update(f"{name}.{sub}" for sub in sub_invalid)
                kwargs[name] = built
            continue
        coerced = _coerce(value, hints[name], field_path, errors)
        if coerced is _INVALID:
            invalid.add(name)
            coerced = default
        kwargs[name] = coerced

    for name, value in kwargs.items():
        if value is dataclasses.MISSING:
            if hints[name] is not str:
                return _INVALID, invalid  # no sensible stand-in: skip the checks
            kwargs[name] = "?"
    try:
        cfg = cls(**kwargs)
    except ConfigProblems as exc:
        for (name, message), involved in zip(exc.problems, exc.involved):
            if not _touches(involved, invalid):
                errors.append(f"{_join(path, name)}: {message}")
            invalid.add(name)
        return _partial(cls, kwargs), invalid
    except ValueError as exc:
        if not invalid:
            errors.append(f"{path or cls.__name__}: {exc}")
        return _INVALID, invalid
    if invalid:
        return _partial(cls, kwargs), invalid
    return cfg, invalid


def _task_of(cls: type) -> str | None:
    """The command a task config is for (its `task` field default), or None."""
    for f in dataclasses.fields(cls):
        if f.name == "task":
            return f.default if isinstance(f.default, str) else None
    return None


def _check_task(cls: type, raw: dict[str, Any], errors: list[str], hints: list[str], origin: str) -> None:
    """A recipe's `task:` must name the command; drop it from `raw` once checked."""
    expected = _task_of(cls)
    if expected is None or "task" not in raw:
        return
    given = raw.pop("task")
    if given == expected:
        return
    if isinstance(given, str) and given in TASK_CONFIGS:
        errors.append(f"task: {origin} is for '{given}', not '{expected}'")
        hints.append(f"run it with `spikelm {given}`, or use a '{expected}' recipe")
    else:
        errors.append(f"task: expected '{expected}', got {_show(given)}")


def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build `cls` from a nested mapping with the full checks of `load_config`."""
    errors: list[str] = []
    hints: list[str] = []
    raw = dict(data)
    _check_task(cls, raw, errors, hints, "config")
    cfg, _ = _build(cls, raw, "", errors, base=None, root=cls)
    if errors or cfg is _INVALID:
        raise _config_error("invalid config", errors, hints)
    return cfg


def _config_error(what: str, errors: list[str], hints: list[str]) -> ConfigError:
    n = len(errors)
    hint = "; ".join(dict.fromkeys(hints)) or "keys are dotted dataclass paths; --print-config shows them all"
    return ConfigError(f"{what}: {n} problem{'s' if n != 1 else ''}", details=errors, hint=hint)


# ---------------------------------------------------------------------------- YAML reading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that records duplicate mapping keys instead of keeping the last silently."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicates: list[tuple[Any, int]] = []


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            if key in seen:
                loader.duplicates.append((key, key_node.start_mark.line + 1))
            seen.add(key)
        except TypeError:  # unhashable key; construct_mapping reports it
            pass
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_recipe(path: Path, errors: list[str]) -> dict[str, Any] | None:
    """The recipe as a dict; None (with problems recorded) when it cannot be used."""
    if not path.exists():
        errors.append(f"{path}: recipe file not found")
        return None
    if path.is_dir():
        errors.append(f"{path}: is a directory, not a recipe file")
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(f"{path}: cannot read recipe ({exc})")
        return None
    loader = _StrictLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = exc.problem or exc.context or "malformed YAML"
        errors.append(f"{path}: invalid YAML at {where}: {problem}")
        return None
    except yaml.YAMLError as exc:
        errors.append(f"{path}: invalid YAML: {exc}")
        return None
    finally:
        loader.dispose()
    for key, line in loader.duplicates:
        errors.append(f"{path}: duplicate key {key!r} at line {line}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        errors.append(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
        return None
    return data


# ---------------------------------------------------------------------------- overrides


def parse_overrides(overrides: Sequence[str], errors: list[str] | None = None) -> list[tuple[str, Any]]:
    """`["train.lr=3e-5", "neuron.k=3"]` -> `[("train.lr", "3e-5"), ("neuron.k", 3)]`.

    Values are parsed with `yaml.safe_load` (so `3` is an int, `[a, b]` a list, `null` None);
    the schema coerces them further. Problems are appended to `errors`, or raised as one
    ConfigError when `errors` is None.
    """
    own = errors is None
    problems: list[str] = [] if errors is None else errors
    out = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"{item!r}: expected key=value")
            continue
        key, text = item.split("=", 1)
        key = key.strip()
        if not _KEY.fullmatch(key):
            problems.append(f"{item!r}: bad key {key!r} (use a dotted path such as train.lr)")
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            problems.append(f"{item!r}: value is not valid YAML ({reason})")
            continue
        out.append((key, value))
    if own and problems:
        raise _config_error("invalid --set overrides", problems, [])
    return out


def _merge(target: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted `key` in nested dict `target`; mappings merge into mappings."""
    node = target
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    leaf = parts[-1]
    if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
        for sub_key, sub_value in value.items():
            _merge(node[leaf], str(sub_key), sub_value)
    else:
        node[leaf] = dict(value) if isinstance(value, Mapping) else value


# ----------------------------------------------------------------------------- public API


def load_config(
    cls: type[T],
    recipe: str | os.PathLike[str] | None,
    overrides: Sequence[str] = (),
    **flags: Any,
) -> T:
    """Build task config `cls` from defaults < `recipe` < `overrides` < `flags`.

    recipe: path of a YAML recipe (or a saved run_config.yaml), or None for defaults only.
    overrides: `-s` strings 'dotted.key=value'.
    flags: dedicated CLI flags by key, e.g. `out_dir="runs/x"` or `**{"train.seed": 3}`;
        a None value means the flag was not given and is skipped.
    Raises ConfigError listing every problem found.
    """
    errors: list[str] = []
    hints: list[str] = []
    raw: dict[str, Any] = {}
    usable = True
    origin = "config"
    if recipe is not None:
        path = Path(recipe)
        origin = f"recipe {str(path)!r}"
        data = _read_recipe(path, errors)
        if data is None:
            usable = False
        else:
            raw = data
    for key, value in parse_overrides(overrides, errors):
        _merge(raw, key, value)
    for key, value in flags.items():
        if value is not None:
            _merge(raw, key, value)
    if not usable:
        # Without a readable recipe, schema errors (missing 'model' ...) would only be noise.
        raise _config_error(f"cannot load {origin}", errors, hints)
    _check_task(cls, raw, errors, hints, origin if recipe is not None else "config")
    cfg, _ = _build(cls, raw, "", errors, base=None, root=cls)
    if errors or cfg is _INVALID:
        raise _config_error(f"invalid {origin}", errors, hints)
    return cfg


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts/lists/scalars, in field order (YAML/JSON ready)."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"expected a config dataclass instance, got {type(cfg).__name__}")
    return _plain(cfg)


def save_config(cfg: Any, path: str | os.PathLike[str], *, header: str | None = None) -> Path:
    """Write `cfg` as YAML to `path` atomically (temp file in the same directory + os.replace).

    `header` lines are written as `# ` comments first. Returns the path written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)
    comments = "".join(f"# {line}\n" for line in header.splitlines()) if header else ""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(comments + body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return target


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, _join(prefix, key)))
        return out
    return {prefix: value}


def diff_configs(old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """`(dotted key, old value, new value)` for every leaf that differs, e.g. to check a resume."""
    a, b = _flatten(config_to_dict(old)), _flatten(config_to_dict(new))
    missing = object()
    return [
        (key, a.get(key), b.get(key))
        for key in sorted(set(a) | set(b))
        if a.get(key, missing) != b.get(key, missing)
    ]
