"""Safe file output: whole directories appear atomically or not at all."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from .errors import ConfigError, OutputError

log = logging.getLogger(__name__)

_WRAPPED_OS_ERROR = re.compile(r"\(os error (\d+)\)")


#: what torch.save's zip writer raises when a write fails (a full disk): no errno to read
_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed writing", "unexpected pos", "basic_ios::clear: iostream error")


def wrapped_os_error(exc: BaseException, filename: str | Path | None = None) -> OSError | None:
    """The OSError inside a library's error, rebuilt with its errno so a full disk reads as one: a Rust
    library's message names it (safetensors' `SafetensorError: ... No space left on device (os error 28)`,
    tokenizers' `Exception: No space left on device (os error 28)`), torch.save's zip writer only says its
    write failed (ENOSPC then, its likeliest cause); None for any other error."""
    where = None if filename is None else str(filename)
    found = _WRAPPED_OS_ERROR.search(str(exc))
    if found is not None:
        code = int(found.group(1))
        # safetensors' error here is always its writer's; another library's may come from a read, so only the
        # errors no read gives (a full disk, a quota, a file too large) are taken from it
        if type(exc).__name__ == "SafetensorError" or code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return OSError(code, os.strerror(code), where)
        return None
    if isinstance(exc, RuntimeError) and any(text in str(exc) for text in _TORCH_WRITE_FAILED):
        return OSError(errno.ENOSPC, "a write failed (torch.save); is the disk full?", where)
    return None


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
    if clean_stale_siblings(out):  # an old output put back: it is checked as any existing output is
        out = check_output_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{_mark('tmp')}-", dir=out.parent))
    try:
        yield tmp
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(finished: str | Path, out: str | Path) -> None:
    """Put the finished directory `finished` (a sibling of `out`) in `out`'s place: readers see the old
    `out` or the new one, never a part of either, and never no `out`; permissions follow the umask.

    An existing `out` is swapped with `finished` in one step (Linux `renameat2(RENAME_EXCHANGE)`), then the
    old output is deleted. Where the system cannot swap, two renames with the old output set aside as
    `.<out>.spikelm-old-<host>-<pid>` (put back if the second fails; a process killed between the two leaves
    it, and `clean_stale_siblings` puts it back on the next write to `out`)."""
    finished, out = Path(finished), Path(out)
    follow_umask(finished)
    if not out.exists():
        os.replace(finished, out)
        return
    if _exchange(finished, out):
        _remove_old(finished)  # the old output, now in the finished one's place
        return
    old = out.parent / f".{out.name}.{_mark('old')}"
    os.replace(out, old)
    try:
        os.replace(finished, out)
    except BaseException:
        os.replace(old, out)
        raise
    _remove_old(old)


def _remove_old(path: Path) -> None:
    """Delete a replaced output: a folder with its files, or (an `--out` that was a symbolic link to a folder)
    the link alone, never what it points to (`shutil.rmtree` refuses links, which left them behind)."""
    if path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux renameat2 with RENAME_EXCHANGE); False where the system or
    its file system cannot (then nothing moved)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without it (glibc before 2.28, musl)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


_STALE = re.compile(r"^\.(?P<name>.+)\.spikelm-(?P<kind>old|tmp)-(?P<host>\w+)-(?P<pid>\d+)(?:-.*)?$")


def _host() -> str:
    import socket

    return re.sub(r"\W", "_", socket.gethostname()) or "host"


def _mark(kind: str) -> str:
    """The name part that says which process of which machine set a folder aside: `spikelm-<kind>-<host>-<pid>`
    (`clean_stale_siblings` acts on this machine's only: a shared file system's other hosts have other pids)."""
    return f"spikelm-{kind}-{_host()}-{os.getpid()}"


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this machine may still run (another user's counts as alive; so does a pid no
    system has, which nothing then treats as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):  # someone else's process, or no pid this system has
        return True
    return True


def clean_stale_siblings(out: str | Path) -> bool:
    """What a killed write to `out` left beside it, by a dead process of this machine: its temporary folders
    (`.<out>.spikelm-tmp-<host>-<pid>-*`) are deleted, and an old output it set aside between two renames
    (`.<out>.spikelm-old-<host>-<pid>`) is put back where `out` is missing, else deleted. Folders of a live
    process, of another machine, or named otherwise are left alone. True when an old output was put back."""
    out = Path(out)
    restored = False
    if not out.parent.is_dir():
        return restored
    host = _host()
    for sibling in sorted(out.parent.glob(f".{glob.escape(out.name)}.spikelm-*")):
        found = _STALE.match(sibling.name)
        if (found is None or found["name"] != out.name or found["host"] != host or process_alive(int(found["pid"]))
                or not sibling.is_dir() or sibling.is_symlink()):
            continue
        if found["kind"] == "old" and not out.exists():
            os.replace(sibling, out)
            restored = True
            log.warning("%s: put back the previous output, which an interrupted write had set aside as %s",
                        out, sibling.name)
        else:
            shutil.rmtree(sibling, ignore_errors=True)
    return restored


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(root: Path) -> None:
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
