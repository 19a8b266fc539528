"""Safe file output: whole directories appear atomically or not at all."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from .errors import ConfigError, OutputError


_WRAPPED_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def wrapped_os_error(exc: BaseException, filename: str | Path | None = None) -> OSError | None:
    """The OSError inside an error of safetensors' writer (`SafetensorError: Error while serializing:
    I/O error: No space left on device (os error 28)`), rebuilt with its errno so a full disk reads as
    one; None for any other error."""
    if type(exc).__name__ != "SafetensorError":
        return None
    found = _WRAPPED_OS_ERROR.search(str(exc))
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code), None if filename is None else str(filename))


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
    be written (`check_output_location`; for an existing directory, also the folder its replacement
    is written in), one that holds any of the command's `inputs` (its model, its data: replacing it
    would delete them), a mount point (it cannot be renamed), and, even with `force`, one that holds
    folders (a model or a report holds files only: `--out runs` would delete every run) or the
    current directory."""
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
        if os.path.ismount(out):
            raise ConfigError(
                f"--out '{out}' is a mount point: an output is written beside its folder and renamed into place, "
                "which a mount point cannot be",
                hint=f"write into a folder inside it, e.g. --out {out / 'output'}",
            )
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
        folders = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.is_symlink())
        if force and folders:  # a model or a report holds files only: this is something else
            shown = ", ".join(f"{name}/" for name in folders[:4]) + (", ..." if len(folders) > 4 else "")
            raise ConfigError(
                f"--force replaces '{out}' whole, and it holds folders ({shown}): it is not an output of this "
                "command, and replacing it would delete them",
                hint=f"choose a new folder for --out (e.g. '{out / 'output'}'), or delete '{out}' yourself",
            )
        # the new output is written beside it and renamed into its place: that folder must take writes
        check_output_location(out.parent)
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
