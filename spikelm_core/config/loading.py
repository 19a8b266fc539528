"""Build task configs from recipes, `-s key=value` overrides and flags; save them for replay.

Precedence: model defaults < recipe YAML < `-s key=value` overrides (in order given; each value
parsed with `yaml.safe_load`) < dedicated flags (keyword arguments of `load_config`, dotted keys
such as `data.data_dir`; None means "flag not given").

Everything is merged into one plain nested dict, then validated by the pydantic schema in one
pass. Every problem found on the way (unreadable or malformed recipe, duplicate keys, a recipe for
another command, `-s` without `=`, unknown keys with a did-you-mean, wrong types, values out of
their choices, missing fields, broken rules) becomes one detail line of a single `ConfigError`,
written with the user's dotted key.

Relative input paths (`model`, `tokenizer`, `data.source`, `data.data_dir`, `data.train_file`,
`data.validation_file`, `distill.teacher`, `dense_reference`, `sweep.reference`, `sweep.energy.data`,
and those keys among a sweep's points and grid) are made absolute: in a recipe against
the recipe's folder, in `-s` overrides and flags against the current directory. A value counts as a path when
it starts with ./ or ../, or when it exists there (so `minilm` and `facebook/bart-base` stay); a
recipe's path that is not beside the recipe but exists from the current directory (where the run reads
it) is made absolute against that, so run_config.yaml replays from anywhere. `~` is expanded (and in
`out_dir`).

A recipe may start from another: `base: ../common/teacher.yaml` (read from the recipe's folder)
loads that recipe first and lays this one over it, mappings merged key by key, any other value
(lists included) replaced; a base may have its own base. Each recipe's relative paths are read from
its own folder. So one template serves many tasks: a base recipe with the method's settings, and a
per-task recipe of data settings only. A base with another `command` is an error, as for any recipe.

Recipes and run_config.yaml files of spikelm 0.1 still load: a top-level `task: <command>` is
read as `command`, `glue_task` / `summarization_task` as `data.task` (each renaming logged once),
and paths in such a file are read from the current directory, as 0.1 did.

`save_config` writes `run_config.yaml` atomically (temporary file + `os.replace`), and
`load_config(cls, "run_config.yaml")` returns an equal config: a run replays itself.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from spikelm_core.config.schema import TASK_CONFIGS, flatten_dotted, infer_task, normalize_task, task_family
from spikelm_core.errors import ConfigError
from spikelm_core.log import get_logger, warn_once

__all__ = [
    "load_config",
    "config_from_dict",
    "parse_overrides",
    "config_to_dict",
    "save_config",
    "diff_configs",
    "describe_config",
]

T = TypeVar("T", bound=BaseModel)
log = get_logger("config")

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
    "task_name": "task",
    "dataloader_num_workers": "num_workers",
    "mask_probability": "mlm_probability",
}
_HINT = ("keys are nested sections in a recipe file (train: {lr: 3.0e-5}) and dotted paths in -s (train.lr, neuron.k, "
         "data.task); `spikelm <command> RECIPE --print-config` lists every field with its description")
_KEY = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_PATH_KEYS = ("model", "tokenizer", "data.source", "data.data_dir", "data.train_file", "data.validation_file",
              "distill.teacher", "dense_reference")
_SWEEP_PATH_KEYS = ("sweep.reference", "sweep.energy.data")
_MAX_BASES = 8  # recipes in one base: chain
_LEGACY_KEYS = {"task": "command", "glue_task": "data.task", "summarization_task": "data.task"}
_warned: set[str] = set()


# ----------------------------------------------------------------------------- error lines


def _show(value: Any) -> str:
    """A value as an error message names it: null, or its repr cut to a readable length (a mapping
    or list given by mistake may be huge)."""
    if value is None:
        return "null"
    shown = repr(value)
    return shown if len(shown) <= 200 else f"{shown[:160]} ... ({len(shown):,} characters)"


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """Recipe key (the alias, where a field has one) -> annotation."""
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def _models_in(tp: Any) -> list[type[BaseModel]]:
    return [a for a in (tp, *typing.get_args(tp)) if isinstance(a, type) and issubclass(a, BaseModel)]


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, type(int | None))


def _without_union_tag(root: type[BaseModel], loc: Sequence[Any]) -> tuple[Any, ...]:
    """`loc` without the member tag pydantic appends for a value that fits no member of a union
    field (('train', 'bf16', 'bool') -> ('train', 'bf16')): one problem per field, not per member."""
    if len(loc) > 1 and isinstance(loc[-1], str) and _is_union(parent := _annotation_at(root, loc[:-1])) \
            and not _models_in(parent):
        return tuple(loc[:-1])
    return tuple(loc)


def _annotation_at(root: type[BaseModel], loc: Sequence[Any]) -> Any:
    """The annotation of the value at pydantic location `loc`, or None when unknown."""
    tp: Any = root
    for part in loc:
        if isinstance(part, int):
            args = [a for a in typing.get_args(tp) if a is not Ellipsis]
            tp = args[0] if args else None
        else:
            models = _models_in(tp)
            tp = _fields(models[0]).get(part) if models else None
    return tp


def _describe(tp: Any) -> str:
    """'float', 'int or null', "one of 'a', 'b'", 'list of str', 'a mapping of TrainArgs keys'."""
    args = typing.get_args(tp)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return f"{' or '.join(_describe(a) for a in rest)} or null"
    if typing.get_origin(tp) is Literal:
        return repr(args[0]) if len(args) == 1 else "one of " + ", ".join(map(repr, args))
    if _is_union(tp):
        return " or ".join(_describe(a) for a in args)
    if typing.get_origin(tp) in (tuple, list):
        return f"list of {_describe(args[0])}"
    if _models_in(tp):
        return f"a mapping of {tp.__name__} keys"
    if tp is dict or typing.get_origin(tp) is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _schema_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a config class, sections included."""
    paths = []
    for key, tp in _fields(model).items():
        path = f"{prefix}{key}"
        paths.append(path)
        for sub in _models_in(tp)[:1]:
            paths.extend(_schema_paths(sub, f"{path}."))
    return paths


