"""The ledger: one SQLite file that remembers every request sent and what became of it.

Its tables (`tasks`, `job_tasks`, `runs`) are a public interface, documented in the README.
Durability is the point: WAL with `synchronous=FULL`, and a request's `sending` row is
committed before its bytes go out. A claim is one transaction (a new request's, a single
`INSERT … ON CONFLICT DO NOTHING`; any other, under `BEGIN IMMEDIATE`), so two processes on
one ledger can never both claim a request. A worker's task id is written in the transaction
of its next claim; the answers left over are committed in groups (see group_commit.py), each
still durable before it is counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from . import journal, liveness
from .errors import LedgerUnsound, NoLedger, UsageError
from .expand import Request
from .group_commit import GroupCommit
from .migrations import migrate
from .times import later, now, parse_timestamp, timestamp

# What a run may send, by the state the ledger holds: the other states need a flag.
RESENDABLE = {"failed"}
STATES = ("sending", "submitted", "rejected", "failed", "in_doubt")

_BATCH = 500  # keys per IN (...) query: well under SQLite's variable limit
BUSY_TIMEOUT = 30.0  # seconds a statement waits for another process's write lock
QUIT_WAIT = 2.0  # seconds it waits instead once the process quits at once (`Ledger.quitting`)


class Link(Protocol):
    """What linking records of a request (an `expand.Request`, or `plan.Linked`): its key,
    and the label and meta its job gives it."""

    @property
    def key(self) -> str: ...

    @property
    def label(self) -> str | None: ...

    @property
    def meta(self) -> dict[str, Any] | None: ...


class Database(NamedTuple):
    """The ledger's connection, as `ledger.db.conn` (the spelling of sqlite-utils, which
    batchgen imports only to migrate a ledger: see `migrations.migrate`)."""

    conn: sqlite3.Connection


class Standing(NamedTuple):
    """Where a job's requests stand: how many are in each state (`generation_failed` apart),
    how many were never claimed (a --limit run, say), the latest ETA of those processing."""

    states: dict[str, int]
    unsent: int
    last_due: str | None


class Answered(NamedTuple):
    """A create call's answer that gave a task id, not yet written (see `Ledger.claim`)."""

    key: str
    task_id: str
    estimated_time: float | None
    received_at: str


class Checked(NamedTuple):
    """What get-task said of one task, to record (see `Ledger.record_statuses`)."""

    key: str
    task_id: str  # the task asked about: the row may hold another by the time it is recorded
    status: str
    result_urls: list[str] | None
    error: str | None


# What the ledger's database raises when it fails under a command (disk full, locked past the
# timeout): the command line catches these by this name, so it never imports the driver.
FAILURES: tuple[type[Exception], ...] = (sqlite3.Error,)


