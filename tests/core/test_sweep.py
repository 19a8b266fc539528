"""Sweeps: grid expansion and names, the point configs, the Pareto front, and the run loop (finished
points skipped, an interrupted one run again, changed settings refused) with a stand-in trainer."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import spikelm_core.training as training
from spikelm_core.config import FinetuneConfig, config_from_dict, load_config, save_config
from spikelm_core.errors import ConfigError
from spikelm_core.sweep import (POINT_FILE, SWEEP_SCHEMA, Point, SweepRow, expand_points, mark_pareto, masked_settings,
                                parse_grid, point_config, run_sweep, with_grid)
from spikelm_core.training.results import RunResult


@pytest.fixture(autouse=True)
def _stand_in_model(monkeypatch):
    """The stand-in model 'm' of these configs resolves (a sweep checks each point's model before the first trains)."""
    import spikelm_core.checkpoints as checkpoints

    real = checkpoints.resolve_source
    monkeypatch.setattr(checkpoints, "resolve_source", lambda name: Path(".") if str(name) == "m" else real(name))


def _cfg(out, sweep=None, **more):
    data = {"model": "m", "out_dir": str(out), "data": {"task": "sst2"}, "neuron": {"k": 2.0},
            "train": {"lr": 1e-4}, **more}
    if sweep is not None:
        data["sweep"] = sweep
    return config_from_dict(FinetuneConfig, data)


def test_grid_points_are_every_combination_first_key_slowest_then_named_points(tmp_path):
    cfg = _cfg(tmp_path, {"grid": {"neuron.k": [2.0, 3], "neuron.num_timesteps": [1, 4]},
                          "points": {"lif": {"neuron.kind": "lif"}}})
    points = expand_points(cfg.sweep)
    assert [p.name for p in points] == ["k2_num_timesteps1", "k2_num_timesteps4", "k3_num_timesteps1",
                                        "k3_num_timesteps4", "lif"]
    assert points[1].values == {"neuron.k": 2.0, "neuron.num_timesteps": 4}
    assert expand_points(_cfg(tmp_path, {"grid": {"neuron.kind": ["lif"]}}).sweep)[0].name == "kind-lif"


def test_grid_values_that_are_paths_name_points_without_separators(tmp_path):
    cfg = _cfg(tmp_path, {"grid": {"model": ["runs/tgt/final", "runs/tgt"]}})
    assert [p.name for p in expand_points(cfg.sweep)] == ["model-runs-tgt-final", "model-runs-tgt"]
    same = _cfg(tmp_path, {"grid": {"data.source": ["/data/glue/SST-2", "../../data/glue/SST-2"]}})
    with pytest.raises(ConfigError, match="share the name 'source-data-glue-SST-2'") as exc:
        expand_points(same.sweep)  # never a folder outside the sweep's own
    assert "named points" in exc.value.hint
    signed = _cfg(tmp_path, {"grid": {"neuron.k": [2], "train.lr": [1e-4]}, "points": {}})
    assert expand_points(signed.sweep)[0].name == "k2_lr0.0001"
    negative = _cfg(tmp_path, {"grid": {"neuron.lif_v_reset": [-0.5, 0.5]}})
    assert [p.name for p in expand_points(negative.sweep)] == ["lif_v_reset-0.5", "lif_v_reset0.5"]  # the sign kept


def test_a_named_point_with_a_grid_point_name_is_refused(tmp_path):
    cfg = _cfg(tmp_path, {"grid": {"neuron.k": [2.0]}, "points": {"k2": {"neuron.k": 3.0}}})
    with pytest.raises(ConfigError, match="share the name 'k2'") as exc:
        expand_points(cfg.sweep)
    assert "rename the named point" in exc.value.hint
    with pytest.raises(ConfigError, match="share the name 'k2'") as exc:
        expand_points(_cfg(tmp_path, {"grid": {"neuron.k": [2, 2.0]}}).sweep)
    assert "give each grid value once" in exc.value.hint


def test_parse_grid_reads_each_value_as_yaml():
    assert parse_grid(["neuron.k=2,3.5", "neuron.kind=lif,elastic_bi", "neuron.learn_alpha=true"]) == {
        "neuron.k": [2, 3.5], "neuron.kind": ["lif", "elastic_bi"], "neuron.learn_alpha": [True]}
    assert parse_grid(["neuron.k=2", "neuron.T=1", "neuron.k=3,4"]) == {"neuron.k": [2, 3, 4], "neuron.T": [1]}
    with pytest.raises(ConfigError) as exc:
        parse_grid(["neuron.k", "neuron.k=", "bad key=1"])
    assert len(exc.value.details) == 3 and exc.value.hint is None
    with pytest.raises(ConfigError) as exc:  # a list value: the comma split is what breaks it, and the hint says so
        parse_grid(["neuron.k_candidates=[2,3]"])
    assert "splits its values on commas" in exc.value.hint


@pytest.mark.parametrize("sweep, where", [
    ({"grid": {"neuron.k": []}}, "sweep.grid.neuron.k: needs at least one value"),
    ({}, "sweep.grid: give a grid"),
    ({"points": {"a b": {"neuron.k": 3.0}}}, "sweep.points.a b: name"),
    ({"grid": {"neuron..k": [1]}}, "must be a dotted key"),
    ({"points": {"reference": {"neuron.k": 3.0}}}, "sweep.points.reference: name: 'reference' is the folder"),
    ({"grid": {"out_dir": ["a", "b"]}}, "sweep.grid.out_dir: the sweep sets this itself"),
    ({"points": {"z": {"sweep.energy.enabled": False}}}, "sweep.points.z.sweep.energy.enabled: the sweep sets"),
])
def test_bad_sweep_sections_name_the_field(tmp_path, sweep, where):
    with pytest.raises(ConfigError) as exc:
        _cfg(tmp_path, sweep)
    assert where in str(exc.value)


def test_point_values_beat_the_recipe_and_the_point_runs_in_its_own_folder(tmp_path):
    cfg = _cfg(tmp_path / "study", {"grid": {"neuron.k": [3.0]}})
    point = point_config(cfg, Point("k3", {"neuron.k": 3.0, "train.lr": 5e-5}), tmp_path / "study")
    assert point.neuron.k == 3.0 and point.train.lr == 5e-5 and point.sweep is None
    assert point.out_dir == str(tmp_path / "study" / "k3")
    with pytest.raises(ConfigError, match="sweep point 'bad'") as exc:
        point_config(cfg, Point("bad", {"neuron.k": -1.0}), tmp_path)
    assert "neuron.k" in str(exc.value)


def test_nested_point_settings_become_dotted_keys_and_the_later_one_wins(tmp_path):
    cfg = _cfg(tmp_path, {"points": {"lif": {"neuron.kind": "lif", "train.max_steps": 150,
                                             "train": {"max_steps": 75, "eval_steps": 25}}}})
    assert cfg.sweep.points["lif"] == {"neuron.kind": "lif", "train.max_steps": 75, "train.eval_steps": 25}
    point = point_config(cfg, expand_points(cfg.sweep)[0], tmp_path)
    assert (point.train.max_steps, point.train.eval_steps, point.train.lr) == (75, 25, 1e-4)
    recipe = tmp_path / "r.yaml"  # what `-s sweep.points.lif.train.max_steps=60` writes into a recipe's point
    save_config(cfg, recipe)
    loaded = load_config(FinetuneConfig, recipe, ["sweep.points.lif.train.max_steps=60"])
    assert loaded.sweep.points["lif"] == {"neuron.kind": "lif", "train.max_steps": 60, "train.eval_steps": 25}
    # null drops a recipe's points (a grid left, the sweep stands); with nothing left it is refused
    gridded = load_config(FinetuneConfig, recipe, ["sweep.points=null", "sweep.grid={neuron.k: [2.0, 3.0]}"])
    assert gridded.sweep.points == {} and gridded.sweep.grid == {"neuron.k": [2.0, 3.0]}
    with pytest.raises(ConfigError, match="grid"):
        load_config(FinetuneConfig, recipe, ["sweep.points=null"])
    # a grid key given with -s, as points' keys are: nested mappings become dotted keys there too
    nested = load_config(FinetuneConfig, recipe, ["sweep.grid.neuron.k=[2, 3]", "sweep.grid.neuron.num_timesteps=[1]"])
    assert nested.sweep.grid == {"neuron.k": [2.0, 3.0], "neuron.num_timesteps": [1]}


def test_settings_given_on_the_command_line_that_points_set_themselves_are_named(tmp_path):
    cfg = _cfg(tmp_path, {"grid": {"neuron.k": [2.0, 3.0]},
                          "points": {"T1": {"neuron.num_timesteps": 1}, "lif": {"neuron.kind": "lif"}}})
    given = [("neuron.k", 4), ("neuron.num_timesteps", 2), ("train.lr", 1e-4), ("neuron", {"kind": "lif"})]
    assert masked_settings(cfg, given) == [
        "neuron.k=4 does not reach points k2, k3, which set their own neuron.k",
        "neuron.num_timesteps=2 does not reach point T1, which sets its own neuron.num_timesteps",
        "neuron={'kind': 'lif'} does not reach points k2, k3, T1, lif, which set their own neuron"]
    assert masked_settings(cfg, given[1:3], only=["k2", "lif"]) == []


def test_grid_option_adds_to_the_recipe_grid_and_makes_a_sweep_section(tmp_path):
    assert with_grid(_cfg(tmp_path), None).sweep is None
    cfg = with_grid(_cfg(tmp_path), {"neuron.k": [2.0, 3.0]})
    assert cfg.sweep.grid == {"neuron.k": [2.0, 3.0]}
    cfg = with_grid(_cfg(tmp_path, {"grid": {"neuron.k": [4.0]}, "points": {"lif": {"neuron.kind": "lif"}}}),
                    {"neuron.num_timesteps": [1]})
    assert cfg.sweep.grid == {"neuron.k": [4.0], "neuron.num_timesteps": [1]} and "lif" in cfg.sweep.points


def _row(name, metric, energy_ratio, status="done"):
    return SweepRow(name=name, values={}, status=status, metric=metric, energy_ratio=energy_ratio)


def test_pareto_front_by_hand():
    rows = [_row("a", 0.80, 2.0), _row("b", 0.78, 4.0), _row("c", 0.77, 3.0), _row("d", 0.80, 1.5),
            _row("e", 0.70, 8.0), _row("f", 0.60, None), _row("g", 0.90, 1.0, status="same_as")]
    mark_pareto(rows)
    # c is beaten by b (higher metric, less energy); d by a (same metric, less energy); f has no energy
    assert [r.name for r in rows if r.pareto] == ["a", "b", "e"]
    assert rows[0].relative_energy == 0.5


def test_pareto_front_and_table_of_a_lower_is_better_metric():
    """Perplexity: lower is better, and shown as it is (not x 100) in the table and on the plots."""
    from spikelm_core.sweep import SweepReport, to_markdown

    rows = [SweepRow(name=n, values={}, status="done", metric=m, metric_name="perplexity", energy_ratio=e)
            for n, m, e in (("k2", 296.5, 3.0), ("k4", 341.5, 5.0), ("k3", 350.0, 4.0))]
    mark_pareto(rows)
    assert [r.name for r in rows if r.pareto] == ["k2", "k4"]  # k3: worse (higher) perplexity at more energy than k4
    md = to_markdown(SweepReport(command="finetune", task="wikitext2", out_dir="s", rows=rows))
    assert "metric: perplexity (lower is better)" in md and "| 296.5 |" in md and "29650" not in md
    accuracy = [_row("a", 0.8, 2.0)]
    accuracy[0].metric_name = "accuracy"
    assert "metric: accuracy x 100" in to_markdown(SweepReport(command="distill", task="sst2", out_dir="s", rows=accuracy))


class _FakeTrainer:
    """Stands in for run_finetune: writes what a finished run leaves (run_config.yaml, final/)."""

    def __init__(self, fail_on=None):
        self.calls = []
        self.fail_on = fail_on

    def __call__(self, cfg, resume, callbacks):
        from pathlib import Path

        out = Path(cfg.out_dir)
        self.calls.append((out.name, resume))
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "run_config.yaml")
        checkpoint = out / "checkpoint-1"
        resumed = str(checkpoint) if checkpoint.is_dir() else None
        if out.name == self.fail_on:
            checkpoint.mkdir()
            raise KeyboardInterrupt
        (out / "final").mkdir(exist_ok=True)
        acc = 0.9 - 0.05 * cfg.neuron.k
        records = [{"step": 1, "eval_accuracy": acc - 0.1}, {"step": 2, "loss": 0.4}, {"step": 1, "eval_accuracy": acc - 0.2},
                   {"step": 3, "eval_accuracy": acc}]  # step 1 twice (a resume): the last value counts
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 4, "ev')
        return RunResult(command="finetune", out_dir=str(out), final_dir=str(out / "final"), task="sst2",
                         global_step=3, epochs=1.0, train_loss=0.5, metrics={"dev": {"accuracy": acc}},
                         primary_metric="accuracy", firing_rate=0.6 / cfg.neuron.k, resumed_from=resumed)