def _suggest(loc: Sequence[Any], root: type[BaseModel]) -> str:
    """' (did you mean 'train.warmup_steps'?)' or '' for the unknown key at `loc`."""
    key, parent = str(loc[-1]), ".".join(map(str, loc[:-1]))
    prefix = f"{parent}." if parent else ""
    siblings = [p[len(prefix):] for p in _schema_paths(root) if p.startswith(prefix) and "." not in p[len(prefix):]]
    alias = _KEY_ALIASES.get(key) or _KEY_ALIASES.get(key.lower())
    everywhere = _schema_paths(root)
    if alias in siblings:
        match = [prefix + alias]
    else:
        match = [p for p in everywhere if p.rsplit(".", 1)[-1] in {key, alias}]
        match = match or [prefix + m for m in difflib.get_close_matches(key, siblings, n=1, cutoff=0.5)]
        # a mistyped section name ('trian.lr'): neither the key's own section nor its siblings (tried above)
        others = [p for p in everywhere if not (prefix + key).startswith(p + ".") and not (prefix and p.startswith(prefix))]
        match = match or difflib.get_close_matches(prefix + key, others, n=1, cutoff=0.75)
    return f" (did you mean {match[0]!r}?)" if match else ""


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def _problems(exc: ValidationError, root: type[BaseModel]) -> list[str]:
    """One 'dotted.path: what is wrong' line per problem pydantic found."""
    lines = []
    for err in exc.errors():
        loc, kind, value, ctx = err["loc"], err["type"], err.get("input"), err.get("ctx") or {}
        loc = _without_union_tag(root, loc)
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        if kind == "config_rules":
            lines += [f"{path + '.' if path else ''}{field}: {message}" for field, message in ctx["problems"]]
            continue
        if kind == "extra_forbidden" and len(loc) == 1 and "." in str(loc[0]):  # `train.lr: 1e-4` in a file
            head, _, rest = str(loc[0]).partition(".")
            message = f"a recipe file nests its keys ({head}: {{{rest}: ...}}); dotted paths are for -s"
        elif kind == "extra_forbidden":
            message = f"unknown key{_suggest(loc, root)}"
        elif kind == "missing":
            message = "required, no default"
        elif kind in _BOUNDS:
            name, op = _BOUNDS[kind]
            limit = ctx[name]
            limit = int(limit) if isinstance(limit, float) and limit.is_integer() else limit
            message = f"must be {op} {limit}, got {_show(value)}"
        elif kind == "finite_number":
            message = f"must be a finite number, got {_show(value)}"
        elif kind in ("value_error", "assertion_error"):
            message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        else:
            tp = _annotation_at(root, loc)
            message = f"expected {_describe(tp)}, got {_show(value)}" if tp is not None else err["msg"]
            if kind == "literal_error" and isinstance(value, bool):
                message += " (YAML reads yes/no/on/off/true/false as booleans; quote the value)"
            elif kind == "literal_error" and len(choices := typing.get_args(_bare_literal(tp))) > 1:
                close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
                message += f" (did you mean {close[0]!r}?)" if close else ""
        lines.append(f"{path}: {message}" if path else message)
    return list(dict.fromkeys(lines))  # a union's members each report the same line


def _bare_literal(tp: Any) -> Any:
    return next((a for a in (tp, *typing.get_args(tp)) if typing.get_origin(a) is Literal), None)


