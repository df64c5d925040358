"""A ledger moved from one backend to another: `batchgen ledger push` (a SQLite file into a
team's PostgreSQL ledger) and `batchgen ledger pull` (a server's ledger into a local file).

Every row is copied as it is, keys, task ids, run ids and all, so the destination knows what
the source did: a rerun from it plans nothing new, and nothing is sent again. The source is
opened as any command opens it (its journal replayed, a gone run's `sending` rows made
in_doubt), and left as it was. The copy is one transaction: a destination that fails midway
holds nothing of it.

It is refused, saying why, when a run is still sending from the source (its claims would
land after the copy), and when the destination already holds a ledger: merging two records
of what was paid for is not guessed at.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from ..errors import UsageError
from . import Ledger
from .migrations import JOB_COUNT_TRIGGERS, JOB_COUNTS_FROM_ROWS

# In an order the triggers keep `job_counts` right by: a task before its links (a link counts
# its task's state), runs before anything names them. `job_counts` is the triggers' own.
TABLES = (
    "runs",
    "tasks",
    "task_history",
    "job_tasks",
    "prices",
    "uploads",
    "reviews",
    "job_inputs",
)
_CHUNK = 500


class Copied(NamedTuple):
    tables: dict[str, int]  # table → rows copied

    def describe(self) -> str:
        return ", ".join(f"{n:,} {table}" for table, n in self.tables.items())


def copy_ledger(source: Ledger, destination: Ledger) -> Copied:
    """Copy every row of `source` into `destination`, which must hold no ledger yet.

    Under the source's write lock throughout: no run starts or claims on it while it is
    copied. A run already going is refused, whatever its rows say at this instant (a run
    paced by --rpm has no `sending` row between two claims, and would go on sending requests
    the copy does not know of)."""
    with source.transaction():
        live = source.runs.alive()
        if live:
            raise UsageError(
                f"run {live[0]} is still going on {source.shown}: copy the ledger once it ends"
                " (a run's requests sent after the copy would be unknown to it, and sent again from it)"
            )
        return _copy_into(source, destination)


def _copy_into(source: Ledger, destination: Ledger) -> Copied:
    held = {
        table: int(destination._query(f"SELECT count(*) FROM {table}")[0][0])
        for table in ("tasks", "runs", "job_tasks")
    }
    if any(held.values()):
        what = ", ".join(f"{n:,} {table}" for table, n in held.items() if n)
        raise UsageError(
            f"{destination.shown} already holds a ledger ({what}): batchgen copies a ledger"
            " only into an empty one, and never merges two"
        )
    copied: dict[str, int] = {}
    # On a server, the job_counts triggers, fired once per row, made a push of 300,000 rows
    # take over ten minutes (every link updates its job's one counter row, and PostgreSQL
    # keeps each version): they are off for the copy, in its own transaction, and the counts
    # are made from the rows at its end, as a migration makes them.
    counted_after = destination.sql.name == "postgresql"
    with destination.long_calls(), destination.transaction() as conn:
        if counted_after:
            for name, (when, _, _) in JOB_COUNT_TRIGGERS.items():
                conn.execute(f"ALTER TABLE {when.split()[-1]} DISABLE TRIGGER {name}")
        for table in TABLES:
            columns = source.columns(table)
            names = ", ".join(f'"{name}"' for name in columns)
            marks = destination.sql.marks(len(columns))
            insert = f"INSERT INTO {table} ({names}) VALUES ({marks})"
            count = 0
            for chunk in _chunks(
                source.tasks._stream(f"SELECT {names} FROM {table}", [], plain=True)
            ):
                conn.executemany(insert, chunk)
                count += len(chunk)
            copied[table] = count
        if counted_after:
            conn.execute("DELETE FROM job_counts")
            conn.execute(JOB_COUNTS_FROM_ROWS)
            for name, (when, _, _) in JOB_COUNT_TRIGGERS.items():
                conn.execute(f"ALTER TABLE {when.split()[-1]} ENABLE TRIGGER {name}")
    destination.sync_run_ids()
    destination.analyze()
    return Copied(copied)


def _chunks(rows: Iterator[Any]) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(tuple(row))
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
