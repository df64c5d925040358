"""The ledger: one SQLite file that remembers every request sent and what became of it.

Its tables (`tasks`, `job_tasks`, `runs`, ...) are a public interface, documented in
docs/ledger.md.
Durability is the point: WAL with `synchronous=FULL`, and a request's `sending` row is
committed before its bytes go out. A claim is one transaction (a new request's, a single
`INSERT … ON CONFLICT DO NOTHING`; any other, under `BEGIN IMMEDIATE`), so two processes on
one ledger can never both claim a request. A worker's task id is written in the transaction
of its next claim; the answers left over are committed in groups (see group_commit.py), each
still durable before it is counted.

The package is split by what each part holds: store.py (the file or server, the connection,
the lock, transactions, file identity), and the parts composed on it, as sqlite-utils composes
a `Table` on its `Database`: queries.py (`ledger.tasks`: what is known of each request, read),
claims.py (`ledger.claims`: claims and records), recovery.py (`ledger.recovery`: the journal
replayed, the rows of runs that are gone) and tables.py (`ledger.prices`, `uploads`,
`reviews`, `runs`, `job_inputs`). `Ledger` is the store with its parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .claims import RESENDABLE, STATES, Answered, Checked, Claims, Link
from .queries import Queries, Standing
from .recovery import Recovery
from .store import BUSY_TIMEOUT, FAILURES, QUIT_WAIT, Database, Store
from .tables import JobInputs, Prices, Reviews, Runs, Uploads

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
    "Repaired",
    "Link",
    "Standing",
    "Store",
]


class Ledger(Store):
    """An open ledger: the store (store.py) and its parts, each an object of its own: `tasks`
    (reads, queries.py), `claims` (claims and records, claims.py), `recovery` (recovery.py),
    and the small tables (tables.py): `prices`, `uploads`, `reviews`, `runs`, `job_inputs`.

    Making it whole again after a run that ended badly is asked for, not done behind the
    caller's back: `Ledger.open` (what every command uses) opens and repairs, and says what it
    repaired in `repaired`; `Ledger(path)` only opens.
    """

    def __init__(
        self, path: str | Path, *, create: bool = True, busy_timeout: float = BUSY_TIMEOUT
    ):
        super().__init__(path, create=create, busy_timeout=busy_timeout)
        self.tasks = Queries(self)
        self.claims = Claims(self)
        self.recovery = Recovery(self)
        self.prices = Prices(self)
        self.uploads = Uploads(self)
        self.reviews = Reviews(self)
        self.runs = Runs(self)
        self.job_inputs = JobInputs(self)
        self.repaired = Repaired(0, 0)

    @classmethod
    def open(
        cls, path: str | Path, *, create: bool = True, busy_timeout: float = BUSY_TIMEOUT
    ) -> Ledger:
        """The ledger at `path`, repaired (see `repair`): what a command sends from."""
        ledger = cls(path, create=create, busy_timeout=busy_timeout)
        try:
            ledger.repair()
        except BaseException:
            ledger.close()
            raise
        return ledger

    def repair(self) -> Repaired:
        """Make the ledger whole: answers kept in the journal are recorded, and rows left
        `sending` by runs that are gone become `in_doubt`. Before anything is planned or sent
        from it: a task id only the journal holds would otherwise look unsent."""
        self.repaired = Repaired(
            replayed=self.recovery.replay_journal(), recovered=self.recovery.recover()
        )
        return self.repaired


class Repaired(NamedTuple):
    """What `Ledger.repair` did."""

    replayed: int  # task ids recorded from the journal
    recovered: int  # rows of runs that are gone, now in_doubt
