"""Every training command the docs print loads as printed.

The shell blocks of README.md, recipes/README.md and docs/*.md hold a few hundred `spikelm finetune |
distill | pretrain RECIPE ...` lines, many of them built from shell variables (B="-s ..."). Each is run here
with `--print-config`, which resolves the recipe, every `-s` setting and every `-p` point as a run does
and trains nothing: a recipe key renamed, or a setting the recipes' checks now refuse (a stage learning
rate without its stage), breaks the docs' commands, and this test names the line.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spikelm_cli.main import app

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "recipes" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
VERBS = ("finetune", "distill", "pretrain")
FENCE = re.compile(r"^\s*```(\w*)\s*$")
ASSIGN = re.compile(r"^([A-Z_][A-Z0-9_]*)=(.*)$")
VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _logical_lines(lines: list[str]):
    """(line number, text) of a shell block's lines, continuations joined."""
    i = 0
    while i < len(lines):
        start, text = i, lines[i][1]
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i][1].strip()
        yield lines[start][0], text
        i += 1


def doc_commands() -> list[tuple[str, list[str]]]:
    """("file:line", argv after `spikelm`) of every training command in the docs' shell blocks."""
    found = []
    for path in DOCS:
        block, lang = None, ""
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            fence = FENCE.match(line)
            if fence and block is None:
                block, lang = [], fence.group(1)
                continue
            if fence or block is None:
                if block is not None and lang in ("", "bash", "sh", "shell"):
                    found += _block_commands(path, block)
                block = None if fence else block
                continue
            block.append((number, line))
    return found


def _block_commands(path: Path, block: list[tuple[int, str]]) -> list[tuple[str, list[str]]]:
    env: dict[str, str] = {}
    out = []
    for number, text in _logical_lines(block):
        text = text.strip()
        assign = ASSIGN.match(text)
        if assign:  # NAME="..." (one shell word), expanded with the names before it
            value = shlex.split(VAR.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), assign.group(2)),
                                comments=True)
            env[assign.group(1)] = value[0] if value else ""
            continue
        expanded = VAR.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), text)
        try:
            words = shlex.split(expanded, comments=True)
        except ValueError:
            continue
        if "spikelm" not in words:
            continue
        argv = words[words.index("spikelm") + 1:]
        for stop in ("&&", ";", "|", ">", "2>&1"):
            argv = argv[:argv.index(stop)] if stop in argv else argv
        if (len(argv) < 2 or argv[0] not in VERBS or not argv[1].startswith("recipes/") or not argv[1].endswith(".yaml")
                or any("<" in w or "$" in w or "..." in w for w in argv)):
            continue  # another command, a run's own config, or a placeholder for the reader to fill in
        out.append((f"{path.relative_to(REPO)}:{number}", argv))
    return out


COMMANDS = doc_commands()


def test_the_docs_print_training_commands():
    assert len(COMMANDS) > 80  # the extraction still finds them (98 when written)
    assert {argv[0] for _, argv in COMMANDS} >= {"finetune", "distill"}


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_doc_command_loads(where, argv, monkeypatch):
    monkeypatch.chdir(REPO)
    assert (REPO / argv[1]).is_file(), f"{where}: no recipe {argv[1]}"
    res = CliRunner().invoke(app, [*argv, "--print-config"])
    assert res.exit_code == 0, f"{where}: spikelm {' '.join(argv)}\n{res.output[-1500:]}"
