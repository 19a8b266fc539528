"""GLUE: the task registry, loading from local TSVs or the hub, and tokenisation.

Design:

- `GLUE_TASKS` describes the eight GLUE tasks once: directory and file names of the standard
  GLUE layout (as written by GLUE's download_glue_data.py), TSV columns, label names in the
  order of nyu-mll/glue on the hub (so label ids agree with hub-trained checkpoints), the dev
  splits and the metrics. Everything else reads from it.
- Every split comes back with the same columns, whichever the task or source:
  `text_a` (str), `text_b` (str, or None for the single-sentence tasks CoLA and SST-2),
  `label` (`ClassLabel` int ids; float32 score for STS-B) and `idx` (the data row's index in the file, from 0: header and blank lines not counted).
- Split names are the GLUE file stems: `train`, `dev`, and for MNLI `dev_matched` and
  `dev_mismatched`. The hub's names (`validation`, `validation_matched`, ...) are accepted
  as aliases. Test splits are not loaded: GLUE's test labels are not public.
- Local files win: `data_dir`, else $GLUE_DIR. Either may be the GLUE root (holding SST-2/,
  MRPC/, ...) or one task's directory. Only when neither is given is the hub tried, and only
  when it is not marked offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and answers a single
  3-second connection probe, so that offline runs fail at once instead of waiting on retries.
- TSVs are read with pandas (`sep="\\t"`, `quoting=csv.QUOTE_NONE` because GLUE text holds
  bare `"`, `keep_default_na=False` so "null" stays text, `encoding="utf-8-sig"` for MRPC's
  BOM, `dtype=str`). CoLA has no header row.
- Problems are `DataError`s (exit 4) naming the file, the columns found or the bad lines; an
  unknown task is a `ConfigError` (exit 2) listing the valid ones. pandas and datasets are
  imported lazily so that importing the registry (e.g. by the config schema) stays cheap.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from spikelm_core.errors import ConfigError, DataError, first_details
from spikelm_core.log import get_logger, warn_once
from spikelm_core.hub import DATASET_OFFLINE_VARS, hub_reachable, offline_flag

if TYPE_CHECKING:  # pragma: no cover
    import datasets

log = get_logger("data")

__all__ = [
    "GlueTask",
    "GLUE_TASKS",
    "GLUE_TASK_NAMES",
    "get_glue_task",
    "normalize_glue_task",
    "normalize_glue_split",
    "infer_glue_task",
    "glue_data_dir",
    "find_glue_task_dir",
    "load_glue",
    "tokenize_glue",
]

HUB_DATASET_ID = "nyu-mll/glue"
"""The hub dataset used when no local GLUE directory is given (one config per task)."""

_SPLIT_ALIASES = {
    "validation": "dev",
    "validation_matched": "dev_matched",
    "validation_mismatched": "dev_mismatched",
}


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: where its files are, which columns hold text and label, how to score it."""

    name: str
    """Lower-case task id, as on the hub: 'sst2', 'stsb', ..."""
    dir_name: str
    """Directory in the standard GLUE layout: 'SST-2', 'STS-B', ..."""
    text_columns: tuple[str, ...]
    """TSV column(s) holding the text: one for single-sentence tasks, two for pairs."""
    label_column: str
    """TSV column holding the label."""
    label_names: tuple[str, ...]
    """Class names in label-id order (hub order); empty for the regression task STS-B."""
    label_format: Literal["index", "name", "float"]
    """How GLUE's TSV writes labels: class ids ('0', '1'), class names ('entailment'), or a
    score. For classification, reading accepts both ids and names."""
    files: tuple[tuple[str, str], ...]
    """(split, file name) pairs, training split first."""
    metrics: tuple[str, ...]
    """Metric names as `glue_metrics` returns them; the first is the model-selection key."""
    hub_text_columns: tuple[str, ...]
    """Text column(s) of the task's config in nyu-mll/glue."""
    column_names: tuple[str, ...] | None = None
    """Column names of a headerless TSV (CoLA); None = the file has a header row."""

    @property
    def num_labels(self) -> int:
        """Output size of the classifier: number of classes, or 1 for regression."""
        return len(self.label_names) if self.label_names else 1

    @property
    def is_regression(self) -> bool:
        return self.label_format == "float"

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(split for split, _ in self.files)

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """The labelled dev split(s): ('dev',) or, for MNLI, ('dev_matched', 'dev_mismatched')."""
        return tuple(split for split in self.split_names if split != "train")

    @property
    def primary_metric(self) -> str:
        """Model-selection key: matthews_correlation (CoLA), pearson (STS-B), else accuracy."""
        return self.metrics[0]

    @property
    def id2label(self) -> dict[int, str]:
        """The task's labels by id; regression: {0: 'score'} (what eval compares with a model's labels;
        a regression model's config keeps its own, e.g. transformers' {0: 'LABEL_0'})."""
        names = self.label_names or ("score",)
        return dict(enumerate(names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in self.id2label.items()}

    def file_for(self, split: str) -> str:
        return dict(self.files)[split]


_TRAIN_DEV = (("train", "train.tsv"), ("dev", "dev.tsv"))

GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask(
            name="cola",
            dir_name="CoLA",
            text_columns=("sentence",),
            label_column="label",
            label_names=("unacceptable", "acceptable"),
            label_format="index",
            files=_TRAIN_DEV,
            metrics=("matthews_correlation",),
            hub_text_columns=("sentence",),
            column_names=("source", "label", "orig_label", "sentence"),
        ),
        GlueTask(
            name="sst2",
            dir_name="SST-2",
            text_columns=("sentence",),
            label_column="label",
            label_names=("negative", "positive"),
            label_format="index",
            files=_TRAIN_DEV,
            metrics=("accuracy",),
            hub_text_columns=("sentence",),
        ),
        GlueTask(
            name="mrpc",
            dir_name="MRPC",
            text_columns=("#1 String", "#2 String"),
            label_column="Quality",
            label_names=("not_equivalent", "equivalent"),
            label_format="index",
            files=_TRAIN_DEV,
            metrics=("accuracy", "f1"),
            hub_text_columns=("sentence1", "sentence2"),
        ),
        GlueTask(
            name="qqp",
            dir_name="QQP",
            text_columns=("question1", "question2"),
            label_column="is_duplicate",
            label_names=("not_duplicate", "duplicate"),
            label_format="index",
            files=_TRAIN_DEV,
            metrics=("accuracy", "f1"),
            hub_text_columns=("question1", "question2"),
        ),
        GlueTask(
            name="stsb",
            dir_name="STS-B",
            text_columns=("sentence1", "sentence2"),
            label_column="score",
            label_names=(),
            label_format="float",
            files=_TRAIN_DEV,
            metrics=("pearson", "spearmanr"),
            hub_text_columns=("sentence1", "sentence2"),
        ),
        GlueTask(
            name="mnli",
            dir_name="MNLI",
            text_columns=("sentence1", "sentence2"),
            label_column="gold_label",
            label_names=("entailment", "neutral", "contradiction"),
            label_format="name",
            files=(
                ("train", "train.tsv"),
                ("dev_matched", "dev_matched.tsv"),
                ("dev_mismatched", "dev_mismatched.tsv"),
            ),
            metrics=("accuracy",),
            hub_text_columns=("premise", "hypothesis"),
        ),
        GlueTask(
            name="qnli",
            dir_name="QNLI",
            text_columns=("question", "sentence"),
            label_column="label",
            label_names=("entailment", "not_entailment"),
            label_format="name",
            files=_TRAIN_DEV,
            metrics=("accuracy",),
            hub_text_columns=("question", "sentence"),
        ),
        GlueTask(
            name="rte",
            dir_name="RTE",
            text_columns=("sentence1", "sentence2"),
            label_column="label",
            label_names=("entailment", "not_entailment"),
            label_format="name",
            files=_TRAIN_DEV,
            metrics=("accuracy",),
            hub_text_columns=("sentence1", "sentence2"),
        ),
    )
}
"""Task id -> `GlueTask`, for all eight GLUE tasks (WNLI and AX are not included)."""

