"""Language-modelling text: WikiText-2 from local files or the hub, or any plain-text file.

A language-modelling task (`LM_TASKS`, today only `wikitext2`) scores a causal LM's perplexity on
one long running text per split. `load_lm_text` returns that text as one string, layout kept
(newlines included), so that the tokenizer reads it as the model reads prose. Sources, in order:

1. `data_dir` (the `--data-dir` flag), else a `source` path: a plain-text file (used for every
   split), or a folder holding `wikitext-2/<split>.txt` or `<split>.txt` (also the WikiText
   release names `wiki.<split>.tokens` / `wiki.<split>.raw`);
2. the hub (`Salesforce/wikitext`, config `wikitext-2-raw-v1`), when `source` is the task's name
   or unset, only when not marked offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and the hub
   answers one quick probe, so offline runs fail at once with a hint naming the local option.

Split names are WikiText's file stems, `test` (default), `valid`, `train`; `validation` and `dev`
are accepted for `valid`. The shared files (`../shared/data/text/wikitext-2/{valid,test}.txt`) are
the *tokenised* v1 release (words split from punctuation, rare words as `<unk>`), so perplexities on
them are not comparable with papers that score the raw text; the hub's raw-v1 text is the usual one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError
from .text import SHARED_DATA_DIR, read_utf8
from ..hub import DATASET_OFFLINE_VARS, hub_reachable, offline_flag


@dataclass(frozen=True)
class LmTask:
    name: str
    hub_id: str
    hub_config: str
    local_dir: str
    """The folder name of the task's files under a data root (`<root>/wikitext-2/test.txt`)."""
    spellings: tuple[str, ...]
    """Other names users type for the task (lower case)."""


LM_TASKS = {
    "wikitext2": LmTask("wikitext2", "Salesforce/wikitext", "wikitext-2-raw-v1", "wikitext-2",
                        ("wikitext-2", "wikitext_2", "wikitext-2-raw-v1", "wikitext-2-v1", "wiki2")),
}
LM_SPLITS = ("test", "valid", "train")
"""Split names, as WikiText's files are named; the first is the default."""
#: The split the final evaluation of a training run scores (eval's own default is test).
TRAINING_EVAL_SPLIT = "valid"
_SPLIT_ALIASES = {"validation": "valid", "dev": "valid", "val": "valid"}
_HUB_SPLITS = {"test": "test", "valid": "validation", "train": "train"}
#: The shared text beside a checkout, named in offline hints.
SHARED_TEXT_DIR = SHARED_DATA_DIR / "text"


def normalize_lm_task(name: str) -> str | None:
    """'WikiText-2', 'wikitext2', 'wikitext-2-raw-v1' -> 'wikitext2'; None for anything else (a
    file path is never a task name)."""
    key = name.strip().lower()
    for task in LM_TASKS.values():
        if key == task.name or key in task.spellings:
            return task.name
    return None


def normalize_lm_split(split: str) -> str | None:
    """'test', 'valid' (or 'validation', 'dev'), 'train'; None for another name."""
    key = split.strip().lower()
    key = _SPLIT_ALIASES.get(key, key)
    return key if key in LM_SPLITS else None


def get_lm_task(name: str) -> LmTask:
    task = normalize_lm_task(name)
    if task is None:
        raise ConfigError(f"unknown language-modelling task '{name}'",
                          details=[f"valid tasks: {', '.join(LM_TASKS)}"])
    return LM_TASKS[task]


def has_split_layout(folder: Path, task: str) -> bool:
    """Whether `folder` holds any split of `task` laid out as `local_text_path` reads it
    (wikitext-2/<split>.txt, <split>.txt, wiki.<split>.tokens, ...)."""
    spec = get_lm_task(task)
    return any(f.is_file() for split in LM_SPLITS for f in _split_files(Path(folder), spec, split))


