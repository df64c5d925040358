"""What the ledger's code needs of a database connection, and the SQL that differs by engine.

The ledger's SQL is written once, in SQLite's spelling (`?` parameters, rows read by name or
position, `BEGIN IMMEDIATE` for a transaction that writes). A SQLite connection is used as it
is; a PostgreSQL one is wrapped to take the same calls (ledger/postgres.py). What cannot be
spelled the same in both engines is not rewritten behind the SQL's back: it is asked of the
connection's `Dialect`, by name, where the SQL is built.
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
    """The calls of `sqlite3.Connection` the ledger makes; rows are read by name or position."""

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

    def use_index(self, name: str) -> str:
        """The hint to read a table through index `name` (nothing where there is none)."""
        return self.indexed_by.format(index=name)


SQLITE = Dialect(
    "sqlite", " INDEXED BY {index}", "+", "json_object({fields})", "IS NOT", "IS", "CROSS JOIN"
)
POSTGRESQL = Dialect(
    "postgresql",
    "",
    "",
    "json_build_object({fields})::text",  # as text: psycopg would make a dict of json
    "IS DISTINCT FROM",
    "IS NOT DISTINCT FROM",
    "JOIN",
)
