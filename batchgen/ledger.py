"""The ledger: one SQLite file that remembers every request sent and what became of it.

Its tables (`tasks`, `job_tasks`, `runs`) are a public interface, documented in the README.
Durability is the point: WAL with `synchronous=FULL`, and a request's `sending` row is
committed before its bytes go out. Claims run under `BEGIN IMMEDIATE`, so two processes on
one ledger can never both claim a request.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlite_utils

from .errors import UsageError
from .expand import Request
from .migrations import migrate

# What a run may send, by the state the ledger holds: the other states need a flag.
RESENDABLE = {"failed"}
STATES = ("sending", "submitted", "rejected", "failed", "in_doubt")
ENDED_STATUSES = ("completed", "failed")

_BATCH = 500  # keys per IN (...) query: well under SQLite's variable limit


def now() -> datetime:
    return datetime.now(timezone.utc)


def timestamp(when: datetime | None = None) -> str:
    """ISO 8601 UTC text, millisecond precision: sorts as it reads."""
    return (when or now()).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Ledger:
    """An open ledger. Safe to share between threads: every statement runs under one lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._create_private(self.path)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.row_factory = sqlite3.Row
            mode = _enable_wal(conn)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            self.db = sqlite_utils.Database(conn)
            self._lock = threading.RLock()
            with self._lock:
                migrate(self.db)
        except sqlite3.OperationalError as e:  # locked past the timeout, unreadable, ...
            raise UsageError(f"{self.path}: cannot open the ledger ({e})") from None
        except sqlite3.DatabaseError as e:
            raise UsageError(f"{self.path}: not a batchgen ledger ({e})") from None
        if mode.lower() != "wal":
            raise UsageError(f"{self.path}: cannot switch the ledger to WAL mode (got {mode})")

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

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: takes the write lock up front, so reads inside are current."""
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self.db.conn.execute(sql, tuple(params)).fetchall()

    # -- reading --------------------------------------------------------------------------

    def states(self, keys: Iterable[str]) -> dict[str, str]:
        """key → state, for the keys the ledger knows."""
        found: dict[str, str] = {}
        keys = list(keys)
        for start in range(0, len(keys), _BATCH):
            chunk = keys[start : start + _BATCH]
            marks = ",".join("?" * len(chunk))
            for row in self.query(f"SELECT key, state FROM tasks WHERE key IN ({marks})", chunk):
                found[row["key"]] = row["state"]
        return found

    def task(self, key: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM tasks WHERE key = ?", [key])
        return dict(rows[0]) if rows else None

    def job_names(self) -> list[str]:
        return [row["job"] for row in self.query("SELECT DISTINCT job FROM job_tasks ORDER BY job")]

    def rows(self, job: str | None = None, state: str | None = None) -> Iterator[dict[str, Any]]:
        """The tasks of `job` (every task if None) that the ledger has rows for, oldest first."""
        sql = "SELECT t.* FROM tasks t"
        params: list[Any] = []
        where = []
        if job is not None:
            sql += " JOIN job_tasks j ON j.key = t.key"
            where.append("j.job = ?")
            params.append(job)
        if state is not None:
            where.append("t.state = ?")
            params.append(state)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY t.submitted_at IS NULL, t.submitted_at, t.key"
        for row in self.query(sql, params):
            yield dict(row)

    def job_states(self, job: str) -> dict[str, int]:
        """state → how many of the job's requests are in it."""
        rows = self.query(
            "SELECT t.state, count(*) AS n FROM tasks t JOIN job_tasks j ON j.key = t.key WHERE j.job = ? GROUP BY t.state",
            [job],
        )
        return {row["state"]: row["n"] for row in rows}

    def status_counts(self, job: str | None) -> list[dict[str, Any]]:
        """(model_id, state, status, n) rows for `job`, or for every task if None."""
        sql = "SELECT t.model_id, t.state, coalesce(t.status, '') AS status, count(*) AS n FROM tasks t"
        if job is not None:
            sql += " JOIN job_tasks j ON j.key = t.key WHERE j.job = ?"
        return [dict(r) for r in self.query(sql + " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", [job] if job is not None else [])]

    def last_due(self, job: str | None) -> str | None:
        """The latest ETA among the submitted tasks (of `job`) still processing."""
        sql = "SELECT max(t.eta_at) FROM tasks t"
        if job is not None:
            sql += " JOIN job_tasks j ON j.key = t.key AND j.job = ?"
        sql += " WHERE t.state = 'submitted' AND coalesce(t.status, 'processing') = 'processing'"
        return self.query(sql, [job] if job is not None else [])[0][0]

    def unsent_count(self, job: str) -> int:
        """Requests linked to `job` that were never claimed (a --limit run, say)."""
        rows = self.query(
            "SELECT count(*) FROM job_tasks j LEFT JOIN tasks t ON t.key = j.key WHERE j.job = ? AND t.key IS NULL",
            [job],
        )
        return rows[0][0]

    # -- writing --------------------------------------------------------------------------

    def link(self, job: str, job_file: str, keys: Iterable[str]) -> None:
        """Record that `job` asks for these requests (a request may belong to many jobs)."""
        keys = list(keys)
        with self.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO job_tasks (job, job_file, key) VALUES (?, ?, ?)",
                ((job, job_file, key) for key in keys),
            )

    def claim(self, request: Request, job: str, api_base: str, run_id: int, allow: set[str]) -> str | None:
        """Mark the request `sending`, durably, if this run may send it.

        Returns the state it had (`new` if the ledger had no row), or None if it is not this
        run's to send. `allow` is the set of states that may be sent again (failed; in_doubt
        and rejected only when the user asked). Under BEGIN IMMEDIATE: two runs never both claim.
        """
        body = request.body
        with self.transaction() as conn:
            row = conn.execute("SELECT state FROM tasks WHERE key = ?", (request.key,)).fetchone()
            stamp = timestamp()
            if row is None:
                conn.execute(
                    "INSERT INTO tasks (key, job, api_base, model_id, prompt, request, variant, state,"
                    " attempts, updated_at, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, 'sending', 1, ?, ?)",
                    (
                        request.key,
                        job,
                        api_base,
                        body.get("model_id"),
                        body.get("prompt"),
                        json.dumps(body, ensure_ascii=False),
                        request.variant,
                        stamp,
                        run_id,
                    ),
                )
                return "new"
            if row["state"] not in allow:
                return None
            conn.execute(
                "UPDATE tasks SET state = 'sending', attempts = attempts + 1, updated_at = ?, run_id = ?,"
                " error = NULL WHERE key = ?",
                (stamp, run_id, request.key),
            )
            return str(row["state"])

    def release(self, key: str, previous: str) -> None:
        """Undo a claim whose request was never sent (the run stopped first)."""
        with self.transaction() as conn:
            if previous == "new":
                conn.execute("DELETE FROM tasks WHERE key = ? AND state = 'sending'", (key,))
            else:
                conn.execute(
                    "UPDATE tasks SET state = ?, attempts = attempts - 1, updated_at = ? WHERE key = ? AND state = 'sending'",
                    (previous, timestamp(), key),
                )

    def record_submitted(self, key: str, task_id: str, estimated_time: float | None) -> None:
        submitted = now()
        eta = timestamp(submitted + timedelta(seconds=estimated_time)) if estimated_time is not None else None
        self._update(
            key,
            state="submitted",
            task_id=task_id,
            estimated_time=estimated_time,
            submitted_at=timestamp(submitted),
            eta_at=eta,
            status="processing",
            error=None,
            result_urls=None,
            files=None,
            checked_at=None,
        )

    def record_outcome(self, key: str, state: str, error: str) -> None:
        """A request that did not get a task id: `rejected`, `failed` or `in_doubt`."""
        assert state in ("rejected", "failed", "in_doubt"), state
        self._update(key, state=state, error=error)

    def record_status(self, key: str, status: str, result_urls: list[str] | None, error: str | None = None) -> None:
        fields: dict[str, Any] = {"status": status, "checked_at": timestamp()}
        if result_urls is not None:
            fields["result_urls"] = json.dumps(result_urls)
        if error is not None:
            fields["error"] = error
        self._update(key, **fields)

    def record_files(self, key: str, files: list[str]) -> None:
        self._update(key, files=json.dumps(files))

    def _update(self, key: str, **fields: Any) -> None:
        fields["updated_at"] = timestamp()
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self.transaction() as conn:
            conn.execute(f"UPDATE tasks SET {assignments} WHERE key = ?", (*fields.values(), key))

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
        Rows of a run that is still going (another process on this ledger) are left alone.
        """
        rows = self.query(
            "SELECT t.key, t.run_id, r.pid, r.ended_at FROM tasks t LEFT JOIN runs r ON r.id = t.run_id"
            " WHERE t.state = 'sending'"
        )
        gone = [r["key"] for r in rows if r["ended_at"] is not None or r["pid"] is None or not _alive(r["pid"])]
        if not gone:
            return 0
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE tasks SET state = 'in_doubt', error = 'found sending after its run ended"
                " (crash or kill): it may or may not have been created', updated_at = ?"
                " WHERE key = ? AND state = 'sending'",
                ((timestamp(), key) for key in gone),
            )
        return len(gone)

    def integrity(self) -> str:
        return self.query("PRAGMA integrity_check")[0][0]


def _enable_wal(conn: sqlite3.Connection, timeout: float = 30.0) -> str:
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


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
