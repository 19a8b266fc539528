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