GLUE_TASK_NAMES: tuple[str, ...] = tuple(GLUE_TASKS)

# Spellings people use for the MNLI dev variants; all score as the task 'mnli'.
_TASK_ALIASES = {"mnlim": "mnli", "mnlimm": "mnli", "mnlimatched": "mnli", "mnlimismatched": "mnli"}


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def normalize_glue_task(name: str) -> str | None:
    """'SST-2', 'sst_2', 'glue/sst2', 'STS-B', 'mnli-mm' -> the task id; None if not a GLUE task."""
    text = name.strip()
    if text.lower().startswith("glue/"):
        text = text[len("glue/"):]
    key = _squash(text)
    key = _TASK_ALIASES.get(key, key)
    return key if key in GLUE_TASKS else None


def get_glue_task(name: str) -> GlueTask:
    """The registry entry for `name` (any spelling `normalize_glue_task` accepts).

    Raises ConfigError listing the valid tasks (and the closest one) when it is unknown.
    """
    task = normalize_glue_task(name)
    if task is None and (why := unsupported_glue_task(name)):
        raise ConfigError(why, details=[f"valid tasks: {', '.join(GLUE_TASK_NAMES)}"])
    if task is None:
        close = difflib.get_close_matches(_squash(name), GLUE_TASK_NAMES, n=1, cutoff=0.6)
        raise ConfigError(
            f"unknown GLUE task {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
            details=[f"valid tasks: {', '.join(GLUE_TASK_NAMES)}"],
        )
    return GLUE_TASKS[task]