class Ledger:
    """An open ledger. Safe to share between threads: every statement runs under one lock.

    Opening it also makes it whole again: answers kept in the journal are replayed, and rows
    left `sending` by runs that are gone become `in_doubt` (see `recover`).
    """

    def __init__(
        self, path: str | Path, *, create: bool = True, busy_timeout: float = BUSY_TIMEOUT
    ):
        self.path = _real_name(Path(path))
        if not create and not self.path.exists():
            raise NoLedger(f"no ledger at {self.path}: nothing has been sent from this project yet")
        self._create_private(self.path)
        self._refuse_hard_links()
        self._identity = self._file_identity()
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
            conn.row_factory = sqlite3.Row
            mode = _enable_wal(conn, busy_timeout)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            self.db = Database(conn)
            self._lock = threading.RLock()
            self._patience: float | None = None  # set by `quitting`
            self._group = GroupCommit(conn, self._lock)
            with self._lock:
                migrate(conn)
        except sqlite3.OperationalError as e:  # locked past the timeout, unreadable, ...
            raise UsageError(f"{self.path}: cannot open the ledger ({e})") from None
        except sqlite3.DatabaseError as e:
            raise UsageError(f"{self.path}: not a batchgen ledger ({e})") from None
        if mode.lower() != "wal":
            raise UsageError(f"{self.path}: cannot switch the ledger to WAL mode (got {mode})")
        self.replayed = self.replay_journal()
        self.recovered = self.recover()

    @staticmethod
    def _create_private(path: Path) -> None:
        # Created 0600 before SQLite opens it (its -wal and -shm files copy the mode): the
        # ledger holds every prompt sent, which may be nobody else's business.
        if path.exists():
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as e:
            raise UsageError(f"cannot create the ledger {path}: {e.strerror}") from None

    def _refuse_hard_links(self) -> None:
        # Two names for one ledger file get two -wal files: SQLite's locking no longer
        # covers both, so two runs could each claim the same request and pay for it twice.
        try:
            info = os.stat(self.path)
        except OSError as e:
            raise UsageError(f"cannot open the ledger {self.path}: {e.strerror}") from None
        if info.st_nlink > 1:
            raise UsageError(
                f"{self.path} has {info.st_nlink} hard links: a ledger must have one name "
                "(SQLite cannot lock it through the others); copy it instead of linking it"
            )
        if not os.path.isfile(self.path):
            raise UsageError(f"{self.path} is not a regular file")

    def _file_identity(self) -> tuple[int, int]:
        info = os.stat(self.path)
        return (info.st_dev, info.st_ino)

    def check_same_file(self) -> None:
        """Raise `LedgerUnsound` if the ledger was deleted or replaced since it was opened:
        anything written now would go to a file nobody will read."""
        try:
            identity = self._file_identity()
        except FileNotFoundError:
            raise LedgerUnsound(
                f"the ledger {self.path} was deleted while batchgen was using it"
            ) from None
        if identity != self._identity:
            raise LedgerUnsound(
                f"the ledger {self.path} was replaced by another file while batchgen was using it"
            )

    def quick_check(self) -> None:
        """Raise `LedgerUnsound` if SQLite finds the ledger corrupt (a broken index would make
        done requests look new, and send them again)."""
        try:
            rows = self._query("PRAGMA quick_check")
        except sqlite3.DatabaseError as e:
            raise LedgerUnsound(
                f"the ledger {self.path} is corrupt ({e}); nothing was sent"
            ) from None
        problems = [row[0] for row in rows if row[0] != "ok"]
        if problems:
            raise LedgerUnsound(
                f"the ledger {self.path} is corrupt ({problems[0]}); nothing was sent. "
                f"Keep a copy, then try: sqlite3 {self.path} '.recover' | sqlite3 repaired.db"
            )

    def close(self) -> None:
        try:
            with self._locked() as conn:
                conn.close()
        except sqlite3.OperationalError:
            pass  # quitting, with a worker still on it: the process's exit closes it

    def quitting(self, wait: float = QUIT_WAIT) -> None:
        """The process is about to exit without waiting for its workers (a second Ctrl-C): from
        now on a statement waits at most `wait` seconds for the ledger, not the busy timeout.
        A worker may hold the ledger that long, waiting on another process's write lock, and
        the user asked to quit at once. What is not written in time, the next command settles:
        rows left `sending` become in_doubt, and received task ids are in the journal."""
        self._patience = wait

    @contextlib.contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, with the lock every statement runs under (see `quitting`)."""
        if not self._lock.acquire(timeout=-1 if self._patience is None else self._patience):
            raise sqlite3.OperationalError("the ledger is busy: another thread is waiting on it")
        try:
            if self._patience is not None:
                self.db.conn.execute(f"PRAGMA busy_timeout={int(self._patience * 1000)}")
            yield self.db.conn
        finally:
            self._lock.release()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: takes the write lock up front, so reads inside are current."""
        with self._locked() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._locked() as conn:
            return conn.execute(sql, tuple(params)).fetchall()

    # A job's requests are those its file asked for at its last run: rows it no longer asks
    # for are kept, marked superseded (`job_tasks.current` = 0), and left out of what a job
    # shows unless this is set (`--all`).
    include_superseded = False

    @property
    def _current(self) -> str:
        return "" if self.include_superseded else " AND j.current = 1"

    def columns(self, table: str = "tasks") -> list[str]:
        return [row["name"] for row in self._query(f"PRAGMA table_info({table})")]

    # -- reading --------------------------------------------------------------------------

    def states(self, keys: Iterable[str]) -> dict[str, str]:
        """key → state, for the keys the ledger knows; a submitted task whose generation failed
        reads `generation_failed` (sent again only with --regenerate-failed)."""
        found: dict[str, str] = {}
        keys = list(keys)
        with self._locked() as conn:
            cursor = conn.cursor()
            cursor.row_factory = None  # plain tuples: this runs once per request of a plan
            for start in range(0, len(keys), _BATCH):
                chunk = keys[start : start + _BATCH]
                marks = ",".join("?" * len(chunk))
                # The index holds what is read: the rows themselves are never touched.
                found.update(
                    cursor.execute(
                        f"SELECT key, {_EFFECTIVE_STATE} FROM tasks INDEXED BY tasks_standing WHERE key IN ({marks})",
                        chunk,
                    )
                )
        return found

    def task(self, key: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM tasks WHERE key = ?", [key])
        return dict(rows[0]) if rows else None

    def job_names(self) -> list[str]:
        return [
            row["job"] for row in self._query("SELECT DISTINCT job FROM job_tasks ORDER BY job")
        ]

    def rows(self, job: str | None = None, state: str | None = None) -> Iterator[dict[str, Any]]:
        """The tasks of `job` (every task if None) that the ledger has rows for, oldest first."""
        sql = "SELECT t.*" + (", j.label, j.meta" if job is not None else "") + " FROM tasks t"
        params: list[Any] = []
        where = []
        if job is not None:
            sql += " JOIN job_tasks j ON j.key = t.key"
            where.append("j.job = ?" + self._current)
            params.append(job)
        if state is not None:
            where.append("t.state = ?")
            params.append(state)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY t.submitted_at IS NULL, t.submitted_at, t.key"
        # Streamed, a batch at a time: `tasks --json` of a million rows holds one batch, not
        # a million. (Not for use while another thread writes through this ledger.)
        with self._locked() as conn:
            cursor = conn.execute(sql, params)
        while True:
            with self._locked():
                batch = cursor.fetchmany(_BATCH)
            if not batch:
                return
            for row in batch:
                yield dict(row)

    def standing(self, job: str) -> Standing:
        """Where the job's requests stand, from one pass over its rows in the indexes."""
        rows = self._query(
            f"SELECT CASE WHEN t.key IS NULL THEN NULL ELSE {_EFFECTIVE_STATE} END AS state, count(*) AS n,"
            f" max(CASE WHEN {_PROCESSING} THEN t.eta_at END) AS due"
            f" FROM job_tasks j LEFT JOIN tasks t INDEXED BY tasks_standing ON t.key = j.key WHERE j.job = ?{self._current} GROUP BY 1",
            [job],
        )
        dues = [row["due"] for row in rows if row["due"] is not None]
        return Standing(
            states={row["state"]: row["n"] for row in rows if row["state"] is not None},
            unsent=sum(row["n"] for row in rows if row["state"] is None),
            last_due=max(dues) if dues else None,
        )

    def job_states(self, job: str) -> dict[str, int]:
        """state → how many of the job's requests are in it (`generation_failed` apart)."""
        return self.standing(job).states

    def status_counts(self, job: str | None) -> list[dict[str, Any]]:
        """(model_id, state, status, n) rows for `job`, or for every task if None."""
        sql = "SELECT t.model_id, t.state, coalesce(t.status, '') AS status, count(*) AS n FROM tasks t"
        if job is not None:
            sql += (
                " INDEXED BY tasks_standing JOIN job_tasks j ON j.key = t.key WHERE j.job = ?"
                + self._current
            )
        return [
            dict(r)
            for r in self._query(
                sql + " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", [job] if job is not None else []
            )
        ]

    def last_due(self, job: str | None) -> str | None:
        """The latest ETA among the submitted tasks (of `job`) still processing."""
        sql = "SELECT max(t.eta_at) FROM tasks t"
        if job is not None:
            sql += " JOIN job_tasks j ON j.key = t.key AND j.job = ?" + self._current
        sql += f" WHERE {_PROCESSING}"
        due: str | None = self._query(sql, [job] if job is not None else [])[0][0]
        return due

    def unsent_count(self, job: str) -> int:
        """Requests linked to `job` that were never claimed (a --limit run, say)."""
        return self.standing(job).unsent

    def open_tasks(self, job: str | None) -> list[dict[str, Any]]:
        """Submitted tasks (of `job`) whose generation has not ended, soonest ETA first."""
        sql = "SELECT t.* FROM tasks t" + (
            " JOIN job_tasks j ON j.key = t.key AND j.job = ?" + self._current if job else ""
        )
        sql += f" WHERE {_PROCESSING} ORDER BY t.eta_at"
        return [dict(r) for r in self._query(sql, [job] if job else [])]

    def completed_tasks(self, job: str) -> list[dict[str, Any]]:
        """The job's tasks whose generation completed, in the order they were submitted."""
        return [
            dict(r)
            for r in self._query(
                "SELECT t.*, j.label, j.meta FROM tasks t JOIN job_tasks j ON j.key = t.key AND j.job = ?"
                + self._current
                + " WHERE t.state = 'submitted' AND t.status = 'completed' ORDER BY t.submitted_at, t.key",
                [job],
            )
        ]

    def generation_counts(self, job: str | None) -> dict[str, int]:
        """processing / completed / failed → how many submitted tasks (of `job`) are in it."""
        sql = "SELECT coalesce(t.status, 'processing') AS status, count(*) AS n FROM tasks t"
        sql += " JOIN job_tasks j ON j.key = t.key AND j.job = ?" + self._current if job else ""
        sql += " WHERE t.state = 'submitted' GROUP BY 1"
        counts = {"processing": 0, "completed": 0, "failed": 0}
        for row in self._query(sql, [job] if job else []):
            counts[row["status"]] = row["n"]
        return counts

    def unpolled_count(self, job: str) -> int:
        """Submitted tasks of `job` that no poll has asked about yet."""
        sql = (
            "SELECT count(*) FROM tasks t JOIN job_tasks j ON j.key = t.key AND j.job = ?"
            + self._current
        )
        return int(
            self._query(sql + " WHERE t.state = 'submitted' AND t.checked_at IS NULL", [job])[0][0]
        )

    # -- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def linking(self, job: str, job_file: str) -> Iterator[Callable[[Iterable[Link]], None]]:
        """Record that `job` asks for the requests given to the function this yields (a request
        may belong to many jobs), with the label and meta the job gives each; the job's other
        rows (from before an edit) are superseded.

        The requests are staged in a temporary table, which takes no lock on the ledger, and
        written in one transaction when the block ends well: a run validates and links in one
        pass over its job, and a job that fails validation links nothing."""
        with self._locked() as conn:
            conn.execute(
                # No key index: appending is several times faster than keeping random keys in
                # order, and the two statements below each need one pass over the table.
                "CREATE TEMP TABLE IF NOT EXISTS staged_links (key TEXT, label TEXT, meta TEXT)"
            )
            conn.execute("DELETE FROM temp.staged_links")

        def stage(requests: Iterable[Link]) -> None:
            # Streamed into the table: a first run stages every request it holds at once.
            rows = (
                (
                    r.key,
                    r.label,
                    json.dumps(r.meta, ensure_ascii=False, default=str) if r.meta else None,
                )
                for r in requests
            )
            with self._locked() as conn:
                conn.execute(
                    "BEGIN"
                )  # deferred, and only the temp database is written: no write lock
                conn.executemany(
                    "INSERT INTO temp.staged_links (key, label, meta) VALUES (?, ?, ?)", rows
                )
                conn.execute("COMMIT")

        try:
            yield stage
            with self.transaction() as conn:
                # A row is written only when something changed: a rerun of a big job rewrites nothing.
                # In key order: the three indexes it goes into are ordered by key, and random
                # inserts into them cost ~5x more (a first run of a million requests: 22 s).
                conn.execute(
                    "INSERT INTO job_tasks (job, job_file, key, label, meta, current)"
                    " SELECT ?, ?, key, label, meta, 1 FROM temp.staged_links WHERE true ORDER BY key"
                    " ON CONFLICT (job, key) DO UPDATE SET job_file = excluded.job_file, label = excluded.label,"
                    " meta = excluded.meta, current = 1"
                    " WHERE job_tasks.current = 0 OR job_tasks.job_file IS NOT excluded.job_file"
                    " OR job_tasks.label IS NOT excluded.label OR job_tasks.meta IS NOT excluded.meta",
                    (job, job_file),
                )
                # Every staged key is current now; any other current row is one the file dropped.
                staged = conn.execute("SELECT count(*) FROM temp.staged_links").fetchone()[0]
                current = conn.execute(
                    "SELECT count(*) FROM job_tasks WHERE job = ? AND current = 1", (job,)
                ).fetchone()[0]
                if current > staged:
                    conn.execute(
                        "UPDATE job_tasks SET current = 0 WHERE job = ? AND current = 1"
                        " AND key NOT IN (SELECT key FROM temp.staged_links)",
                        (job,),
                    )
        finally:
            with self._locked() as conn:
                conn.execute("DELETE FROM temp.staged_links")

    def runs(self, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest runs (of `job`), newest first."""
        sql = "SELECT * FROM runs" + (" WHERE job = ?" if job else "") + " ORDER BY id DESC LIMIT ?"
        return [dict(r) for r in self._query(sql, [job, limit] if job else [limit])]

    def claim(
        self,
        request: Request,
        job: str,
        api_base: str,
        run_id: int,
        allow: set[str],
        *,
        answered: Answered | None = None,
    ) -> str | None:
        """Mark the request `sending`, durably, if this run may send it.

        Returns the state it had (`new` if the ledger had no row), or None if it is not this
        run's to send. `allow` is the set of states that may be sent again (failed; in_doubt
        and rejected only when the user asked). In one transaction: two runs never both claim.

        `answered`: the task id the calling worker's last request got, written in the same
        transaction, so that a worker's answer and its next claim cost one commit. If that
        commit fails, neither is written.

        Committed in a group with the other workers' claims and answers waiting meanwhile
        (group_commit.py); it returns once the commit covering it is durable.

        Raises `LedgerUnsound` if the ledger file was deleted or replaced since it was opened:
        the claim would go into a file nobody reads, and the next run would pay again.
        """
        sent = json.dumps(
            request.body, ensure_ascii=False
        )  # before taking the lock: other threads wait on it
        stamp = timestamp()

        def claim_in(conn: sqlite3.Connection) -> str | None:
            if answered is not None:
                _set(
                    conn,
                    answered.key,
                    _submitted(answered.task_id, answered.estimated_time, answered.received_at),
                )
            if _insert_claim(conn, request, sent, job, api_base, run_id, stamp):
                return "new"
            return _reclaim(conn, request, stamp, run_id, allow)

        # Checked before joining a group, as `record_submitted` does: raised inside one, it
        # would fail the other workers' claims and answers committed with it.
        self.check_same_file()
        return self._group.write(claim_in)

    def release(self, key: str, previous: str) -> None:
        """Undo a claim whose request was never sent (the run stopped first)."""
        with self.transaction() as conn:
            if previous == "new":
                conn.execute("DELETE FROM tasks WHERE key = ? AND state = 'sending'", (key,))
            elif previous == "generation_failed":  # put the earlier task back where it was
                last = conn.execute(
                    "SELECT rowid, * FROM task_history WHERE key = ? ORDER BY rowid DESC LIMIT 1",
                    (key,),
                ).fetchone()
                conn.execute(
                    "UPDATE tasks SET state = 'submitted', attempts = attempts - 1, task_id = ?, submitted_at = ?, status = ?,"
                    " result_urls = ?, error = ?, updated_at = ? WHERE key = ? AND state = 'sending'",
                    (
                        last["task_id"],
                        last["submitted_at"],
                        last["status"],
                        last["result_urls"],
                        last["error"],
                        timestamp(),
                        key,
                    ),
                )
                conn.execute("DELETE FROM task_history WHERE rowid = ?", (last["rowid"],))
            else:
                conn.execute(
                    "UPDATE tasks SET state = ?, attempts = attempts - 1, updated_at = ? WHERE key = ? AND state = 'sending'",
                    (previous, timestamp(), key),
                )

    def record_submitted(
        self, key: str, task_id: str, estimated_time: float | None, submitted_at: str | None = None
    ) -> None:
        """Write a task id (committed in a group with other workers' answers). Raises
        `LedgerUnsound` if the ledger file was deleted or replaced (see `claim`)."""
        self.check_same_file()
        self._update(key, **_submitted(task_id, estimated_time, submitted_at))

    def record_outcome(self, key: str, state: str, error: str) -> None:
        """A request that did not get a task id: `rejected`, `failed` or `in_doubt`."""
        if state not in ("rejected", "failed", "in_doubt"):
            raise ValueError(f"not an outcome without a task id: {state}")
        self._update(key, state=state, error=error)

    def record_statuses(self, found: Iterable[Checked]) -> None:
        """What get-task said of many tasks, in one commit: a poll records its answers in
        groups (one lost to a crash is asked again).

        An answer is recorded only on the row that still holds the task asked about: another
        process may have sent the request again meanwhile (`--regenerate-failed`), and the old
        task's `failed` on the new one would have it sent, and paid for, once more."""
        found = list(found)
        if not found:  # nothing to write: the write lock is not taken
            return
        checked_at = timestamp()
        with self.transaction() as conn:
            for checked in found:
                fields: dict[str, Any] = {"status": checked.status, "checked_at": checked_at}
                if checked.result_urls is not None:
                    fields["result_urls"] = json.dumps(checked.result_urls)
                if checked.error is not None:
                    fields["error"] = checked.error
                _set(conn, checked.key, fields, task_id=checked.task_id)

    def record_files_of(self, found: Iterable[tuple[str, str, list[str]]]) -> None:
        """The files a download saved, (key, task id, paths) per task, in one commit (a
        download's end); only on rows that still hold that task (see `record_statuses`)."""
        with self.transaction() as conn:
            for key, task_id, files in found:
                _set(conn, key, {"files": json.dumps(files)}, task_id=task_id)

    def _update(self, key: str, **fields: Any) -> None:
        # Answers not riding with a claim (a worker's last task id, rejections, failures) are
        # committed in groups (group_commit.py), as claims are (`claim`).
        self._group.write(lambda conn: _set(conn, key, fields), one_statement=True)

    # -- credits --------------------------------------------------------------------------

    def learned_prices(self, api_base: str) -> dict[str, tuple[int, int | None]]:
        """class key → (credits, the run that taught it), for one API."""
        rows = self._query(
            "SELECT class, credits, run_id FROM prices WHERE api_base = ?", [api_base]
        )
        return {row["class"]: (row["credits"], row["run_id"]) for row in rows}

    def all_learned_prices(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM prices ORDER BY api_base, class")]

    def record_learned_price(
        self, api_base: str, cls: str, credits: int, run_id: int, requests: int
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO prices (class, api_base, credits, run_id, requests, learned_at) VALUES (?, ?, ?, ?, ?, ?)",
                (cls, api_base, credits, run_id, requests, timestamp()),
            )

    def record_balance(
        self, run_id: int, *, before: int | None = None, after: int | None = None
    ) -> None:
        with self.transaction() as conn:
            if before is not None:
                conn.execute("UPDATE runs SET credits_before = ? WHERE id = ?", (before, run_id))
            if after is not None:
                conn.execute("UPDATE runs SET credits_after = ? WHERE id = ?", (after, run_id))

    def runs_overlapping(self, run_id: int) -> int:
        """How many other runs on this ledger were going at any time during run `run_id`."""
        row = self._query(
            "SELECT count(*) FROM runs o, runs r WHERE r.id = ? AND o.id != r.id"
            " AND o.started_at <= coalesce(r.ended_at, o.started_at) AND coalesce(o.ended_at, '9999') >= r.started_at",
            [run_id],
        )
        return int(row[0][0])

    def history(self, key: str) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self._query(
                "SELECT * FROM task_history WHERE key = ? ORDER BY replaced_at", [key]
            )
        ]

    # -- uploads --------------------------------------------------------------------------

    def uploaded(self, sha256: str, upload_base: str) -> str | None:
        """The URL a local image was uploaded to (at this API), if it was."""
        rows = self._query(
            "SELECT image_url FROM uploads WHERE sha256 = ? AND upload_base = ?",
            [sha256, upload_base],
        )
        return str(rows[0][0]) if rows else None

    def record_upload(
        self, sha256: str, upload_base: str, image_url: str, name: str, size: int
    ) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO uploads (sha256, upload_base, image_url, name, size, uploaded_at) VALUES (?, ?, ?, ?, ?, ?)",
                (sha256, upload_base, image_url, name, size, timestamp()),
            )

    # -- reviews --------------------------------------------------------------------------

    def reviews(self, job: str) -> dict[str, dict[str, Any]]:
        """key → the job's review of it (pick, rating, note, updated_at)."""
        rows = self._query(
            "SELECT key, pick, rating, note, updated_at FROM reviews WHERE job = ?", [job]
        )
        return {row["key"]: dict(row) for row in rows}

    def asks_for(self, job: str, key: str) -> bool:
        """Whether `key` is one of the job's requests (a current one, unless `--all`)."""
        sql = "SELECT 1 FROM job_tasks j WHERE j.job = ? AND j.key = ?" + self._current
        return bool(self._query(sql, [job, key]))

    def record_review(self, job: str, key: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Set some of `pick`, `rating`, `note` of the job's review of `key` (the others are
        kept); return the review as it now stands. `key` must be one of the job's requests."""
        unknown = set(fields) - {"pick", "rating", "note"}
        if unknown:
            raise ValueError(f"not a review field: {', '.join(sorted(unknown))}")
        with self.transaction() as conn:
            if (
                conn.execute(
                    "SELECT 1 FROM job_tasks WHERE job = ? AND key = ?", (job, key)
                ).fetchone()
                is None
            ):
                raise KeyError(key)
            conn.execute("INSERT OR IGNORE INTO reviews (job, key) VALUES (?, ?)", (job, key))
            assigned = ", ".join(f"{name} = ?" for name in fields)
            conn.execute(
                f"UPDATE reviews SET {assigned}{', ' if assigned else ''}updated_at = ? WHERE job = ? AND key = ?",
                (*fields.values(), timestamp(), job, key),
            )
            row = conn.execute(
                "SELECT key, pick, rating, note, updated_at FROM reviews WHERE job = ? AND key = ?",
                (job, key),
            ).fetchone()
        return dict(row)

    def chosen(
        self, job: str, *, picked: bool, rating_at_least: int | None
    ) -> list[dict[str, Any]]:
        """The job's current requests a review chose (picked, and/or rated at least N), with
        their label and meta, in the order they were submitted."""
        where = []
        params: list[Any] = [job]
        if picked:
            where.append("r.pick = 1")
        if rating_at_least is not None:
            where.append("r.rating >= ?")
            params.append(rating_at_least)
        sql = (
            "SELECT t.*, j.label, j.meta, j.job_file, r.pick, r.rating, r.note FROM reviews r"
            " JOIN job_tasks j ON j.job = r.job AND j.key = r.key JOIN tasks t ON t.key = r.key"
            f" WHERE r.job = ?{self._current} AND "
            + " AND ".join(where or ["1"])
            + " ORDER BY t.submitted_at IS NULL, t.submitted_at, t.key"
        )
        return [dict(r) for r in self._query(sql, params)]

    # -- runs -----------------------------------------------------------------------------

    def start_run(self, job: str, job_file: str, api_base: str, flags: dict[str, Any]) -> int:
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO runs (started_at, job, job_file, api_base, flags, pid) VALUES (?, ?, ?, ?, ?, ?)",
                (timestamp(), job, job_file, api_base, json.dumps(flags), os.getpid()),
            )
            return int(cursor.lastrowid or 0)

    def end_run(self, run_id: int, counts: dict[str, Any], exit_code: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE runs SET ended_at = ?, counts = ?, exit_code = ? WHERE id = ?",
                (timestamp(), json.dumps(counts), exit_code, run_id),
            )

    def set_exit_code(self, run_id: int, exit_code: int) -> None:
        """The command's exit code, once what came after the sending (wait, download) ended."""
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET exit_code = ? WHERE id = ?", (exit_code, run_id))

    def abandon_in_flight(self, run_id: int, reason: str) -> int:
        """This run's `sending` rows become `in_doubt` (it is exiting without their answers)."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE tasks SET state = 'in_doubt', error = ?, updated_at = ? WHERE state = 'sending' AND run_id = ?",
                (reason, timestamp(), run_id),
            )
            return cursor.rowcount

    def abandon_one(self, key: str, run_id: int, reason: str) -> None:
        """One of this run's `sending` rows becomes `in_doubt` (and no one else's)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE tasks SET state = 'in_doubt', error = ?, updated_at = ? WHERE key = ? AND state = 'sending' AND run_id = ?",
                (reason, timestamp(), key, run_id),
            )

    def recover(self) -> int:
        """Rows left `sending` by a run that is gone (crashed, killed) become `in_doubt`.

        Their request may have gone out, so they are not resent without --resubmit-in-doubt.
        A run is gone when its lock can be taken (see liveness.py): rows of a run still going
        in another process, in whatever PID namespace, are left alone.
        """
        runs = [
            row[0]
            for row in self._query("SELECT DISTINCT run_id FROM tasks WHERE state = 'sending'")
        ]
        gone = [run for run in runs if run is None or not liveness.is_alive(self.path, run)]
        if not gone:
            return 0
        recovered = 0
        with self.transaction() as conn:
            for run in gone:
                # `run_id IS ?` and the state in the WHERE: a row another run reclaimed
                # since the check belongs to that run now, and is not touched.
                cursor = conn.execute(
                    "UPDATE tasks SET state = 'in_doubt', error = 'found sending after its run ended"
                    " (crash or kill): it may or may not have been created', updated_at = ?"
                    " WHERE state = 'sending' AND run_id IS ?",
                    (timestamp(), run),
                )
                recovered += cursor.rowcount
        return recovered

    def replay_journal(self) -> int:
        """Record the answers a run kept in the journal because the ledger could not take them."""
        # Moved aside first: a run in trouble may append to the journal meanwhile, and its
        # lines go to a new journal, for the next command, rather than into one being replayed.
        taken = journal.take(self.path)
        entries = list(journal.read(taken))
        if not entries:
            journal.discard(taken)
            return 0
        with self.transaction() as conn:
            for entry in entries:
                row = conn.execute(
                    "SELECT state, task_id FROM tasks WHERE key = ?", (entry["key"],)
                ).fetchone()
                if row is not None and row["state"] == "submitted" and row["task_id"]:
                    continue  # recorded after all (or replayed before a crash)
                if not entry.get(
                    "task_id"
                ):  # rescued as in_doubt: maybe created, never resent silently
                    if row is None:
                        _insert_entry(conn, entry, "in_doubt")
                    elif row["state"] in ("sending", "failed"):
                        _set(
                            conn,
                            entry["key"],
                            {
                                "state": "in_doubt",
                                "error": entry.get("error") or "in doubt in a ledger that was lost",
                            },
                        )
                    continue
                if row is None:  # the ledger was replaced: the row is rebuilt from the entry
                    _insert_entry(conn, entry, "sending")
                _set(
                    conn,
                    entry["key"],
                    _submitted(
                        entry["task_id"], entry.get("estimated_time"), entry.get("received_at")
                    ),
                )
        journal.discard(taken)  # only once committed: until then they are replayed again
        return len(entries)

    def rescue_to_journal(self) -> int:
        """Copy every row that holds money (a task id, or a request in doubt) from the open
        ledger file into the journal. For a run whose ledger was deleted or replaced: the file
        it still has open is the only record left of what was paid for."""
        rows = self._query(
            "SELECT t.*, (SELECT j.job_file FROM job_tasks j WHERE j.key = t.key LIMIT 1) AS job_file FROM tasks t"
            " WHERE t.task_id IS NOT NULL OR t.state IN ('in_doubt', 'sending')"
        )
        entries = [
            {
                "key": row["key"],
                "task_id": row["task_id"],
                "estimated_time": row["estimated_time"],
                "received_at": row["submitted_at"],
                "job": row["job"],
                "job_file": row["job_file"],
                "api_base": row["api_base"],
                "variant": row["variant"],
                "body": json.loads(row["request"]),
                "run_id": row["run_id"],
                "state": "submitted" if row["task_id"] else "in_doubt",
                "error": row["error"] or "in doubt when its ledger was lost",
            }
            for row in rows
        ]
        if entries:
            journal.append(self.path, *entries)
        return len(entries)

    def integrity(self) -> str:
        return str(self._query("PRAGMA integrity_check")[0][0])


