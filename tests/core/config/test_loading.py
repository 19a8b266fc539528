"""Recipe loading: precedence, every error reported together, 0.1.0 recipes, paths, and replay."""

from __future__ import annotations

import json
import logging
import os
import textwrap
from pathlib import Path

import pytest

from spikelm_core.config import (
    DistillConfig,
    EvalConfig,
    FinetuneConfig,
    PretrainConfig,
    config_from_dict,
    config_to_dict,
    diff_configs,
    load_config,
    parse_overrides,
    save_config,
)
from spikelm_core.config import loading
from spikelm_core.errors import ConfigError
from tests.conftest import REPO

MINIMAL = ["model=tiny-model", "data.task=sst2"]


def write(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(recipe, overrides=(), cls=FinetuneConfig, **flags) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(cls, recipe, overrides, **flags)
    assert exc.value.exit_code == 2
    return exc.value.details


@pytest.fixture
def warnings_once(monkeypatch, caplog):
    """A fresh 'warned already' set, and the spikelm.config warnings captured."""
    monkeypatch.setattr(loading, "_warned", set())
    caplog.set_level(logging.WARNING, logger="spikelm.config")
    return caplog


# ------------------------------------------------------------------------------ precedence


def test_precedence_defaults_recipe_set_flags(tmp_path):
    recipe = write(tmp_path, """
        command: finetune
        model: from-recipe
        data: {source: glue/rte}
        out_dir: recipe-out
        train: {lr: 1.0e-5, seed: 7, batch_size: 16}
        neuron: {k: 3}
    """)
    cfg = load_config(
        FinetuneConfig,
        recipe,
        ["train.lr=3e-5", "train.seed=1", "train.seed=2", "out_dir=set-out"],
        out_dir="flag-out",
        **{"train.batch_size": None},  # a flag that was not given
    )
    assert cfg.model == "from-recipe"  # recipe only
    assert cfg.train.lr == 3e-5  # -s beats recipe
    assert cfg.train.seed == 2  # later -s beats earlier -s
    assert cfg.out_dir == "flag-out"  # flag beats -s
    assert cfg.train.batch_size == 16  # None flag ignored
    assert cfg.neuron.k == 3.0 and cfg.neuron.decay == 0.25  # defaults kept beside recipe values
    assert cfg.task == "rte"


def test_task_flag_beats_the_recipe(tmp_path):
    recipe = write(tmp_path, "model: m\ndata: {task: rte}\n")
    assert load_config(FinetuneConfig, recipe, [], **{"data.task": "SST-2"}).task == "sst2"


def test_set_mapping_merges_into_recipe_section(tmp_path):
    recipe = write(tmp_path, "model: m\ndata: {task: rte}\nneuron: {k: 3, decay: 0.5}\n")
    cfg = load_config(FinetuneConfig, recipe, ["neuron={k: 4, reset: soft}"])
    assert (cfg.neuron.k, cfg.neuron.decay, cfg.neuron.reset) == (4.0, 0.5, "soft")


def test_dotted_flag_keys():
    cfg = load_config(FinetuneConfig, None, MINIMAL, **{"train.seed": 5, "neuron.num_timesteps": 1})
    assert cfg.train.seed == 5 and cfg.neuron.num_timesteps == 1


def test_parse_overrides_values_are_yaml():
    assert parse_overrides(["a.b=3", "c=2e-5", "d=[x, y]", "e=null", "f=", "g=a=b", " h = true"]) == [
        ("a.b", 3), ("c", "2e-5"), ("d", ["x", "y"]), ("e", None), ("f", None), ("g", "a=b"), ("h", True),
    ]


def test_float_from_a_recipe_like_2e_minus_5(tmp_path):
    recipe = write(tmp_path, "command: finetune\nmodel: m\ndata: {task: sst2}\ntrain:\n  lr: 2e-5\n")
    cfg = load_config(FinetuneConfig, recipe)
    assert cfg.train.lr == 2e-5 and isinstance(cfg.train.lr, float)


# ------------------------------------------------------------------------- error reporting


def test_three_problems_reported_at_once(tmp_path):
    recipe = write(tmp_path, """
        command: finetune
        model: m
        data: {task: sst2}
        train: {learning_rate: 1.0e-4, batch_size: many, eval_strategy: sometimes}
    """, name="x.yaml")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe)
    assert exc.value.message == f"invalid recipe {str(recipe)!r}: 3 problems"
    assert sorted(exc.value.details) == [
        "train.batch_size: expected int, got 'many'",
        "train.eval_strategy: expected one of 'epoch', 'steps', 'no', got 'sometimes'",
        "train.learning_rate: unknown key (did you mean 'train.lr'?)",
    ]
    assert "--print-config" in exc.value.hint and "train.lr" in exc.value.hint  # the option exists:
    from typer.testing import CliRunner

    from spikelm_cli.main import app

    assert "--print-config" in CliRunner().invoke(app, ["finetune", "--help"]).stdout


def test_every_problem_in_one_error(tmp_path):
    recipe = write(tmp_path, """
        command: finetune
        data: {task: sst2}
        train: {lr_warmup: 5, lr: abc}
        neuron: {k: -1, reset: sft}
    """)
    assert problems(recipe, ["foo", "data.max_length=x"]) == [
        "'foo': expected key=value",
        "model: required, no default",
        "neuron.k: must be > 0, got -1.0",
        "neuron.reset: expected one of 'official', 'soft', 'none', got 'sft' (did you mean 'soft'?)",
        "data.max_length: expected int, got 'x'",
        "train.lr: expected float, got 'abc'",
        "train.lr_warmup: unknown key (did you mean 'train.warmup_steps'?)",
    ]


