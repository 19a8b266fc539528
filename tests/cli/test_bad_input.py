"""The bad-input matrix: one parametrised test per category (recipes and flags, data files, model
directories including hostile ones, outputs, resume). Each case asserts the exit code, a message that
says what is wrong (`error: ...`), no traceback, and that nothing was written or changed. Hostile
checkpoints carry payloads that would create a marker file if their code ran or their pickle loaded.
"""

from __future__ import annotations

import errno
import json
import pickle
import shutil
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spikelm_cli.main import app
from spikelm_core.training.rundir import LOCK_NAME
from tests.core.test_checkpoints import _Payload, _with_auto_map, dense_dir
from tests.training_fixtures import finetune_overrides, tiny_dirs  # noqa: F401

runner = CliRunner()
RECIPE = "recipes/tiny/finetune.yaml"


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(res, code: int, *needles: str) -> None:
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    assert "\nerror:" in f"\n{res.stderr}", res.stderr  # after any progress line
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in res.stderr, (needle, res.stderr)


def _sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("-s", item)]


def finetune(dirs, out, *extra_sets, extra_args=()):
    return ["finetune", RECIPE, "--out-dir", str(out), *_sets(*finetune_overrides(dirs, *extra_sets)), *extra_args]


# ------------------------------------------------------------------------------ recipes and flags

RECIPE_CASES = {
    "unknown key": (["-s", "train.learning_rate=1e-4"], 2, ["did you mean 'train.lr'"]),
    "wrong type": (["-s", "train.lr=fast"], 2, ["train.lr"]),
    "choice": (["-s", "neuron.reset=hard"], 2, ["neuron.reset", "official"]),
    "infinite k": (["-s", "neuron.k=.inf"], 2, ["neuron.k", "finite"]),
    "zero k": (["-s", "neuron.k=0"], 2, ["neuron.k", "> 0"]),
    "no T": (["-s", "neuron.num_timesteps=0"], 2, ["neuron.num_timesteps"]),
    "override without =": (["-s", "train.lr"], 2, ["key=value"]),
    "unknown task": (["--task", "sst3"], 2, ["did you mean 'sst2'"]),
    "firing target above 1": (["-s", "train.target_firing_rate=1.5"], 2, ["train.target_firing_rate", "< 1"]),
    "firing target on a dense model": (["-s", "train.target_firing_rate=0.2", "-s", "neuron.kind=dense"], 2,
                                       ["train.target_firing_rate: needs a spiking model"]),
    "three at once": (["-s", "train.learning_rate=1", "-s", "train.lr=x", "-s", "neuron.levels=four"], 2,
                      ["3 problems", "train.learning_rate", "train.lr", "neuron.levels"]),
}


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
def test_recipes_and_flags(case, tiny_dirs, tmp_path):
    args, code, needles = RECIPE_CASES[case]
    out = tmp_path / "run"
    refused(runner.invoke(app, finetune(tiny_dirs, out, extra_args=args)), code, *needles)
    assert not out.exists()


@pytest.mark.parametrize("text, needle", [
    ("command: finetune\nneuron:\ntrain: {lr: 1e-4}\n", "neuron"),  # an empty section
    ("command: pretrain\nmodel: m\n", "pretrain"),  # a recipe for another command
    ("command: finetune\n  model: [\n", "invalid YAML"),
    ("command: finetune\nmodel: a\nmodel: b\n", "duplicate key"),
])
def test_bad_recipe_files(text, needle, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    before = snapshot(tmp_path)
    refused(runner.invoke(app, ["finetune", str(recipe), "--out-dir", str(tmp_path / "run")]), 2, needle)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args, needles", [
    (["--k", "inf"], ["--k"]), (["--k", "-1"], ["--k"]), (["-T", "0"], ["-T"]),
    (["--reset", "hard"], ["hard"]), (["--seq-len", "0"], ["--seq-len"]),
])
def test_convert_flags(args, needles, tiny_dirs, tmp_path):
    res = runner.invoke(app, ["convert", str(tiny_dirs["dense"]), "--out", str(tmp_path / "s"), *args])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------------- data files

