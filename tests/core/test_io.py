"""Safe output: whole directories replace each other by renames, and --force never removes the folder a
user works in."""

from __future__ import annotations

import pytest

from spikelm_core.errors import ConfigError
from spikelm_core import io
from spikelm_core.io import atomic_output_dir, check_output_dir, clean_stale_siblings, replace_dir


def test_replace_dir_swaps_whole_directories(tmp_path):
    out, new = tmp_path / "final", tmp_path / ".final.partial"
    out.mkdir()
    (out / "old.txt").write_text("old")
    new.mkdir()
    (new / "model.safetensors").write_text("new")
    replace_dir(new, out)
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # neither the old nor the staging left


@pytest.mark.parametrize("exchange", [True, False])
def test_replacing_an_output_that_is_a_link_leaves_no_link_behind(tmp_path, monkeypatch, exchange):
    """`--out link --force`, link -> a folder: the link is replaced, its folder untouched, and nothing is left
    beside it (rmtree refuses links, so the swapped-out link used to stay as `.link.spikelm-tmp-...`)."""
    target, out, new = tmp_path / "target", tmp_path / "link", tmp_path / ".link.partial"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    out.symlink_to(target)
    new.mkdir()
    (new / "model.safetensors").write_text("new")
    if not exchange:
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    replace_dir(new, out)
    assert out.is_dir() and not out.is_symlink() and (out / "model.safetensors").read_text() == "new"
    assert (target / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]


def test_replace_dir_swaps_in_one_step_and_puts_the_old_back_when_it_cannot(tmp_path, monkeypatch):
    out, new = tmp_path / "final", tmp_path / ".final.partial"
    out.mkdir()
    (out / "old.txt").write_text("old")
    new.mkdir()
    (new / "model.safetensors").write_text("new")
    renames = []
    real = io.os.replace
    monkeypatch.setattr(io.os, "replace", lambda a, b: renames.append((a, b)) or real(a, b))
    replace_dir(new, out)  # Linux: one exchange, no rename at all, so `out` is never missing
    assert renames == [] and sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
    # where the system cannot exchange: two renames; a failed second one puts the old output back
    new.mkdir()
    monkeypatch.setattr(io, "_exchange", lambda a, b: False)

    def second_fails(a, b):
        if (a, b) == (new, out):
            raise OSError(28, "No space left on device")
        real(a, b)

    monkeypatch.setattr(io.os, "replace", second_fails)
    with pytest.raises(OSError):
        replace_dir(new, out)
    monkeypatch.setattr(io.os, "replace", real)
    assert (out / "model.safetensors").read_text() == "new"  # back in place; the finished one stays for its caller
    assert sorted(p.name for p in tmp_path.iterdir()) == [".final.partial", "final"]


def test_what_a_killed_write_left_is_put_back_or_removed(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    from spikelm_core.errors import ConfigError

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    host = io._host()
    out = tmp_path / "report"
    old = tmp_path / f".report.spikelm-old-{host}-{dead}"  # killed between its two renames: no `out`
    old.mkdir()
    (old / "report.json").write_text("{}")
    (tmp_path / f".report.spikelm-tmp-{host}-{dead}-x1y2").mkdir()  # killed while writing
    kept = [f".report.spikelm-tmp-{host}-{os.getpid()}-abcd",  # a live process's
            f".report.spikelm-tmp-otherhost-{dead}-q",  # another machine's, on a shared file system
            ".report.old-2024-03-01",  # a user's own folder
            f".report.spikelm-tmp-{host}-99999999999999999999-a",  # no pid this system has
            f".other.spikelm-tmp-{host}-{dead}-zz"]  # another output's
    for name in kept:
        (tmp_path / name).mkdir()
    assert clean_stale_siblings(out) is True
    assert (out / "report.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "report"])
    # an output put back is checked as any existing one: without --force it is refused, and stays
    shutil.move(out, old)
    with pytest.raises(ConfigError, match="not empty"):
        with atomic_output_dir(out, force=False):
            pass
    assert (out / "report.json").read_text() == "{}" and not old.exists()
    # a refused write touches nothing; one that goes ahead deletes an old copy left aside beside `out`
    old.mkdir()
    with pytest.raises(ConfigError):
        with atomic_output_dir(out, force=False):
            pass
    assert old.is_dir()
    with atomic_output_dir(out, force=True) as tmp:
        assert tmp.name.startswith(f".report.spikelm-tmp-{host}-{os.getpid()}-")
        (tmp / "report.json").write_text("[]")
    assert not old.exists() and (out / "report.json").read_text() == "[]"


def test_a_failed_atomic_output_leaves_the_old_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RuntimeError), atomic_output_dir(out, force=True) as tmp:
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "keep.txt").read_text() == "mine"


