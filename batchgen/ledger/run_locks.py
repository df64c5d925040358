"""Is a run still going? A lock the running process holds, never a PID.

Each run holds an exclusive `flock` on its own file in a folder beside the ledger
(`batchgen.db.runs/<run id>.lock`). The kernel releases it when the process dies, however it
dies, so "can I take that lock?" answers "is that run gone?" correctly across containers and
PID namespaces, where a PID names another process or none. A run takes its lock before its
first claim, so a run with `sending` rows always has one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def runs_folder(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".runs")


class RunLock:
    """Held from a run's start to its end (or its process's death)."""

    def __init__(self, ledger: Path, run_id: int):
        folder = runs_folder(ledger)
        folder.mkdir(mode=0o700, exist_ok=True)
        self.path = folder / f"{run_id}.lock"
        self._fd: int | None = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # releases the lock
            self._fd = None


def is_alive(ledger: Path, run_id: int) -> bool:
    """Whether run `run_id` still holds its lock. A stale lock file is removed."""
    path = runs_folder(ledger) / f"{run_id}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        path.unlink(missing_ok=True)
        return False
    finally:
        os.close(fd)