def _glue_copy(dirs, tmp_path, edit) -> Path:
    root = tmp_path / "glue"
    shutil.copytree(dirs["glue"], root)
    edit(root)
    return root


DATA_CASES = {
    "missing data dir": (lambda root: shutil.rmtree(root), 4, ["not found"]),
    "empty dev split": (lambda root: (root / "SST-2" / "dev.tsv").write_text("sentence\tlabel\n"), 4, ["dev"]),
    "header only train": (lambda root: (root / "SST-2" / "train.tsv").write_text("sentence\tlabel\n"), 4, ["train"]),
    "bad label": (lambda root: (root / "SST-2" / "dev.tsv").write_text("sentence\tlabel\ngood\tseven\n"), 4,
                  ["label"]),
    "no dev file": (lambda root: (root / "SST-2" / "dev.tsv").unlink(), 4, ["dev"]),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_data_files(case, tiny_dirs, tmp_path):
    edit, code, needles = DATA_CASES[case]
    root = _glue_copy(tiny_dirs, tmp_path, edit)
    out = tmp_path / "run"
    refused(runner.invoke(app, finetune(tiny_dirs, out, f"data.data_dir={root}")), code, *needles)
    assert not out.exists()


def test_pretrain_text_missing(tmp_path):
    out = tmp_path / "p"
    refused(runner.invoke(app, ["pretrain", "recipes/tiny/pretrain.yaml", "--text", str(tmp_path / "none.txt"),
                                "--out-dir", str(out)]), 4, "none.txt")
    assert not out.exists()


# -------------------------------------------------------------------------- model directories

def _pickle_only(tmp_path, marker):
    d = dense_dir(tmp_path / "src", "bert")
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    return d


def _corrupt_weights(tmp_path, marker):
    d = dense_dir(tmp_path / "src", "bert")
    (d / "model.safetensors").write_bytes(b"\x00" * 64)
    return d


def _bad_saved_config(tmp_path, marker):
    d = dense_dir(tmp_path / "src", "bert")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "spiking_bert", "num_timesteps": 0}))
    return d


def _other_architecture(tmp_path, marker):
    d = dense_dir(tmp_path / "src", "bert")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    return d


def _no_tokenizer(tmp_path, marker):
    d = dense_dir(tmp_path / "src", "bert")
    for f in d.iterdir():
        if "token" in f.name or f.name == "vocab.txt":
            f.unlink()
    return d


def _three_labels(tmp_path, marker):
    return dense_dir(tmp_path / "src", "bert-cls")  # a 3-label head; SST-2 has 2


MODEL_CASES = {
    "pickle only": (_pickle_only, 3, ["no model.safetensors", "pytorch_model.bin"]),
    "corrupt weights": (_corrupt_weights, 3, ["corrupt"]),
    "saved config with T=0": (_bad_saved_config, 3, ["num_timesteps"]),
    "another architecture": (_other_architecture, 3, ["gpt2"]),
    "no tokenizer": (_no_tokenizer, 3, ["tokenizer"]),
    "label count": (_three_labels, 3, ["3 labels", "--reinit-head"]),
}


@pytest.mark.parametrize("command", ["finetune", "eval", "convert", "energy"])
@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_model_directories(case, command, tiny_dirs, tmp_path):
    make, code, needles = MODEL_CASES[case]
    if command in ("convert", "energy") and case == "label count":
        pytest.skip("convert and energy keep the checkpoint's own head")
    if command == "convert" and case == "saved config with T=0":
        needles = ["a spiking checkpoint keeps the neuron settings"]  # convert refuses any spiking source before reading its settings
    marker = tmp_path / "PAYLOAD_RAN"
    model = make(tmp_path, marker)
    before = snapshot(model)
    out = tmp_path / "out"
    if command == "finetune":
        args = finetune(tiny_dirs, out, f"model={model}")
    elif command == "eval":
        args = ["eval", str(model), "--task", "sst2", "--data-dir", str(tiny_dirs["glue"]), "--out-dir", str(out)]
    elif command == "energy":
        args = ["energy", "--model", str(model), "--seq-len", "16", "--out", str(out)]
    else:
        args = ["convert", str(model), "--out", str(out)]
    refused(runner.invoke(app, args), code, *needles)
    assert not out.exists() and not marker.exists()
    assert snapshot(model) == before


