"""A ledger a team shares: the same tables in a PostgreSQL database, through psycopg 3.

Every guarantee of the SQLite ledger holds across machines, by PostgreSQL's own means:

- Writers take turns. A transaction that writes (`BEGIN IMMEDIATE` in the ledger's SQL)
  begins by taking one transaction-level advisory lock, held until it commits: what SQLite's
  write lock does. So a claim's check and its write see no other writer between them, and a
  claim is committed, durably, before its request's bytes go out.
- A run's liveness is a session-level advisory lock, taken on the run's connection before its
  first claim. The server releases it when that session ends, however the process or its
  machine went (TCP keepalives tell a machine that vanished): a run is gone when no session
  holds its lock (`pg_locks`), and only then are its `sending` rows made in_doubt.
- An answer that cannot be committed (the server unreachable) goes to the journal on this
  machine, named from the database (`local`), and the next command here replays it.

The ledger's SQL keeps SQLite's spelling: this module's connection takes `?` parameters and
gives rows read by name or position, and the few spellings that differ come from
`connections.POSTGRESQL`. Errors come out as `LedgerFailed` (`LedgerBusy` for a lock not had
in time), so that nothing above imports psycopg.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from .. import connections
from ..connections import POSTGRESQL
from ..errors import LedgerBusy, LedgerFailed, NoLedger, UsageError
from ..ledger_location import shown

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.pq import TransactionStatus
    from psycopg.rows import tuple_row
except ImportError:  # an extra: `pip install 'batchgen[postgres]'`
    psycopg = None  # type: ignore[assignment]

# Advisory lock keys (two int4s: a namespace, then an id), batchgen's own in the database.
WRITERS_LOCK = 0x62676E77  # "bgnw": the one lock writers take turns on
_NAMESPACE_RUNS = 0x62676E72  # "bgnr": one per run, by its id
# libpq's keepalives, unless the URL sets its own: a session whose machine vanished (no FIN
# ever comes) ends in about a minute, and with it its run's lock.
_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


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


@lru_cache(maxsize=1024)
def _spelled(sql: str) -> str:
    """SQLite's `?` parameters as psycopg's `%s` (a `%` of the SQL's own doubled); text in
    quotes is left as it is."""
    return re.sub(
        r"'(?:[^']|'')*'|\?|%",
        lambda m: {"?": "%s", "%": "%%"}.get(m.group(0), m.group(0)),
        sql,
    )


def _parameters(parameters: Iterable[Any]) -> tuple[Any, ...] | None:
    # SQLite stores True as 1; PostgreSQL would refuse a boolean in an INTEGER column.
    values = tuple(int(v) if isinstance(v, bool) else v for v in parameters)
    return values or None


@contextlib.contextmanager
def _as_ledger_failures() -> Iterator[None]:
    try:
        yield
    except (pg_errors.LockNotAvailable, pg_errors.QueryCanceled) as e:
        raise LedgerBusy(f"the ledger is busy: {_first_line(e)}") from e
    except psycopg.Error as e:
        raise LedgerFailed(_first_line(e)) from e


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class Cursor:
    """A psycopg cursor that takes and gives what a sqlite3 cursor does."""

    def __init__(self, raw: Any):
        self._raw = raw
        self.row_factory: Any = Row  # None: plain tuples, as sqlite3's spelling has it

    def execute(self, sql: str, parameters: Iterable[Any] = (), /) -> Cursor:
        self._raw.row_factory = tuple_row if self.row_factory is None else _named_rows
        values = _parameters(parameters)
        with _as_ledger_failures():
            # Without parameters, psycopg reads the SQL as it is (a script of several
            # statements, a `%` in a function's body).
            self._raw.execute(sql if values is None else _spelled(sql), values)
        return self

    @property
    def rowcount(self) -> int:
        return int(self._raw.rowcount)

    def fetchone(self) -> Any:
        with _as_ledger_failures():
            return self._raw.fetchone()

    def fetchall(self) -> list[Any]:
        with _as_ledger_failures():
            return list(self._raw.fetchall())

    def fetchmany(self, size: int = 1, /) -> list[Any]:
        with _as_ledger_failures():
            return list(self._raw.fetchmany(size))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class Connection:
    """A psycopg connection (in autocommit: the ledger's SQL says where transactions are)
    that takes the calls the ledger makes of a sqlite3 one."""

    def __init__(self, raw: Any):
        self.raw = raw

    def execute(self, sql: str, parameters: Iterable[Any] = (), /) -> Cursor:
        if sql == "BEGIN IMMEDIATE":  # a transaction that writes: writers take turns
            self.cursor().execute("BEGIN")
            return self.cursor().execute("SELECT pg_advisory_xact_lock(?, 0)", (WRITERS_LOCK,))
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        cursor = self.cursor()
        with _as_ledger_failures():
            cursor._raw.executemany(_spelled(sql), (_parameters(row) or () for row in parameters))
        return cursor

    def cursor(self) -> Cursor:
        return Cursor(self.raw.cursor())

    @property
    def in_transaction(self) -> bool:
        return bool(self.raw.info.transaction_status != TransactionStatus.IDLE)

    def close(self) -> None:
        self.raw.close()


class AdvisoryHold:
    """A run shown as going: its session-level advisory lock (see the module's docstring)."""

    def __init__(self, conn: connections.Connection, run_id: int):
        self._conn: connections.Connection | None = conn
        self._run_id = run_id
        conn.execute("SELECT pg_advisory_lock(?, ?)", (_NAMESPACE_RUNS, run_id)).fetchone()

    def release(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        with contextlib.suppress(LedgerFailed):  # the session is gone: so is its lock
            conn.execute(
                "SELECT pg_advisory_unlock(?, ?)", (_NAMESPACE_RUNS, self._run_id)
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
                f"{shown(url)}: a PostgreSQL ledger needs psycopg: pip install 'batchgen[postgres]'"
            )
        self.location = url
        self.shown = shown(url)
        settings = {
            k: v for k, v in _KEEPALIVES.items() if k not in psycopg.conninfo.conninfo_to_dict(url)
        }
        try:
            raw = psycopg.connect(url, autocommit=True, application_name="batchgen", **settings)
        except psycopg.Error as e:
            raise UsageError(f"{self.shown}: cannot open the ledger ({_first_line(e)})") from None
        self.conn: connections.Connection = Connection(raw)
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
            create_schema(self.conn)
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
            " AND table_name = ? AND column_name <> 'rowid' ORDER BY ordinal_position",
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
        self.conn.execute(f"SET lock_timeout = {int(seconds * 1000)}")

    def hold_run(self, run_id: int) -> AdvisoryHold:
        return AdvisoryHold(self.conn, run_id)

    def is_alive(self, run_id: int) -> bool:
        # Read from pg_locks, not tried: a session that holds the lock would get it again.
        rows = self.conn.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = ? AND objid = ? AND objsubid = 2",
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


def _state_folder() -> Path:
    """Where this machine keeps batchgen's files for ledgers on a server: the XDG state home."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local/state")
    folder = Path(base) / "batchgen"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot make {folder} (for the ledger's journal): {e.strerror}") from None
    return folder