def test_unknown_key_did_you_mean():
    assert problems(None, [*MINIMAL, "train.lr_warmup=100"]) == [
        "train.lr_warmup: unknown key (did you mean 'train.warmup_steps'?)"
    ]


@pytest.mark.parametrize(
    "key, line",
    [
        pytest.param("train.max_length", "train.max_length: unknown key (did you mean 'data.max_length'?)",
                     id="other-section"),
        pytest.param("learning_rate", "learning_rate: unknown key (did you mean 'train.lr'?)", id="hf-alias-top"),
        pytest.param("train.learning_rate", "train.learning_rate: unknown key (did you mean 'train.lr'?)",
                     id="hf-alias"),
        pytest.param("nueron.k", "nueron: unknown key (did you mean 'neuron'?)", id="section-typo"),
        pytest.param("neuron.timesteps", "neuron.timesteps: unknown key (did you mean 'neuron.num_timesteps'?)",
                     id="alias"),
        pytest.param("train.sead", "train.sead: unknown key (did you mean 'train.seed'?)", id="typo"),
        pytest.param("task_name", "task_name: unknown key (did you mean 'data.task'?)", id="task-name"),
        pytest.param("train.zzzzqqq", "train.zzzzqqq: unknown key", id="no-match"),
        pytest.param("sweep.energy.bogus", "sweep.energy.bogus: unknown key", id="never-its-own-section"),
    ],
)
def test_unknown_key_suggestions(key, line):
    assert problems(None, [*MINIMAL, f"{key}=1"]) == [line]


@pytest.mark.parametrize(
    "override, line",
    [
        pytest.param("foo", "'foo': expected key=value", id="no-equals"),
        pytest.param("=3", "'=3': bad key '' (use a dotted path such as train.lr)", id="empty-key"),
        pytest.param("train..lr=3", "'train..lr=3': bad key 'train..lr' (use a dotted path such as train.lr)",
                     id="double-dot"),
        pytest.param("train.lr=[1", "'train.lr=[1': value is not valid YAML (expected ',' or ']', "
                                    "but got '<stream end>')", id="bad-yaml"),
    ],
)
def test_bad_set_syntax(override, line):
    assert problems(None, [*MINIMAL, override]) == [line]


def test_parse_overrides_raises_when_collecting_nowhere():
    with pytest.raises(ConfigError) as exc:
        parse_overrides(["ok=1", "foo"])
    assert exc.value.details == ["'foo': expected key=value"]


def test_malformed_yaml_reports_line_and_column(tmp_path):
    recipe = write(tmp_path, "model: m\ntrain:\n  lr: 1: 2\n")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe, ["also bad"])
    assert exc.value.details == [
        f"{recipe}: invalid YAML at line 3, column 8: mapping values are not allowed here",
        "'also bad': expected key=value",
    ]
    assert exc.value.message.startswith("cannot load recipe")


def test_unclosed_flow_mapping(tmp_path):
    recipe = write(tmp_path, "model: m\ntrain: {lr: 1\n")
    assert problems(recipe) == [f"{recipe}: invalid YAML at line 3, column 1: expected ',' or '}}', but got '<stream end>'"]


def test_missing_recipe_file(tmp_path):
    assert problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: recipe file not found"]
    (tmp_path / "finetune.yaml").write_text("model: m\n")
    for typo in ("finetune.yml", "fintune.yaml"):  # the hint names the file meant
        with pytest.raises(ConfigError) as exc:
            load_config(FinetuneConfig, tmp_path / typo, [])
        assert exc.value.hint == f"did you mean '{tmp_path / 'finetune.yaml'}'?"
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, tmp_path / "zzz.yaml", [])
    assert "recipes/README.md lists the shipped ones" in exc.value.hint


def test_recipe_is_a_directory(tmp_path):
    assert problems(tmp_path) == [f"{tmp_path}: is a directory, not a recipe file"]


def test_recipe_that_is_a_pipe_is_refused_without_reading(tmp_path):
    fifo = tmp_path / "recipe.yaml"
    os.mkfifo(fifo)  # reading it would block: no writer
    assert problems(fifo) == [f"{fifo}: is not a regular file (a pipe, socket or device), not a recipe file"]