def _config_error(what: str, errors: list[str], hints: list[str]) -> ConfigError:
    n = len(errors)
    hint = "; ".join(dict.fromkeys(hints)) or _HINT
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


def yaml_problem(exc: Exception) -> str:
    """'invalid YAML at line 3, column 8: <what>' for a YAML parse error (the position where PyYAML
    knows it): the one wording of recipes and of every other YAML file spikelm reads."""
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        return f"invalid YAML at {where}: {exc.problem or exc.context or 'malformed YAML'}"
    return f"invalid YAML: {exc}"


def _missing_recipe_hint(path: Path) -> str:
    """What to do about a recipe path that is not a readable file: the file of the same name with
    another extension, or the closest name in its folder; else where the shipped recipes are."""
    if path.exists() or not path.parent.is_dir():
        return "give the path of a recipe YAML file; recipes/README.md lists the shipped ones"
    names = sorted(p.name for p in path.parent.iterdir() if p.suffix.lower() in (".yaml", ".yml"))
    same_stem = [n for n in names if Path(n).stem == path.stem]
    close = same_stem or difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{path.parent / close[0]}'?"
    return f"no such recipe in '{path.parent}'; recipes/README.md lists the shipped ones"


def _resolved_explicit(path: Path) -> set[str] | None:
    """The settings a config spikelm wrote out whole says were set (its first line: `resolved_mark`);
    None for any other file."""
    try:
        with path.open(encoding="utf-8") as fh:
            first = fh.readline().rstrip("\n")
    except (OSError, UnicodeDecodeError):
        return None
    if not first.startswith(RESOLVED_MARK):
        return None
    return set(first[len(RESOLVED_MARK):].split()) - {"none"}


#: the largest recipe read (bundled recipes and run_config.yaml files are a few KB)
MAX_RECIPE_BYTES = 1 << 20
#: the most values a recipe may hold once its YAML aliases are expanded (a recipe has a few hundred)
MAX_RECIPE_VALUES = 100_000


def _expanded_values(data: Any, limit: int) -> int:
    """How many values `data` holds with every shared (aliased) mapping or list counted each time it
    appears; stops counting past `limit` (a YAML alias bomb shares a few nodes a billion times)."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) not in sizes:
            total = 1
            for child in (node.values() if isinstance(node, dict) else node):
                total += size(child)
                if total > limit:
                    break
            sizes[id(node)] = total
        return sizes[id(node)]

    return size(data)


def _read_recipe(path: Path, errors: list[str]) -> dict[str, Any] | None:
    """The recipe as a dict; None (with problems recorded) when it cannot be used."""
    if not path.exists():
        errors.append(f"{path}: recipe file not found")
        return None
    if path.is_dir():
        errors.append(f"{path}: is a directory, not a recipe file")
        return None
    if not path.is_file():  # a pipe or a device would block or never end
        errors.append(f"{path}: is not a regular file (a pipe, socket or device), not a recipe file")
        return None
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            errors.append(f"{path}: {size / 2**20:.1f} MiB is not a recipe file (recipes are a few KB; at most "
                          f"{MAX_RECIPE_BYTES // 2**20} MiB)")
            return None
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(f"{path}: cannot read recipe ({exc})")
        return None
    loader = _StrictLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        errors.append(f"{path}: {yaml_problem(exc)}")
        return None
    finally:
        loader.dispose()
    errors.extend(f"{path}: duplicate key {key!r} at line {line}" for key, line in loader.duplicates)
    if data is None:
        return {}
    if not isinstance(data, dict):
        errors.append(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
        return None
    if _expanded_values(data, MAX_RECIPE_VALUES) > MAX_RECIPE_VALUES:
        errors.append(f"{path}: its YAML aliases expand to more than {MAX_RECIPE_VALUES:,} values, which is not "
                      "a recipe (recipes hold a few hundred)")
        return None
    return data


# ------------------------------------------------------------------------ layers and merging


def parse_overrides(overrides: Sequence[str], errors: list[str] | None = None) -> list[tuple[str, Any]]:
    """`["train.lr=3e-5", "neuron.k=3"]` -> `[("train.lr", "3e-5"), ("neuron.k", 3)]`.

    Values are parsed with `yaml.safe_load` (so `3` is an int, `[a, b]` a list, `null` None);
    the schema coerces them further. Problems are appended to `errors`, or raised as one
    ConfigError when `errors` is None.
    """
    problems: list[str] = [] if errors is None else errors
    out = []
    for item in overrides:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq:
            problems.append(f"{item!r}: expected key=value")
        elif not _KEY.fullmatch(key):
            problems.append(f"{item!r}: bad key {key!r} (use a dotted path such as train.lr)")
        else:
            try:
                out.append((key, yaml.safe_load(text)))
            except yaml.YAMLError as exc:
                reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                problems.append(f"{item!r}: value is not valid YAML ({reason})")
    if errors is None and problems:
        raise _config_error("invalid --set overrides", problems, [])
    return out


def set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted `key` in nested dict `target`; mappings merge into mappings (`_merged`: their own
    keys taken as they are, so `-s sweep.grid={neuron.k: [2, 3]}` keeps `neuron.k` one key)."""
    node = target
    *parents, leaf = key.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
        node[leaf] = _merged(node[leaf], value, tuple(key.split(".")))
    else:
        node[leaf] = dict(value) if isinstance(value, Mapping) else value


