"""An exclusive ``fcntl.flock`` on ``<log_path>/.hf_dpo.lock`` (holding the pid) for the life of a run; the
kernel drops it when its process dies, so a lock file left by a dead process is simply taken over."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

logger = logging.getLogger("hf_dpo")

LOCK_FILE = ".hf_dpo.lock"


class LogPathLocked(RuntimeError):
    """Another live process holds the lock on ``log_path``."""


def busy_message(log_path: Path, pid: int | None) -> str:
    who = f"pid {pid}" if pid else "another process"
    return (
        f"log_path {str(log_path)!r} is in use by another run ({who}); wait for it to finish, stop it, or "
        "choose another log_path"
    )


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def lock_holder(log_path: str | Path) -> int | None:
    """The pid holding the lock on ``log_path`` (0 if the pid is unknown); None if nobody holds it. Reads
    only: creates nothing."""
    try:
        fd = os.open(Path(log_path) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or 0
    finally:
        os.close(fd)  # closing also releases a lock taken just above
    return None


class RunLock:
    """``acquire`` takes the lock (creating ``log_path`` if needed) or raises :class:`LogPathLocked` naming
    the holder's pid; ``release`` gives it back."""

    def __init__(self, log_path: str | Path) -> None:
        self.log_path = Path(log_path)
        self._fd: int | None = None

    def acquire(self) -> None:
        self.log_path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise LogPathLocked(busy_message(self.log_path, pid)) from None
        stale = _read_pid(fd)
        if stale and stale != os.getpid():
            logger.warning(
                "log_path %s: took over the lock of pid %d, which is no longer running", self.log_path, stale
            )
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no pid left behind: the next run sees no stale holder
            os.close(self._fd)
            self._fd = None
