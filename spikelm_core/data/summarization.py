"""Summarisation data: XSUM and CNN/DailyMail from local jsonl/csv files or the hub.

Every split comes back as a `datasets.Dataset` with two string columns, `document` and `summary`
(plus whatever else the file holds). Sources, in order:

1. `train_file` / `validation_file`: explicit jsonl, json or csv files;
2. `data_dir`: a directory holding `<split>.jsonl` (or `.json`, `.csv`) per split (the test split
   is read from there alone: `<data_dir>/test.jsonl`);
3. the hub (`EdinburghNLP/xsum`, `abisee/cnn_dailymail` config 3.0.0), only when not offline and
   the hub answers one quick probe, so offline runs fail at once.

Column names follow each dataset (`document`/`summary` for XSUM, `article`/`highlights` for
CNN/DailyMail); `text_column` / `summary_column` override them (e.g. the SumLLM files, whose
`abstract` column is GPT-4 written, not gold). ROUGE-Lsum splits sentences on newlines, so
summaries keep their line breaks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, DataError
from ..hub import DATASET_OFFLINE_VARS, hub_reachable, offline_flag
from .glue import quiet_progress

if TYPE_CHECKING:  # pragma: no cover
    import datasets


@dataclass(frozen=True)
class SummarizationTask:
    name: str
    hub_id: str
    hub_config: str | None
    text_column: str
    summary_column: str


SUMMARIZATION_TASKS = {
    "xsum": SummarizationTask("xsum", "EdinburghNLP/xsum", None, "document", "summary"),
    "cnn_dm": SummarizationTask("cnn_dm", "abisee/cnn_dailymail", "3.0.0", "article", "highlights"),
}
SPLITS = ("train", "validation", "test")
_EXTENSIONS = (".jsonl", ".json", ".csv")


def get_summarization_task(name: str) -> SummarizationTask:
    key = name.lower().replace("-", "_").replace("/", "_")
    key = {"cnndm": "cnn_dm", "cnn_dailymail": "cnn_dm"}.get(key, key)
    if key not in SUMMARIZATION_TASKS:
        raise ConfigError(
            f"unknown summarization task '{name}'",
            details=[f"valid tasks: {', '.join(SUMMARIZATION_TASKS)}"],
        )
    return SUMMARIZATION_TASKS[key]


def _read_file(path: Path, split: str) -> datasets.Dataset:
    import datasets

    if not path.is_file():
        raise DataError(f"data file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix not in _EXTENSIONS:
        raise DataError(f"'{path}': expected a .jsonl, .json or .csv file, got '{suffix or 'no suffix'}'")
    builder = "csv" if suffix == ".csv" else "json"
    _check_utf8(path)  # pyarrow's JSON reader takes bad bytes in silently, and they surface later as a traceback
    from datasets.fingerprint import Hasher

    from .text import file_stamp

    # the datasets cache keys a local file by its path and mtime alone: an edit that keeps the mtime
    # (cp -p, rsync -t, a restored backup) would read the old rows back. The config name carries the
    # file's full stamp (inode, size, mtime, ctime), as the text corpus cache does.
    stamp = Hasher.hash([file_stamp(str(path.resolve()))])
    try:
        with quiet_progress():  # "Generating train split" bars: the CLI shows the run's own progress
            ds = datasets.load_dataset(builder, name=f"spikelm-{stamp}", data_files={split: str(path)}, split=split)
    except Exception as exc:  # pyarrow / json parse errors come in many types
        problem = _file_problem(path)
        if problem is not None:
            raise problem from exc
        raise DataError(f"cannot read '{path}': {type(exc).__name__}: {exc}") from exc
    return ds


_ROW_EXAMPLE = '{"document": "...", "summary": "..."}'


_UTF8_BLOCK = 1 << 24


def _check_utf8(path: Path) -> None:
    """DataError naming the first byte of `path` that is not UTF-8 (read in blocks: files may be large)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = start = 0  # start: where the bytes the decoder reads next begin (those it holds from the last block)
    try:
        with path.open("rb") as f:
            while block := f.read(_UTF8_BLOCK):
                start = offset - len(decoder.getstate()[0])
                decoder.decode(block)
                offset += len(block)
            start = offset - len(decoder.getstate()[0])
            decoder.decode(b"", final=True)  # a sequence cut off at the end
    except UnicodeDecodeError as exc:
        raise DataError(f"'{path}' is not UTF-8 text (byte {start + exc.start})", hint="save the file as UTF-8") from exc