def _get(data: Mapping[str, Any], key: str) -> Any:
    for part in key.split("."):
        data = data.get(part) if isinstance(data, Mapping) else None
    return data


def _resolve_paths(layer: dict[str, Any], base: Path) -> None:
    """Make the relative input paths of one layer absolute against `base` (module docstring); one that
    is not there but exists from the current directory (where the run reads it) against that, so that
    run_config.yaml replays from anywhere. `~` is expanded in these and in `out_dir`."""
    out = _get(layer, "out_dir")
    if isinstance(out, str) and out.startswith("~"):
        set_dotted(layer, "out_dir", os.path.expanduser(out))
    for key in (*_PATH_KEYS, *_SWEEP_PATH_KEYS):
        value = _get(layer, key)
        if isinstance(value, str):
            set_dotted(layer, key, _resolved_path(key, value, base))
    sweep = layer.get("sweep")
    if not isinstance(sweep, dict):
        return
    # the points' and the grid's values of path keys (dotted keys of their own, e.g. points.b.model)
    for values in (sweep.get("points") or {}).values():
        if isinstance(values, dict):
            for key in _PATH_KEYS:
                if isinstance(values.get(key), str):  # a dotted key of the point's own
                    values[key] = _resolved_path(key, values[key], base)
                elif "." in key and isinstance(_get(values, key), str):  # nested: {distill: {teacher: ...}}
                    set_dotted(values, key, _resolved_path(key, _get(values, key), base))
    grid = sweep.get("grid")
    if isinstance(grid, dict):
        for key in _PATH_KEYS:
            values = grid.get(key) if key in grid else _get(grid, key)  # nested too: {distill: {teacher: [...]}}
            if isinstance(values, list):
                resolved = [_resolved_path(key, v, base) if isinstance(v, str) else v for v in values]
                if key in grid:
                    grid[key] = resolved
                else:
                    set_dotted(grid, key, resolved)


def _resolved_path(key: str, value: str, base: Path) -> str:
    """One input path of a layer, read as `_resolve_paths` says."""
    if value.startswith("~"):
        value = os.path.expanduser(value)
    if not value or os.path.isabs(value):
        return value
    if key == "data.source" and value.strip().lower().startswith("glue/"):
        return value
    if value in (".", "..") or value.startswith(("./", "../")) or _names_a_path(key, value, base / value):
        return os.path.normpath(os.path.join(os.path.abspath(base), value))
    if _names_a_path(key, value, Path(value)):
        return os.path.abspath(value)
    return value


def _names_a_path(key: str, value: str, candidate: Path) -> bool:
    """Whether a bare `value` names the existing `candidate`: a model alias ('minilm', 'bert-base',
    'smollm2') stays an alias unless `candidate` is a model folder (config.json), so `recipes/minilm/`
    (recipes, no model) does not take the alias's place when a command runs from `recipes/`."""
    if not candidate.exists():
        return False
    if key in ("model", "tokenizer", "distill.teacher", "dense_reference"):
        from ..checkpoints import ALIASES, BUNDLED, BUNDLED_GGUF

        if value.lower() in {*ALIASES, *BUNDLED, *BUNDLED_GGUF}:
            return (candidate / "config.json").is_file()
    return True


def _warn_once(key: str, message: str) -> None:
    warn_once(log, key, "%s", message, seen=_warned)


def _migrate(layer: dict[str, Any], where: str, errors: list[str]) -> dict[str, Any]:
    """Rename the spikelm 0.1 top-level keys of one layer (module docstring); problems to `errors`."""
    out = {k: v for k, v in layer.items() if k not in _LEGACY_KEYS}
    for old, new in _LEGACY_KEYS.items():
        if old not in layer:
            continue
        value = layer[old]
        if old == "task" and value not in TASK_CONFIGS:
            task = normalize_task(value) if isinstance(value, str) else None
            guess = f" (did you mean 'data.task: {task}'?)" if task else ""
            errors.append(f"task: {_show(value)} is not a command ({', '.join(TASK_CONFIGS)}); 'task' was renamed "
                          f"'command', and the benchmark task is 'data.task'{guess}")
            continue
        _warn_once(old, f"{where}: '{old}' is the spikelm 0.1.0 name of '{new}'; rename it "
                        f"(read as {new}: {_show(value)})")
        if value is None:
            continue
        current = _get(out, new)
        same = current == value or (isinstance(current, str) and isinstance(value, str)
                                    and normalize_task(current) == normalize_task(value))
        if current is not None and not same:
            errors.append(f"{old}: {_show(value)} disagrees with {new} {_show(current)}; keep only {new}")
        else:
            set_dotted(out, new, value)
    return out