def normalize_glue_split(task: str, split: str) -> str | None:
    """The canonical split name ('validation' -> 'dev'), or None if `task` has no such split."""
    spec = get_glue_task(task)
    canonical = _SPLIT_ALIASES.get(split.strip().lower(), split.strip().lower())
    return canonical if canonical in spec.split_names else None


def infer_glue_task(source: str | None) -> str | None:
    """The GLUE task a `data.source` names, or None when it names none.

    'glue/<task>' must name a real task (ValueError otherwise). For a path, the last component
    is matched against the task ids and GLUE directory names ('../glue/SST-2' -> 'sst2'); a GLUE
    root or any other directory gives None. Pure string work: nothing is read from disk.
    """
    if source is None:
        return None
    text = source.strip()
    if text.lower().startswith("glue/"):
        task = normalize_glue_task(text)
        if task is None:
            raise ValueError(f"unknown GLUE task in {source!r}; choose from {', '.join(GLUE_TASK_NAMES)}")
        return task
    leaf = Path(text.rstrip("/\\")).name
    key = _squash(leaf)
    return key if key in GLUE_TASKS else None


def glue_data_dir(source: str | None, data_dir: str | None) -> str | None:
    """The local directory to read for a `data.source`/`data.data_dir` pair.

    A path `source` is used as is (a task directory or a GLUE root); for 'glue/<task>' or no
    source, `data_dir` (None lets `load_glue` fall back to $GLUE_DIR, then the hub).
    """
    if source is not None and not source.strip().lower().startswith("glue/"):
        return source
    return data_dir


# -------------------------------------------------------------------------- locating files


def _layout(spec: GlueTask) -> str:
    files = ",".join(name for _, name in spec.files)
    return f"expected the standard GLUE layout <GLUE_DIR>/{spec.dir_name}/{{{files}}}"


def _layout_hint(spec: GlueTask) -> str:
    return (
        f"{_layout(spec)}; pass --data-dir (data.data_dir), set GLUE_DIR, "
        f"or point data.source at the {spec.dir_name} directory (--data-dir replaces a recipe's data.source; "
        "a data.source path beats the recipe key data.data_dir; either beats GLUE_DIR)"
    )