def test_sweep_skips_finished_points_reruns_an_interrupted_one_and_refuses_changed_settings(tmp_path, monkeypatch):
    out = tmp_path / "study"
    sweep = {"grid": {"neuron.k": [2.0, 3.0, 4.0]}, "points": {"again": {"neuron.k": 3.0}},
             "energy": {"enabled": False}}
    fake = _FakeTrainer(fail_on="k4")
    monkeypatch.setattr(training, "run_finetune", fake)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_cfg(out, sweep))
    assert [c[0] for c in fake.calls] == ["k2", "k3", "k4"]
    assert (out / "k3" / POINT_FILE).is_file() and not (out / "k4" / POINT_FILE).exists()
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["name"] for r in rows] == ["k2", "k3"]  # the table of what was done, written after each point

    fake = _FakeTrainer()
    monkeypatch.setattr(training, "run_finetune", fake)
    report = run_sweep(_cfg(out, sweep))
    assert fake.calls == [("k4", "auto")]  # continues the interrupted point only
    assert [(r.name, r.status, r.same_as) for r in report.rows] == [
        ("k2", "done", None), ("k3", "done", None), ("k4", "done", None), ("again", "same_as", "k3")]
    assert report.rows[0].metric == pytest.approx(0.8) and report.rows[2].firing_rate == pytest.approx(0.15)
    data = json.loads((out / "sweep.json").read_text())
    assert data["schema"] == SWEEP_SCHEMA and len(data["rows"]) == 4 and data["reference"] is None
    assert "| k2 | neuron.k=2 | 80.0 |" in (out / "sweep.md").read_text()
    assert not (out / "pareto.png").exists()  # no energy audit, nothing to plot
    assert report.rows[0].curve == [[1, pytest.approx(0.6)], [3, pytest.approx(0.8)]]  # the cut last line skipped
    assert report.rows[3].curve == [] and data["rows"][0]["curve"][1][0] == 3
    assert "| 60.0 / 80.0 |" in (out / "sweep.md").read_text()
    # the resumed point's minutes count from its checkpoint on, and the table says so
    assert [r.resumed_from for r in report.rows[:3]] == [None, None, str(out / "k4" / "checkpoint-1")]
    assert " (from checkpoint-1) |" in [ln for ln in (out / "sweep.md").read_text().splitlines() if "| k4 |" in ln][0]
    assert [r["resumed_from"] for r in csv.DictReader((out / "sweep.csv").open())][1:3] == ["", str(out / "k4" / "checkpoint-1")]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"

    with pytest.raises(ConfigError, match="sweep point 'k2' .* was run with other settings") as exc:
        run_sweep(_cfg(out, sweep, train={"lr": 3e-4}))
    assert "train.lr" in str(exc.value)


