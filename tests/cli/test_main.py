"""The `spikelm` entry point's set-up (`spikelm_cli.main`)."""

from __future__ import annotations

import io
import os
import sys

from spikelm_cli import main as cli_main

_ENV = ("HF_DATASETS_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS",
        "TOKENIZERS_PARALLELISM")


def test_datasets_progress_bars_are_off_without_a_terminal(monkeypatch):
    """A piped stderr gets no tqdm bars (their carriage returns are garbage in a log file); a terminal keeps them,
    and a user's own setting wins."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    cli_main._quiet_libraries()
    assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"

    class _Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("HF_DATASETS_DISABLE_PROGRESS_BARS")
    monkeypatch.setattr(sys, "stderr", _Terminal())
    cli_main._quiet_libraries()
    assert "HF_DATASETS_DISABLE_PROGRESS_BARS" not in os.environ

    monkeypatch.setenv("HF_DATASETS_DISABLE_PROGRESS_BARS", "0")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    cli_main._quiet_libraries()
    assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "0"


def _run_cli(args: list[str]) -> tuple[int, set[str], str]:
    """`spikelm <args>` in a fresh interpreter: its exit code and whether torch / transformers got imported."""
    import json
    import subprocess

    script = (
        "import json, sys\n"
        f"sys.argv = ['spikelm', *{args!r}]\n"
        "from spikelm_cli.launch import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    code = exc.code or 0\n"
        "else:\n"
        "    code = 0\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write(json.dumps([code, [m for m in ('torch', 'transformers') if m in sys.modules]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    code, heavy = json.loads(done.stderr.strip().splitlines()[-1])
    return code, set(heavy), done.stdout


def test_version_and_the_verb_list_answer_without_importing_torch():
    """`spikelm --version` and `spikelm --help` take a fraction of a second: no verb is imported (each pulls in
    torch and transformers); running a verb's own --help imports it."""
    from spikelm_core import __version__

    code, heavy, stdout = _run_cli(["--version"])
    assert (code, heavy, stdout.strip()) == (0, set(), f"spikelm {__version__}")
    code, heavy, stdout = _run_cli(["--help"])
    assert (code, heavy) == (0, set())
    for verb in cli_main.COMMANDS:
        assert f" {verb} " in stdout
    code, heavy, stdout = _run_cli(["energy", "--help"])
    assert code == 0 and "torch" in heavy and "--timesteps" in stdout


def test_shell_completion_of_the_verbs_imports_no_verb(monkeypatch):
    """`spikelm <TAB>` (bash completion) answers the verb names without importing torch; completing a verb's
    options loads that verb."""
    monkeypatch.setenv("_SPIKELM_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "spikelm ")
    monkeypatch.setenv("COMP_CWORD", "1")
    code, heavy, stdout = _run_cli([])
    assert (code, heavy, stdout.split()) == (0, set(), list(cli_main.COMMANDS))
    monkeypatch.setenv("COMP_WORDS", "spikelm energy --ti")
    monkeypatch.setenv("COMP_CWORD", "2")
    code, heavy, stdout = _run_cli([])
    assert code == 0 and "--timesteps" in stdout.split()


def test_the_verb_list_shows_each_commands_own_summary():
    """The listing's text (read from the source) is the loaded command's: one home, the docstring."""
    group = typer_main_group()
    ctx = click_context(group)
    for verb in cli_main.COMMANDS:
        command = group.get_command(ctx, verb)
        assert command.name == verb
        assert command.help.split("\n\n")[0] == cli_main.summary(verb)
    assert group.get_command(ctx, "nosuch") is None


def test_energy_keeps_its_variadic_options_when_loaded_lazily():
    """`--k 2 3 4` works through the lazy group (energy's own command class)."""
    from spikelm_cli.commands.energy import EnergyCommand

    group = typer_main_group()
    assert isinstance(group.get_command(click_context(group), "energy"), EnergyCommand)


def typer_main_group():
    import typer

    return typer.main.get_command(cli_main.app)


def click_context(group):
    import typer

    return typer.Context(group)  # typer's own click, as the group's


def test_python_m_writes_the_completion_script_of_spikelm():
    """`python -m spikelm_cli --show-completion` gives the script of the `spikelm` command, not one for a
    command named `python` (click's name for a `-m` start)."""
    import subprocess

    # click's completion protocol (what --show-completion prints, without typer's detection of the parent shell,
    # which is sh under make): the variable is named after the program
    done = subprocess.run([sys.executable, "-m", "spikelm_cli"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "_SPIKELM_COMPLETE": "source_bash"})
    assert done.returncode == 0, done.stderr
    assert "_SPIKELM_COMPLETE=complete_bash" in done.stdout
    assert done.stdout.rstrip().endswith("complete -o default -F _spikelm_completion spikelm")


def test_a_mistyped_verb_is_suggested_without_importing_any():
    """`spikelm conver` says "Did you mean 'convert'?" (typer's suggestion, lost when the verbs became lazy)."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "spikelm_cli", "conver"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2
    assert "No such command 'conver'. Did you mean 'convert'?" in done.stderr
    code, heavy, _ = _run_cli(["conver"])
    assert (code, heavy) == (2, set())
