"""Every recipe (and each point of its sweep) loads under the strict schema, carries its header, and has a
row in recipes/README.md."""

from __future__ import annotations

import pytest
import yaml

from spikelm_core.config import TASK_CONFIGS, load_config
from spikelm_core.errors import ConfigError
from spikelm_core.sweep import expand_points, point_config
from spikelm_core.training.recipes import paper_recipe, recipes_dir
from tests.conftest import REPO, SHARED_DATA

ROOT = REPO / "recipes"
RECIPES = sorted(ROOT.rglob("*.yaml"))
PAPER_EPOCHS = {"cola": 50, "mnli": 5, "mrpc": 20, "sst2": 10, "stsb": 20, "qqp": 5, "qnli": 10, "rte": 20}


def test_there_are_recipes_for_every_paper_experiment():
    names = {p.relative_to(ROOT).as_posix() for p in RECIPES}
    for task in PAPER_EPOCHS:
        assert f"bert_base/finetune_{task}.yaml" in names
    for name in ("pretrain_base", "ablation_lif_baseline", "ablation_bidirectional", "ablation_amplitude",
                 "ablation_frequency", "ablation_k2", "ablation_k3", "ablation_k4", "ablation_T1", "ablation_T4"):
        assert f"bert_base/{name}.yaml" in names
    for verb in ("finetune", "distill", "pretrain", "eval"):
        assert f"tiny/{verb}.yaml" in names


def _command(path):
    """The recipe's command, from it or from its base chain."""
    data = yaml.safe_load(path.read_text())
    return data["command"] if "command" in data else _command(path.parent / data["base"])


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_recipe_loads_and_has_a_header(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # recipe paths do not depend on the current directory
    text = path.read_text()
    head = [line for line in text.splitlines() if line.startswith("#")]
    assert any(line.startswith("# Paper:") for line in head), "header must name the paper table (or 'none')"
    assert any(line.startswith("# Run:") for line in head)
    data = yaml.safe_load(text)
    assert not {"task", "glue_task", "summarization_task"} & set(data), "0.1.0 keys: use command and data.task"
    command = _command(path)
    template = []
    if path.parent.name == "base":  # a base recipe: every setting but the task's data (and teacher run)
        template = ["data.source=glue/sst2", "model=minilm"] + (["distill.teacher=minilm"] if command == "distill" else [])
    cfg = load_config(TASK_CONFIGS[command], path, template)
    assert cfg.command == command
    if getattr(cfg, "sweep", None) is not None:  # every point is a valid run, as `sweep` checks up front
        for point in expand_points(cfg.sweep):
            point_config(cfg, point, tmp_path)
    if path.parent.name == "bert_base" and path.name.startswith("finetune_"):
        glue = path.stem.split("_", 1)[1]
        assert cfg.task == glue and cfg.task_family == "glue"
        assert cfg.train.epochs == PAPER_EPOCHS[glue]
        assert (cfg.train.lr, cfg.train.lr_schedule, cfg.train.batch_size, cfg.data.max_length) == (2e-5, "constant", 32, 128)
        assert "secondary source" in head[0]
    if path.parent.name == "bart_base":
        assert cfg.task == path.stem.split("_", 1)[1] and cfg.task_family == "summarization"
    if path.parent.name == "bert_base" and command == "pretrain":
        t = cfg.train
        assert (t.lr, t.lr_schedule, t.warmup_steps, t.schedule_steps, t.max_steps) == (2e-4, "linear", 5000, 500_000, 100_000)
        assert cfg.mlm.nsp and cfg.data.max_length == 128


@pytest.mark.parametrize("path", sorted((ROOT / "tiny").glob("*.yaml")), ids=lambda p: p.name)
def test_tiny_recipes_name_the_shared_data_from_their_folder(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(TASK_CONFIGS[_command(path)], path)
    d = cfg.data
    for value in (d.source, d.train_file, d.validation_file):
        if value is not None and "shared" in value:
            assert value.startswith(str(SHARED_DATA)), value
    if cfg.task_family == "glue":
        assert d.source == str(SHARED_DATA / "glue" / "SST-2") and cfg.task == "sst2"


def test_readme_has_one_row_per_recipe():
    readme = (ROOT / "README.md").read_text()
    for path in RECIPES:
        assert f"`{path.relative_to(ROOT).as_posix()}`" in readme, path


def test_task_flag_finds_the_paper_recipe():
    assert recipes_dir() == ROOT
    assert paper_recipe("finetune", "MNLI") == ROOT / "bert_base" / "finetune_mnli.yaml"
    assert paper_recipe("finetune", "sst-2").name == "finetune_sst2.yaml"
    assert paper_recipe("distill", "XSum") == ROOT / "bart_base" / "distill_xsum.yaml"
    assert paper_recipe("finetune", "cnndm") == ROOT / "bart_base" / "finetune_cnn_dm.yaml"
    with pytest.raises(ConfigError, match="did you mean 'sst2'"):
        paper_recipe("finetune", "sst3")
    with pytest.raises(ConfigError, match="no bundled eval recipe for rte"):
        paper_recipe("eval", "rte")


def test_transfer_study_is_one_template_plus_data_settings():
    """recipes/minilm_glue: the method's settings live in base/; a task recipe names its base, its data
    and the teacher run it starts from, nothing else."""
    folder = ROOT / "minilm_glue"
    tasks = sorted(folder.glob("*.yaml"))
    assert {p.name for p in (folder / "base").glob("*.yaml")} == {"teacher.yaml", "twin.yaml"}
    assert len(tasks) >= 6
    for path in tasks:
        data = yaml.safe_load(path.read_text())
        assert data["base"] in ("base/teacher.yaml", "base/twin.yaml"), path
        assert set(data) <= {"base", "data", "model", "distill"}, path
        assert set(data.get("distill", {})) <= {"teacher"}, path
        assert "source" in data["data"], path
