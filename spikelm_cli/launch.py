"""The `spikelm` entry point. A Ctrl-C while the CLI imports ends the command as one during its work
does (`interrupted`, exit 130), not with a traceback from inside an import; the seconds of importing
torch and transformers come later, when a verb is loaded (`spikelm_cli.main.load_command`)."""

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