def _file_problem(path: Path) -> DataError | None:
    """What is wrong with a data file `datasets` could not read, where we can say it plainly: not
    UTF-8 (`_check_utf8` says so before any read), empty, or (json/jsonl) the first line that is not a
    JSON object. None when none of these."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.strip():
        return DataError(f"'{path}' is empty",
                         hint="give a header row and one row per example" if path.suffix.lower() == ".csv" else
                         f"give one JSON object per line, e.g. {_ROW_EXAMPLE}")
    if path.suffix.lower() == ".csv":
        if sum(1 for line in text.splitlines() if line.strip()) < 2:  # a header alone
            return DataError(f"'{path}' has a header row and no examples", hint="give one row per example under the header")
        return None
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):  # one JSON document: a list of rows
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return DataError(f"'{path}', line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})",
                             hint="fix the JSON there (a list of objects, or one object per line)")
        return None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            return DataError(f"'{path}', line {number}: not valid JSON ({exc.msg}, column {exc.colno})",
                             hint=f"fix or remove that line: each line holds one JSON object, e.g. {_ROW_EXAMPLE}")
        if not isinstance(row, dict):
            return DataError(f"'{path}', line {number}: expected a JSON object, got {type(row).__name__}",
                             hint=f"each line holds one JSON object, e.g. {_ROW_EXAMPLE}")
    return None


def _find_split_file(data_dir: Path, split: str) -> Path | None:
    for ext in _EXTENSIONS:
        p = data_dir / f"{split}{ext}"
        if p.is_file():
            return p
    return None


def _normalise(ds, task: SummarizationTask, text_col: str, summary_col: str, where: str, subset: int | None):
    if text_col == summary_col:
        raise ConfigError(f"the document and the summary are both read from column '{text_col}'",
                          details=[f"data.text_column: {text_col}", f"data.summary_column: {summary_col}"],
                          hint=f"name two columns: task '{task.name}' reads '{task.text_column}' and "
                               f"'{task.summary_column}' unless -s data.text_column=... / -s data.summary_column=... say otherwise")
    missing = [c for c in (text_col, summary_col) if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{where} lacks column(s) {', '.join(repr(c) for c in missing)} for task '{task.name}'",
            details=[f"columns found: {', '.join(ds.column_names)}"],
            hint="name the columns with -s data.text_column=NAME -s data.summary_column=NAME",
        )
    if subset is not None:
        ds = ds.select(range(min(subset, len(ds))))
    for column, what, hint in ((text_col, "document", "a summary needs a document"),
                               (summary_col, "summary", "training and ROUGE need a reference summary for each document")):
        empty = [i for i, d in enumerate(ds[column]) if not isinstance(d, str) or not d.strip()]
        if empty:
            first = ds[column][empty[0]]
            raise DataError(
                f"{where}: {len(empty)} empty or non-text {what}(s) in column '{column}', first at row {empty[0]}"
                f" (counting from 0: {first!r})",
                hint=f"remove or fill those rows; {hint}",
            )
    # the named columns become `document` and `summary` at once (two columns may swap names); a file's own
    # columns of those names that are not read give way
    names = {text_col: "document", summary_col: "summary"}
    ds = ds.remove_columns([c for c in ("document", "summary") if c in ds.column_names and c not in names])
    return ds.rename_columns({column: name for column, name in names.items() if column != name})


def load_summarization(
    task: str,
    split: str = "validation",
    *,
    data_dir: str | Path | None = None,
    files: dict[str, str | Path] | None = None,
    text_column: str | None = None,
    summary_column: str | None = None,
    subset: int | None = None,
) -> datasets.Dataset:
    """One split of a summarisation task with `document` and `summary` columns."""
    spec = get_summarization_task(task)
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'", details=[f"valid splits: {', '.join(SPLITS)}"])
    text_col = text_column or spec.text_column
    summary_col = summary_column or spec.summary_column
    files = {k: v for k, v in (files or {}).items() if v}
    if split in files:
        path = Path(files[split])
        return _normalise(_read_file(path, split), spec, text_col, summary_col, f"'{path}'", subset)
    if data_dir is not None:
        d = Path(data_dir)
        if d.is_file():
            raise DataError(f"--data-dir '{d}' is a file: a summarisation task reads a directory of split files",
                            hint=(f"give the file as -s data.{split}_file={d}, or put it in a directory as {split}.jsonl"
                                  if split != "test" else "put it in a directory as test.jsonl and give that directory"))
        if not d.is_dir():
            raise DataError(f"data directory '{d}' does not exist")
        path = _find_split_file(d, split)
        if path is None:
            raise DataError(
                f"no {split} file in '{d}'",
                details=[f"looked for {', '.join(split + e for e in _EXTENSIONS)}"],
                hint=(f"name it explicitly with -s data.{split}_file=FILE, or lay the directory out as {split}.jsonl"
                      if split in ("train", "validation") else f"put the {split} split in the directory as {split}.jsonl"),
            )
        return _normalise(_read_file(path, split), spec, text_col, summary_col, f"'{path}'", subset)
    hint = ("give local files: --data-dir DIR (train.jsonl, validation.jsonl) or -s data.train_file=FILE -s "
            "data.validation_file=FILE" if split in ("train", "validation") else
            f"give local files: --data-dir DIR holding {split}.jsonl (the {split} split is read from a directory alone)")
    what = f"no local data for '{spec.name}'"
    given = [k for k in files if k != split]
    if given and split in ("train", "validation"):  # the other split's file alone: say which one is missing
        what = f"no local {split} data for '{spec.name}' (data.{given[0]}_file is given, data.{split}_file is not)"
        hint = f"give -s data.{split}_file=FILE, or --data-dir DIR holding train.jsonl and validation.jsonl"
    flag = offline_flag(DATASET_OFFLINE_VARS)
    if flag:
        raise DataError(f"{what}, and the hub is offline ({flag})", hint=hint)
    if not hub_reachable():
        raise DataError(f"{what}, and the hub cannot be reached", hint=hint)
    import datasets

    try:
        ds = datasets.load_dataset(spec.hub_id, spec.hub_config, split=split)
    except Exception as exc:
        raise DataError(f"could not load {spec.hub_id} ({split}) from the hub: {exc}", hint=hint) from exc
    return _normalise(ds, spec, text_col, summary_col, f"{spec.hub_id} ({split})", subset)


def check_lengths(model_max_positions: int | None, *, max_source_length: int | None = None,
                  max_target_length: int | None = None, max_new_tokens: int | None = None) -> None:
    """ConfigError (exit 2) when a source, target or generated length would run past the model's
    learned positions (an encoder's or a decoder's), naming each setting and its limit."""
    if model_max_positions is None:
        return
    asked = (("data.max_length", "source length", max_source_length),
             ("data.max_target_length", "summary (target) length", max_target_length),
             ("generate.max_new_tokens", "generated length", max_new_tokens))
    over = [(key, what, n) for key, what, n in asked if n is not None and n > model_max_positions]
    if over:
        key, what, n = over[0]
        raise ConfigError(
            f"{what} {n} ({key}) exceeds the model's {model_max_positions} positions",
            details=[f"{k}: {m} > {model_max_positions}" for k, _, m in over],
            hint=" ".join(f"-s {k}={model_max_positions}" for k, _, _ in over) + " (or less)",
        )


def tokenize_summarization(dataset, tokenizer, max_source_length: int = 512, max_target_length: int = 64,
                           model_max_positions: int | None = None):
    """`input_ids`, `attention_mask` from `document` and `labels` from `summary` (dynamic padding later)."""
    check_lengths(model_max_positions, max_source_length=max_source_length, max_target_length=max_target_length)

    def encode(batch):
        enc = tokenizer(batch["document"], max_length=max_source_length, truncation=True)
        enc["labels"] = tokenizer(text_target=batch["summary"], max_length=max_target_length, truncation=True)[
            "input_ids"
        ]
        return enc

    with quiet_progress():  # the CLI shows the run's own progress; datasets' bars would interleave with it
        return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc=None)