# The state a run decides by: `generation_failed` for a task created but whose video failed.
# A submitted task whose generation has not ended (the tasks table as `t`).
_PROCESSING = "t.state = 'submitted' AND coalesce(t.status, 'processing') = 'processing'"
_EFFECTIVE_STATE = (
    "CASE WHEN state = 'submitted' AND status = 'failed' THEN 'generation_failed' ELSE state END"
)


def _real_name(path: Path) -> Path:
    """The ledger's own name, through any symlink (of the file or of a folder above it).

    SQLite follows links, but the files beside the ledger (journal, reserve, the runs' locks)
    are named from this path: reached under two names, two runs would each see the other's
    live rows as left by a run that ended, and send them again. Unchanged when no link is
    involved, so messages name the path as the user typed it."""
    real = Path(os.path.realpath(path))
    return path if real == Path(os.path.abspath(path)) else real


def _insert_claim(
    conn: sqlite3.Connection,
    request: Request,
    sent: str,
    job: str,
    api_base: str,
    run_id: int,
    stamp: str,
) -> bool:
    """Claim a request the ledger has no row for; False if it has one."""
    body = request.body
    inserted = conn.execute(
        "INSERT INTO tasks (key, job, api_base, model_id, prompt, request, variant, state,"
        " attempts, updated_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, 'sending', 1, ?, ?) ON CONFLICT (key) DO NOTHING",
        (
            request.key,
            job,
            api_base,
            body.get("model_id"),
            body.get("prompt"),
            sent,
            request.variant,
            stamp,
            run_id,
        ),
    )
    return inserted.rowcount == 1