def test_force_refuses_the_current_directory_and_its_parents(tmp_path, monkeypatch):
    work = tmp_path / "project" / "work"
    work.mkdir(parents=True)
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    for out in (".", "..", str(tmp_path / "project")):
        with pytest.raises(ConfigError, match="holds the current directory"):
            check_output_dir(out, force=True)
    assert (work / "notes.txt").read_text() == "mine"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    assert check_output_dir(tmp_path / "other", force=True) == tmp_path / "other"


def test_force_refuses_a_folder_that_holds_the_commands_inputs(tmp_path):
    model = tmp_path / "runs" / "twin" / "final"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_text("weights")
    for out in (model, model.parent, tmp_path / "runs"):  # the model itself, or a folder above it
        with pytest.raises(ConfigError, match="holds this command's input") as exc:
            check_output_dir(out, force=True, inputs=[str(model), None, "dram"])
        assert "choose another --out" in exc.value.hint
    assert (model / "model.safetensors").read_text() == "weights"
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "old.md").write_text("x")
    assert check_output_dir(tmp_path / "report", force=True, inputs=[str(model)]) == tmp_path / "report"


def test_force_refuses_a_folder_of_folders_and_a_mount_point(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    (runs / "sst2" / "final").mkdir(parents=True)
    (runs / "sst2" / "final" / "model.txt").write_text("precious")
    (runs / "notes.md").write_text("x")
    with pytest.raises(ConfigError, match=r"holds folders \(sst2/\)") as exc:  # a mistyped --out runs
        check_output_dir(runs, force=True)
    assert "delete" in exc.value.hint and (runs / "sst2" / "final" / "model.txt").read_text() == "precious"
    model = tmp_path / "model"  # a model (or a report) holds files only: --force replaces it
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert check_output_dir(model, force=True) == model
    monkeypatch.setattr("os.path.ismount", lambda path: str(path) == str(model))
    with pytest.raises(ConfigError, match="is a mount point") as exc:
        check_output_dir(model, force=True)
    assert str(model / "output") in exc.value.hint


def test_sigterm_during_an_atomic_output_removes_its_temporary_directory(tmp_path):
    """The CLI turns SIGTERM into a KeyboardInterrupt (`Terminated`) that unwinds like Ctrl-C and exits
    with status 143: no half-written folder is left."""
    import subprocess
    import sys

    script = (
        "import os, signal, sys, typer\n"
        "from spikelm_cli.main import _terminated\n"
        "from spikelm_cli.errors import friendly_errors\n"
        "from spikelm_core.io import atomic_output_dir\n"
        "signal.signal(signal.SIGTERM, _terminated)\n"
        "@friendly_errors\n"
        "def work():\n"
        f"    with atomic_output_dir({str(tmp_path / 'out')!r}) as tmp:\n"
        "        (tmp / 'half.bin').write_bytes(b'x')\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        import time; time.sleep(5)\n"
        "try:\n"
        "    work()\n"
        "except typer.Exit as exc:\n"
        "    sys.exit(exc.exit_code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, text=True)
    assert done.returncode == 143, done.stderr
    assert "terminated" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("hooked, interrupts, argv", [
    ("builtins.__import__", "name == 'main' or name == 'spikelm_cli.main'", []),
    ("importlib.import_module", "name.startswith('spikelm_cli.commands.')", ["eval", "--help"]),
], ids=["the-cli", "a-verb"])
def test_ctrl_c_while_importing_ends_without_a_traceback(hooked, interrupts, argv):
    """`spikelm` spends seconds importing torch and transformers, when the CLI loads (`spikelm_cli.launch`) and
    when a verb is loaded (`spikelm_cli.main.load_command`): a Ctrl-C then says 'interrupted' and exits 130,
    as one during the work does."""
    import subprocess
    import sys

    module = hooked.split(".")[0]
    script = (
        f"import {module}, sys\n"
        f"real = {hooked}\n"
        "def interrupted(name, *args, **kwargs):\n"
        f"    if {interrupts}:\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *args, **kwargs)\n"
        f"{hooked} = interrupted\n"
        f"sys.argv = ['spikelm', *{argv!r}]\n"
        "from spikelm_cli.launch import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, text=True)
    assert done.returncode == 130 and done.stderr == "interrupted\n", done.stderr