#: GLUE's other folders (squashed name -> folder), which spikelm neither trains on nor scores, as the paper
UNSUPPORTED_GLUE = {"wnli": "WNLI", "ax": "diagnostic (AX)", "diagnostic": "diagnostic (AX)"}


def unsupported_glue_task(name: str) -> str | None:
    """Why GLUE task `name` is not one spikelm takes (WNLI, the diagnostic set), or None."""
    folder = UNSUPPORTED_GLUE.get(_squash(name.removeprefix("glue/")))
    if folder is None:
        return None
    return (f"GLUE's {folder} is not supported: spikelm trains and scores the eight tasks the paper reports "
            "(BERT and SpikeLM leave WNLI out; the diagnostic set has no training data)")


def find_glue_task_dir(task: str, data_dir: str | os.PathLike[str]) -> Path:
    """The directory holding `task`'s TSVs: `data_dir` itself or its `<dir_name>` child.

    `data_dir` counts as the task directory when its name is the task's (SST-2, sst2, ...), unless it
    holds none of the task's files but a task folder (sst2/SST-2/: that folder), or when it directly
    holds one of the task's files and has no `<dir_name>` child. A child named after the task is read
    by the same rules (GLUE/sst2/SST-2/: GLUE/sst2/SST-2).
    """
    spec = get_glue_task(task)
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise DataError(f"GLUE data directory not found: {root}", hint=_layout_hint(spec))
    if not root.is_dir():
        raise DataError(f"GLUE data path is not a directory: {root}", hint=_layout_hint(spec))
    children = [p for p in root.iterdir() if p.is_dir() and _squash(p.name) == spec.name]
    exact = [p for p in children if p.name == spec.dir_name]
    if _squash(root.name) == spec.name and (exact or children) and not any(
            (root / name).is_file() for _, name in spec.files):
        return (exact or sorted(children))[0]  # a folder named after the task holding its folder: sst2/SST-2/
    if _squash(root.name) == spec.name:
        return root
    if exact or children:  # that folder, by the rules above (GLUE/stsb/STS-B/: STS-B)
        return find_glue_task_dir(task, (exact or sorted(children))[0])
    other = _squash(root.name)
    if other in GLUE_TASKS:
        raise DataError(
            f"{root} is the {GLUE_TASKS[other].dir_name} directory, not {spec.dir_name}",
            hint=_layout_hint(spec),
        )
    if other in UNSUPPORTED_GLUE:  # WNLI's ids mean the opposite of RTE's: never read one as the other
        raise DataError(f"{root} is the {UNSUPPORTED_GLUE[other]} directory, which spikelm does not score, not "
                        f"{spec.dir_name}", hint=_layout_hint(spec))
    if any((root / name).is_file() for _, name in spec.files):
        return root
    raise DataError(
        f"no {spec.dir_name} data in {root}",
        details=[f"looked for {root / spec.dir_name}/ and {root / spec.file_for('train')}"],
        hint=_layout_hint(spec),
    )


# ------------------------------------------------------------------------------- reading


def _features(spec: GlueTask) -> datasets.Features:
    import datasets

    label = (
        datasets.Value("float32") if spec.is_regression else datasets.ClassLabel(names=list(spec.label_names))
    )
    return datasets.Features(
        {
            "text_a": datasets.Value("string"),
            "text_b": datasets.Value("string"),
            "label": label,
            "idx": datasets.Value("int64"),
        }
    )


def _parse_label(spec: GlueTask, raw: str) -> int | float | None:
    """One TSV label -> id or score; None when it cannot be read."""
    text = raw.strip()
    if spec.label_format == "float":
        try:
            value = float(text)
        except ValueError:
            return None
        return value if math.isfinite(value) else None
    if text in spec.label_names:
        return spec.label_names.index(text)
    if text.isascii() and text.isdigit() and int(text) < len(spec.label_names):
        return int(text)  # class ids are accepted for every classification task
    return None


