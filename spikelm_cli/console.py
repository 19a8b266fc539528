"""Rich consoles: results to stdout, progress and messages to stderr."""

from rich.console import Console

#: Width of a stdout that is not a terminal (a pipe, a file, a log), where rich would take 80 columns and cut
#: a table's columns ('neuron.…' for a sweep point's settings, a path's end): wide enough that none is cut.
PIPE_WIDTH = 150

out = Console(highlight=False)
if not out.is_terminal:
    out = Console(highlight=False, width=PIPE_WIDTH)
err = Console(stderr=True, highlight=False)
