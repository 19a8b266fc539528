"""The `spikelm` entry point. Importing the CLI takes seconds (torch, transformers, the model classes);
a Ctrl-C in that time ends the command as one during its work does (`interrupted`, exit 130), not
with a traceback from inside an import."""

from __future__ import annotations

import signal
import sys


def main() -> None:
    try:
        from .main import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(128 + signal.SIGINT) from None
    run()
