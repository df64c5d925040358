"""The ledger: one SQLite file that remembers every request sent and what became of it.

Its tables (`tasks`, `job_tasks`, `runs`, ...) are a public interface, documented in
docs/ledger.md.
Durability is the point: WAL with `synchronous=FULL`, and a request's `sending` row is
committed before its bytes go out. A claim is one transaction (a new request's, a single
`INSERT … ON CONFLICT DO NOTHING`; any other, under `BEGIN IMMEDIATE`), so two processes on
one ledger can never both claim a request. A worker's task id is written in the transaction
of its next claim; the answers left over are committed in groups (see group_commit.py), each
still durable before it is counted.

The package is split by what each part holds: store.py (the file, the connection, the lock,
transactions, file identity), queries.py (reads), claims.py (claims and records), tables.py
(prices, uploads, reviews, runs) and recovery.py (the journal replayed, the rows of runs that
are gone). `Ledger` is all of them.
"""

from __future__ import annotations

from pathlib import Path

from .claims import RESENDABLE, STATES, Answered, Checked, Claims, Link
from .queries import Queries, Standing
from .recovery import Recovery
from .store import BUSY_TIMEOUT, FAILURES, QUIT_WAIT, Database, Store
from .tables import Prices, Reviews, Runs, Uploads

__all__ = [
    "BUSY_TIMEOUT",
    "FAILURES",
    "QUIT_WAIT",
    "RESENDABLE",
    "STATES",
    "Answered",
    "Checked",
    "Database",
    "Ledger",
    "Link",
    "Standing",
    "Store",
]


class Ledger(Recovery, Claims, Queries):
    """An open ledger: the store (store.py) with its read queries (queries.py), its claims and
    records (claims.py) and recovery (recovery.py); its small tables are objects of their own
    (tables.py): `prices`, `uploads`, `reviews`, `runs`.

    Opening it also makes it whole again: answers kept in the journal are replayed, and rows
    left `sending` by runs that are gone become `in_doubt` (see `recover`).
    """

    def __init__(
        self, path: str | Path, *, create: bool = True, busy_timeout: float = BUSY_TIMEOUT
    ):
        super().__init__(path, create=create, busy_timeout=busy_timeout)
        self.prices = Prices(self)
        self.uploads = Uploads(self)
        self.reviews = Reviews(self)
        self.runs = Runs(self)
        self.replayed = self.replay_journal()
        self.recovered = self.recover()