def _split_files(folder: Path, task: LmTask, split: str) -> list[Path]:
    names = [f"{split}.txt", f"wiki.{split}.tokens", f"wiki.{split}.raw"]
    return [folder / task.local_dir / n for n in names] + [folder / n for n in names]


def local_text_path(task: str, split: str, *, source: str | None = None, data_dir: str | None = None,
                    source_key: str = "data.source") -> Path | None:
    """The local file that holds `split` of `task`, or None when the text comes from the hub.

    `data_dir` beats `source`; either may be a text file (every split reads it) or a folder (see the
    module docstring). A path that does not exist, or a folder without the split, is a DataError
    naming `--data-dir` or `source_key` (the setting that gave `source`)."""
    spec = get_lm_task(task)
    for where, flag in ((data_dir, "--data-dir"), (source, source_key)):
        if where is None or (flag == source_key and normalize_lm_task(where) is not None):
            continue
        path = Path(where).expanduser()
        if path.is_file():
            return path
        if not path.is_dir():
            raise DataError(f"{flag} '{where}' does not exist",
                            hint="give a plain-text file, or a folder holding wikitext-2/<split>.txt "
                            f"(e.g. --data-dir {SHARED_TEXT_DIR})")
        candidates = _split_files(path, spec, split)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise DataError(f"no {split} text in '{where}'",
                            details=["looked for " + ", ".join(str(c.relative_to(path)) for c in candidates)],
                            hint=f"lay the folder out as {spec.local_dir}/{split}.txt, or give the text file itself")
        return found
    return None


def _read(path: Path) -> str:
    text = read_utf8(path)
    if not text.strip():
        raise DataError(f"'{path}' holds no text", hint="give a file with running text (a few thousand tokens)")
    return text


def _offline_hint(spec: LmTask) -> str:
    shared = SHARED_TEXT_DIR / spec.local_dir
    local = (f"--data-dir {SHARED_TEXT_DIR} (the shared {spec.local_dir}/valid.txt and test.txt)" if shared.is_dir()
             else f"--data-dir DIR holding {spec.local_dir}/<split>.txt")
    return f"give a local copy: {local}, or any plain-text file with --data-dir FILE (or -s data.source=FILE)"


def load_lm_text(task: str, split: str = "test", *, source: str | None = None,
                 data_dir: str | None = None, source_key: str = "data.source") -> tuple[str, str]:
    """(the text of `split`, where it came from: a file path or '<hub id> (<split>)')."""
    spec = get_lm_task(task)
    name = normalize_lm_split(split)
    if name is None:
        raise ConfigError(f"{spec.name} has no split '{split}'", details=[f"splits: {', '.join(LM_SPLITS)}"])
    path = local_text_path(spec.name, name, source=source, data_dir=data_dir, source_key=source_key)
    if path is not None:
        return _read(path), str(path)
    flag = offline_flag(DATASET_OFFLINE_VARS)
    if flag:
        raise DataError(f"no local text for '{spec.name}', and the hub is offline ({flag})", hint=_offline_hint(spec))
    if not hub_reachable():
        raise DataError(f"no local text for '{spec.name}', and the hub cannot be reached", hint=_offline_hint(spec))
    import datasets

    where = f"{spec.hub_id} {spec.hub_config} ({_HUB_SPLITS[name]})"
    try:
        rows = datasets.load_dataset(spec.hub_id, spec.hub_config, split=_HUB_SPLITS[name])
    except Exception as exc:  # the hub client raises many kinds; all mean "not available"
        raise DataError(f"could not load {where} from the hub", details=[f"{type(exc).__name__}: {exc}"],
                        hint=_offline_hint(spec)) from exc
    text = "".join(rows["text"])  # each row is one line of the file, its newline included
    if not text.strip():
        raise DataError(f"{where} holds no text")
    return text, where


__all__ = ["LM_SPLITS", "LM_TASKS", "LmTask", "get_lm_task", "load_lm_text", "local_text_path",
           "normalize_lm_split", "normalize_lm_task"]
