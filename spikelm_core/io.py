"""Safe file output: whole directories appear atomically or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import ConfigError


def check_output_dir(out: str | Path, force: bool) -> Path:
    """Refuse an existing non-empty directory (or a file) unless `force`."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"output path '{out}' exists and is a file", hint="choose another --out")
        if any(out.iterdir()) and not force:
            raise ConfigError(
                f"output directory '{out}' exists and is not empty",
                hint="choose another --out, or pass --force to replace it",
            )
    return out


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `out` in one rename.

    On any error the temporary directory is removed and `out` is left exactly as it was, so a
    crash or Ctrl-C never leaves a half-written model behind.
    """
    out = check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file via a temporary file and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