def test_point_selection_runs_those_points_keeps_finished_ones_and_names_the_unknown(tmp_path, monkeypatch):
    out = tmp_path / "study"
    sweep = {"grid": {"neuron.k": [2.0, 3.0, 4.0]}, "points": {"again": {"neuron.k": 3.0}},
             "energy": {"enabled": False}}
    fake = _FakeTrainer()
    monkeypatch.setattr(training, "run_finetune", fake)
    report = run_sweep(_cfg(out, sweep), only=["k3"])
    assert fake.calls == [("k3", "auto")]
    assert [(r.name, r.status, r.same_as) for r in report.rows] == [("k3", "done", None), ("again", "same_as", "k3")]
    assert not (out / "k2").exists() and not (out / "k4").exists()

    report = run_sweep(_cfg(out, sweep), only=["k4"])
    assert fake.calls[1:] == [("k4", "auto")]  # k3 finished: in the table, not run again
    assert [r.name for r in report.rows] == ["k3", "k4", "again"]

    report = run_sweep(_cfg(out, sweep))
    assert fake.calls[2:] == [("k2", "auto")]
    assert [r.name for r in report.rows] == ["k2", "k3", "k4", "again"]
    assert [r["name"] for r in csv.DictReader((out / "sweep.csv").open())] == ["k2", "k3", "k4", "again"]

    with pytest.raises(ConfigError, match="--point 'k5': this sweep has no such point") as exc:
        run_sweep(_cfg(out, sweep), only=["k2", "k5"])
    assert "k2, k3, k4, again" in str(exc.value.details)
    assert len(fake.calls) == 3