def test_a_huge_file_and_a_yaml_alias_bomb_are_refused_before_use(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (loading.MAX_RECIPE_BYTES) + "\nmodel: m\n")
    assert problems(big) == [f"{big}: 1.0 MiB is not a recipe file (recipes are a few KB; at most 1 MiB)"]
    levels = ["a0: &a0 [" + ", ".join(["1"] * 10) + "]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]  # 10^9 values
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\ntrain: {lr: *a8}\n")
    assert problems(bomb) == [f"{bomb}: its YAML aliases expand to more than 100,000 values, which is not a recipe "
                              "(recipes hold a few hundred)"]
    shared = tmp_path / "shared.yaml"  # an alias or two, as a recipe may use them, still loads
    shared.write_text("model: m\ndata: {task: sst2}\nneuron: &n {k: 3.0}\nsweep: {points: {a: *n}}\n")
    assert loading._expanded_values({"a": [1, 2], "b": {"c": 3}}, 100) == 6
    assert load_config(FinetuneConfig, shared, []).neuron.k == 3.0


def test_recipe_must_be_a_mapping(tmp_path):
    assert problems(write(tmp_path, "- a\n- b\n")) == [f"{tmp_path / 'recipe.yaml'}: a recipe must be a mapping of keys, got list"]


def test_empty_recipe_gives_defaults(tmp_path):
    assert load_config(FinetuneConfig, write(tmp_path, "# nothing yet\n"), MINIMAL) == load_config(FinetuneConfig, None, MINIMAL)


def test_duplicate_keys_are_reported(tmp_path):
    recipe = write(tmp_path, "model: m\ndata: {task: sst2}\ntrain:\n  lr: 1.0e-5\n  lr: 2.0e-5\n")
    assert problems(recipe) == [f"{recipe}: duplicate key 'lr' at line 5"]


def test_recipe_for_another_command(tmp_path):
    recipe = write(tmp_path, "command: pretrain\ndata: {source: t.txt}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe, MINIMAL)
    assert exc.value.details == [f"command: recipe {str(recipe)!r} is for 'pretrain', not 'finetune'"]
    assert "spikelm pretrain" in exc.value.hint


def test_a_command_override_is_blamed_not_the_recipe(tmp_path):
    recipe = write(tmp_path, "command: finetune\n")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe, [*MINIMAL, "command=eval"])
    assert exc.value.details == ["command: -s command=eval is for 'eval', not 'finetune'"]
    assert "drop it" in exc.value.hint


def test_a_matching_command_override_takes_no_blame_for_the_recipe(tmp_path):
    recipe = write(tmp_path, "command: finetune\ntrain: {lr: fast}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe, [*MINIMAL, "command=finetune"])
    assert exc.value.message.startswith(f"invalid recipe {str(recipe)!r}")


def test_unknown_command_value(tmp_path):
    assert problems(write(tmp_path, "command: finetun\n"), MINIMAL) == ["command: expected 'finetune', got 'finetun'"]


def test_config_from_dict_is_as_strict():
    with pytest.raises(ConfigError) as exc:
        config_from_dict(FinetuneConfig, {"model": "m", "data": {"task": "sst2"}, "train": {"lrr": 1}})
    assert exc.value.details == ["train.lrr: unknown key (did you mean 'train.lr'?)"]
    assert config_from_dict(FinetuneConfig, {"command": "finetune", "model": "m", "data": {"task": "sst2"}}).model == "m"


# ------------------------------------------------------------------- spikelm 0.1.0 recipes


def test_old_recipe_loads_with_data_task(tmp_path, warnings_once):
    recipe = write(tmp_path, "task: finetune\nmodel: m\nglue_task: SST-2\n")
    cfg = load_config(FinetuneConfig, recipe)
    assert (cfg.command, cfg.task, cfg.data.task) == ("finetune", "sst2", "sst2")
    messages = [r.getMessage() for r in warnings_once.records]
    assert len(messages) == 3
    assert "its relative paths are read from the current directory" in messages[0]
    assert "'task' is the spikelm 0.1.0 name of 'command'" in messages[1]
    assert "'glue_task' is the spikelm 0.1.0 name of 'data.task'" in messages[2]
    load_config(FinetuneConfig, recipe)
    assert len(warnings_once.records) == 3  # once per key


def test_old_summarization_recipe(tmp_path, warnings_once):
    recipe = write(tmp_path, "task: eval\nmodel: m\nglue_task: null\nsummarization_task: xsum\ndata: {source: xsum}\n")
    cfg = load_config(EvalConfig, recipe)
    assert cfg.task == "xsum" and cfg.task_family == "summarization"


def test_old_set_keys_and_flags_migrate_too(warnings_once):
    cfg = load_config(FinetuneConfig, None, ["model=m", "glue_task=rte", "task=finetune"])
    assert cfg.task == "rte"
    assert load_config(FinetuneConfig, None, ["model=m"], glue_task="MNLI").task == "mnli"


def test_old_run_config_replays(tmp_path, warnings_once):
    # as spikelm 0.1.0 wrote it (full dump, header, relative paths from the current directory)
    cfg = load_config(EvalConfig, None, ["model=m", "data.task=mnli", "splits=[dev_matched]"])
    data = config_to_dict(cfg)
    data = {"task": data.pop("command"), "model": data.pop("model"), "glue_task": data["data"].pop("task"),
            "summarization_task": None, **data}
    path = tmp_path / "run_config.yaml"
    path.write_text("# Resolved config of a `spikelm eval` run\n" + json.dumps(data), encoding="utf-8")
    assert load_config(EvalConfig, path) == cfg


@pytest.mark.parametrize(
    "text, line",
    [
        pytest.param("task: finetun\nmodel: m\ndata: {task: sst2}\n",
                     "task: 'finetun' is not a command (finetune, distill, pretrain, eval); 'task' was renamed "
                     "'command', and the benchmark task is 'data.task'", id="not-a-command"),
        pytest.param("task: sst2\nmodel: m\ndata: {task: sst2}\n",
                     "task: 'sst2' is not a command (finetune, distill, pretrain, eval); 'task' was renamed "
                     "'command', and the benchmark task is 'data.task' (did you mean 'data.task: sst2'?)",
                     id="benchmark-task"),
        pytest.param("model: m\nglue_task: rte\ndata: {task: sst2}\n",
                     "glue_task: 'rte' disagrees with data.task 'sst2'; keep only data.task", id="disagree"),
        pytest.param("model: m\nglue_task: rte\nsummarization_task: xsum\n",
                     "summarization_task: 'xsum' disagrees with data.task 'rte'; keep only data.task", id="both-old"),
    ],
)
def test_old_keys_that_cannot_migrate(tmp_path, warnings_once, text, line):
    assert problems(write(tmp_path, text)) == [line]


# ---------------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    recipes = tmp_path / "project" / "recipes"
    (recipes / "teacher").mkdir(parents=True)
    (tmp_path / "data" / "SST-2").mkdir(parents=True)
    recipe = write(recipes, """
        command: distill
        model: minilm                       # an alias: kept
        data: {source: ../../data/SST-2, data_dir: ./glue}
        distill: {teacher: teacher}         # exists beside the recipe
        out_dir: runs/x                     # stays relative to the current directory
    """)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(DistillConfig, recipe)
    assert cfg.data.source == str(tmp_path / "data" / "SST-2") and cfg.task == "sst2"
    assert cfg.data.data_dir == str(recipes / "glue")
    assert cfg.distill.teacher == str(recipes / "teacher")
    assert cfg.model == "minilm" and cfg.out_dir == "runs/x"
    hub = load_config(DistillConfig, recipe, ["model=facebook/bart-base", "data.source=glue/sst2"])
    assert hub.model == "facebook/bart-base" and hub.data.source == "glue/sst2"


def test_recipe_paths_found_from_the_current_directory_are_recorded_absolute(tmp_path, monkeypatch):
    """A recipe path not beside the recipe but there from the current directory (where the run reads it)
    is made absolute, so run_config.yaml replays from anywhere; `~` is expanded, out_dir's too."""
    recipe = write(tmp_path / "project" / "recipes", "command: finetune\nmodel: runs/teacher/final\ndata: {task: sst2}\n")
    (tmp_path / "project" / "runs" / "teacher" / "final").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "project")
    cfg = load_config(FinetuneConfig, recipe)
    assert cfg.model == str(tmp_path / "project" / "runs" / "teacher" / "final")
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(FinetuneConfig, recipe, ["model=~/m", "out_dir=~/out"])
    assert (cfg.model, cfg.out_dir) == (str(tmp_path / "m"), str(tmp_path / "out"))


def test_a_recipe_lays_itself_over_its_base(tmp_path, monkeypatch):
    common = tmp_path / "recipes" / "common"
    write(common, """
        command: distill
        model: minilm
        data: {max_length: 64, train_subset: 100}
        train: {lr: 1.0e-4, epochs: 2}
        distill: {teacher: ./teacher, alpha_kd: 1.0, alpha_hidden: 0.5}
        sweep: {grid: {neuron.k: [2.0, 3.0]}}
    """, "twin.yaml")
    task = write(tmp_path / "recipes" / "stsb", """
        base: ../common/twin.yaml
        data: {source: glue/stsb, train_subset: null}
        distill: {teacher: ./stsb-teacher}
        sweep: {grid: {neuron.k: [4.0]}}
    """, "twin.yaml")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(DistillConfig, task, ["train.epochs=3"])
    assert cfg.task == "stsb" and cfg.data.max_length == 64 and cfg.data.train_subset is None
    assert (cfg.train.lr, cfg.train.epochs) == (1e-4, 3)
    assert (cfg.distill.alpha_kd, cfg.distill.alpha_hidden) == (1.0, 0.5)
    # each layer's paths from its own folder; lists replaced, not appended
    assert cfg.distill.teacher == str(task.parent / "stsb-teacher")
    assert cfg.sweep.grid == {"neuron.k": [4.0]}
    # the saved config is the merged one, and replays without the base
    save_config(cfg, tmp_path / "run_config.yaml")
    assert "base" not in (tmp_path / "run_config.yaml").read_text()
    assert load_config(DistillConfig, tmp_path / "run_config.yaml") == cfg


def test_base_chains_and_their_problems(tmp_path):
    write(tmp_path, "command: finetune\nmodel: tiny-model\ntrain: {lr: 1.0e-3}\n", "a.yaml")
    write(tmp_path, "base: a.yaml\ndata: {task: sst2}\n", "b.yaml")
    c = write(tmp_path, "base: b.yaml\ntrain: {epochs: 1}\n", "c.yaml")
    cfg = load_config(FinetuneConfig, c)
    assert (cfg.model, cfg.task, cfg.train.lr, cfg.train.epochs) == ("tiny-model", "sst2", 1e-3, 1)
    write(tmp_path, "base: loop2.yaml\n", "loop1.yaml")
    loop = write(tmp_path, "base: loop1.yaml\n", "loop2.yaml")
    assert any("makes a cycle" in line for line in problems(loop, MINIMAL))
    missing = write(tmp_path, "base: nowhere.yaml\n", "missing.yaml")
    lines = problems(missing, MINIMAL)
    assert any("nowhere.yaml: recipe file not found" in line for line in lines)
    assert any("its base: nowhere.yaml cannot be read" in line for line in lines)
    bad = write(tmp_path, "base: [a.yaml]\n", "bad.yaml")
    assert any("base: must be the path of another recipe" in line for line in problems(bad, MINIMAL))
    other = write(tmp_path, "base: a.yaml\n", "other.yaml")
    assert any("command" in line for line in problems(other, [], cls=DistillConfig))
    # a recipe for one command on a base for another is refused, naming the base
    mixed = write(tmp_path, "base: a.yaml\ncommand: distill\ndistill: {teacher: t}\n", "mixed.yaml")
    assert any("its base: a.yaml is a 'finetune' recipe" in line for line in problems(mixed, [], cls=DistillConfig))
    # eight bases below a recipe load; a ninth is refused
    write(tmp_path, "command: finetune\nmodel: m\ndata: {task: sst2}\n", "d0.yaml")
    for i in range(1, 10):
        write(tmp_path, f"base: d{i - 1}.yaml\n", f"d{i}.yaml")
    assert load_config(FinetuneConfig, tmp_path / "d8.yaml").model == "m"
    assert any("more than 8 bases" in line for line in problems(tmp_path / "d9.yaml", []))


def test_a_recipe_with_broken_yaml_gets_a_yaml_hint(tmp_path):
    bad = write(tmp_path, "command: finetune\nmodel: [a\n", "bad.yaml")
    with pytest.raises(ConfigError) as err:
        load_config(FinetuneConfig, bad)
    assert "invalid YAML at line" in str(err.value.details) and "fix the line" in err.value.hint


def test_overrides_and_flags_resolve_against_the_current_directory(tmp_path, monkeypatch):
    recipe = write(tmp_path / "recipes", "command: finetune\nmodel: m\ndata: {task: sst2}\n")
    (tmp_path / "work" / "models" / "m").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    cfg = load_config(FinetuneConfig, recipe, ["model=models/m"], **{"data.data_dir": "../glue"})
    assert cfg.model == str(tmp_path / "work" / "models" / "m")
    assert cfg.data.data_dir == str(tmp_path / "glue")


def test_old_recipe_paths_stay_relative_to_the_current_directory(tmp_path, monkeypatch, warnings_once):
    recipe = write(tmp_path / "recipes", "task: finetune\nmodel: m\ndata: {source: ../data/SST-2}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(FinetuneConfig, recipe).data.source == str(tmp_path.parent / "data" / "SST-2")


def test_data_dir_flag_beats_a_recipe_source_path(tmp_path, monkeypatch):
    recipe = write(tmp_path / "recipes", "command: finetune\nmodel: m\ndata: {source: ../elsewhere/SST-2}\n")
    (tmp_path / "glue").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = load_config(FinetuneConfig, recipe, [], **{"data.data_dir": "glue"})
    assert (cfg.data.source, cfg.data.data_dir, cfg.task) == (None, str(tmp_path / "glue"), "sst2")
    saved = load_config(FinetuneConfig, save_config(cfg, tmp_path / "run" / "run_config.yaml"))
    assert saved == cfg and saved.data.source is None
    # without the flag, or with a 'glue/<task>' source, the source stays
    assert load_config(FinetuneConfig, recipe).data.source == str(tmp_path / "elsewhere" / "SST-2")
    kept = load_config(FinetuneConfig, recipe, ["data.source=glue/sst2"], **{"data.data_dir": "glue"})
    assert kept.data.source == "glue/sst2"
    # a GLUE root with data.task given goes too; a text corpus for MLM distillation is replaced by the flag's
    root = load_config(FinetuneConfig, recipe, ["data.source=/x/glue", "data.task=rte"], **{"data.data_dir": "g"})
    assert (root.data.source, root.task) == (None, "rte")
    text = load_config(DistillConfig, None, ["model=m", "distill.teacher=t", "data.source=/c.txt"],
                       **{"data.data_dir": "g"})
    assert (text.data.source, text.data.data_dir, text.task) == ("g", None, None)
    # a 'glue/<name>' source naming no task is that error, not a text corpus in --data-dir
    with pytest.raises(ConfigError, match="unknown GLUE task in 'glue/sst3'"):
        load_config(DistillConfig, None, ["model=m", "distill.teacher=t", "data.source=glue/sst3"],
                    **{"data.data_dir": "g"})
    # ... and masked-LM training refuses the data paths it would not read
    lines = problems(None, ["model=m", "distill.teacher=t", "data.source=/c.txt", "data.train_file=/v.txt",
                            "data.data_dir=/d"], cls=DistillConfig)
    assert any(line.startswith("data.train_file: is not read by masked-LM training") for line in lines)
    assert any(line.startswith("data.data_dir: is not read by masked-LM training") for line in lines)
    # with --task as well, the flags say which task and where: the recipe's path goes
    both = load_config(FinetuneConfig, recipe, [], **{"data.data_dir": "glue", "data.task": "rte"})
    assert (both.data.source, both.task) == (None, "rte")


def test_data_dir_flag_beats_a_recipes_data_files(tmp_path, monkeypatch, caplog):
    """A summarisation or language-modelling recipe's train_file / validation_file (which beat its own
    data_dir) give way to a typed --data-dir; files set with -s stay; masked-LM text keeps its held-out file."""
    recipe = write(tmp_path / "recipes", "command: distill\nmodel: m\ndata: {task: xsum, source: xsum, "
                   "train_file: x.jsonl, validation_file: v.jsonl}\ndistill: {teacher: t}\n")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="spikelm"):
        cfg = load_config(DistillConfig, recipe, [], **{"data.data_dir": "mine"})
    assert (cfg.data.data_dir, cfg.data.train_file, cfg.data.validation_file) == ("mine", None, None)
    assert "--data-dir replaces the recipe's data.train_file and data.validation_file" in caplog.text
    kept = load_config(DistillConfig, recipe, ["data.validation_file=w.jsonl"], **{"data.data_dir": "mine"})
    assert kept.data.train_file is None and kept.data.validation_file.endswith("w.jsonl")
    assert load_config(DistillConfig, recipe).data.train_file.endswith("x.jsonl")  # without the flag
    lm = write(tmp_path / "lm", "command: finetune\nmodel: m\ndata: {task: wikitext2, train_file: a.txt}\n")
    assert load_config(FinetuneConfig, lm, [], **{"data.data_dir": "t"}).data.train_file is None
    mlm = write(tmp_path / "mlm", "command: pretrain\nmodel: m\ndata: {source: c.txt, validation_file: h.txt}\n")
    held = load_config(PretrainConfig, mlm, [], **{"data.data_dir": "corpus.txt"})
    assert held.data.source == "corpus.txt" and held.data.validation_file.endswith("h.txt")


def test_task_flag_beats_a_recipe_source_naming_another_task(tmp_path):
    recipe = write(tmp_path, "command: finetune\nmodel: m\ndata: {source: glue/sst2}\n")
    cfg = load_config(FinetuneConfig, recipe, [], **{"data.task": "RTE"})
    assert (cfg.task, cfg.data.source) == ("rte", None)
    assert load_config(FinetuneConfig, recipe, [], **{"data.task": "sst2"}).data.source == "glue/sst2"
    summ = load_config(FinetuneConfig, None, ["model=m", "data.source=xsum"], **{"data.task": "cnndm"})
    assert (summ.task, summ.data.source) == ("cnn_dm", None)
    # a local GLUE task directory of another task becomes its GLUE root: the asked task is read beside it
    local = load_config(FinetuneConfig, None, ["model=m", "data.source=/d/SST-2"], **{"data.task": "rte"})
    assert (local.task, local.data.source, local.data.data_dir) == ("rte", None, "/d")
    kept = load_config(FinetuneConfig, None, ["model=m", "data.source=/d/SST-2", "data.data_dir=/g"],
                       **{"data.task": "rte"})
    assert (kept.data.source, kept.data.data_dir) == (None, "/g")
    # -s is not a flag: a disagreement between -s and the recipe is reported
    assert problems(recipe, ["data.task=rte"]) == ["data.task: 'rte' disagrees with data.source 'glue/sst2' (task 'sst2')"]


# ------------------------------------------------------------------------------- replay


ROUND_TRIP = [
    pytest.param(FinetuneConfig, ["model=m", "data.source=../shared/data/glue/SST-2", "train.lr=3.3e-5",
                                  "train.report_to=[tensorboard]", "train.grad_clip=1.0", "neuron.reset=none",
                                  "train.eval_strategy=no", "train.keep_best=false", "out_dir=runs/x"],
                 id="finetune"),
    pytest.param(DistillConfig, ["model=m", "distill.teacher=t", "data.source=glue/mnli", "distill.temperature=2",
                                 "train.eval_strategy=steps", "train.eval_steps=7"], id="distill"),
    pytest.param(PretrainConfig, ["data.source=wiki.txt", "model_config={hidden_size: 24, num_attention_heads: 3}",
                                  "distill.teacher=t", "distill.alpha_ce=0.5", "mlm.nsp=true", "neuron.kind=lif"], id="pretrain"),
    pytest.param(EvalConfig, ["model=m", "data.task=mnli", "splits=[dev_mismatched]", "neuron.k=3"], id="eval"),
    pytest.param(EvalConfig, ["model=m", "data.source=xsum", "generate.num_beams=2"], id="eval-xsum"),
]


@pytest.mark.parametrize("cls, overrides", ROUND_TRIP)
def test_save_and_replay_gives_an_equal_config(tmp_path, monkeypatch, cls, overrides):
    cfg = load_config(cls, None, overrides)
    path = save_config(cfg, tmp_path / "run" / "run_config.yaml", header="spikelm run config\nreplay it")
    text = path.read_text()
    assert text.startswith(f"{loading.resolved_mark(cfg)}\n# spikelm run config\n# replay it\ncommand: {cfg.command}\n")
    monkeypatch.chdir(tmp_path)  # a replay works from anywhere
    assert load_config(cls, path) == cfg
    assert config_from_dict(cls, config_to_dict(cfg)) == cfg
    assert sorted(os.listdir(path.parent)) == ["run_config.yaml"]  # no temporary files left


def test_header_is_commented_once(tmp_path):
    cfg = load_config(FinetuneConfig, None, MINIMAL)
    path = save_config(cfg, tmp_path / "run_config.yaml", header="# already a comment\nplain\n\n#no space")
    head = path.read_text().splitlines()[:5]
    assert head == [loading.resolved_mark(cfg), "# already a comment", "# plain", "#", "# no space"]
    assert "# #" not in path.read_text()


def test_config_to_dict_is_plain_and_ordered():
    cfg = load_config(FinetuneConfig, None, [*MINIMAL, "train.report_to=wandb"])
    data = config_to_dict(cfg)
    assert list(data) == ["command", "model", "out_dir", "neuron", "data", "generate", "reconvert", "model_config",
                          "train", "reinit_head", "model_init", "sweep"]
    assert data["train"]["report_to"] == ["wandb"] and isinstance(data["neuron"], dict)
    assert data["data"]["task"] == "sst2"
    assert "model_config" in config_to_dict(load_config(PretrainConfig, None, ["data.source=t.txt"]))
    with pytest.raises(TypeError):
        config_to_dict({"not": "a config"})


def test_save_config_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "run_config.yaml"
    target.write_text("old\n")
    cfg = load_config(FinetuneConfig, None, MINIMAL)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_config(cfg, target)
    assert target.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["run_config.yaml"]


def test_diff_configs_lists_changed_leaves():
    a = load_config(FinetuneConfig, None, MINIMAL)
    b = load_config(FinetuneConfig, None, [*MINIMAL, "train.lr=1e-4", "neuron.k=3"])
    assert diff_configs(a, b) == [("neuron.k", 2.0, 3.0), ("train.lr", 2e-5, 1e-4)]
    assert diff_configs(a, a) == []


# ----------------------------------------------------------------- the SST-2 CPU benchmark

BENCHMARK = json.loads((Path(__file__).parent / "sst2_benchmark_0.1.0.json").read_text())
"""config_to_dict of recipes/minilm/sst2_*.yaml as spikelm 0.1.0 loaded them (captured before the rewrite)."""


def _renamed(old: dict) -> dict:
    """A 0.1.0 config dict with the renamed fields (task -> command, glue_task -> data.task) and the
    fields added since, at their defaults (reinit_head, reconvert, model_init, sweep, the train.*firing_rate*, calibration,
    max_epochs, weight_average and activation_checkpointing fields, the language-modelling data.seq_len / stride / max_tokens, the
    generation's length_penalty, no_repeat_ngram_size and min_new_tokens, the neuron's
    outlier-aware allocation, the distillation options, attn_loss among them, model_config)."""
    new = {"command": old["task"], **{k: v for k, v in old.items() if k not in ("task", "glue_task", "summarization_task")}}
    new["data"] = {"task": old["glue_task"], **old["data"], "seq_len": 256, "stride": None, "max_tokens": None}
    new["train"] = {**old["train"], "target_firing_rate": None, "firing_rate_weight": 1.0, "firing_rate_penalty": "hinge",
                    "calibration_examples": None, "calibration_order": "first",
                    "calibration_tokens": "all", "calibration_mode": "eval", "max_epochs": None, "weight_average": None,
                    "mismatched_model": "last", "activation_checkpointing": False}
    if "generate" in old:
        new["generate"] = {**old["generate"], "length_penalty": 1.0, "no_repeat_ngram_size": 0, "min_new_tokens": 0}
    new["neuron"] = {**old["neuron"], "salient_fraction": 0.0, "salient_mode": "steps", "salient_steps": 2,
                     "k_candidates": [], "channel_scale": False, "readout": "mean"}
    if new["command"] in ("finetune", "distill"):
        new["reinit_head"] = False
        new["reconvert"] = False
        new["model_init"] = "pretrained"
        new["sweep"] = None
        new["model_config"] = {}
    if new["command"] == "distill":
        new["distill"] = {**new["distill"], "attn_loss": "mse", "hidden_match": "mean", "hidden_norm": "none",
                          "hidden_stage_steps": 0, "hidden_stage_local": False,
                          "spike_drop": 0.0, "spike_drop_steps": 0, "hidden_stage_lr_scale": 1.0,
                          "augment": {"copies": 0, "min_examples": None, "word_prob": 0.4, "neighbours": 15}}
    return new


@pytest.mark.parametrize("name", sorted(BENCHMARK))
def test_sst2_benchmark_recipes_load_as_before(name, monkeypatch):
    monkeypatch.chdir(REPO)
    from spikelm_core.config import TASK_CONFIGS

    expected = _renamed(BENCHMARK[name])
    cfg = load_config(TASK_CONFIGS[expected["command"]], REPO / "recipes" / name)
    assert config_to_dict(cfg) == expected
    flagged = load_config(type(cfg), REPO / "recipes" / name, [], **{"data.data_dir": "../shared/data/glue"})
    assert config_to_dict(flagged)["data"] == {**expected["data"], "data_dir": str(REPO.parent / "shared" / "data" / "glue")}


def test_a_dotted_key_in_a_recipe_file_is_told_to_nest(tmp_path):
    recipe = write(tmp_path, "command: finetune\nmodel: m\ndata: {task: sst2}\ntrain.lr: 1.0e-4\n")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe)
    assert "train.lr: a recipe file nests its keys (train: {lr: ...}); dotted paths are for -s" in str(exc.value)