def _layer(data: Mapping[str, Any], base: Path, where: str, errors: list[str]) -> dict[str, Any]:
    layer = _migrate(dict(data), where, errors)
    _resolve_paths(layer, base)
    return layer


def _with_base(path: Path, data: Mapping[str, Any], errors: list[str], chain: tuple[Path, ...],
               folder: Path | None = None, origins: dict[str, str] | None = None) -> dict[str, Any]:
    """The layer of recipe `path` on top of the layers of its `base:` chain (module docstring).

    `chain` holds the recipes already on the way (cycle check); `folder` is where the recipe's
    relative paths are read from (its own folder unless a 0.1 recipe says otherwise); `origins`, when
    given, receives the recipe file that set each dotted setting (the last layer's)."""
    where = f"recipe {str(path)!r}"
    layer = _layer({k: v for k, v in data.items() if k != "base"}, folder or path.parent, where, errors)
    ref = data.get("base")
    if ref is None:
        _note_origin(origins, layer, os.path.normpath(path))
        return layer
    if not isinstance(ref, str) or not ref.strip():
        errors.append(f"{path}: base: must be the path of another recipe (read from this recipe's folder), "
                      f"got {_show(ref)}")
        return layer
    base_path = Path(ref) if os.path.isabs(ref) else path.parent / ref
    if base_path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, base_path.resolve()))
        errors.append(f"{path}: base: {ref} makes a cycle of recipes ({cycle})")
        return layer
    if len(chain) > _MAX_BASES:
        errors.append(f"{path}: base: {ref} would make a chain of more than {_MAX_BASES} bases")
        return layer
    base_data = _read_recipe(base_path, errors)
    if base_data is None:
        errors.append(f"{path}: its base: {ref} cannot be read")
        return layer
    below = _with_base(base_path, base_data, errors, (*chain, base_path.resolve()), origins=origins)
    _note_origin(origins, layer, os.path.normpath(path))
    mine, theirs = layer.get("command"), below.get("command")
    if isinstance(mine, str) and isinstance(theirs, str) and mine != theirs:
        errors.append(f"{path}: command: {mine}, but its base: {ref} is a '{theirs}' recipe; a recipe and its "
                      f"bases serve one command")
    return _merged(below, layer)


def _note_origin(origins: dict[str, str] | None, layer: Mapping[str, Any], origin: str) -> None:
    """Record `origin` as where each dotted setting of `layer` comes from (a later layer's wins)."""
    if origins is not None:
        origins.update(dict.fromkeys((key for key in flatten_dotted(layer) if key), origin))


def _origin_of(line: str, origins: Mapping[str, str]) -> str | None:
    """Where the setting a problem line ('train.lr: must be > 0, ...') names came from, or None."""
    path = re.sub(r"\[\d+\]", "", line.partition(": ")[0])
    if path.startswith("'") and line.partition(": ")[2].startswith(("expected key=value", "bad key", "value is")):
        return "-s"  # `parse_overrides`: an -s item that is no key=value
    if not _KEY.fullmatch(path):
        return None
    hits = [origin for key, origin in origins.items()
            if key == path or key.startswith(path + ".") or path.startswith(key + ".")]
    return hits[-1] if hits and all(h == hits[-1] for h in hits) else None


def _merged(base: dict[str, Any], over: Mapping[str, Any], at: tuple[str, ...] = ()) -> dict[str, Any]:
    """`over` laid on `base`: mappings merged key by key (keys taken as they are: a sweep grid's
    `neuron.k` is one key), anything else replaced. A sweep point's settings are made dotted keys on
    both sides first, so that `{train: {max_steps: 300}}` and `{train.max_steps: 100}` name one setting
    and the later layer wins whichever way each layer spells it."""
    if at[:2] == ("sweep", "points") and len(at) == 3:
        base, over = flatten_dotted(base) if base else base, flatten_dotted(over) if over else over
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(dict(out[key]), value, (*at, str(key)))
        else:
            out[key] = value
    return out