def test_with_point_selection_a_changed_point_not_selected_is_left_out_and_cannot_be_started_from(tmp_path, monkeypatch):
    out = tmp_path / "study"

    def sweep(a=None, b=None):
        return {"points": {"a": a or {"neuron.k": 2.0}, "b": b or {"neuron.k": 3.0}, "T1": {"neuron.num_timesteps": 1}},
                "start_from": {"T1": "a"}, "energy": {"enabled": False}}

    fake = _FakeTrainer()
    monkeypatch.setattr(training, "run_finetune", fake)
    run_sweep(_cfg(out, sweep()))
    assert [c[0] for c in fake.calls] == ["a", "b", "T1"]

    said = []
    report = run_sweep(_cfg(out, sweep(b={"neuron.k": 3.0, "train.lr": 3e-4})), only=["a"], progress=said.append)
    assert len(fake.calls) == 3 and [r.name for r in report.rows] == ["a", "T1"]  # b is stale: out of the table
    assert any("point 2/3 b: not among --point and run with other settings (train.lr: 0.0001 there, now 0.0003)" in s
               for s in said)
    with pytest.raises(ConfigError, match="sweep point 'b' .* was run with other settings"):
        run_sweep(_cfg(out, sweep(b={"neuron.k": 3.0, "train.lr": 3e-4})), only=["b"])  # asked for: refused

    # a changed: T1, finished but trained from the old a, is stale too; run again, it is refused
    said.clear()
    report = run_sweep(_cfg(out, sweep(a={"neuron.k": 2.5})), only=["b"], progress=said.append)
    assert [r.name for r in report.rows] == ["b"] and len(fake.calls) == 3  # b as it first ran: unchanged, skipped
    assert any("T1: not among --point and trained from point 'a', whose run has other settings" in s for s in said)
    with pytest.raises(ConfigError, match="'T1' was trained from point 'a'.s model, whose run has other settings"):
        run_sweep(_cfg(out, sweep(a={"neuron.k": 2.5})), only=["T1"])

    import shutil

    shutil.rmtree(out / "T1")
    with pytest.raises(ConfigError, match="'T1' starts from point 'a'.s trained model, whose run has other settings") as exc:
        run_sweep(_cfg(out, sweep(a={"neuron.k": 2.5})), only=["T1"])
    assert "--point a" in exc.value.hint and len(fake.calls) == 3


def test_selecting_a_point_equal_to_an_earlier_one_runs_that_one_once(tmp_path, monkeypatch):
    out = tmp_path / "study"
    sweep = {"grid": {"neuron.k": [2.0, 3.0]}, "points": {"again": {"neuron.k": 3.0}}, "energy": {"enabled": False}}
    fake = _FakeTrainer()
    monkeypatch.setattr(training, "run_finetune", fake)
    report = run_sweep(_cfg(out, sweep), only=["again"])
    assert fake.calls == [("k3", "auto")]  # run under the first name, not as a second copy
    assert [(r.name, r.status, r.same_as) for r in report.rows] == [("k3", "done", None), ("again", "same_as", "k3")]
    run_sweep(_cfg(out, sweep), only=["k3"])
    assert fake.calls == [("k3", "auto")] and not (out / "again").exists()


def test_a_point_starts_from_an_earlier_points_trained_model_reconverted(tmp_path, monkeypatch):
    out = tmp_path / "study"
    sweep = {"grid": {"neuron.k": [2.0]}, "points": {"T1": {"neuron.num_timesteps": 1}},
             "start_from": {"T1": "k2"}, "energy": {"enabled": False}}
    fake = _FakeTrainer()
    monkeypatch.setattr(training, "run_finetune", fake)
    with pytest.raises(ConfigError, match="'T1' starts from point 'k2'.s trained model, which is not there") as exc:
        run_sweep(_cfg(out, sweep), only=["T1"])
    assert "--point k2" in exc.value.hint and fake.calls == []

    report = run_sweep(_cfg(out, sweep))
    assert [c[0] for c in fake.calls] == ["k2", "T1"]
    t1 = load_config(FinetuneConfig, out / "T1" / "run_config.yaml", [])
    k2 = load_config(FinetuneConfig, out / "k2" / "run_config.yaml", [])
    assert (t1.model, t1.reconvert, t1.neuron.num_timesteps) == (str(out / "k2" / "final"), True, 1)
    assert (k2.model, k2.reconvert) == ("m", False)
    assert [(r.name, r.start_from) for r in report.rows] == [("k2", None), ("T1", "k2")]
    assert "| T1 | neuron.num_timesteps=1, from k2's model |" in (out / "sweep.md").read_text()
    assert [r["start_from"] for r in csv.DictReader((out / "sweep.csv").open())] == ["", "k2"]
    run_sweep(_cfg(out, sweep))
    assert len(fake.calls) == 2  # both finished: skipped, the start unchanged


def test_start_from_chains_each_point_from_the_one_before(tmp_path, monkeypatch):
    """A curriculum over time steps: T2 from k2's model, T1 from T2's, each a finished run of its own."""
    out = tmp_path / "study"
    sweep = {"grid": {"neuron.k": [2.0]},
             "points": {"T2": {"neuron.num_timesteps": 2}, "T1": {"neuron.num_timesteps": 1}},
             "start_from": {"T2": "k2", "T1": "T2"}, "energy": {"enabled": False}}
    fake = _FakeTrainer()
    monkeypatch.setattr(training, "run_finetune", fake)
    with pytest.raises(ConfigError, match="'T1' starts from point 'T2'.s trained model, which is not there"):
        run_sweep(_cfg(out, sweep), only=["k2", "T1"])
    assert fake.calls == []  # refused before k2 trained: T1's start (T2) is neither there nor selected

    report = run_sweep(_cfg(out, sweep))
    assert [c[0] for c in fake.calls] == ["k2", "T2", "T1"]
    models = {name: load_config(FinetuneConfig, out / name / "run_config.yaml", []).model for name in ("T2", "T1")}
    assert models == {"T2": str(out / "k2" / "final"), "T1": str(out / "T2" / "final")}
    assert [(r.name, r.start_from) for r in report.rows] == [("k2", None), ("T2", "k2"), ("T1", "T2")]


