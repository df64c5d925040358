"""A ledger a team shares: the same tables in a PostgreSQL database, through psycopg 3.

Every guarantee of the SQLite ledger holds across machines, by PostgreSQL's own means:

- Writers take turns. A transaction that writes (`Dialect.begin_write`) begins by taking one
  transaction-level advisory lock, held until it commits: what SQLite's write lock does. So a claim's check and its write see no other writer between them, and a
  claim is committed, durably, before its request's bytes go out.
- A run's liveness is a session-level advisory lock, taken on the run's connection before its
  first claim. The server releases it when that session ends, however the process or its
  machine went (TCP keepalives tell a machine that vanished): a run is gone when no session
  holds its lock (`pg_locks`), and only then are its `sending` rows made in_doubt.
- An answer that cannot be committed (the server unreachable) goes to the journal on this
  machine, named from the database (`local`), and the next command here replays it.
- A server that stops answering fails a call in seconds, not never: libpq's `connect_timeout`
  bounds the connection, the server's own `lock_timeout` a wait for a lock, and a watchdog
  (`_Watchdog`) shuts the socket of a call that outlives its allowance (a stopped backend or a
  frozen machine keeps the TCP connection up, and psycopg's waits have no deadline). A
  session idle inside a transaction for a minute is ended by the server, so a writer that
  froze holding the writers' lock does not hold every other machine with it.

The ledger's SQL is written once, with the few spellings that differ (a parameter's mark
among them) taken from `connections.POSTGRESQL`; this module's connection passes it to the
server as it is, and gives rows read by name or position. Errors come out as `LedgerFailed` (`LedgerBusy` for a lock not had
in time), so that nothing above imports psycopg.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import LedgerBusy, LedgerFailed, NoLedger, UsageError
from . import connections
from .connections import POSTGRESQL
from .location import shown

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.pq import TransactionStatus
    from psycopg.rows import tuple_row
except ImportError:  # an extra: `pip install '.[postgres]'` in batchgen's folder
    psycopg = None  # type: ignore[assignment]

# Advisory lock keys (two int4s: a namespace, then an id), batchgen's own in the database.
_NAMESPACE_RUNS = 0x62676E72  # "bgnr": one per run, by its id
# libpq's keepalives, unless the URL sets its own: a session whose machine vanished (no FIN
# ever comes) ends in about a minute, and with it its run's lock.
_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "connect_timeout": 10,  # seconds: a server that accepts and never answers the start-up
}
# How long one call may wait for the server's answer (beyond a lock's wait) before the
# watchdog calls the server gone. A writer's statements (a claim, an answer, in a transaction
# that holds the writers' lock: every other machine waits on it) take milliseconds, and get
# `ALLOWANCE`; the big writes (linking a big job, copying a ledger) ask for `LONG_ALLOWANCE`,
# which reads get too (a read holds no lock and no money; a big one may rightly take a while).
ALLOWANCE = 10.0
LONG_ALLOWANCE = 900.0
_WRITE_ENDS = ("COMMIT", "ROLLBACK")
# The server ends a session idle inside a transaction this long (a frozen writer).
_IDLE_IN_TRANSACTION = "60s"
_LOCK_STATEMENT = POSTGRESQL.begin_write[-1]  # the writers' lock: waited for up to lock_wait


class Row:
    """A row read by position or by column name, and made a dict by `dict(row)`, as
    `sqlite3.Row` is."""

    __slots__ = ("_values", "_names")

    def __init__(self, values: tuple[Any, ...], names: dict[str, int]):
        self._values = values
        self._names = names

    def __getitem__(self, key: int | str) -> Any:
        return self._values[key if isinstance(key, int) else self._names[key]]

    def keys(self) -> list[str]:
        return list(self._names)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _named_rows(cursor: Any) -> Any:
    names = {column.name: index for index, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, names)


def _parameters(parameters: Iterable[Any]) -> tuple[Any, ...] | None:
    # SQLite stores True as 1; PostgreSQL would refuse a boolean in an INTEGER column.
    values = tuple(int(v) if isinstance(v, bool) else v for v in parameters)
    return values or None


class _Watchdog:
    """Shuts a connection's socket when one call on it has waited past its allowance.

    A backend that is stopped, or a server whose machine froze, keeps its TCP connection up
    (the kernel still answers keepalives), and psycopg waits for its answer with no deadline:
    without this a run's workers, and a second Ctrl-C's exit, would wait forever. A shut socket
    makes the waiting call fail at once, as a lost connection (then `LedgerFailed`: rows stay
    `sending` for the next command, received task ids go to the journal)."""

    def __init__(self, raw: Any):
        self._raw = raw
        self._guard = threading.Lock()
        self._calls: dict[int, float] = {}  # thread id → deadline of its call on the server
        self._wake = threading.Event()
        self._closed = False
        self.fired = False  # a call outlived its allowance, and the socket was shut
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def call(self, allowance: float) -> Iterator[None]:
        me = threading.get_ident()
        with self._guard:
            self._calls[me] = time.monotonic() + allowance
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._watch, name="batchgen-ledger-watchdog", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._guard:
                self._calls.pop(me, None)

    def _watch(self) -> None:
        while not self._wake.wait(0.25):
            with self._guard:
                overdue = [d for d in self._calls.values() if d < time.monotonic()]
            if overdue:
                self._shut()
                return

    def _shut(self) -> None:
        self.fired = True
        with contextlib.suppress(OSError, psycopg.Error):
            # Through a duplicate of its descriptor: psycopg still owns (and closes) its own.
            duplicate = socket.socket(fileno=os.dup(self._raw.fileno()))
            try:
                duplicate.shutdown(socket.SHUT_RDWR)
            finally:
                duplicate.close()

    def close(self) -> None:
        with self._guard:
            self._closed = True
        self._wake.set()


@contextlib.contextmanager
def _as_ledger_failures(watchdog: _Watchdog | None = None) -> Iterator[None]:
    # Every psycopg error becomes the ledger's own; and so does an error no driver should
    # raise but a dead connection can (a broken pipe, a closed socket), so that a caller that
    # catches `ledger.FAILURES` is never passed a failure it cannot name.
    try:
        yield
    except (pg_errors.LockNotAvailable, pg_errors.QueryCanceled) as e:
        raise LedgerBusy(f"the ledger is busy: {_first_line(e)}") from e
    except (psycopg.Error, OSError) as e:
        if watchdog is not None and watchdog.fired:
            raise LedgerFailed(
                "the ledger's server stopped answering (a call waited past its allowance):"
                " the connection was closed"
            ) from e
        raise LedgerFailed(_first_line(e)) from e


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class Cursor:
    """A psycopg cursor that takes and gives what a sqlite3 cursor does."""

    def __init__(self, raw: Any, connection: Connection):
        self._raw = raw
        self._connection = connection
        self.row_factory: Any = Row  # None: plain tuples, as sqlite3's spelling has it

    def execute(self, sql: str, parameters: Iterable[Any] = (), /) -> Cursor:
        self._raw.row_factory = tuple_row if self.row_factory is None else _named_rows
        with self._connection.on_server(sql):
            self._raw.execute(sql, _parameters(parameters))
        return self

    @property
    def rowcount(self) -> int:
        return int(self._raw.rowcount)

    def fetchone(self) -> Any:
        with self._connection.on_server():
            return self._raw.fetchone()

    def fetchall(self) -> list[Any]:
        with self._connection.on_server():
            return list(self._raw.fetchall())

    def fetchmany(self, size: int = 1, /) -> list[Any]:
        with self._connection.on_server():
            return list(self._raw.fetchmany(size))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error, OSError):
            self._raw.close()


class Connection:
    """A psycopg connection (in autocommit: the ledger's SQL says where transactions are)
    that takes the calls the ledger makes of a sqlite3 one."""

    dialect = POSTGRESQL

    def __init__(self, raw: Any, *, lock_wait: float = 30.0):
        self.raw = raw
        self.watchdog = _Watchdog(raw)
        self.lock_wait = lock_wait  # the server's lock_timeout, in seconds
        self.allowance = ALLOWANCE  # see `long_calls`
        self._streams = 0  # named cursors made (`streaming_cursor`)
        self._writing = False  # inside a transaction that writes (see `on_server`)

    def execute(self, sql: str, parameters: Iterable[Any] = (), /) -> Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        cursor = self.cursor()
        with self.on_server():
            cursor._raw.executemany(sql, (_parameters(row) or () for row in parameters))
        return cursor

    def cursor(self) -> Cursor:
        with self.on_server():  # a closed connection raises here, not only at execute
            return Cursor(self.raw.cursor(), self)

    def streaming_cursor(self) -> Cursor:
        """A cursor whose rows stay on the server until fetched (a named cursor, WITH HOLD:
        it outlives the statement's own transaction): a read as big as the ledger (`tasks
        --json` of a million rows) holds a batch in this process, not the whole result."""
        self._streams += 1
        with self.on_server():
            return Cursor(
                self.raw.cursor(name=f"batchgen_stream_{self._streams}", withhold=True), self
            )

    @contextlib.contextmanager
    def on_server(self, sql: str = "") -> Iterator[None]:
        """A call on the server: its errors as the ledger's (`LedgerFailed`), its wait for an
        answer bounded by the watchdog (a lock's wait, which the server bounds itself, on top)."""
        if sql == POSTGRESQL.begin_write[0]:
            self._writing = True
        allowance = (self.allowance if self._writing else LONG_ALLOWANCE) + (
            self.lock_wait if sql == _LOCK_STATEMENT else 0.0
        )
        try:
            with _as_ledger_failures(self.watchdog), self.watchdog.call(allowance):
                yield
        finally:
            if sql in _WRITE_ENDS:
                self._writing = False

    @contextlib.contextmanager
    def long_calls(self) -> Iterator[None]:
        """Calls that may rightly take minutes (a big job's links, a ledger's copy)."""
        before, self.allowance = self.allowance, LONG_ALLOWANCE
        try:
            yield
        finally:
            self.allowance = before

    @property
    def in_transaction(self) -> bool:
        return bool(self.raw.info.transaction_status != TransactionStatus.IDLE)

    def close(self) -> None:
        self.watchdog.close()
        with contextlib.suppress(psycopg.Error, OSError):
            self.raw.close()


class AdvisoryHold:
    """A run shown as going: its session-level advisory lock (see the module's docstring)."""

    def __init__(self, conn: connections.Connection, run_id: int):
        self._conn: connections.Connection | None = conn
        self._run_id = run_id
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (_NAMESPACE_RUNS, run_id)).fetchone()

    def release(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        with contextlib.suppress(LedgerFailed):  # the session is gone: so is its lock
            conn.execute(
                "SELECT pg_advisory_unlock(%s, %s)", (_NAMESPACE_RUNS, self._run_id)
            ).fetchone()


class PostgresLedger:
    """A ledger in a PostgreSQL database (see `backend.Backend`)."""

    dialect = POSTGRESQL
    # Every write takes the writers' lock, a single statement too: two writers never wait on
    # each other's rows in opposite orders (a deadlock SQLite cannot have, with one writer).
    single_statement_commits = False

    def __init__(self, url: str, *, create: bool, busy_timeout: float):
        if psycopg is None:
            raise UsageError(
                f"{shown(url)}: a PostgreSQL ledger needs psycopg 3: install batchgen with its postgres extra (pip install '.[postgres]' in batchgen's folder)"
            )
        self.location = url
        self.shown = shown(url)
        try:
            # A second `@` means a password not %-encoded: the driver would take part of it
            # for the host, and quote that in its message.
            if url.split("://", 1)[-1].split("?", 1)[0].count("@") > 1:
                raise ValueError("two @ in the URL's authority")
            given = psycopg.conninfo.conninfo_to_dict(url)
        except (psycopg.Error, ValueError):
            # psycopg's message quotes the URL, password and all.
            raise UsageError(
                f"{self.shown}: not a PostgreSQL URL batchgen can read"
                " (postgresql://user@host:port/database; a password's special characters %-encoded)"
            ) from None
        settings = {k: v for k, v in _KEEPALIVES.items() if k not in given}
        try:
            raw = psycopg.connect(url, autocommit=True, application_name="batchgen", **settings)
        except psycopg.Error as e:
            raise UsageError(
                f"{self.shown}: cannot open the ledger ({redact(_first_line(e), url)})"
            ) from None
        self._pg = Connection(raw, lock_wait=busy_timeout)
        self.conn: connections.Connection = self._pg
        self._pace_table = False  # batchgen_pace known to exist (made at first use)
        info = raw.info
        # This machine's own files for the ledger (the journal) are named from the database,
        # not from the URL's spelling: two spellings of one database share one journal.
        identity = f"{info.host}:{info.port}/{info.dbname}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        self.local = _state_folder() / f"postgresql-{info.dbname}-{digest}"
        try:
            self.set_patience(busy_timeout)
            from .postgres_schema import create_schema, has_schema

            if not create and not has_schema(self.conn):
                raise NoLedger(
                    f"no ledger at {self.shown}: nothing has been sent from this project yet"
                )
            create_schema(self.conn, self.is_alive)
        except BaseException:
            raw.close()
            raise

    def check_same(self) -> None:
        # A database cannot be dropped or replaced under an open session: its server ends the
        # session first, and every write then fails (into the journal).
        pass

    def quick_check(self) -> None:
        # The server keeps its own tables and indexes sound (its WAL, page checksums where
        # enabled); there is no file here to be left half-written.
        pass

    def integrity(self) -> str:
        return "ok"

    def columns(self, table: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = %s AND column_name <> 'rowid' ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        return [row[0] for row in rows]

    def size_hint(self) -> int:
        # The planner's estimate; a count (which reads the table) only before the first ANALYZE.
        (estimate,) = self.conn.execute(
            "SELECT reltuples FROM pg_class WHERE oid = 'tasks'::regclass"
        ).fetchone()
        if estimate is not None and estimate >= 0:
            return int(estimate)
        return int(self.conn.execute("SELECT count(*) FROM tasks").fetchone()[0])

    def set_patience(self, seconds: float) -> None:
        self._pg.lock_wait = seconds
        self.conn.execute(
            f"SET lock_timeout = {int(seconds * 1000)};"
            f" SET idle_in_transaction_session_timeout = '{_IDLE_IN_TRANSACTION}'"
        )

    def long_calls(self) -> contextlib.AbstractContextManager[None]:
        return self._pg.long_calls()

    def streaming_cursor(self) -> Any:
        return self._pg.streaming_cursor()

    # A second signal quits without a word to the server: it may be the very thing not
    # answering. The session's end (the process's) releases the run's lock, and the next
    # command makes its rows in_doubt.
    touch_on_quit = False
    shares_pace = True

    def next_slot(self, account: str, spacing: float) -> float:
        # One row per account, its next free slot in the server's clock: every machine's
        # create calls on one key take their slots from it, so --rpm holds for the key, not
        # for each machine. A statement of its own (autocommit), apart from the writers' lock:
        # it locks only that row, for a moment. The table is the pace's, not a ledger table.
        if not self._pace_table:
            # Under the writers' lock: two machines creating it at once would otherwise race
            # (CREATE TABLE IF NOT EXISTS is not safe against itself in PostgreSQL).
            for statement in POSTGRESQL.begin_write:
                self.conn.execute(statement)
            try:
                self.conn.execute(
                    "CREATE TABLE IF NOT EXISTS batchgen_pace (account TEXT PRIMARY KEY, next_at DOUBLE PRECISION NOT NULL)"
                )
            except BaseException:
                with contextlib.suppress(LedgerFailed):
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
            self._pace_table = True
        row = self.conn.execute(
            "INSERT INTO batchgen_pace AS p (account, next_at)"
            " VALUES (%s, extract(epoch from clock_timestamp()) + %s)"
            " ON CONFLICT (account) DO UPDATE SET"
            " next_at = greatest(p.next_at, extract(epoch from clock_timestamp())) + %s"
            " RETURNING p.next_at - %s - extract(epoch from clock_timestamp())",
            (account, spacing, spacing, spacing),
        ).fetchone()
        return max(0.0, float(row[0]))

    def hold_run(self, run_id: int) -> AdvisoryHold:
        return AdvisoryHold(self.conn, run_id)

    def is_alive(self, run_id: int) -> bool:
        # Read from pg_locks, not tried: a session that holds the lock would get it again.
        rows = self.conn.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = %s AND objid = %s AND objsubid = 2",
            (_NAMESPACE_RUNS, run_id),
        ).fetchall()
        return bool(rows)

    def sync_run_ids(self) -> None:
        # An identity column's sequence does not see ids written into it.
        self.conn.execute(
            "SELECT setval(pg_get_serial_sequence('runs', 'id'),"
            " (SELECT coalesce(max(id), 0) + 1 FROM runs), false)"
        ).fetchone()

    def close(self) -> None:
        self.conn.close()


def redact(text: str, url: str) -> str:
    """`text` without the password `url` carries, in any spelling the driver may quote it."""
    from urllib.parse import unquote

    for secret in _passwords(url):
        for spelling in {secret, unquote(secret)}:
            if spelling:
                text = text.replace(spelling, "…")
    return text


def _passwords(url: str) -> list[str]:
    rest = url.split("://", 1)[-1].split("?", 1)
    found = []
    at = rest[0].rfind("@")
    if at >= 0 and ":" in rest[0][:at]:
        found.append(rest[0][:at].split(":", 1)[1])
    if len(rest) > 1:
        found += re.findall(r"(?i)(?:^|&)password=([^&]*)", rest[1])
    return found


def _state_folder() -> Path:
    """Where this machine keeps batchgen's files for ledgers on a server: the XDG state home."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
    folder = Path(base) / "batchgen"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot make {folder} (for the ledger's journal): {e.strerror}") from None
    return folder