def _read_tsv(spec: GlueTask, path: Path) -> Any:
    import pandas as pd

    try:
        with warnings.catch_warnings():  # a first row longer than the header: `_scan_rows` names its line
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                sep="\t",
                quoting=csv.QUOTE_NONE,
                keep_default_na=False,
                dtype=str,
                encoding="utf-8-sig",
                header=None if spec.column_names else 0,
                names=list(spec.column_names) if spec.column_names else None,
                index_col=False,
            )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty", hint=_layout_hint(spec)) from None
    except pd.errors.ParserError as exc:
        raise DataError(
            f"cannot parse {path} as a tab-separated GLUE file",
            details=[str(exc).strip()],
            hint=_layout_hint(spec),
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text", details=[str(exc)]) from None
    except OSError as exc:  # unreadable input: without this, the CLI reports EACCES as "cannot write"
        raise DataError(f"cannot read {path}: {exc.strerror or exc}",
                        hint="check the file's permissions (and that it is a regular file)") from None
    return frame


def _scan_rows(spec: GlueTask, path: Path, positions: list[int], columns: int, first_line: int) -> list[int]:
    """The line number of each data row of `path` (pandas skips blank lines), after refusing, naming
    their lines, rows that lack a field the task reads (at `positions`: pandas reads a missing field as
    an empty one, so such a row would be scored as an empty sentence) and rows with more fields than
    the file's `columns` (a tab inside a field: GLUE files are not quoted; pandas would drop the extra
    fields of a first row without a word). Empty fields at a row's end do not count."""
    needed = max(positions) + 1
    short, long, lines = [], [], []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for number, line in enumerate(fh, start=1):
            if number < first_line or not line.replace("\t", "x").strip():  # pandas skips blank lines, not tabs
                continue
            body = line.rstrip("\r\n")
            lines.append(number)
            fields, filled = body.count("\t") + 1, body.rstrip("\t").count("\t") + 1  # filled: no empty ones at the end
            if fields < needed:
                short.append(f"line {number}: {fields} field(s), the task reads field {needed}")
            elif filled > columns:
                long.append(f"line {number}: {filled} fields, the file has {columns} columns")
    layout = (", ".join(spec.column_names) + " (tab-separated, no header)" if spec.column_names
              else "every column of the header line (tab-separated)")
    if short:
        raise DataError(f"{path}: {len(short)} row(s) with too few tab-separated fields",
                        details=first_details(short),
                        hint=f"{spec.name} rows hold {layout}; fix or remove these rows")
    if long:
        raise DataError(f"{path}: {len(long)} row(s) with more tab-separated fields than the file has columns",
                        details=first_details(long),
                        hint=f"{spec.name} rows hold {layout}; GLUE files are not quoted, so a tab inside a "
                        "sentence splits it: replace it with a space")
    return lines


def _read_split(spec: GlueTask, task_dir: Path, split: str) -> datasets.Dataset:
    import datasets

    path = task_dir / spec.file_for(split)
    if not path.is_file():
        present = sorted(p.name for p in task_dir.iterdir() if p.is_file())
        other = [name for name in spec.eval_splits if name != split and (task_dir / spec.file_for(name)).is_file()]
        raise DataError(
            f"missing {split} file for {spec.name}: {path}",
            details=[f"files in {task_dir}: {', '.join(present) or '(none)'}"],
            hint=_layout_hint(spec) + (f"; eval scores the other dev set alone with -s 'splits=[{other[0]}]'"
                                       if split in spec.eval_splits and other else ""),
        )
    frame = _read_tsv(spec, path)
    wanted = [*spec.text_columns, spec.label_column]
    missing = [col for col in wanted if col not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}",
            details=[f"columns found: {', '.join(map(repr, map(str, frame.columns)))}"],
            hint=("CoLA files have no header row: sentence source, label, original label, sentence"
                  if spec.column_names else
                  f"the first line of a {spec.name} file is its header, naming at least "
                  + ", ".join(wanted) + " (tab-separated)" + (" (a file without its labels, such as GLUE's "
                  "test.tsv, cannot be scored)" if spec.label_column in missing else "")),
        )
    first_line = 1 if spec.column_names else 2
    lines = _scan_rows(spec, path, [list(frame.columns).index(c) for c in wanted], len(frame.columns), first_line)
    line_of = (lambda row: lines[row]) if len(lines) == len(frame) else (lambda row: row + first_line)  # noqa: E731
    frame = frame.fillna("")
    labels, bad, off_scale = [], [], []
    for row, raw in enumerate(frame[spec.label_column].tolist()):
        value = _parse_label(spec, raw)
        if value is None:
            bad.append(f"line {line_of(row)}: {spec.label_column}={raw!r}")
        elif spec.is_regression and not 0.0 <= value <= 5.0:
            off_scale.append(f"line {line_of(row)}: {value:g}")
        labels.append(value)
    if off_scale and not bad:  # once per version of the file: a run checks it, then reads it
        warn_once(log, ("stsb-scale", str(path.resolve()), path.stat().st_mtime),
                  "%s: %d score(s) outside STS-B's 0-5 scale (%s): they are trained and scored as they are",
                  path, len(off_scale), "; ".join(off_scale[:3]) + ("; ..." if len(off_scale) > 3 else ""))
    if bad:
        expected = "a number" if spec.is_regression else " or ".join(map(repr, spec.label_names))
        ids = "" if spec.is_regression else f" (or ids 0-{spec.num_labels - 1})"
        raise DataError(
            f"{path}: {len(bad)} row(s) with an unreadable label",
            details=first_details(bad),
            hint=f"{spec.name} labels must be {expected}{ids}"
            + ("; CoLA files have no header row (drop the first line)"
               if spec.column_names and bad and bad[0].startswith("line 1:") else ""),
        )
    text_a = frame[spec.text_columns[0]].tolist()
    text_b = frame[spec.text_columns[1]].tolist() if spec.is_pair else [None] * len(frame)
    columns = {"text_a": text_a, "text_b": text_b, "label": labels, "idx": list(range(len(frame)))}
    return datasets.Dataset.from_dict(columns, features=_features(spec), split=split)