def _reclaim(
    conn: sqlite3.Connection, request: Request, stamp: str, run_id: int, allow: set[str]
) -> str | None:
    """Claim a request the ledger has a row for, if its state is in `allow`; inside the
    caller's transaction. Returns the state it had, or None."""
    row = conn.execute(
        f"SELECT {_EFFECTIVE_STATE} AS state, task_id FROM tasks WHERE key = ?", (request.key,)
    ).fetchone()
    if row["state"] not in allow:
        return None
    conn.execute(
        "UPDATE tasks SET state = 'sending', attempts = attempts + 1, updated_at = ?, run_id = ?, error = NULL WHERE key = ?",
        (stamp, run_id, request.key),
    )
    if row["task_id"] is not None:
        # Its earlier task (a failed generation; or an answer another run wrote) is kept in
        # task_history by the tasks_keep_replaced_task_id trigger (migrations.py), not lost.
        conn.execute(
            "UPDATE tasks SET task_id = NULL, estimated_time = NULL, submitted_at = NULL, eta_at = NULL,"
            " status = NULL, result_urls = NULL, checked_at = NULL, files = NULL WHERE key = ?",
            (request.key,),
        )
    return str(row["state"])


def _set(
    conn: sqlite3.Connection, key: str, fields: dict[str, Any], *, task_id: str | None = None
) -> None:
    """UPDATE the task `key` with `fields` (and `updated_at`), inside the caller's transaction;
    with `task_id`, only if the row still holds that task."""
    fields = {**fields, "updated_at": timestamp()}
    assignments = ", ".join(f"{name} = ?" for name in fields)
    if task_id is None:
        conn.execute(f"UPDATE tasks SET {assignments} WHERE key = ?", (*fields.values(), key))
    else:
        conn.execute(
            f"UPDATE tasks SET {assignments} WHERE key = ? AND task_id = ?",
            (*fields.values(), key, task_id),
        )