@pytest.mark.parametrize("command", ["convert", "eval"])
def test_checkpoint_code_never_runs(command, tiny_dirs, tmp_path):
    marker = tmp_path / "CODE_RAN"
    model = _with_auto_map(tmp_path, "hostile", marker, "BertTokenizer")
    if command == "convert":
        args = ["convert", str(model), "--out", str(tmp_path / "s"), "--seq-len", "16", "--format", "json"]
    else:
        args = ["eval", str(model), "--task", "sst2", "--data-dir", str(tiny_dirs["glue"]), "-s", "data.max_length=16",
                "--format", "json"]
    res = runner.invoke(app, args, input="y\n" * 50)  # would answer a trust prompt, were one shown
    assert res.exit_code == 0, res.stderr
    json.loads(res.stdout)  # stdout is clean JSON: no prompt was printed into it
    assert "custom code" not in res.output and not marker.exists()
    if command == "convert":
        written = json.loads((tmp_path / "s" / "config.json").read_text())
        assert "auto_map" not in written and "trust_remote_code" not in written
        assert not list((tmp_path / "s").glob("*.py"))


# ------------------------------------------------------------------------------------- outputs

def test_output_is_a_file(tiny_dirs, tmp_path):
    target = tmp_path / "taken"
    target.write_text("mine")
    refused(runner.invoke(app, ["convert", str(tiny_dirs["dense"]), "--out", str(target)]), 2, "is a file")
    refused(runner.invoke(app, finetune(tiny_dirs, target)), 2, "is a file")
    assert target.read_text() == "mine"