def test_a_call_stopped_part_way_keeps_the_finished_points_ahead_in_the_table(tmp_path, monkeypatch):
    out = tmp_path / "study"
    sweep = {"grid": {"neuron.k": [2.0, 3.0, 4.0]}, "energy": {"enabled": False}}
    monkeypatch.setattr(training, "run_finetune", _FakeTrainer())
    run_sweep(_cfg(out, sweep))
    (out / "k3" / POINT_FILE).unlink()  # k3 to run again; this call stops there
    monkeypatch.setattr(training, "run_finetune", _FakeTrainer(fail_on="k3"))
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_cfg(out, sweep))
    assert [r["name"] for r in csv.DictReader((out / "sweep.csv").open())] == ["k2", "k4"]


def test_a_point_started_from_another_is_skipped_when_done_under_a_relative_out_dir(tmp_path, monkeypatch):
    """`--out-dir runs/x` (relative): the start model's path compares equal to the one its run_config.yaml
    reads back (absolute), so the finished point is skipped, not refused as changed."""
    monkeypatch.chdir(tmp_path)
    sweep = {"grid": {"neuron.k": [2.0]}, "points": {"T1": {"neuron.num_timesteps": 1}},
             "start_from": {"T1": "k2"}, "energy": {"enabled": False}}
    fake = _FakeTrainer()
    monkeypatch.setattr(training, "run_finetune", fake)
    run_sweep(_cfg("runs/study", sweep), only=["k2"])
    run_sweep(_cfg("runs/study", sweep), only=["T1"])
    report = run_sweep(_cfg("runs/study", sweep))
    assert [c[0] for c in fake.calls] == ["k2", "T1"] and [r.status for r in report.rows] == ["done", "done"]


def test_a_recipe_drops_points_and_starts_of_its_base_by_setting_them_null(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "command: finetune\nmodel: m\ndata: {task: sst2}\n"
        "sweep:\n  points: {spikelm: {}, T2: {neuron.num_timesteps: 2}, T1: {neuron.num_timesteps: 1}}\n"
        "  start_from: {T2: spikelm, T1: T2}\n")
    (tmp_path / "over.yaml").write_text(
        "base: base.yaml\nsweep:\n  points: {T2: null, lif: {neuron.kind: lif}}\n  start_from: {T2: null, T1: spikelm}\n")
    cfg = load_config(FinetuneConfig, tmp_path / "over.yaml", [])
    assert [p.name for p in expand_points(cfg.sweep)] == ["spikelm", "T1", "lif"]
    assert cfg.sweep.start_from == {"T1": "spikelm"}
    base = load_config(FinetuneConfig, tmp_path / "base.yaml", [])
    assert list(base.sweep.points) == ["spikelm", "T2", "T1"] and base.sweep.start_from == {"T2": "spikelm", "T1": "T2"}


@pytest.mark.parametrize("start_from, message", [
    ({"T1": "k5"}, "sweep.start_from: this sweep has no point 'k5'"),
    ({"k2": "T1"}, "point 'k2' starts from 'T1', which runs after it"),
])
def test_start_from_names_two_points_the_earlier_one_second(tmp_path, start_from, message):
    sweep = {"grid": {"neuron.k": [2.0]}, "points": {"T1": {"neuron.num_timesteps": 1}}, "start_from": start_from}
    with pytest.raises(ConfigError, match=message):
        run_sweep(_cfg(tmp_path, sweep))


@pytest.mark.parametrize("start_from, where", [
    ({"T1": "T1"}, "sweep.start_from.T1: a point cannot start from its own model"),
    ({"m1": "T1"}, "sweep.start_from.m1: that point sets model itself"),
])
def test_bad_start_from_entries_name_the_field(tmp_path, start_from, where):
    sweep = {"points": {"T1": {"neuron.num_timesteps": 1}, "m1": {"model": "other"}}, "start_from": start_from}
    with pytest.raises(ConfigError) as exc:
        _cfg(tmp_path, sweep)
    assert where in str(exc.value)


def test_crowded_pareto_labels_do_not_overlap():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spikelm_core.sweep import place_labels

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    points = [(f"bidirectional_s{i}", 0.18 + 0.001 * i, 79.0 + 0.1 * i) for i in range(5)] + [("k2", 0.28, 79.3)]
    ax.scatter([p[1] for p in points], [p[2] for p in points])
    ax.set_xlim(0, 0.3)
    ax.set_ylim(50, 85)
    fig.tight_layout()
    texts = place_labels(ax, points)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    assert [t.get_text() for t in texts] == [p[0] for p in points]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


def test_a_spiking_reference_is_refused_before_it_is_evaluated(tmp_path):
    from spikelm_core.config import DistillConfig
    from spikelm_core.errors import CheckpointError
    from spikelm_core.sweep import _reference_row

    spiking = tmp_path / "twin"
    spiking.mkdir()
    (spiking / "config.json").write_text(json.dumps({"model_type": "spiking_bert"}))
    cfg = config_from_dict(DistillConfig, {"model": "m", "out_dir": str(tmp_path / "s"), "data": {"task": "sst2"},
                                           "distill": {"teacher": str(spiking)}, "sweep": {"grid": {"neuron.k": [2.0]}}})
    with pytest.raises(CheckpointError, match=r"the teacher \(distill.teacher\) .* is a spiking model"):
        _reference_row(cfg, tmp_path / "s", lambda message: None)