# -------------------------------------------------------------------------------- the hub


def _hub_offline() -> str | None:
    return offline_flag(DATASET_OFFLINE_VARS)


_hub_reachable = hub_reachable  # module attribute, so tests can stub the probe


def _load_from_hub(spec: GlueTask, splits: Sequence[str]) -> dict[str, datasets.Dataset]:
    import datasets

    hint = (
        f"give a local copy: --data-dir DIR (data.data_dir), GLUE_DIR=DIR, or data.source=DIR/{spec.dir_name}; "
        + _layout(spec)
    )
    offline_var = _hub_offline()
    if offline_var:
        raise DataError(
            f"no local data for GLUE task '{spec.name}', and the hub is offline ({offline_var})",
            hint=hint,
        )
    if not _hub_reachable():
        raise DataError(f"no local data for GLUE task '{spec.name}', and the hub cannot be reached", hint=hint)
    try:
        hub = datasets.load_dataset(HUB_DATASET_ID, spec.name)
    except Exception as exc:  # the hub client raises many kinds; all mean "not available"
        raise DataError(
            f"could not load {HUB_DATASET_ID} '{spec.name}' from the hub",
            details=[f"{type(exc).__name__}: {exc}"],
            hint=hint,
        ) from exc
    out = {}
    reverse = {v: k for k, v in _SPLIT_ALIASES.items()}
    for split in splits:
        hub_split = reverse.get(split, split)
        if hub_split not in hub:
            raise DataError(
                f"{HUB_DATASET_ID} '{spec.name}' has no split {hub_split!r}",
                details=[f"splits: {', '.join(hub)}"],
            )
        table = hub[hub_split]
        missing = [c for c in (*spec.hub_text_columns, "label") if c not in table.column_names]
        if missing:
            raise DataError(
                f"{HUB_DATASET_ID} '{spec.name}' ({hub_split}) lacks column(s) {', '.join(map(repr, missing))}",
                details=[f"columns found: {', '.join(table.column_names)}"],
            )
        n = len(table)
        columns = {
            "text_a": table[spec.hub_text_columns[0]],
            "text_b": table[spec.hub_text_columns[1]] if spec.is_pair else [None] * n,
            "label": table["label"],
            "idx": table["idx"] if "idx" in table.column_names else list(range(n)),
        }
        out[split] = datasets.Dataset.from_dict(
            {k: list(v) for k, v in columns.items()}, features=_features(spec), split=split
        )
    return out


