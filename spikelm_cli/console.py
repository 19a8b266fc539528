"""Rich consoles: results to stdout, progress and messages to stderr."""

import os
import sys

from rich.console import Console

#: Width of a stdout that is not a terminal (a pipe, a file, a log), where rich would take 80 columns and cut
#: a table's columns ('neuron.…' for a sweep point's settings, a path's end): wide enough that none is cut.
PIPE_WIDTH = 150


def _stdout_is_a_terminal() -> bool:
    """Whether stdout is a terminal itself: rich's `is_terminal` also says so under FORCE_COLOR (a CI log
    in colour), where it then takes 80 columns."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


out = Console(highlight=False)
if not _stdout_is_a_terminal() and not os.environ.get("COLUMNS", "").isdigit():  # the user's width, as rich reads it
    out = Console(highlight=False, width=PIPE_WIDTH)
err = Console(stderr=True, highlight=False)