def test_a_resolved_config_reads_back_what_the_run_left_unset(tmp_path):
    """Settings a run takes from its model when unset (neuron settings, lengths; a greedy prompt's
    sampling settings) are unset again when their saved values are the defaults, so run_config.yaml
    and eval_config.yaml replay; a value set to something else, or set by -s on the replay, counts."""
    cfg = load_config(FinetuneConfig, None, MINIMAL)
    path = save_config(cfg, tmp_path / "run_config.yaml")
    again = load_config(FinetuneConfig, path)
    assert again == cfg and again.neuron.model_fields_set == set() and "max_length" not in again.data.model_fields_set
    assert "lr" in again.train.model_fields_set  # other sections read as written
    set_t = save_config(load_config(FinetuneConfig, None, [*MINIMAL, "neuron.num_timesteps=2"]), tmp_path / "t2.yaml")
    assert load_config(FinetuneConfig, set_t).neuron.model_fields_set == {"num_timesteps"}
    # a setting set to its default by hand (e.g. k: 2.0 over a checkpoint saved with k 3) stays set
    set_k = save_config(load_config(FinetuneConfig, None, [*MINIMAL, "neuron.k=2.0"]), tmp_path / "k.yaml")
    assert set_k.read_text().splitlines()[0].endswith("these were set: neuron.k")
    assert load_config(FinetuneConfig, set_k).neuron.model_fields_set == {"k"}
    assert "k" in load_config(FinetuneConfig, path, ["neuron.k=2.0"]).neuron.model_fields_set
    prompt = load_config(EvalConfig, None, ["model=minilm", "prompt.text=hi"])
    saved = save_config(prompt, tmp_path / "eval_config.yaml")
    assert load_config(EvalConfig, saved) == prompt  # its sampling defaults no longer count as asked for
    plain = tmp_path / "recipe.yaml"  # a recipe a user wrote (no mark) is read as written
    plain.write_text(saved.read_text().split("\n", 1)[1])
    with pytest.raises(ConfigError, match="is for sampling"):
        load_config(EvalConfig, plain)


