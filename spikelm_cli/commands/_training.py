"""Options and config loading shared by the training commands (finetune, distill, pretrain, eval).

Every option a user types beats the recipe: `--model`, `--task`, `--data-dir`, `--out-dir`,
`--teacher` become the flags of `load_config`, which applies them after the recipe and its `-s`
overrides; `run_config.yaml` records the result.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from spikelm_core.errors import ConfigError

OverridesOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a recipe key: -s train.lr=3e-5 (repeatable)."),
]
RunOutDirOpt = Annotated[Optional[Path], typer.Option("--out-dir", help="Run directory (overrides the recipe's out_dir).")]
ResumeOpt = Annotated[
    str,
    typer.Option("--resume", help="never (default), auto (latest checkpoint in the run directory, else fresh), or a checkpoint directory."),
]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Local GLUE root (SST-2/, MNLI/, ...), for xsum/cnn_dm a directory with train.jsonl / validation.jsonl, for wikitext2 a folder with wikitext-2/<split>.txt or any text file (scoring a masked LM, also a folder of .txt files, read whole), for masked-LM distillation on text (no task) the corpus file or folder; beats the recipe's data.source path.")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model to start from: a local directory, an alias (minilm, bert-base, bart-base, ...) or a hub id; a dense model is converted with the recipe's neuron settings. Beats the recipe's model.")]
PrintConfigOpt = Annotated[bool, typer.Option("--print-config", help="Print the resolved recipe (every field with its description, as YAML that replays the run) and exit.")]
GridOpt = Annotated[
    Optional[list[str]],
    typer.Option("--grid", "-g", help="Sweep a recipe key over values: -g neuron.k=2,3,4 (repeatable; every combination is one run under --out-dir, then one table: see sweep: in recipes/README.md)."),
]
PointOpt = Annotated[
    Optional[list[str]],
    typer.Option("--point", "-p", help="Run only this point of the sweep now (repeatable): -p spikelm. The other points' finished runs stay in the table; a later call without --point runs the rest."),
]
TaskOpt = Annotated[Optional[str], typer.Option("--task", help="Benchmark task: a GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte), xsum, cnn_dm, or wikitext2 (a causal LM's perplexity). Without RECIPE, picks the paper recipe (recipes/bert_base/, recipes/bart_base/; wikitext2: recipes/smollm2/); distill has one for sst2, xsum, cnn_dm and wikitext2 (others: give a recipe, e.g. recipes/minilm_glue/).")]


def recipe_or_default(recipe: Path | None, task: str | None, command: str) -> Path:
    """The recipe given, or the paper's recipe for `--task`."""
    if recipe is not None:
        return recipe
    if task is None:
        raise ConfigError(f"give a recipe, or --task to use the paper's {command} recipe",
                          hint=f"spikelm {command} recipes/tiny/{command}.yaml"
                          + (" --teacher <a dense model fine-tuned on the task>" if command == "distill" else "")
                          + f"  or  spikelm {command} --task sst2")
    from spikelm_core.training.recipes import paper_recipe

    return paper_recipe(command, task)


def packaged_recipe(recipe: Path | None) -> Path | None:
    """`recipes/...` names the recipes shipped with spikelm when no such file exists here (e.g. run
    from another directory, or an installed package)."""
    if recipe is None or recipe.exists() or recipe.is_absolute() or recipe.parts[:1] != ("recipes",):
        return recipe
    from spikelm_core.training.recipes import recipes_dir

    root = recipes_dir()
    shipped = root / Path(*recipe.parts[1:]) if root is not None else None
    return shipped if shipped is not None and shipped.is_file() else recipe


