"""The server keeps its secrets to itself: a non-dumpable process and private files.

* :func:`make_non_dumpable` marks the process non-dumpable (``prctl(PR_SET_DUMPABLE,
  0)``). The kernel then lets no process without ``CAP_SYS_PTRACE`` read its
  ``/proc/<pid>/environ``, ``mem`` or ``maps``, or attach to it, even one of the same
  user (a task process, say). ``/proc/<pid>/cmdline`` stays readable by everyone, so
  secrets belong in the environment, never in arguments. ``serve`` and ``worker`` call
  it first thing; it is a no-op where there is no ``prctl`` (not Linux).
* :func:`private_dir` and :func:`private_file` create (or tighten) the data directory
  as 0700 and files that hold secrets or records as 0600, whatever the umask.

Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import stat
import sys
from pathlib import Path

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def make_non_dumpable() -> bool:
    """Mark this process non-dumpable; True when it is now (False off Linux)."""
    libc = _libc()
    if libc is None:
        return False
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        return False
    return is_dumpable() is False


def is_dumpable() -> bool | None:
    """Whether this process is dumpable; None where that cannot be asked."""
    libc = _libc()
    if libc is None:
        return None
    result = libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    return None if result < 0 else bool(result)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make ``path`` itself 0700."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty (0600) when missing, else make it 0600."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        _tighten(path, PRIVATE_FILE_MODE)
    else:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # whatever the umask
        os.close(fd)
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open(path, flags | O_CREAT)`` with mode 0600, also for a file that existed."""
    fd = os.open(path, flags | os.O_CREAT, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return fd


def _tighten(path: Path, mode: int) -> None:
    # Another owner's file (a mounted volume, say) keeps its mode: not ours to change.
    with contextlib.suppress(PermissionError):
        if stat.S_IMODE(path.stat().st_mode) != mode:
            path.chmod(mode)


__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "is_dumpable",
    "make_non_dumpable",
    "open_private",
    "private_dir",
    "private_file",
]