def test_print_config_output_reads_back(tmp_path):
    """`--print-config` output (describe_config) carries the mark too: saved, it loads back as the same config."""
    from spikelm_core.config.loading import describe_config

    prompt = load_config(EvalConfig, None, ["model=minilm", "prompt.text=hi"])
    path = tmp_path / "p.yaml"
    path.write_text(describe_config(prompt))
    assert path.read_text().splitlines()[0] == loading.RESOLVED_MARK + " prompt.text"
    assert load_config(EvalConfig, path) == prompt


def test_a_sweep_point_setting_is_one_setting_however_each_layer_spells_it(tmp_path):
    """`{train: {max_steps: 300}}` and `{train.max_steps: 100}` name one setting of a point: the later
    layer (recipe over base, -s over recipe) wins whichever spelling each uses (it used to be the nested one)."""
    write(tmp_path, """
        command: distill
        model: minilm
        data: {task: sst2}
        distill: {teacher: minilm}
        sweep: {points: {lif: {neuron.kind: lif, train.max_steps: 150}}}
    """, "base.yaml")
    mid = write(tmp_path, "base: base.yaml\nsweep: {points: {lif: {train: {max_steps: 300}}}}\n", "mid.yaml")
    top = write(tmp_path, "base: mid.yaml\nsweep: {points: {lif: {train.max_steps: 100}}}\n", "top.yaml")
    assert load_config(DistillConfig, top).sweep.points["lif"] == {"neuron.kind": "lif", "train.max_steps": 100}
    for override in ("sweep.points.lif={train.max_steps: 100}", "sweep.points.lif.train.max_steps=100"):
        assert load_config(DistillConfig, mid, [override]).sweep.points["lif"]["train.max_steps"] == 100