def load_run_config(cls, recipe: Path | None, overrides: list[str] | None, *, task: str | None = None,
                    model: str | None = None, data_dir: Path | None = None, out_dir: Path | None = None,
                    grid: list[str] | None = None, **more: str | None):
    """The task config from `recipe` < `-s` overrides < the command-line options. `grid` (`--grid`
    items) is added to the sweep section (one is made when the recipe has none; a key given here
    replaces the recipe's) before the config is checked, so `-s sweep.*` settings and rules that a
    grid satisfies hold for a recipe without a sweep section too.

    A run's own `run_config.yaml` replays that run: without `--out-dir` the run directory is the
    folder holding the file (so a copied run continues in its copy, never in the original)."""
    from spikelm_core.config import load_config

    recipe = packaged_recipe(recipe)
    if recipe is not None and recipe.name == "run_config.yaml" and out_dir is None:
        out_dir = recipe.resolve().parent

    from spikelm_core.sweep import parse_grid

    flags = {
        "sweep.grid": parse_grid(grid) if grid else None,
        "model": model,
        "out_dir": str(out_dir) if out_dir else None,
        "data.task": task,
        "data.data_dir": str(data_dir) if data_dir else None,
        **more,
    }
    return load_config(cls, recipe, overrides or [], **flags)


def print_config_and_exit(cfg, format=None) -> None:
    """`--print-config`: the resolved config on stdout, exit 0: YAML with each field's description,
    or with `--format json` the plain config as JSON (what run_config.yaml would hold)."""
    from spikelm_core.config import config_to_dict, describe_config

    if format is not None and getattr(format, "value", format) == "json":
        sys.stdout.write(json.dumps(config_to_dict(cfg), indent=2, default=str) + "\n")
    else:
        sys.stdout.write(describe_config(cfg))
    raise typer.Exit(0)


def check_sweep(cfg, points: list[str] | None = None, overrides: list[str] | None = None,
                flags: dict[str, tuple[str, Any]] | None = None) -> None:
    """Refuse, before `--print-config` and before any run, what the sweep would refuse at its start
    (`spikelm_core.sweep.plan_sweep`: `--point` naming no point, `-g neuron.k=a,b`, `-g nosuch.key=1,2`),
    and `--point` without a sweep; warn of each `-s` override, and each option of `flags` (`{"--model":
    ("model", value)}`, None when not given), that the points to run set themselves."""
    if cfg.sweep is None:
        if points:
            raise ConfigError("--point names a sweep point, and this run has no sweep",
                              hint="give a recipe with a sweep: section or --grid, or drop --point")
        return
    from spikelm_core.config import parse_overrides
    from spikelm_core.sweep import masked_settings, plan_sweep

    from ..console import err

    from spikelm_core.config.schema import flatten_dotted

    plan_sweep(cfg, points)
    # a mapping (`-s train={lr: 1e-4}`) is each of its settings (train.lr), as the points' own are
    given = [item for key, value in parse_overrides(overrides or []) if not key.startswith("sweep")
             for item in flatten_dotted(value, key).items()]
    for line in masked_settings(cfg, given, points):
        err.print(f"[yellow]warning:[/] -s {escape(line)}", soft_wrap=True)
    for flag, (key, value) in (flags or {}).items():
        if value is not None:
            for line in masked_settings(cfg, [(key, str(value))], points):
                err.print(f"[yellow]warning:[/] {flag}: {escape(line)}", soft_wrap=True)


def train_or_sweep(cfg, run, resume: str, fmt, points: list[str] | None = None) -> None:
    """One run (`run(cfg, resume=..., callbacks=...)`), or for a config with a sweep section the
    sweep of its points, or of `points` alone (each point continues where it stopped; `--resume`
    is for one run). The caller has run `check_sweep`."""
    from spikelm_core.sweep import run_sweep

    from .. import render, render_sweep
    from ..console import err

    if cfg.sweep is None:
        render.training_result(run(cfg, resume=resume, callbacks=[render.progress_callback()]), fmt)
        return
    if resume != "never":
        raise ConfigError(f"--resume {resume} is for one run; a sweep continues each of its points by itself",
                          hint="run the same sweep command again without --resume: finished points are skipped, "
                          "an interrupted one continues from its last checkpoint")
    report = run_sweep(cfg, progress=lambda message: err.print(f"sweep: {message}", markup=False, soft_wrap=True),
                       callbacks=[render.progress_callback()], only=points)
    render_sweep.sweep_result(report, fmt)
