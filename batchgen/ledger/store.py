"""The store: the ledger's file and connection. Opening it safely (created 0600, one name,
WAL, migrated), the lock every statement runs under, transactions, and checks that the file is
still the one opened and sound."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Self

from ..errors import LedgerUnsound, NoLedger, UsageError
from ..group_commit import GroupCommit
from ..migrations import migrate

_BATCH = 500  # keys per IN (...) query: well under SQLite's variable limit
BUSY_TIMEOUT = 30.0  # seconds a statement waits for another process's write lock
QUIT_WAIT = 2.0  # seconds it waits instead once the process quits at once (`Ledger.quitting`)

# What the ledger's database raises when it fails under a command (disk full, locked past the
# timeout): the command line catches these by this name, so it never imports the driver.
FAILURES: tuple[type[Exception], ...] = (sqlite3.Error,)

# SQL shared by the queries and the claims: a task still generating, and a state as a plan
# reads it (a submitted task whose generation failed is `generation_failed`).
_PROCESSING = "t.state = 'submitted' AND coalesce(t.status, 'processing') = 'processing'"
_EFFECTIVE_STATE = (
    "CASE WHEN state = 'submitted' AND status = 'failed' THEN 'generation_failed' ELSE state END"
)


class Database(NamedTuple):
    """The ledger's connection, as `ledger.db.conn` (the spelling of sqlite-utils, which
    batchgen imports only to migrate a ledger: see `migrations.migrate`)."""

    conn: sqlite3.Connection


class Store:
    """An open ledger file. Safe to share between threads: every statement runs under one lock."""

    def __init__(
        self, path: str | Path, *, create: bool = True, busy_timeout: float = BUSY_TIMEOUT
    ):
        self.path = _real_name(Path(path))
        if not create and not self.path.exists():
            raise NoLedger(f"no ledger at {self.path}: nothing has been sent from this project yet")
        self._create_private(self.path)
        self._refuse_hard_links()
        self._identity = self._file_identity()
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
            conn.row_factory = sqlite3.Row
            mode = _enable_wal(conn, busy_timeout)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            self.db = Database(conn)
            self._lock = threading.RLock()
            self._patience: float | None = None  # set by `quitting`
            self._group = GroupCommit(conn, self._lock)
            with self._lock:
                migrate(conn)
        except sqlite3.OperationalError as e:  # locked past the timeout, unreadable, ...
            raise UsageError(f"{self.path}: cannot open the ledger ({e})") from None
        except sqlite3.DatabaseError as e:
            raise UsageError(f"{self.path}: not a batchgen ledger ({e})") from None
        if mode.lower() != "wal":
            raise UsageError(f"{self.path}: cannot switch the ledger to WAL mode (got {mode})")

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
            info = os.stat(self.path)
        except OSError as e:
            raise UsageError(f"cannot open the ledger {self.path}: {e.strerror}") from None
        if info.st_nlink > 1:
            raise UsageError(
                f"{self.path} has {info.st_nlink} hard links: a ledger must have one name "
                "(SQLite cannot lock it through the others); copy it instead of linking it"
            )
        if not os.path.isfile(self.path):
            raise UsageError(f"{self.path} is not a regular file")

    def _file_identity(self) -> tuple[int, int]:
        info = os.stat(self.path)
        return (info.st_dev, info.st_ino)

    def check_same_file(self) -> None:
        """Raise `LedgerUnsound` if the ledger was deleted or replaced since it was opened:
        anything written now would go to a file nobody will read."""
        try:
            identity = self._file_identity()
        except FileNotFoundError:
            raise LedgerUnsound(
                f"the ledger {self.path} was deleted while batchgen was using it"
            ) from None
        if identity != self._identity:
            raise LedgerUnsound(
                f"the ledger {self.path} was replaced by another file while batchgen was using it"
            )

    def quick_check(self) -> None:
        """Raise `LedgerUnsound` if SQLite finds the ledger corrupt (a broken index would make
        done requests look new, and send them again)."""
        try:
            rows = self._query("PRAGMA quick_check")
        except sqlite3.DatabaseError as e:
            raise LedgerUnsound(
                f"the ledger {self.path} is corrupt ({e}); nothing was sent"
            ) from None
        problems = [row[0] for row in rows if row[0] != "ok"]
        if problems:
            raise LedgerUnsound(
                f"the ledger {self.path} is corrupt ({problems[0]}); nothing was sent. "
                f"Keep a copy, then try: sqlite3 {self.path} '.recover' | sqlite3 repaired.db"
            )

    def integrity(self) -> str:
        return str(self._query("PRAGMA integrity_check")[0][0])

    def close(self) -> None:
        try:
            with self._locked() as conn:
                conn.close()
        except sqlite3.OperationalError:
            pass  # quitting, with a worker still on it: the process's exit closes it

    def quitting(self, wait: float = QUIT_WAIT) -> None:
        """The process is about to exit without waiting for its workers (a second Ctrl-C): from
        now on a statement waits at most `wait` seconds for the ledger, not the busy timeout.
        A worker may hold the ledger that long, waiting on another process's write lock, and
        the user asked to quit at once. What is not written in time, the next command settles:
        rows left `sending` become in_doubt, and received task ids are in the journal."""
        self._patience = wait

    @contextlib.contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, with the lock every statement runs under (see `quitting`)."""
        if not self._lock.acquire(timeout=-1 if self._patience is None else self._patience):
            raise sqlite3.OperationalError("the ledger is busy: another thread is waiting on it")
        try:
            if self._patience is not None:
                self.db.conn.execute(f"PRAGMA busy_timeout={int(self._patience * 1000)}")
            yield self.db.conn
        finally:
            self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: takes the write lock up front, so reads inside are current."""
        with self._locked() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._locked() as conn:
            return conn.execute(sql, tuple(params)).fetchall()

    def columns(self, table: str = "tasks") -> list[str]:
        return [row["name"] for row in self._query(f"PRAGMA table_info({table})")]


def _real_name(path: Path) -> Path:
    """The ledger's own name, through any symlink (of the file or of a folder above it).

    SQLite follows links, but the files beside the ledger (journal, reserve, the runs' locks)
    are named from this path: reached under two names, two runs would each see the other's
    live rows as left by a run that ended, and send them again. Unchanged when no link is
    involved, so messages name the path as the user typed it."""
    real = Path(os.path.realpath(path))
    return path if real == Path(os.path.abspath(path)) else real


def _enable_wal(conn: sqlite3.Connection, timeout: float = BUSY_TIMEOUT) -> str:
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


def current(current_only: bool) -> str:
    """The SQL that keeps a job's current requests (`j` is its job_tasks), or none. A job's
    requests are those its file asked for at its last run: the rows it no longer asks for are
    kept, marked superseded (`job_tasks.current` = 0), and shown only when asked (`--all`)."""
    return " AND j.current = 1" if current_only else ""