def test_an_unreadable_point_record_is_named_and_a_plot_no_longer_drawn_is_removed(tmp_path, monkeypatch):
    from spikelm_core.sweep import SweepReport, write_report

    out = tmp_path / "study"
    sweep = {"grid": {"neuron.k": [2.0, 3.0]}, "energy": {"enabled": False}}
    monkeypatch.setattr(training, "run_finetune", _FakeTrainer())
    run_sweep(_cfg(out, sweep))
    (out / "k2" / POINT_FILE).write_text('{"point": "k2", "run": ')
    with pytest.raises(ConfigError, match="cannot read the record of a finished sweep point") as exc:
        run_sweep(_cfg(out, sweep))
    assert str(out / "k2" / POINT_FILE) in exc.value.message and "delete that file" in exc.value.hint
    # a table without energies (or curves) removes the plots of an earlier call, which would show other points
    (out / "pareto.png").write_bytes(b"old")
    assert (out / "curves.png").is_file()
    write_report(SweepReport(command="finetune", task="sst2", out_dir=str(out), rows=[_row("a", 0.8, None)]), out)
    assert not (out / "pareto.png").exists() and not (out / "curves.png").exists()


def test_points_of_other_tasks_and_a_missing_audit_text_are_refused_before_anything_runs(tmp_path):
    from spikelm_core.errors import DataError
    from spikelm_core.sweep import plan_sweep

    with pytest.raises(ConfigError, match="must share a task") as exc:
        plan_sweep(_cfg(tmp_path, {"grid": {"data.task": ["sst2", "cola"]}}))
    assert exc.value.details == ["task-sst2: sst2", "task-cola: cola"]
    with pytest.raises(DataError, match="nope.txt"):
        plan_sweep(_cfg(tmp_path, {"grid": {"neuron.k": [2.0]}, "energy": {"data": str(tmp_path / "nope.txt")}}))


def test_a_point_run_by_the_other_command_is_refused_before_the_reference_is_scored(tmp_path, monkeypatch):
    out = tmp_path / "study"
    sweep = {"grid": {"neuron.k": [2.0]}, "energy": {"enabled": False}}
    monkeypatch.setattr(training, "run_finetune", _FakeTrainer())
    run_sweep(_cfg(out, sweep))
    (out / "k2" / "run_config.yaml").write_text("command: distill\nmodel: m\ndistill: {teacher: t}\n")
    scored = []
    monkeypatch.setattr(training, "run_eval", lambda cfg: scored.append(cfg))
    with pytest.raises(ConfigError, match="was not run by this sweep's command") as exc:
        run_sweep(_cfg(out, {**sweep, "reference": "dense"}))
    assert "another --out-dir" in exc.value.hint and scored == []


def test_the_reference_is_scored_again_when_its_model_or_data_change(tmp_path, monkeypatch):
    from spikelm_core.sweep import _reference_row
    from spikelm_core.training.results import EvalResult  # noqa: F401 (the real writer is stood in for)

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": "bert"}))
    scored = []

    def fake_eval(cfg):
        from pathlib import Path

        scored.append(cfg.model)
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "eval_config.yaml")
        written = {"metrics": {"dev": {"accuracy": 0.5 + len(scored) / 10}}, "primary_metric": "accuracy"}
        (out / "eval_results.json").write_text(json.dumps(written))
        return SimpleNamespace(to_dict=lambda: written)  # as EvalResult: what a rank that writes nothing reads

    monkeypatch.setattr(training, "run_eval", fake_eval)
    out = tmp_path / "s"

    def row(ref, **data):
        cfg = _cfg(out, {"grid": {"neuron.k": [2.0]}, "reference": str(tmp_path / ref)},
                   data={"task": "sst2", **data})
        return _reference_row(cfg, out, lambda message: None)

    assert row("a").metric == pytest.approx(0.6)
    assert row("a").metric == pytest.approx(0.6) and len(scored) == 1  # scored once
    assert row("b").metric == pytest.approx(0.7) and scored[-1] == str(tmp_path / "b")  # another model
    assert row("b", max_length=64).metric == pytest.approx(0.8)  # other data settings
    assert len(scored) == 3
    # the same data found elsewhere (data.data_dir, which a finished point may change too): not scored again
    assert row("b", max_length=64, data_dir=str(tmp_path / "glue2")).metric == pytest.approx(0.8) and len(scored) == 3


def test_relative_paths_of_the_sweep_section_are_read_from_the_recipes_folder(tmp_path, monkeypatch):
    folder = tmp_path / "recipes"
    (folder / "tref").mkdir(parents=True)
    (folder / "cal.txt").write_text("some text\n")
    (folder / "r.yaml").write_text(
        "command: finetune\nmodel: ./tref\ndata: {task: sst2}\n"
        "sweep:\n  reference: ./tref\n  energy: {data: ./cal.txt}\n  grid: {model: [./tref, minilm]}\n"
        "  points: {b: {model: ./tref}, c: {distill: {teacher: ./tref}}}\n")
    monkeypatch.chdir(tmp_path)
    from spikelm_core.config.loading import _resolve_paths

    layer = {"sweep": {"reference": "./tref", "energy": {"data": "./cal.txt"}, "grid": {"model": ["./tref", "minilm"]},
                       "points": {"b": {"model": "./tref"}, "c": {"distill": {"teacher": "./tref"}},
                                  "d": {"distill.teacher": "./tref"}}}}
    _resolve_paths(layer, folder)
    ref = str(folder / "tref")
    assert layer["sweep"]["reference"] == ref and layer["sweep"]["energy"]["data"] == str(folder / "cal.txt")
    assert layer["sweep"]["grid"]["model"] == [ref, "minilm"]  # an alias stays as written
    assert layer["sweep"]["points"]["b"]["model"] == ref
    assert layer["sweep"]["points"]["c"]["distill"]["teacher"] == ref
    assert layer["sweep"]["points"]["d"]["distill.teacher"] == ref
    cfg = load_config(FinetuneConfig, folder / "r.yaml")
    assert cfg.sweep.reference == ref and cfg.sweep.points["b"]["model"] == ref


