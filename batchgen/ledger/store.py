"""The store: an open ledger, whatever its backend (backend.py). The lock every statement runs
under, transactions, group commit, and which backend a location names."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Self

from ..errors import LedgerBusy, LedgerFailed
from .backend import Backend, RunHold
from .connections import Connection
from .group_commit import GroupCommit
from .location import is_url
from .sqlite_file import SqliteFile

_BATCH = 500  # keys per IN (...) query: well under SQLite's variable limit
BUSY_TIMEOUT = 30.0  # seconds a statement waits for another process's write lock
QUIT_WAIT = 2.0  # seconds it waits instead once the process quits at once (`Ledger.quitting`)

# What the ledger's database raises when it fails under a command (disk full, locked past the
# timeout): the command line catches these by this name, so it never imports the driver.
FAILURES: tuple[type[Exception], ...] = (sqlite3.Error, LedgerFailed)

# SQL shared by the queries and the claims: a task still generating, and a state as a plan
# reads it (a submitted task whose generation failed is `generation_failed`).
_PROCESSING = "t.state = 'submitted' AND coalesce(t.status, 'processing') = 'processing'"
_EFFECTIVE_STATE = (
    "CASE WHEN state = 'submitted' AND status = 'failed' THEN 'generation_failed' ELSE state END"
)


class Database(NamedTuple):
    """The ledger's connection, as `ledger.db.conn` (the spelling of sqlite-utils, which
    batchgen imports only to migrate a ledger: see `migrations.migrate`)."""

    conn: Connection


class Store:
    """An open ledger. Safe to share between threads: every statement runs under one lock.

    `location` is a file's path (SQLite, the default) or a `postgresql://` URL: see
    backend.py for what differs between the two, and `open_backend` for how one is chosen."""

    def __init__(
        self, location: str | Path, *, create: bool = True, busy_timeout: float = BUSY_TIMEOUT
    ):
        self.backend = open_backend(location, create=create, busy_timeout=busy_timeout)
        self.sql = self.backend.dialect
        # Where this machine keeps its own files for the ledger (the journal, its reserve):
        # the SQLite file itself, or a name of its own for a PostgreSQL ledger.
        self.path = self.backend.local
        self.db = Database(self.backend.conn)
        self._lock = threading.RLock()
        self._patience: float | None = None  # set by `quitting`
        self._quit = False  # set by `quitting`: see there
        self._group = GroupCommit(
            self.backend.conn,
            self._lock,
            single_statements=self.backend.single_statement_commits,
            begin_write=self.backend.dialect.begin_write,
        )

    @property
    def location(self) -> str:
        """The ledger as `--ledger` and `BATCHGEN_LEDGER` take it."""
        return self.backend.location

    @property
    def shown(self) -> str:
        """The ledger as messages name it (a URL without its password)."""
        return self.backend.shown

    def check_same_file(self) -> None:
        """Raise `LedgerUnsound` if the ledger was deleted or replaced since it was opened:
        anything written now would go to a file nobody will read."""
        self.backend.check_same()

    def quick_check(self) -> None:
        """Raise `LedgerUnsound` if the engine finds the ledger corrupt (a broken index would
        make done requests look new, and send them again)."""
        with self._locked():
            self.backend.quick_check()

    def integrity(self) -> str:
        with self._locked():
            return self.backend.integrity()

    def hold_run(self, run_id: int) -> RunHold:
        """Show run `run_id` as going to every other process, until released (or until this
        process dies): before its first claim, so a run with `sending` rows always shows."""
        with self._locked():
            return _Held(self, self.backend.hold_run(run_id))

    def shared_pace(self, account: str) -> Callable[[float], float] | None:
        """The pace of `account` (an API key's digest) shared by every process on this ledger,
        where the backend can share one (a server: `Backend.next_slot`); None on a file.

        The function takes the caller's spacing and returns when the caller's slot starts, on
        this process's monotonic clock."""
        if not self.backend.shares_pace:
            return None

        def slot(spacing: float) -> float:
            with self._locked():
                ahead = self.backend.next_slot(account, spacing)
            return time.monotonic() + ahead

        return slot

    def run_is_alive(self, run_id: int) -> bool:
        with self._locked():
            return self.backend.is_alive(run_id)

    def size_hint(self) -> int:
        with self._locked():
            return self.backend.size_hint()

    def analyze(self) -> None:
        """Gather the planner's statistics (both engines spell it ANALYZE): after a ledger is
        copied in at once, a server's planner knows nothing of its rows until autovacuum
        comes by, and a `status` of 300,000 rows went past ten seconds."""
        with self._locked() as conn, self.long_calls():
            for table in ("tasks", "job_tasks", "job_counts", "runs"):  # not the catalogue's
                conn.execute(f"ANALYZE {table}")

    def sync_run_ids(self) -> None:
        """After runs were copied in with their ids: the next run's follows the largest."""
        with self._locked():
            self.backend.sync_run_ids()

    def close(self) -> None:
        if self._quit and not self.backend.touch_on_quit:
            return  # the process's exit closes the connection, without waiting on the server
        try:
            with self._locked():
                self.backend.close()
        except FAILURES:
            pass  # quitting, with a worker still on it: the process's exit closes it

    def quitting(self, wait: float = QUIT_WAIT) -> None:
        """The process is about to exit without waiting for its workers (a second Ctrl-C): from
        now on a statement waits at most `wait` seconds for the ledger, not the busy timeout.
        A worker may hold the ledger that long, waiting on another process's write lock, and
        the user asked to quit at once. What is not written in time, the next command settles:
        rows left `sending` become in_doubt, and received task ids are in the journal.

        A ledger on a server is not touched at all from then on (`Backend.touch_on_quit`): the
        server may be what stopped answering, and its session's end does what is needed."""
        self._patience = wait
        self._quit = True

    def long_calls(self) -> contextlib.AbstractContextManager[None]:
        """Statements inside may rightly take minutes (see `Backend.long_calls`)."""
        return self.backend.long_calls()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Connection]:
        """The connection, with the lock every statement runs under (see `quitting`)."""
        if self._quit and not self.backend.touch_on_quit:
            raise LedgerBusy(
                "the ledger is busy: the process is quitting, and does not wait for its server"
            )
        if not self._lock.acquire(timeout=-1 if self._patience is None else self._patience):
            raise LedgerBusy("the ledger is busy: another thread is waiting on it")
        try:
            if self._patience is not None:
                self.backend.set_patience(self._patience)
            yield self.db.conn
        finally:
            self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A transaction that writes (`Dialect.begin_write`) … COMMIT: takes the write lock up
        front, so reads inside are current."""
        with self._locked() as conn:
            for statement in self.sql.begin_write:
                conn.execute(statement)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._locked() as conn:
            rows: list[Any] = conn.execute(sql, tuple(params)).fetchall()
            return rows

    def columns(self, table: str = "tasks") -> list[str]:
        with self._locked():
            return self.backend.columns(table)


class _Held:
    """A run's hold, let go with the ledger's other business: not at all when the process quits
    at once on a ledger it must not touch then (`Store.quitting`: its end lets it go)."""

    def __init__(self, store: Store, hold: RunHold):
        self._store = store
        self._hold = hold

    def release(self) -> None:
        if self._store._quit and not self._store.backend.touch_on_quit:
            return
        self._hold.release()


def open_backend(location: str | Path, *, create: bool, busy_timeout: float) -> Backend:
    """The backend `location` names, opened: a `postgresql://` URL, or a SQLite file."""
    if is_url(location):
        # Imported only for a URL: psycopg is an extra (`batchgen[postgres]`), and a SQLite
        # ledger's commands do not pay for importing it.
        from .postgres import PostgresLedger

        return PostgresLedger(str(location), create=create, busy_timeout=busy_timeout)
    return SqliteFile(Path(location), create=create, busy_timeout=busy_timeout)


def current(current_only: bool) -> str:
    """The SQL that keeps a job's current requests (`j` is its job_tasks), or none. A job's
    requests are those its file asked for at its last run: the rows it no longer asks for are
    kept, marked superseded (`job_tasks.current` = 0), and shown only when asked (`--all`)."""
    return " AND j.current = 1" if current_only else ""