@pytest.mark.parametrize("command", ["convert", "finetune", "energy", "eval"])
@pytest.mark.parametrize("where, code", [("a-file/sub", 2), ("/proc/spikelm-cannot-write-here", 5)])
def test_output_location_that_cannot_be_created(command, where, code, tiny_dirs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("mine")
    args = {
        "convert": ["convert", str(tiny_dirs["dense"]), "--out", where],
        "finetune": finetune(tiny_dirs, Path(where)),
        "energy": ["energy", "--model", str(tiny_dirs["dense"]), "--seq-len", "16", "--out", where],
        "eval": ["eval", str(tiny_dirs["dense"]), "--task", "sst2", "--data-dir", str(tiny_dirs["glue"]),
                 "--out-dir", where],
    }[command]
    refused(runner.invoke(app, args), code, where)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_output_holding_other_files(tiny_dirs, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    refused(runner.invoke(app, ["convert", str(tiny_dirs["dense"]), "--out", str(out)]), 2, "not empty")
    refused(runner.invoke(app, finetune(tiny_dirs, out)), 2, "holds no spikelm run")
    assert snapshot(out) == {"notes.txt": b"keep me"}


class SafetensorError(Exception):
    """Named as safetensors' own error, which wraps the OSError of its Rust writer in its message."""


@pytest.mark.parametrize("wrapped", [False, True], ids=["oserror", "safetensors-wrapped"])
def test_disk_full_while_writing_is_a_message_and_leaves_nothing(tiny_dirs, tmp_path, monkeypatch, wrapped):
    import transformers.modeling_utils

    def full(tensors, filename, *args, **kwargs):  # the disk fills up while the weights are written
        Path(filename).write_bytes(b"\0" * 16)
        if wrapped:  # as safetensors raises it
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        raise OSError(errno.ENOSPC, "No space left on device", str(filename))

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    out = tmp_path / "s"
    refused(runner.invoke(app, ["convert", str(tiny_dirs["dense"]), "--out", str(out), "--seq-len", "16"]), 5,
            "No space left on device")
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary directory


@pytest.mark.parametrize("where", ["optimizer", "final"])
def test_disk_full_during_training_says_how_to_continue(where, tiny_dirs, tmp_path, monkeypatch):
    """torch.save's zip writer says only that its write failed; tokenizers and safetensors name the errno in
    their message. Either way: exit 5, no traceback, how to go on, and no half-written final/ left."""
    from spikelm_core.training.trainers import SpikelmTrainer

    extra = ("train.max_steps=2", "train.save_steps=1", "train.eval_strategy=no", "train.keep_best=false")
    if where == "optimizer":
        def full(self, output_dir):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1088 vs 976")

        monkeypatch.setattr(SpikelmTrainer, "_save_optimizer_and_scheduler", full)
        needle = "is the disk full?"
    else:
        original = SpikelmTrainer.save_model

        def full(self, output_dir=None, _internal_call=False):
            if output_dir and output_dir.endswith(".final.partial"):
                Path(output_dir).mkdir(parents=True, exist_ok=True)
                (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 16)
                raise Exception("No space left on device (os error 28)")  # as tokenizers raises it
            return original(self, output_dir, _internal_call)

        monkeypatch.setattr(SpikelmTrainer, "save_model", full)
        needle = "No space left on device"
    out = tmp_path / "run"
    res = runner.invoke(app, finetune(tiny_dirs, out, *extra))
    refused(res, 5, needle, "continue with: spikelm finetune", "--resume auto")
    assert not (out / ".final.partial").exists() and not (out / "final").exists()


def test_eval_into_a_training_run_leaves_its_run_config_alone(tiny_dirs, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.yaml").write_text("# a training run's record\ncommand: finetune\n")
    res = runner.invoke(app, ["eval", str(tiny_dirs["dense"]), "--task", "sst2", "--data-dir", str(tiny_dirs["glue"]),
                              "-s", "data.max_length=16", "--out-dir", str(run)])
    assert res.exit_code == 0, res.stderr
    assert (run / "run_config.yaml").read_text() == "# a training run's record\ncommand: finetune\n"
    assert (run / "eval_results.json").is_file() and (run / "eval_config.yaml").is_file()


# -------------------------------------------------------------------------------------- resume

RESUME = ("train.max_steps=2", "train.save_steps=1", "train.eval_strategy=no", "train.keep_best=false")


@pytest.fixture(scope="module")
def finished_run(tiny_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    res = runner.invoke(app, finetune(tiny_dirs, out, *RESUME))
    assert res.exit_code == 0, res.stderr
    return out


def _resume_case(name, run: Path, tmp_path: Path):
    """(args, expected code, needles) of one resume case; may prepare `run`."""
    if name == "not a checkpoint":
        return ["--resume", str(tmp_path)], 3, ["not a Trainer checkpoint"]
    if name == "missing checkpoint":
        return ["--resume", str(tmp_path / "nope")], 3, ["neither auto, never nor an existing directory"]
    if name == "changed recipe":
        return ["--resume", "auto", "-s", "train.lr=0.5"], 2, ["differs", "train.lr"]
    if name == "never over checkpoints":
        return [], 2, ["already holds checkpoints", "which finished (final/, step 2)", "spikelm eval"]
    if name == "live lock":
        (run / LOCK_NAME).write_text(f"{socket.gethostname()} {__import__('os').getppid()}\n")
        return ["--resume", "auto"], 2, ["in use by another run"]
    (run / LOCK_NAME).write_text("another-machine 4242\n")
    return ["--resume", "auto"], 2, ["host another-machine"]


@pytest.mark.parametrize("case", ["not a checkpoint", "missing checkpoint", "changed recipe", "never over checkpoints", "live lock",
                                  "lock of another host"])
def test_resume(case, finished_run, tiny_dirs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    args, code, needles = _resume_case(case, run, tmp_path)
    before = snapshot(run)
    refused(runner.invoke(app, finetune(tiny_dirs, run, *RESUME, extra_args=args)), code, *needles)
    assert snapshot(run) == before


@pytest.mark.parametrize("missing, needle", [("scheduler.pt", "lacks scheduler.pt"),
                                             ("rng_state.pth", "lacks rng_state.pth")])
def test_resume_from_a_checkpoint_without_its_training_state(missing, needle, finished_run, tiny_dirs, tmp_path):
    """The Trainer would go on without the file in silence (a fresh schedule or data order)."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "checkpoint-2" / missing).unlink()
    before = snapshot(run)
    refused(runner.invoke(app, finetune(tiny_dirs, run, *RESUME, extra_args=["--resume", "auto"])), 3, needle,
            "earlier checkpoint")
    assert snapshot(run) == before


@pytest.mark.parametrize("damage", ["pickle with code", "truncated"])
def test_resume_with_damaged_trainer_state(damage, finished_run, tiny_dirs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    marker = tmp_path / "UNPICKLED"
    optimizer = run / "checkpoint-2" / "optimizer.pt"
    if damage == "pickle with code":
        optimizer.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        optimizer.write_bytes(optimizer.read_bytes()[:100])
    before = snapshot(run)
    res = runner.invoke(app, finetune(tiny_dirs, run, *RESUME, extra_args=["--resume", "auto"]))
    refused(res, 3, "optimizer.pt", "earlier checkpoint")
    assert "weights_only set to False" not in res.output and not marker.exists()
    assert snapshot(run) == before
    assert not (finished_run / "final" / "training_args.bin").exists()  # final/ holds no pickle


# ------------------------------------------------------------- flags that would be silently dropped

@pytest.mark.parametrize("value", [",,,", "1,,2", "2,"])
def test_convert_k_candidates_with_an_empty_item(value, tiny_dirs, tmp_path):
    out = tmp_path / "s"
    refused(runner.invoke(app, ["convert", str(tiny_dirs["dense"]), "--out", str(out), "--k-candidates", value]), 2,
            "--k-candidates", repr(value))
    assert not out.exists()


def test_eval_refuses_wikitext2_flags_for_another_task(tiny_dirs, tmp_path):
    out = tmp_path / "e"
    refused(runner.invoke(app, ["eval", str(tiny_dirs["teacher"]), "--task", "sst2", "--data-dir", str(tiny_dirs["glue"]),
                                "--seq-len", "64", "--max-tokens", "10", "--out-dir", str(out)]), 2,
            "--seq-len, --max-tokens are for wikitext2", "scores sst2")
    assert not out.exists()
    refused(runner.invoke(app, ["eval", str(tiny_dirs["teacher"]), "--task", "sst2", "--data-dir", str(tiny_dirs["glue"]),
                                "--dense", str(tiny_dirs["teacher"]), "--out-dir", str(out)]), 2,
            "--dense is for wikitext2", "scores sst2")


@pytest.mark.parametrize("source", ["runs/a[/b]", "runs/model[v2]"])
def test_a_path_with_brackets_is_shown_as_typed(source, tmp_path):
    """Paths reach rich as text, not markup: '[/b]' raised MarkupError (a traceback), '[v2]' vanished."""
    res = runner.invoke(app, ["convert", source, "--out", str(tmp_path / "out")])
    refused(res, 3, f"converting {source} ...")
    assert not (tmp_path / "out").exists()


def test_eval_refuses_two_models(tiny_dirs, tmp_path):
    refused(runner.invoke(app, ["eval", str(tiny_dirs["dense"]), "--model", str(tiny_dirs["teacher"]), "--task", "sst2",
                                "--data-dir", str(tiny_dirs["glue"])]), 2,
            "two models given", f"MODEL: {tiny_dirs['dense']}", f"--model: {tiny_dirs['teacher']}")


@pytest.mark.parametrize("task,length,shortest", [("stsb", 4, 5), ("sst2", 2, 3)])
def test_a_length_too_short_for_the_task_is_refused(task, length, shortest, tiny_dirs):
    """Truncation cannot cut a sentence pair below [CLS] a [SEP] b [SEP]: it used to leave it whole, silently."""
    res = runner.invoke(app, ["eval", str(tiny_dirs["dense"]), "--task", task, "--data-dir", str(tiny_dirs["glue"]),
                              "-s", f"data.max_length={length}"])
    refused(res, 2, f"data.max_length {length} is too short for {task}", f"-s data.max_length={shortest} or more")


def test_energy_refuses_a_memory_cost_without_memory_bounds(tiny_dirs, tmp_path):
    refused(runner.invoke(app, ["energy", str(tiny_dirs["dense"]), "--seq-len", "16", "--memory", "none",
                                "--memory-cost", "dram"]), 2, "--memory-cost dram", "--memory none")


def test_energy_seq_len_hint_names_the_model_limit(tiny_dirs, tmp_path):
    config = json.loads((tiny_dirs["dense"] / "config.json").read_text())
    model = tmp_path / "config-only"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 200}))
    refused(runner.invoke(app, ["energy", str(model), "--seq-len", "100000"]), 2,
            "maximum of 200 positions", "use --seq-len 200 or less")


@pytest.mark.parametrize("args, needle", [
    (["-g", "neuron.k=a,b"], "neuron.k"),
    (["-g", "nosuch.key=1,2"], "nosuch"),
    (["--point", "foo"], "this run has no sweep"),
    (["-g", "neuron.k=2,3", "--point", "k9"], "this sweep has no such point"),
], ids=["bad grid value", "unknown grid key", "point without sweep", "unknown point"])
def test_print_config_refuses_what_the_sweep_refuses(args, needle, tiny_dirs, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, finetune(tiny_dirs, out, extra_args=[*args, "--print-config"]))
    refused(res, 2, needle)
    assert res.stdout == "" and not out.exists()


def test_an_override_the_sweep_points_set_themselves_is_named(tiny_dirs, tmp_path):
    res = runner.invoke(app, finetune(tiny_dirs, tmp_path / "run", "neuron.k=3.0",
                                      extra_args=["-g", "neuron.k=2,4", "--print-config"]))
    assert res.exit_code == 0, res.output
    assert "-s neuron.k=3 does not reach points k2, k4, which set their own neuron.k" in " ".join(res.stderr.split())


def test_an_option_the_sweep_points_set_themselves_is_named(tiny_dirs, tmp_path):
    """--model beside a grid over models reaches no point: said as -s is (and not for --data-dir, which none sets)."""
    model = str(tiny_dirs["dense"])
    res = runner.invoke(app, finetune(tiny_dirs, tmp_path / "run", extra_args=[
        "-g", f"model={model}", "--model", model, "--data-dir", str(tiny_dirs["glue"]), "--print-config"]))
    assert res.exit_code == 0, res.output
    stderr = " ".join(res.stderr.split())
    assert f"--model: model={model} does not reach point" in stderr and "which sets its own model" in stderr
    assert "--data-dir" not in stderr


@pytest.fixture(scope="module")
def tiny_bart_dir(tmp_path_factory):
    """An untrained tiny dense BART with a WordPiece tokenizer."""
    from tests.conftest import write_tiny_bart

    return write_tiny_bart(tmp_path_factory.mktemp("bart"))


@pytest.mark.parametrize("text, needles", [
    ('{"document": "the river rose", "summary": "river"}\n{"document": "a bridge", "summary": \n',
     ["line 2: not valid JSON"]),
    ("", ["is empty"]),
], ids=["broken line", "empty file"])
def test_eval_malformed_xsum_jsonl(text, needles, tiny_bart_dir, tmp_path):
    data = tmp_path / "xsum"
    data.mkdir()
    (data / "validation.jsonl").write_text(text)
    refused(runner.invoke(app, ["eval", str(tiny_bart_dir), "--task", "xsum", "--data-dir", str(data),
                                "-s", "data.max_length=16"]), 4, str(data / "validation.jsonl"), *needles)


def test_eval_xsum_csv_with_a_header_alone(tiny_bart_dir, tmp_path):
    data = tmp_path / "xsum"
    data.mkdir()
    (data / "validation.csv").write_text("document,summary\n")
    refused(runner.invoke(app, ["eval", str(tiny_bart_dir), "--task", "xsum", "--data-dir", str(data),
                                "-s", "data.max_length=16"]), 4, str(data / "validation.csv"), "no examples")


def test_a_summarisation_run_lists_its_missing_teacher_and_both_files_together(tmp_path):
    from tests.conftest import write_tiny_bart

    (tmp_path / "bart").mkdir()
    student = write_tiny_bart(tmp_path / "bart")
    out = tmp_path / "run"
    res = runner.invoke(app, ["distill", "--task", "xsum", "--model", str(student), "--out-dir", str(out),
                              "-s", f"distill.teacher={tmp_path / 'teacher' / 'final'}",
                              "-s", f"data.train_file={tmp_path / 'train.jsonl'}",
                              "-s", f"data.validation_file={tmp_path / 'validation.jsonl'}"])
    refused(res, 3, "distill cannot start: 2 problems", "the teacher:", "train.jsonl", "validation.jsonl",
            "fix: give the dense teacher: a BART directory")  # the teacher's own fix, not MiniLM's or SmolLM2's
    assert "minilm" not in res.stderr and not out.exists()
    # the same file missing in both splits is said once
    same = tmp_path / "gone.jsonl"
    res = runner.invoke(app, ["finetune", "--task", "xsum", "--model", str(student), "--out-dir", str(out),
                              "-s", f"data.train_file={same}", "-s", f"data.validation_file={same}"])
    refused(res, 4)
    assert res.stderr.count(str(same)) == 1, res.stderr


def test_a_summarisation_teacher_must_hold_the_summaries_positions(tmp_path):
    import json

    from transformers import BartConfig, BartForConditionalGeneration

    from tests.conftest import write_tiny_bart
    from tests.core.models.test_spiking_bart import BART_TINY

    (tmp_path / "s").mkdir()
    student = write_tiny_bart(tmp_path / "s")
    teacher = tmp_path / "teacher"
    BartForConditionalGeneration(BartConfig(**{**BART_TINY, "max_position_embeddings": 12})).save_pretrained(teacher)
    rows = "".join(json.dumps({"document": "the river rose over the bridge", "summary": "the river rose"}) + "\n"
                   for _ in range(4))
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text(rows)
    out = tmp_path / "run"
    res = runner.invoke(app, ["distill", "--task", "xsum", "--model", str(student), "--out-dir", str(out),
                              "-s", f"distill.teacher={teacher}", "-s", f"data.train_file={tmp_path / 'train.jsonl'}",
                              "-s", f"data.validation_file={tmp_path / 'validation.jsonl'}", "-s", "data.max_length=10",
                              "-s", "data.max_target_length=16", "-s", "train.max_steps=1", "-s", "train.device=cpu"])
    refused(res, 3, "positions: teacher 12, the run's sequences 16 (data.max_target_length)")
    assert not out.exists()  # refused before the run directory is made


def test_an_error_on_another_rank_is_one_line_naming_it(tmp_path, monkeypatch):
    """Under torchrun every rank meets a bad config alike: rank 0 gives the whole error, the others one line."""
    missing = str(tmp_path / "nope.yaml")
    monkeypatch.setenv("RANK", "1")
    res = runner.invoke(app, ["finetune", missing, "--print-config"])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error [rank 1]: ") and "hint" not in res.stderr
    assert "recipe file not found" in lines[0]  # the details, on the same line
    monkeypatch.setenv("RANK", "0")
    res = runner.invoke(app, ["finetune", missing, "--print-config"])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "hint:" in res.stderr


@pytest.mark.parametrize("command", ["finetune", "distill"])
def test_no_recipe_and_no_task_is_told_a_runnable_command(command):
    res = runner.invoke(app, [command])
    refused(res, 2, "give a recipe, or --task", f"spikelm {command} recipes/tiny/{command}.yaml")
    assert ("--teacher" in res.stderr) == (command == "distill")  # the tiny distill recipe names no teacher