def _insert_entry(conn: sqlite3.Connection, entry: dict[str, Any], state: str) -> None:
    body = entry.get("body") or {}
    conn.execute(
        "INSERT INTO tasks (key, job, api_base, model_id, prompt, request, variant, state, attempts, error,"
        " updated_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
        (
            entry["key"],
            entry.get("job") or "",
            entry.get("api_base") or "",
            body.get("model_id"),
            body.get("prompt"),
            json.dumps(body, ensure_ascii=False),
            int(entry.get("variant") or 0),
            state,
            entry.get("error"),
            timestamp(),
            entry.get("run_id"),
        ),
    )
    if entry.get("job"):
        conn.execute(
            "INSERT OR IGNORE INTO job_tasks (job, job_file, key) VALUES (?, ?, ?)",
            (entry["job"], entry.get("job_file") or "", entry["key"]),
        )


def _submitted(
    task_id: str, estimated_time: float | None, submitted_at: str | None
) -> dict[str, Any]:
    """The fields of a row whose create call answered with `task_id`."""
    submitted = parse_timestamp(submitted_at) if submitted_at else now()
    eta = later(submitted, estimated_time)
    return {
        "state": "submitted",
        "task_id": task_id,
        "estimated_time": estimated_time if eta is not None else None,
        "submitted_at": timestamp(submitted),
        "eta_at": timestamp(eta) if eta is not None else None,
        "status": "processing",
        "error": None,
        "result_urls": None,
        "files": None,
        "checked_at": None,
    }


def _enable_wal(conn: sqlite3.Connection, timeout: float = BUSY_TIMEOUT) -> str:
    """Switch to WAL, waiting out another process doing the same to a new ledger.

    SQLite does not call the busy handler for every lock this pragma takes, so two processes
    opening a new ledger at once could fail with "database is locked" despite the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