def test_a_task_flag_of_another_family_does_not_read_the_glue_root(tmp_path, monkeypatch):
    """--task rte on a recipe reading a GLUE task directory reads RTE from that GLUE root; --task xsum or
    wikitext2 drops the directory without pointing data_dir at the GLUE root."""
    (tmp_path / "glue" / "SST-2").mkdir(parents=True)
    recipe = write(tmp_path, "command: finetune\nmodel: minilm\ndata: {source: ./glue/SST-2}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(FinetuneConfig, recipe, **{"data.task": "rte"}).data.data_dir == str(tmp_path / "glue")
    for task in ("xsum", "wikitext2"):
        cfg = load_config(FinetuneConfig, recipe, **{"data.task": task})
        assert cfg.task == task and cfg.data.source is None and cfg.data.data_dir is None


@pytest.mark.parametrize("key", ["train_file", "validation_file", "text_column", "summary_column"])
def test_a_glue_task_refuses_data_keys_it_would_ignore(tmp_path, key):
    recipe = write(tmp_path, "command: finetune\nmodel: minilm\ndata: {task: sst2}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe, [f"data.{key}=x"])
    assert any(line.startswith(f"data.{key}: is read for") and "GLUE task sst2" in line for line in exc.value.details)


def test_values_in_messages_are_cut_to_a_readable_length():
    assert loading._show(None) == "null" and loading._show(3.0) == "3.0"
    shown = loading._show(list(range(1000)))
    assert len(shown) < 200 and shown.endswith("... (4,890 characters)")


# ------------------------------------------------------------- where a problem comes from (rev-cfg)


def test_a_problem_of_an_override_does_not_blame_the_recipe(tmp_path):
    recipe = write(tmp_path, "command: finetune\nmodel: m\ndata: {task: sst2}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe, ["train.lr=-1"])
    assert exc.value.message == "invalid -s override: 1 problem"
    assert exc.value.details == ["train.lr: must be > 0, got -1.0"]


def test_a_problem_of_the_recipe_still_names_the_recipe(tmp_path):
    recipe = write(tmp_path, "command: finetune\nmodel: m\ndata: {task: sst2}\ntrain: {lr: -1}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe, ["train.max_steps=-5"])
    assert exc.value.message.startswith(f"invalid recipe {str(recipe)!r}")


def test_a_problem_in_a_base_names_the_base(tmp_path):
    write(tmp_path, "command: finetune\nmodel: m\ntrain: {lrr: 1.0e-4}\n", name="common/base.yaml")
    recipe = write(tmp_path, "base: ../common/base.yaml\ndata: {task: sst2}\n", name="tasks/sst2.yaml")
    details = problems(recipe)
    assert details == ["train.lrr: unknown key (did you mean 'train.lr'?) (set in its base recipe "
                       f"{str(tmp_path / 'common' / 'base.yaml')!r})"]


def test_nested_grid_paths_are_read_from_the_recipe_folder(tmp_path):
    (tmp_path / "t1").mkdir()
    recipe = write(tmp_path, """
        command: distill
        model: m
        data: {task: sst2}
        distill: {teacher: m}
        sweep:
          grid:
            distill: {teacher: [./t1]}
    """)
    cfg = load_config(DistillConfig, recipe)
    assert cfg.sweep.grid == {"distill.teacher": [str(tmp_path / "t1")]}



@pytest.mark.parametrize("setting", ["data.seq_len=64", "data.stride=8", "data.max_tokens=100",
                                     "data.max_target_length=10", "generate.num_beams=8"])
def test_settings_a_glue_task_never_reads_are_refused(setting):
    details = problems(None, [*MINIMAL, setting])
    assert len(details) == 1 and details[0].startswith(setting.partition("=")[0].rsplit(".", 1)[0]
                                                       if setting.startswith("generate") else setting.partition("=")[0])


def test_a_language_modelling_length_on_a_summarisation_task_is_refused():
    assert problems(None, ["model=m", "data.task=xsum", "data.seq_len=64"])[0].startswith("data.seq_len: is read for")


def test_a_model_alias_stays_an_alias_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    """From a folder holding `minilm/` (recipes/ has one: YAML files, no model), `model: minilm` is still the
    bundled MiniLM; a folder that is a model (config.json) is taken as the path, as any other value is."""
    recipe = tmp_path / "tiny" / "r.yaml"
    recipe.parent.mkdir()
    recipe.write_text("command: finetune\nmodel: minilm\ndata: {task: sst2}\n")
    (tmp_path / "minilm").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_config(FinetuneConfig, "tiny/r.yaml").model == "minilm"
    (tmp_path / "minilm" / "config.json").write_text("{}")
    assert load_config(FinetuneConfig, "tiny/r.yaml").model == str(tmp_path / "minilm")
    other = tmp_path / "tiny" / "runs-x"
    other.mkdir()
    recipe.write_text("command: finetune\nmodel: runs-x\ndata: {task: sst2}\n")
    assert load_config(FinetuneConfig, "tiny/r.yaml").model == str(other)