def test_the_energy_audit_runs_again_when_its_settings_change(tmp_path, monkeypatch):
    from spikelm_core import sweep as sweep_module

    audits = []

    def fake_energy(final_dir, run_cfg, settings):
        audits.append((Path(final_dir).parent.name, settings.batches, settings.count_neuron_updates))
        ratio = 4.0 - (0.5 if settings.count_neuron_updates else 0.0)
        return {"ratio": ratio, "paper_ratio": None, "mean_firing_rate": 0.3, "seq_len": 16, "data": {},
                "amplitudes": "checkpoint", "settings": sweep_module._energy_settings(run_cfg, settings)}

    monkeypatch.setattr(sweep_module, "_energy", fake_energy)
    monkeypatch.setattr(training, "run_finetune", _FakeTrainer())
    out = tmp_path / "study"
    sweep = {"grid": {"neuron.k": [2.0, 3.0]}, "energy": {"batches": 2}}
    run_sweep(_cfg(out, sweep))
    assert audits == [("k2", 2, False), ("k3", 2, False)]
    run_sweep(_cfg(out, sweep))  # the same settings: nothing to audit again
    assert len(audits) == 2
    trainer = _FakeTrainer()
    monkeypatch.setattr(training, "run_finetune", trainer)
    report = run_sweep(_cfg(out, {**sweep, "energy": {"batches": 2, "count_neuron_updates": True}}))
    assert trainer.calls == []  # the points are not trained again
    assert audits[2:] == [("k2", 2, True), ("k3", 2, True)]
    assert [r.energy_ratio for r in report.rows] == [3.5, 3.5]
    record = json.loads((out / "k2" / POINT_FILE).read_text())
    assert record["energy"]["settings"]["count_neuron_updates"] is True
    # a point whose model is gone keeps its earlier audit, said so, rather than failing the sweep
    import shutil

    shutil.rmtree(out / "k3" / "final")
    said = []
    report = run_sweep(_cfg(out, {**sweep, "energy": {"batches": 3}}), progress=said.append)
    assert audits[4:] == [("k2", 3, False)] and [r.energy_ratio for r in report.rows] == [4.0, 3.5]
    assert any("k3" in line and "that audit stays in the table" in line for line in said)


def test_ctrl_c_during_a_points_audit_keeps_its_training_and_says_how_to_go_on(tmp_path, monkeypatch):
    from spikelm_core import sweep as sweep_module

    def stopped(final_dir, run_cfg, settings):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_module, "_energy", stopped)
    trainer = _FakeTrainer()
    monkeypatch.setattr(training, "run_finetune", trainer)
    out, said = tmp_path / "study", []
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_cfg(out, {"grid": {"neuron.k": [2.0]}}), progress=said.append)
    assert any("stopped during its energy audit" in line and "same sweep command" in line for line in said)
    assert json.loads((out / "k2" / POINT_FILE).read_text())["energy"] is None  # trained, recorded, not audited

    def audit(final_dir, run_cfg, settings):
        return {"ratio": 4.0, "paper_ratio": None, "mean_firing_rate": 0.3, "seq_len": 16, "data": {},
                "amplitudes": "checkpoint", "settings": sweep_module._energy_settings(run_cfg, settings)}

    monkeypatch.setattr(sweep_module, "_energy", audit)
    report = run_sweep(_cfg(out, {"grid": {"neuron.k": [2.0]}}))
    assert len(trainer.calls) == 1 and report.rows[0].energy_ratio == 4.0  # audited, not trained again


def test_a_dense_point_costs_what_the_dense_model_costs_and_stands_on_the_front(tmp_path, monkeypatch):
    from spikelm_core import sweep as sweep_module

    audited = []

    def fake_energy(final_dir, run_cfg, settings):
        audited.append(Path(final_dir).parent.name)
        return {"ratio": 4.0, "paper_ratio": 3.9, "mean_firing_rate": 0.3, "seq_len": 16, "data": {},
                "amplitudes": "checkpoint", "settings": sweep_module._energy_settings(run_cfg, settings)}

    monkeypatch.setattr(sweep_module, "_energy", fake_energy)
    monkeypatch.setattr(training, "run_finetune", _FakeTrainer())
    out = tmp_path / "study"
    sweep = {"grid": {"neuron.k": [2.0]}, "points": {"dense": {"neuron.kind": "dense", "neuron.k": 1.0}}}
    report = run_sweep(_cfg(out, sweep))
    assert audited == ["k2"]  # the dense point is not audited
    dense = report.rows[1]
    assert (dense.name, dense.energy_ratio, dense.relative_energy, dense.paper_energy_ratio) == ("dense", 1.0, 1.0, 1.0)
    assert [r.pareto for r in report.rows] == [True, True]  # more accurate (0.85 > 0.8) at more energy
    again = run_sweep(_cfg(out, sweep))  # read back from its record
    assert audited == ["k2"] and again.rows[1].energy_ratio == 1.0


def test_a_changed_finished_point_is_refused_before_the_points_ahead_of_it_train(tmp_path, monkeypatch):
    out = tmp_path / "study"
    monkeypatch.setattr(training, "run_finetune", _FakeTrainer())
    run_sweep(_cfg(out, {"grid": {"neuron.k": [3.0]}, "energy": {"enabled": False}}))
    table = (out / "sweep.csv").read_text()
    fake = _FakeTrainer()
    monkeypatch.setattr(training, "run_finetune", fake)
    with pytest.raises(ConfigError, match="sweep point 'k3' .* was run with other settings"):
        run_sweep(_cfg(out, {"grid": {"neuron.k": [4.0, 3.0]}, "energy": {"enabled": False}}, train={"lr": 3e-4}))
    assert fake.calls == [] and not (out / "k4").exists()  # nothing trained first
    assert (out / "sweep.csv").read_text() == table  # and no table mixing the old k3 with a new k4


