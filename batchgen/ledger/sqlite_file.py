"""The default backend: the ledger is one SQLite file in the project. Opening it safely
(created 0600, one name, WAL, migrated), and checks that the file is still the one opened and
sound. A run's liveness is a lock on a file beside it (run_locks.py)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from ..errors import LedgerUnsound, NoLedger, UsageError
from . import run_locks
from .connections import SQLITE, Connection
from .migrations import migrate


class SqliteConnection(sqlite3.Connection):
    """A sqlite3 connection that says its dialect (`connections.Connection`)."""

    dialect = SQLITE


class SqliteFile:
    """An open ledger file (see `backend.Backend`)."""

    dialect = SQLITE
    single_statement_commits = True
    touch_on_quit = True
    shares_pace = False  # see next_slot  # a local file: its lock is waited for at most `Store.quitting`'s wait

    def __init__(self, path: Path, *, create: bool, busy_timeout: float):
        self.local = _real_name(path)
        self.location = self.shown = str(self.local)
        if not create and not self.local.exists():
            raise NoLedger(
                f"no ledger at {self.local}: nothing has been sent from this project yet"
            )
        self._create_private(self.local)
        self._refuse_hard_links()
        self._identity = self._file_identity()
        try:
            conn = sqlite3.connect(
                self.local,
                isolation_level=None,
                check_same_thread=False,
                timeout=busy_timeout,
                factory=SqliteConnection,
            )
            conn.row_factory = sqlite3.Row
            mode = _enable_wal(conn, busy_timeout)
            conn.execute("PRAGMA synchronous=FULL")
            self.conn: Connection = conn
            self.set_patience(busy_timeout)
            migrate(conn)
        except sqlite3.OperationalError as e:  # locked past the timeout, unreadable, ...
            raise UsageError(f"{self.local}: cannot open the ledger ({e})") from None
        except sqlite3.DatabaseError as e:
            raise UsageError(f"{self.local}: not a batchgen ledger ({e})") from None
        if mode.lower() != "wal":
            raise UsageError(f"{self.local}: cannot switch the ledger to WAL mode (got {mode})")

    @staticmethod
    def _create_private(path: Path) -> None:
        # Created 0600 before SQLite opens it (its -wal and -shm files copy the mode): the
        # ledger holds every prompt sent, which may be nobody else's business.
        if path.exists():
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as e:
            raise UsageError(f"cannot create the ledger {path}: {e.strerror}") from None

    def _refuse_hard_links(self) -> None:
        # Two names for one ledger file get two -wal files: SQLite's locking no longer
        # covers both, so two runs could each claim the same request and pay for it twice.
        try:
            info = os.stat(self.local)
        except OSError as e:
            raise UsageError(f"cannot open the ledger {self.local}: {e.strerror}") from None
        if info.st_nlink > 1:
            raise UsageError(
                f"{self.local} has {info.st_nlink} hard links: a ledger must have one name "
                "(SQLite cannot lock it through the others); copy it instead of linking it"
            )
        if not os.path.isfile(self.local):
            raise UsageError(f"{self.local} is not a regular file")

    def _file_identity(self) -> tuple[int, int]:
        info = os.stat(self.local)
        return (info.st_dev, info.st_ino)

    def check_same(self) -> None:
        # Anything written to a ledger deleted or replaced would go to a file nobody reads.
        try:
            identity = self._file_identity()
        except FileNotFoundError:
            raise LedgerUnsound(
                f"the ledger {self.local} was deleted while batchgen was using it"
            ) from None
        if identity != self._identity:
            raise LedgerUnsound(
                f"the ledger {self.local} was replaced by another file while batchgen was using it"
            )

    def quick_check(self) -> None:
        # A broken index would make done requests look new, and send them again.
        try:
            rows = self.conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as e:
            raise LedgerUnsound(
                f"the ledger {self.local} is corrupt ({e}); nothing was sent"
            ) from None
        problems = [row[0] for row in rows if row[0] != "ok"]
        if problems:
            raise LedgerUnsound(
                f"the ledger {self.local} is corrupt ({problems[0]}); nothing was sent. "
                f"Keep a copy, then try: sqlite3 {self.local} '.recover' | sqlite3 repaired.db"
            )

    def integrity(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    def columns(self, table: str) -> list[str]:
        return [row["name"] for row in self.conn.execute(f"PRAGMA table_info({table})")]

    def size_hint(self) -> int:
        # The largest rowid: rows are never renumbered, and a count would read the table.
        return int(self.conn.execute("SELECT coalesce(max(rowid), 0) FROM tasks").fetchone()[0])

    def next_slot(self, account: str, spacing: float) -> float:
        raise NotImplementedError("a file's processes pace each alone (shares_pace)")

    def streaming_cursor(self) -> Any:
        return self.conn.cursor()  # SQLite steps through the rows as they are fetched

    def long_calls(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # a file's calls are bounded by its busy timeout

    def set_patience(self, seconds: float) -> None:
        self.conn.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    def hold_run(self, run_id: int) -> run_locks.RunLock:
        return run_locks.RunLock(self.local, run_id)

    def is_alive(self, run_id: int) -> bool:
        return run_locks.is_alive(self.local, run_id)

    def sync_run_ids(self) -> None:
        pass  # an INTEGER PRIMARY KEY goes on from the largest id there is

    def close(self) -> None:
        self.conn.close()


def _real_name(path: Path) -> Path:
    """The ledger's own name, through any symlink (of the file or of a folder above it).

    SQLite follows links, but the files beside the ledger (journal, reserve, the runs' locks)
    are named from this path: reached under two names, two runs would each see the other's
    live rows as left by a run that ended, and send them again. Unchanged when no link is
    involved, so messages name the path as the user typed it."""
    real = Path(os.path.realpath(path))
    return path if real == Path(os.path.abspath(path)) else real


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> str:
    """Switch to WAL, waiting out another process doing the same to a new ledger.

    SQLite does not call the busy handler for every lock this pragma takes, so two processes
    opening a new ledger at once could fail with "database is locked" despite the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