def _data_dir_beats_files(raw: dict[str, Any], set_by_s: set[str], flag_task: Any) -> None:
    """A `--data-dir` flag beats the recipe's `data.train_file` / `data.validation_file` (which beat
    `data.data_dir` inside a recipe) for a summarisation or language-modelling task, so the data
    comes from the flag's folder; files set with `-s` stay. Masked-LM text keeps its held-out file
    (there `--data-dir` is the training corpus)."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    named = next((v for v in (flag_task, data.get("task"), data.get("source")) if isinstance(v, str)), None)
    try:
        task = normalize_task(named) if named is not None else None
    except (ConfigError, ValueError):
        task = None
    if task_family(task) not in ("summarization", "lm"):
        return
    dropped = [key for key in ("train_file", "validation_file")
               if data.get(key) is not None and f"data.{key}" not in set_by_s]
    for key in dropped:
        del data[key]
    if dropped:
        log.info("--data-dir replaces the recipe's %s", " and ".join(f"data.{key}" for key in dropped))


def _prefer_flags(raw: dict[str, Any], flags: Mapping[str, Any]) -> None:
    """Flags beat the recipe's `data.source` (see `DataArgs`): a `data.data_dir` flag drops a local
    GLUE directory path (after inferring `data.task` from it), a `data.task` flag drops a source
    that names another benchmark ('glue/<task>', 'xsum'), and a local GLUE task directory of another
    task becomes its GLUE root (`data.data_dir`), from which the asked task is read."""
    data = raw.get("data")
    source = data.get("source") if isinstance(data, dict) else None
    if not isinstance(source, str):
        return
    try:
        inferred = infer_task(source)
    except ValueError:
        inferred = None
    by_name = source.strip().lower().startswith("glue/") or task_family(inferred) == "summarization"
    flag_task = flags.get("data.task")
    if isinstance(flag_task, str) and by_name and inferred != normalize_task(flag_task):
        del data["source"]
        return
    if (isinstance(flag_task, str) and not by_name and task_family(inferred) == "glue"
            and inferred != normalize_task(flag_task)):
        # a GLUE task directory of another task: read the asked GLUE task from the same GLUE root (a
        # summarisation or language-modelling task is not there: only the recipe's source is dropped)
        if data.get("data_dir") is None and task_family(normalize_task(flag_task)) == "glue":
            data["data_dir"] = str(Path(source).parent)
        del data["source"]
        return
    given = data.get("task")
    task = normalize_task(given) if isinstance(given, str) else inferred
    if flags.get("data.data_dir") is not None and not by_name and task_family(task) == "glue":
        data["task"] = given if given is not None else inferred
        del data["source"]
    elif flags.get("data.data_dir") is not None and task is None and not isinstance(flag_task, str) and not by_name:
        # masked-LM on text: the recipe's corpus is data.source; the flag's file or folder replaces it
        # (not a 'glue/<name>' source naming no task spikelm knows: the schema names that one)
        data["source"] = data.pop("data_dir")


def _check_command(cls: type[BaseModel], raw: dict[str, Any], errors: list[str], hints: list[str], origin: str) -> None:
    """A recipe's `command` must name this command; one for another command is refused with a hint."""
    expected = cls.model_fields["command"].default
    given = raw.get("command")
    if isinstance(given, str) and given != expected and given in TASK_CONFIGS:
        del raw["command"]
        errors.append(f"command: {origin} is for '{given}', not '{expected}'")
        hints.append(f"drop it: the command is the verb you run (`spikelm {expected}`)" if origin.startswith("-s ")
                     else f"run it with `spikelm {given}`, or use a '{expected}' recipe")


def _validate(cls: type[T], raw: dict[str, Any], errors: list[str], hints: list[str], what: str,
              command_origin: str | None = None) -> T:
    """`cls` from `raw`; ConfigError headed `what` listing every problem. `command_origin` names where
    `command` came from when that is not `what`'s origin (an `-s command=...` override)."""
    _check_command(cls, raw, errors, hints, command_origin or what.removeprefix("invalid "))
    cfg = None
    try:
        cfg = cls.model_validate(raw, strict=True)
    except ValidationError as exc:
        errors.extend(_problems(exc, cls))
    if errors or cfg is None:
        raise _config_error(what, errors, hints)
    return cfg


# ----------------------------------------------------------------------------- public API