def test_a_missing_model_of_a_later_point_is_refused_before_the_first_trains(tmp_path, monkeypatch):
    from spikelm_core.errors import CheckpointError

    fake = _FakeTrainer()
    monkeypatch.setattr(training, "run_finetune", fake)
    with pytest.raises(CheckpointError, match="sweep point 'model-.*no-such-model' \\(model\\): model directory"):
        run_sweep(_cfg(tmp_path / "s", {"grid": {"model": ["m", str(tmp_path / "no" / "such-model")]},
                                         "energy": {"enabled": False}}))
    assert fake.calls == []


@pytest.mark.parametrize("name", ["sweep.csv", "pareto.png", "reference"])
def test_a_point_named_like_the_sweeps_outputs_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match=f"sweep.points.{name}: name: '{name}' is (the folder|one of the sweep's tables)"):
        run_sweep(_cfg(tmp_path, {"points": {name: {"neuron.k": 3.0}}, "energy": {"enabled": False}}))


def test_an_error_inside_a_point_names_the_point(tmp_path, monkeypatch):
    from spikelm_core.errors import DataError

    def failing(cfg, resume, callbacks):
        raise DataError("the training file is empty", hint="give a file with examples")

    monkeypatch.setattr(training, "run_finetune", failing)
    with pytest.raises(DataError) as info:
        run_sweep(_cfg(tmp_path / "study", {"grid": {"neuron.k": [2.0]}, "energy": {"enabled": False}}))
    assert info.value.message == "sweep point 'k2': the training file is empty"
    assert str(info.value).startswith("sweep point 'k2': the training file is empty\nhint: give a file")


class _WeightsTrainer(_FakeTrainer):
    """As _FakeTrainer, with weights in final/ that depend on the run's settings (what start_from points record)."""

    def __call__(self, cfg, resume, callbacks):
        result = super().__call__(cfg, resume, callbacks)
        (Path(cfg.out_dir) / "final" / "model.safetensors").write_bytes(
            f"{cfg.neuron.k} {cfg.train.seed} {cfg.neuron.num_timesteps}".encode())
        return result


def test_a_point_started_from_a_point_that_ran_again_is_not_reused(tmp_path, monkeypatch):
    """T1 trained from a's model; a's folder deleted (as the changed-settings hint says) and a run again with
    other settings: T1 is not skipped as finished, with or without --point."""
    import shutil

    out = tmp_path / "study"

    def sweep(seed=42):
        return {"points": {"a": {"neuron.k": 2.0, "train.seed": seed}, "T1": {"neuron.num_timesteps": 1}},
                "start_from": {"T1": "a"}, "energy": {"enabled": False}}

    fake = _WeightsTrainer()
    monkeypatch.setattr(training, "run_finetune", fake)
    run_sweep(_cfg(out, sweep()))
    assert json.loads((out / "T1" / POINT_FILE).read_text())["start_weights"]
    run_sweep(_cfg(out, sweep()))
    assert [c[0] for c in fake.calls] == ["a", "T1"]  # unchanged: both skipped

    shutil.rmtree(out / "a")
    with pytest.raises(ConfigError, match="'T1' .* was trained from an earlier run of point 'a'") as exc:
        run_sweep(_cfg(out, sweep(seed=7)))
    assert "delete" in exc.value.hint and len(fake.calls) == 2  # refused before a trains again

    said = []
    report = run_sweep(_cfg(out, sweep(seed=7)), only=["a"], progress=said.append)
    assert [c[0] for c in fake.calls] == ["a", "T1", "a"] and [r.name for r in report.rows] == ["a"]
    assert any("T1: not among --point and trained from an earlier run of point 'a'" in s for s in said)
    with pytest.raises(ConfigError, match="'T1' .* was trained from an earlier run of point 'a'"):
        run_sweep(_cfg(out, sweep(seed=7)))
    shutil.rmtree(out / "T1")
    run_sweep(_cfg(out, sweep(seed=7)))
    assert [c[0] for c in fake.calls] == ["a", "T1", "a", "T1"]


def test_a_moved_sweep_keeps_its_started_points_curves_and_commands(tmp_path, monkeypatch):
    import shutil

    sweep = {"grid": {"neuron.k": [2.0]}, "points": {"T1": {"neuron.num_timesteps": 1}},
             "start_from": {"T1": "k2"}, "energy": {"enabled": False}}
    fake = _WeightsTrainer()
    monkeypatch.setattr(training, "run_finetune", fake)
    run_sweep(_cfg(tmp_path / "old", sweep))
    shutil.move(tmp_path / "old", tmp_path / "new")
    report = run_sweep(_cfg(tmp_path / "new", sweep))
    assert len(fake.calls) == 2  # nothing trained again
    assert all(r.curve for r in report.rows) and (tmp_path / "new" / "curves.png").is_file()
    assert [r.command for r in report.rows] == [
        f"spikelm finetune {tmp_path / 'new' / name / 'run_config.yaml'} --resume auto" for name in ("k2", "T1")]


def test_a_masked_lm_sweep_on_text_has_no_reference_row(tmp_path):
    from spikelm_core.config import DistillConfig
    from spikelm_core.sweep import _reference_row

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the river and the bridge\n" * 8)
    cfg = config_from_dict(DistillConfig, {"model": "m", "out_dir": str(tmp_path / "s"), "data": {"source": str(corpus)},
                                           "distill": {"teacher": "t"}, "sweep": {"grid": {"neuron.k": [2.0]}}})
    said = []
    assert cfg.task is None and _reference_row(cfg, tmp_path / "s", said.append) is None
    assert "reference: none for a masked-LM sweep on text" in said[0]