# ------------------------------------------------------------------------------ public API


def load_glue(
    task: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    split: str | Sequence[str] | None = None,
    subset: int | None = None,
) -> datasets.Dataset | datasets.DatasetDict:
    """Load GLUE `task` with uniform columns text_a, text_b, label, idx.

    data_dir: the GLUE root or the task's directory; None = $GLUE_DIR, else the hub (online only).
    split: one split name -> a `Dataset`; a list, or None for every split of the task
        (train + dev split(s)) -> a `DatasetDict`. Hub names such as 'validation' are accepted.
    subset: keep only the first N rows of each split (deterministic).
    """
    spec = get_glue_task(task)
    names = [split] if isinstance(split, str) else list(split) if split is not None else list(spec.split_names)
    canonical = []
    for name in names:
        value = normalize_glue_split(spec.name, name)
        if value is None:
            raise ConfigError(
                f"GLUE task '{spec.name}' has no split {name!r}",
                details=[f"splits: {', '.join(spec.split_names)} (test labels are not public)"],
            )
        canonical.append(value)
    if subset is not None and subset < 1:
        raise ConfigError(f"subset must be >= 1, got {subset}")

    local = data_dir if data_dir is not None else (os.environ.get("GLUE_DIR") or None)
    if local is not None:
        try:
            task_dir = find_glue_task_dir(spec.name, local)
        except DataError as exc:
            if data_dir is None:  # say where the path came from
                exc.message += " (from $GLUE_DIR)"
            raise
        loaded = {name: _read_split(spec, task_dir, name) for name in canonical}
    else:
        loaded = _load_from_hub(spec, canonical)

    if subset is not None:
        loaded = {k: ds.select(range(min(subset, len(ds)))) for k, ds in loaded.items()}
    if isinstance(split, str):
        return loaded[canonical[0]]
    import datasets

    return datasets.DatasetDict(loaded)


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Silence datasets' progress bars for one call, restoring the caller's setting after."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def tokenize_glue(
    dataset: datasets.Dataset | datasets.DatasetDict,
    tokenizer: Any,
    max_length: int = 128,
) -> datasets.Dataset | datasets.DatasetDict:
    """Tokenise a `load_glue` result into input_ids, attention_mask, token_type_ids (when the
    tokenizer makes them) and labels; the text columns are dropped.

    Truncates to `max_length` without padding: pad per batch with a collator such as
    `DataCollatorWithPadding`. Pairs are encoded as (text_a, text_b); rows whose text_b is None
    as single sentences.
    """

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        firsts, seconds = batch["text_a"], batch["text_b"]
        if all(b is None for b in seconds):
            enc = tokenizer(firsts, truncation=True, max_length=max_length)
        else:
            enc = tokenizer(firsts, [b or "" for b in seconds], truncation=True, max_length=max_length)
        out = {key: list(value) for key, value in enc.items()}
        out["labels"] = batch["label"]
        return out

    import datasets

    columns = dataset.column_names
    remove = sorted({c for cols in columns.values() for c in cols}) if isinstance(columns, dict) else columns
    features = next(iter(dataset.values())).features if isinstance(dataset, dict) else dataset.features
    with quiet_progress():
        out = dataset.map(encode, batched=True, remove_columns=remove)
        if isinstance(features.get("label"), datasets.Value):  # regression: keep float32 targets
            out = out.cast_column("labels", datasets.Value("float32"))
    return out