def config_from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build `cls` from a nested mapping with the checks of `load_config` (0.1 keys migrated;
    paths left as they are)."""
    errors: list[str] = []
    return _validate(cls, _migrate(dict(data), "config", errors), errors, [], "invalid config")


def load_config(
    cls: type[T],
    recipe: str | os.PathLike[str] | None,
    overrides: Sequence[str] = (),
    **flags: Any,
) -> T:
    """Build task config `cls` from defaults < `recipe` < `overrides` < `flags`.

    recipe: path of a YAML recipe (or a saved run_config.yaml), or None for defaults only.
    overrides: `-s` strings 'dotted.key=value'.
    flags: dedicated CLI flags by dotted key, e.g. `out_dir="runs/x"` or
        `**{"data.data_dir": "../glue", "data.task": "sst2"}`; a None value means the flag was
        not given. A `data.data_dir` flag drops a local GLUE `data.source` path, a `data.task`
        flag a source naming another task (`_prefer_flags`).
    Raises ConfigError listing every problem found.
    """
    errors: list[str] = []
    raw: dict[str, Any] = {}
    origins: dict[str, str] = {}  # dotted setting -> the recipe file, `-s` override or option that set it
    origin, cwd = "config", Path.cwd()
    if recipe is not None:
        path = Path(recipe)
        origin = f"recipe {str(path)!r}"
        data = _read_recipe(path, errors)
        if data is None:
            # Without a readable recipe, schema errors (missing 'model' ...) would only be noise.
            parse_overrides(overrides, errors)
            hint = (_missing_recipe_hint(path) if not path.is_file() else
                    "fix the line named (YAML: `key: value`, two-space nesting, lists as [a, b])"
                    if any("invalid YAML" in line for line in errors) else
                    "give the path of a recipe YAML file; recipes/README.md lists the shipped ones")
            raise _config_error(f"cannot load {origin}", errors, [hint])
        legacy = "task" in data and "command" not in data  # spikelm 0.1.0: paths from the current directory
        if legacy:
            _warn_once("paths", f"{origin}: a spikelm 0.1.0 recipe, its relative paths are read from the current "
                                "directory; once its keys are renamed they are read from the recipe's folder")
        raw = _with_base(path, data, errors, (path.resolve(),), cwd if legacy else path.parent, origins=origins)
        explicit = _resolved_explicit(path)
        if explicit is not None:
            raw = _unset_defaults(cls, raw, explicit)
    set_by_s = parse_overrides(overrides, errors)
    if flags.get("data.data_dir") is not None:
        _data_dir_beats_files(raw, {key for key, _ in set_by_s}, flags.get("data.task"))
    given = [*set_by_s, *((k, v) for k, v in flags.items() if v is not None)]
    texts = {key.strip(): text.strip() for key, eq, text in (item.partition("=") for item in overrides) if eq}
    for i, (key, value) in enumerate(given):
        nested: dict[str, Any] = {}
        set_dotted(nested, key, value)
        _note_origin(origins, nested, f"-s {key}={texts.get(key, '')}" if i < len(set_by_s) else "option")
        for top, sub in _layer(nested, cwd, f"{key}={value}", errors).items():
            set_dotted(raw, top, sub)
    _prefer_flags(raw, flags)
    command_origin = f"-s command={raw.get('command')}" if any(key == "command" for key, _ in given) else None
    try:
        return _validate(cls, raw, errors, [], f"invalid {origin}", command_origin)
    except ConfigError as exc:
        top = os.path.normpath(recipe) if recipe is not None else None
        where = [_origin_of(line, origins) for line in exc.details]
        if top is not None and exc.details and all(w is not None and w.startswith("-s") for w in where):
            n = len(exc.details)  # every problem is an -s override's: the recipe is not at fault
            exc.message = f"invalid -s override{'s' if n != 1 else ''}: {n} problem{'s' if n != 1 else ''}"
        exc.details = [line if w is None or w == top or w == "option" or w.startswith("-s")
                       else f"{line} (set in its base recipe {w!r})" for line, w in zip(exc.details, where)]
        from_flags = tuple(f"{key}:" for key, value in flags.items() if value is not None)
        if exc.details and from_flags and all(line.startswith(from_flags) for line in exc.details):
            # every problem is a dedicated option's value: neither the recipe nor its keys are at fault
            n = len(exc.details)
            exc.message = f"invalid option value{'s' if n != 1 else ''}: {n} problem{'s' if n != 1 else ''}"
            exc.hint = "each option's range is in the command's --help (the dotted name is its recipe key)"
        raise


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    """The config as plain nested dicts/lists/scalars, in field order (YAML/JSON ready)."""
    if not isinstance(cfg, BaseModel):
        raise TypeError(f"expected a config model instance, got {type(cfg).__name__}")
    return cfg.model_dump(mode="json", by_alias=True)


#: The first line of a config spikelm wrote out whole (run_config.yaml, eval_config.yaml, --print-config),
#: followed by the `DEFAULTS_FROM_MODEL` settings that were set (recipe, -s, flags). Read back, the
#: others count as unset again, as they were in the run that wrote it.
RESOLVED_MARK = "# spikelm: a resolved config; of the settings taken from the model when unset, these were set:"
#: Settings a run takes from its model when they are not set: a spiking checkpoint's neuron settings,
#: the model's positions for the lengths; and the sampling settings a greedy prompt refuses when set.
DEFAULTS_FROM_MODEL = ("neuron.", "data.max_length", "data.seq_len", "prompt.")


def save_config(cfg: BaseModel, path: str | os.PathLike[str], *, header: str | None = None) -> Path:
    """Write `cfg` as YAML to `path` atomically (temp file in the same directory + os.replace).

    The first line is `RESOLVED_MARK`; then each `header` line as one `# ` comment (a line that
    already starts with '#' is not commented twice). Returns the path written.
    """
    from ..io import atomic_write_text

    target = Path(path)
    body = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)
    lines = (re.sub(r"^#+ ?", "", line) for line in (header or "").splitlines())
    comments = resolved_mark(cfg) + "\n" + "".join(f"# {line}".rstrip() + "\n" for line in lines)
    atomic_write_text(target, comments + body)
    return target


def resolved_mark(cfg: BaseModel) -> str:
    """`RESOLVED_MARK` and the `DEFAULTS_FROM_MODEL` settings of `cfg` that were set ('none' for none)."""
    explicit: list[str] = []

    def walk(model: BaseModel, prefix: str) -> None:
        for name in type(model).model_fields:
            value, key = getattr(model, name), prefix + name
            if isinstance(value, BaseModel):
                walk(value, key + ".")
            elif name in model.model_fields_set and key.startswith(DEFAULTS_FROM_MODEL):
                explicit.append(key)

    walk(cfg, "")
    return f"{RESOLVED_MARK} {' '.join(explicit) or 'none'}"


def _field_default(cls: type[BaseModel], dotted: str) -> Any:
    """The schema default of the leaf `dotted` of `cls` (`_NO_DEFAULT` for a required or unknown one)."""
    from pydantic_core import PydanticUndefined

    model: Any = cls
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return _NO_DEFAULT
        if i == len(parts) - 1:
            if field.default_factory is not None:
                return field.default_factory()
            return _NO_DEFAULT if field.default is PydanticUndefined else field.default
        members = typing.get_args(field.annotation) or (field.annotation,)
        model = next((m for m in members if isinstance(m, type) and issubclass(m, BaseModel)), None)
        if model is None:
            return _NO_DEFAULT
    return _NO_DEFAULT


_NO_DEFAULT = object()


def _plain(value: Any) -> Any:
    value = getattr(value, "value", value)  # enums as their values
    return list(value) if isinstance(value, tuple) else value


def _unset_defaults(cls: type[BaseModel], raw: dict[str, Any], explicit: set[str]) -> dict[str, Any]:
    """`raw` (a resolved config read back) without the `DEFAULTS_FROM_MODEL` leaves not in `explicit`
    that hold their defaults, so that they are unset again as in the run that wrote it."""
    out = yaml.safe_load(yaml.safe_dump(raw))  # a deep copy of plain data
    for key, value in flatten_dotted(raw).items():
        if not key.startswith(DEFAULTS_FROM_MODEL) or key in explicit:
            continue
        default = _field_default(cls, key)
        if default is not _NO_DEFAULT and _plain(default) == _plain(value):
            parent = _get(out, key.rpartition(".")[0]) if "." in key else out
            if isinstance(parent, dict):
                parent.pop(key.rpartition(".")[2], None)
    return out


def diff_configs(old: BaseModel, new: BaseModel) -> list[tuple[str, Any, Any]]:
    """`(dotted key, old value, new value)` for every leaf that differs, e.g. to check a resume."""
    a, b = flatten_dotted(config_to_dict(old)), flatten_dotted(config_to_dict(new))
    missing = object()
    return [
        (key, a.get(key), b.get(key))
        for key in sorted(set(a) | set(b))
        if a.get(key, missing) != b.get(key, missing)
    ]


def describe_config(cfg: BaseModel) -> str:
    """The resolved config as YAML, each key preceded by its description as a `# ` comment (what
    `--print-config` shows): a recipe that replays the run and documents itself (`RESOLVED_MARK` first)."""
    lines: list[str] = []

    def emit(model: BaseModel, indent: int) -> None:
        pad = "  " * indent
        for name, info in type(model).model_fields.items():
            key = info.alias or name
            doc = " ".join((info.description or "").split())
            if doc:
                lines.append(f"{pad}# {doc}")
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                lines.append(f"{pad}{key}:")
                emit(value, indent + 1)
                continue
            plain = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            dumped = yaml.safe_dump({key: list(plain) if isinstance(plain, tuple) else plain}, sort_keys=False,
                                    default_flow_style=True, allow_unicode=True, width=10_000).strip()
            lines.append(f"{pad}{dumped.removeprefix('{').removesuffix('}')}")

    emit(cfg, 0)
    return resolved_mark(cfg) + "\n" + "\n".join(lines) + "\n"
