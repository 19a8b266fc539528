"""Finding the bundled recipes: `recipes/` at the project root, shipped inside the package as
`spikelm_core/recipes` (a link to it in a checkout, a copy in a wheel or sdist)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from ..errors import ConfigError


def recipes_dir() -> Path | None:
    """$SPIKELM_RECIPES, else the recipes shipped in the package (spikelm_core/recipes), else
    ./recipes; None when none exists. Links are resolved, so a recipe's relative paths are read
    from its real folder."""
    candidates = []
    if os.environ.get("SPIKELM_RECIPES"):
        candidates.append(Path(os.environ["SPIKELM_RECIPES"]))
    candidates.append(Path(__file__).resolve().parents[1] / "recipes")
    candidates.append(Path.cwd() / "recipes")
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return None


def paper_recipe(command: str, task: str) -> Path:
    """recipes/bert_base/<command>_<task>.yaml (GLUE, e.g. the paper's MNLI fine-tuning recipe),
    recipes/bart_base/<command>_<task>.yaml (summarisation: xsum, cnn_dm) or
    recipes/smollm2/<command>_<task>.yaml (language modelling: wikitext2); `task` in any spelling
    `normalize_task` accepts ('SST-2', 'cnndm')."""
    from ..config.schema import TASK_NAMES, normalize_task, task_family
    from ..data.glue import unsupported_glue_task

    name = normalize_task(task)
    if name is None and (why := unsupported_glue_task(task)):
        raise ConfigError(why, details=[f"valid tasks: {', '.join(TASK_NAMES)}"])
    if name is None:
        close = difflib.get_close_matches(task.strip().lower(), TASK_NAMES, n=1, cutoff=0.6)
        raise ConfigError(f"unknown task {task!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                          details=[f"valid tasks: {', '.join(TASK_NAMES)}"])
    family = {"summarization": "bart_base", "lm": "smollm2"}.get(task_family(name), "bert_base")
    root = recipes_dir()
    if root is None:
        raise ConfigError(
            "cannot find the recipes/ directory",
            hint="give a recipe path, or set SPIKELM_RECIPES to the recipes/ directory of a spikelm checkout",
        )
    path = root / family / f"{command}_{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no bundled {command} recipe for {name}: {path} does not exist",
                          hint="give a recipe path")
    return path


def recipe_writing(run_dir: str | os.PathLike[str]) -> tuple[str, str] | None:
    """The bundled recipe whose `# Run:` header writes `run_dir` (its `--out-dir`), and that header
    command: ('recipes/minilm_glue/cola_teacher.yaml', 'spikelm finetune ... --out-dir
    runs/glue-cola-teacher'), or None. Lets a missing teacher name the run that makes it."""
    root = recipes_dir()
    if root is None:
        return None
    want = Path(run_dir).resolve()  # the headers' --out-dir is read from the current directory
    for path in sorted(root.glob("*/*.yaml")):
        try:
            head = path.read_text(encoding="utf-8").splitlines()[:12]
        except (OSError, UnicodeDecodeError):
            continue
        line = next((h for h in head if h.startswith("# Run:")), None)
        if line is None:
            continue
        command = line[len("# Run:"):].strip()
        words = command.split()
        for flag, value in zip(words, words[1:]):
            if flag == "--out-dir" and Path(value).resolve() == want:
                return f"recipes/{path.parent.name}/{path.name}", command
    return None
