"""Group commit: the small writes of many threads share one transaction, and one fsync.

A run's answers (a task id, a rejection) must each be durable before they are counted, and
one commit per answer costs an fsync (~0.1-0.3 ms on the disks measured) taken under the
ledger's one lock, which the next claims are waiting for.

Here a write joins a queue, then waits while another thread is committing. The first writer
to find no commit under way commits everything queued so far in one transaction ("leader"
group commit, as database logs do it); the others wake to find theirs done. So the writes
that arrive while one commit is on disk go into the next, without a writer thread to hand
them to. Each caller still returns only once the commit covering its write is durable, and a
crash loses at most the group being committed (answers whose rows stay `sending`, which
recovery turns into `in_doubt` as for any call in flight).

A group stands or falls together: if any of its writes fails, or the transaction does (disk
full, the lock not had in time), the whole transaction is rolled back and every write of the
group raises that error in its own thread, as its own commit failing would have (an answer
that cannot be recorded goes to the journal: see submit.py).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], T]


class _Pending(Generic[T]):
    __slots__ = ("write", "done", "result", "error")

    def __init__(self, write: Write[T]):
        self.write = write
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """Commits the writes given to `write` in groups, on `conn`, under `lock` (the lock every
    other user of `conn` takes too)."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock):
        self._conn = conn
        self._lock = lock
        self._queued: list[_Pending[Any]] = []
        # Guards `_queued` and `_leading`, and wakes the waiting writers when a group is done.
        # Waiting here, not on `lock`: a writer whose group is committed returns at once,
        # instead of queueing for `lock` behind the next group's commit (and its fsync).
        self._changed = threading.Condition(threading.Lock())
        self._leading = False  # a thread is committing a group
        self.commits = 0  # how many transactions committed (tests read it)

    def write(self, write: Write[T]) -> T:
        """Run `write(conn)` in a transaction; return its result once that transaction is
        committed (or raise its error, or the transaction's)."""
        pending: _Pending[T] = _Pending(write)
        with self._changed:
            self._queued.append(pending)
            while self._leading and not pending.done:
                self._changed.wait()
            lead = not pending.done
            if lead:
                self._leading = True
        if lead:  # nobody committed it while this thread waited
            try:
                with self._lock:
                    self._commit_queued()
            finally:
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    def _commit_queued(self) -> None:
        with self._changed:
            group, self._queued = self._queued, []
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for pending in group:
                pending.result = pending.write(conn)
            conn.execute("COMMIT")
            self.commits += 1
        except BaseException as e:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite has already rolled back (an I/O error does that)
            # Nothing of the group is on disk: every write of it fails with this error. A
            # KeyboardInterrupt is raised in the thread that took it; the others are told their
            # commit did not happen.
            failure = e if isinstance(e, Exception) else sqlite3.OperationalError("the commit was interrupted")
            for pending in group:
                pending.error = failure
                pending.result = None
            if not isinstance(e, Exception):
                raise
        finally:
            for pending in group:
                pending.done = True
