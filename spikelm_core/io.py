"""Safe file output: whole directories appear atomically or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from .errors import ConfigError, OutputError


def check_output_location(out: str | Path) -> Path:
    """Refuse an output path that cannot be created: a file in the way, or a location that does not
    take writes (read-only, a virtual filesystem, no permission). Probes the nearest existing folder
    with a temporary directory, removed at once, so the check is the one the real write will meet."""
    out = Path(out)
    existing = out
    while not existing.exists():
        existing = existing.parent
    if existing != out and not existing.is_dir():
        raise ConfigError(f"cannot create '{out}': '{existing}' is a file", hint="choose another output location")
    folder = existing if existing.is_dir() else existing.parent
    try:
        probe = tempfile.mkdtemp(prefix=".spikelm-probe-", dir=folder)
        os.rmdir(probe)
    except OSError as exc:
        raise OutputError(
            f"cannot write '{out}': '{folder}' does not take new files ({exc.strerror or exc})",
            hint="choose a writable output location (check the permissions and free space)",
        ) from None
    return out


def check_output_dir(out: str | Path, force: bool, inputs: Sequence[str | Path | None] = ()) -> Path:
    """Refuse an existing non-empty directory (or a file) unless `force`, a location that cannot
    be written (`check_output_location`), and one that holds any of the command's `inputs` (its
    model, its data: replacing it would delete them)."""
    out = Path(out)
    check_output_location(out)
    target = out.resolve()
    for given in inputs:
        if given is None or not Path(given).exists():
            continue
        source = Path(given).resolve()
        if source == target or target in source.parents:
            raise ConfigError(
                f"--out '{out}' holds this command's input '{given}': writing there would replace it",
                hint=f"choose another --out, a folder of its own (e.g. '{out.parent / (out.name + '-out')}')",
            )
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"output path '{out}' exists and is a file", hint="choose another --out")
        if any(out.iterdir()) and not force:
            raise ConfigError(
                f"output directory '{out}' exists and is not empty",
                hint="choose another --out, or pass --force to replace it",
            )
        cwd = Path.cwd().resolve()
        if force and (out.resolve() == cwd or out.resolve() in cwd.parents):
            raise ConfigError(
                f"--force would replace '{out}', which holds the current directory",
                hint="choose a new folder for --out, e.g. --out energy-report",
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
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(finished: str | Path, out: str | Path) -> None:
    """Put the finished directory `finished` (a sibling of `out`) in `out`'s place by renames: readers
    see the old `out` or the new one, never a part of either; permissions follow the umask."""
    finished, out = Path(finished), Path(out)
    _follow_umask(finished)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(finished, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _follow_umask(root: Path) -> None:
    """mkdtemp/mkstemp create private (0700/0600) entries; give the finished output the usual modes."""
    mask = _umask()
    for path in [root, *root.rglob("*")]:
        with contextlib.suppress(OSError):
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file via a temporary file in the same folder and `os.replace`: readers see the old
    file or the new one, never a part; permissions follow the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))
