"""What the ledger's code needs of a database connection, and the SQL that differs by engine.

The ledger's SQL is written once, with what the two engines spell differently asked of the
connection's `Dialect` where the SQL is built: a parameter's mark (`Dialect.mark`: SQLite's
`?`, psycopg's `%s`), how a transaction that writes begins (`Dialect.begin_write`), and a few
functions and planner hints. Nothing rewrites SQL on its way to the server. A SQLite
connection is used as it is; a PostgreSQL one is wrapped to take the same calls and give rows
read by name or position (ledger/postgres.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    row_factory: Any  # None: plain tuples (sqlite3's spelling)

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int = ..., /) -> list[Any]: ...


class Connection(Protocol):
    """The calls of `sqlite3.Connection` the ledger makes (rows are read by name or position),
    and the connection's `Dialect`."""

    @property
    def dialect(self) -> Dialect: ...

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...

    def cursor(self) -> Any: ...

    @property
    def in_transaction(self) -> bool: ...

    def close(self) -> None: ...


class Dialect(NamedTuple):
    """The few spellings the two engines do not share."""

    name: str
    indexed_by: str  # "INDEXED BY {index}" in SQLite: the planner is told which index to use
    unary_plus: str  # SQLite's "+" before a column: keeps the planner off that column's index
    json_object: str  # a JSON object's text from name, value pairs: "{fields}" is them
    distinct: str  # null-safe "is not equal"
    same: str  # null-safe "is equal"
    ordered_join: str  # a join the planner must take in the order written (SQLite's CROSS JOIN)
    # How a transaction that writes begins, taking the one write lock writers take turns on
    # (so a claim's check and its write see no other writer between them).
    begin_write: tuple[str, ...]
    mark: str  # a parameter's place in a statement (`q` where a statement is built)

    def marks(self, count: int) -> str:
        """`?, ?, ?`: the marks of `count` parameters, as a list of values takes them."""
        return ", ".join([self.mark] * count)

    def use_index(self, name: str) -> str:
        """The hint to read a table through index `name` (nothing where there is none)."""
        return self.indexed_by.format(index=name)


# PostgreSQL's writers take turns on one transaction-level advisory lock (two int4 keys:
# batchgen's namespace "bgnw", then 0), held until the transaction ends: SQLite's write lock.
WRITERS_LOCK = 0x62676E77

SQLITE = Dialect(
    "sqlite",
    " INDEXED BY {index}",
    "+",
    "json_object({fields})",
    "IS NOT",
    "IS",
    "CROSS JOIN",
    ("BEGIN IMMEDIATE",),
    "?",
)
POSTGRESQL = Dialect(
    "postgresql",
    "",
    "",
    "json_build_object({fields})::text",  # as text: psycopg would make a dict of json
    "IS DISTINCT FROM",
    "IS NOT DISTINCT FROM",
    "JOIN",
    ("BEGIN", f"SELECT pg_advisory_xact_lock({WRITERS_LOCK}, 0)"),
    "%s",
)
