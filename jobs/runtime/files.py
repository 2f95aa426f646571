"""Files a job writes and reads: atomic writes that survive crashes, what a failed write should say
(which errno means a full disk, a read-only folder, a file in the way), and user-named files read
into one clear error.

Every write of a run (checkpoints, ``spec.toml``, ``run.json``, a tokenizer) goes through
``atomic_write_text`` or the checkpoint's own temporary folder; every failure is one line with
``advice``; every file a user names is opened through ``input_file``.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from aunet.core.checkpoints import sha256  # noqa: F401 - one home (core), used by the jobs through here
from aunet.core.errors import InputError


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small file so that readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_error_text(exc: BaseException) -> str:
    """What a failed write says, in one line: the system's words where there are some."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    code = errno_of(exc)
    if code is not None:
        return os.strerror(code)
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def errno_of(exc: BaseException) -> int | None:
    """The errno behind a writer's error (safetensors spells it ``code: 28``; a
    CheckpointException wraps the processes' exceptions)."""
    if isinstance(exc, OSError):
        return exc.errno
    for failure in getattr(exc, "failures", {}).values():
        inner = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(inner, BaseException):
            found = errno_of(inner)
            if found is not None:
                return found
    match = re.search(r"(?:code: |os error )(\d+)", str(exc))
    if match:
        return int(match.group(1))
    cause = exc.__cause__ or exc.__context__
    return errno_of(cause) if cause is not None and cause is not exc else None


def advice(exc: BaseException, folder: Path) -> str:
    """What to do about a failed write, for the errors a user can fix."""
    code = errno_of(exc)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f" (free space on the disk that holds {folder}, or move the run with --out)"
    if code == errno.EFBIG:
        return " (a limit on file sizes is in force for this process: raise `ulimit -f`)"
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f" (make {folder} writable, or choose another --out)"
    if code in (errno.ENOTDIR, errno.EEXIST):
        return f" (a file stands where aunet writes a folder in {folder}: move it away)"
    return ""


def file_mode() -> int:
    """0o666 less the umask: what ``open`` gives every other file of the run (safetensors
    writes 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_text(path: Path, text: str) -> None:
    """An atomic write whose failure (a full disk, a read-only folder) is one line of advice."""
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}{advice(exc, path.parent)}") from None


def input_file(path: str | Path, *, what: str = "--file") -> tuple[Path, int]:
    """A user-named regular file and its size, or an InputError that says what is wrong."""
    p = Path(path)
    if not p.exists():
        through = next((q for q in p.parents if q.exists() and not q.is_dir()), None)
        if through is not None:
            raise InputError(f"{what}: cannot read '{path}': '{through}' is a file, not a folder")
        raise InputError(f"{what}: '{path}' does not exist")
    if p.is_dir():
        raise InputError(f"{what}: '{path}' is a directory; give a file")
    if not p.is_file():
        raise InputError(f"{what}: '{path}' is not a regular file (a device or a pipe); give a file")
    try:
        with open(p, "rb"):
            pass
        return p, p.stat().st_size
    except PermissionError:
        raise InputError(f"{what}: '{path}' is not readable (permission denied)") from None
    except OSError as exc:
        raise InputError(f"{what}: cannot read '{path}': {exc.strerror or exc}") from None
