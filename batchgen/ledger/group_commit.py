"""Group commit: the small writes of many threads share one transaction, and one fsync.

A run's claims must each be durable before their request is sent, and its answers (a task
id, a rejection) before they are counted; one commit each costs an fsync (~0.2 ms on the
machine measured) taken under the ledger's one lock, which every other worker waits for.
(Most task ids ride in the transaction of their worker's next claim, `Claims.claim`.)

Here a write joins a queue. A writer that finds no commit under way leads: it commits
everything queued so far in one transaction ("leader" group commit, as database logs do it),
then wakes each writer of that group, and hands the lead to the first writer that queued
meanwhile, who commits the next group. So the writes that arrive while one commit is on disk
go into the next, without a writer thread to hand them to, and each waiting thread is woken
once, by name. Each caller returns only once the commit covering its write is durable, and a
crash loses at most the group being committed (answers whose rows stay `sending`, which
recovery turns into `in_doubt` as for any call in flight).

A group stands or falls together: if any of its writes fails, or the transaction does (disk
full, the lock not had in time), the whole transaction is rolled back and every write of the
group raises that error in its own thread, as its own commit failing would have (an answer
that cannot be recorded goes to the journal: see submit.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ..errors import LedgerFailed
from .connections import Connection

T = TypeVar("T")
Write = Callable[[Connection], T]


class _Pending(Generic[T]):
    __slots__ = ("write", "one_statement", "done", "result", "error", "wake")

    def __init__(self, write: Write[T], one_statement: bool):
        self.write = write
        self.one_statement = one_statement
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None
        # Held from the start; released by a leader when this write is committed, or when its
        # thread is to lead the next group. A lock, not an Event: the cheapest thing to wait on.
        self.wake = threading.Lock()
        self.wake.acquire()


class GroupCommit:
    """Commits the writes given to `write` in groups, on `conn`, under `lock` (the lock every
    other user of `conn` takes too).

    For worker threads (a run's senders): a writer waiting for its group must not be
    interrupted, since it may be the one chosen to lead the next; Ctrl-C goes to the main
    thread, which does not write through here.
    """

    def __init__(
        self,
        conn: Connection,
        lock: threading.RLock,
        *,
        single_statements: bool = True,
        begin_write: tuple[str, ...] = ("BEGIN IMMEDIATE",),
    ):
        self._conn = conn
        self._lock = lock
        self._single_statements = single_statements  # see `write`'s `one_statement`
        self._begin_write = begin_write  # the statements that begin a transaction that writes
        self._guard = threading.Lock()  # guards `_queued` and `_leading`; never held to wait
        self._queued: list[_Pending[Any]] = []
        self._leading = False  # a thread is committing a group, or has been chosen to
        self.commits = 0  # how many transactions committed (tests read it)

    def write(self, write: Write[T], *, one_statement: bool = False) -> T:
        """Run `write(conn)` in a transaction; return its result once that transaction is
        committed (or raise its error, or the transaction's).

        `one_statement`: `write` executes a single statement, which SQLite makes a
        transaction of its own when it commits alone (no BEGIN and COMMIT to send). Not where
        the connection says single statements must not skip the write lock
        (`single_statements`: PostgreSQL's writers take turns only under it)."""
        pending: _Pending[T] = _Pending(write, one_statement)
        with self._guard:
            self._queued.append(pending)
            lead = not self._leading
            self._leading = True
        if not lead:
            # Woken once: its write is committed, or it leads the next group. Each writer is
            # woken by name, never all at once, so a group's end wakes only its own writers.
            pending.wake.acquire()
            lead = not pending.done
        if lead:
            self._commit_queued()
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    def _commit_queued(self) -> None:
        with self._guard:
            group, self._queued = self._queued, []
        try:
            with self._lock:
                self._commit(group)
        finally:
            with self._guard:
                # The first writer that queued meanwhile leads the next group; or no one leads.
                successor = self._queued[0] if self._queued else None
                self._leading = successor is not None
            for pending in group:
                pending.done = True
                pending.wake.release()
            if successor is not None:
                successor.wake.release()

    def _commit(self, group: list[_Pending[Any]]) -> None:
        conn = self._conn
        try:
            if len(group) == 1 and group[0].one_statement and self._single_statements:
                group[0].result = group[0].write(conn)
            else:
                for statement in self._begin_write:
                    conn.execute(statement)
                for pending in group:
                    pending.result = pending.write(conn)
                conn.execute("COMMIT")
            self.commits += 1
        except BaseException as e:
            # Every write of the group fails with this error, before anything else is tried: a
            # claim whose commit is not known to have happened must never read as claimed (its
            # request would go out unclaimed). A KeyboardInterrupt is raised in the thread that
            # took it; the others are told their commit did not happen.
            failure = e if isinstance(e, Exception) else LedgerFailed("the commit was interrupted")
            for pending in group:
                pending.error = failure
                pending.result = None
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except Exception:
                # Already rolled back (SQLite does that on an I/O error), or the connection is
                # gone (a server's session ended: the server rolled it back). Either way the
                # group's error above is the one its writers are told.
                pass
            if not isinstance(e, Exception):
                raise
