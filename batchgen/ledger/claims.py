"""Claims and records: a request claimed before its bytes go out, and what its answer and
its task became written after. See the package's docstring for the protocol."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..times import later, now, parse_timestamp, timestamp
from .connections import Connection
from .store import _EFFECTIVE_STATE, Store
from .tables import JobInput, JobInputs

if TYPE_CHECKING:
    from ..jobs.expand import Request

# What a run may send, by the state the ledger holds: the other states need a flag.
RESENDABLE = {"failed"}
STATES = ("sending", "submitted", "rejected", "failed", "in_doubt")


class Link(Protocol):
    """What linking records of a request (an `expand.Request`, or `plan.Linked`): its key,
    and the label and meta its job gives it."""

    @property
    def key(self) -> str: ...

    @property
    def label(self) -> str | None: ...

    @property
    def meta(self) -> dict[str, Any] | None: ...


class Answered(NamedTuple):
    """A create call's answer that gave a task id, not yet written (see `Claims.claim`)."""

    key: str
    task_id: str
    estimated_time: float | None
    received_at: str
    handle: str | None = None  # `Outcome.handle`


class Checked(NamedTuple):
    """What get-task said of one task, to record (see `Claims.record_statuses`)."""

    key: str
    task_id: str  # the task asked about: the row may hold another by the time it is recorded
    status: str
    result_urls: list[str] | None
    error: str | None


class Claims:
    """Claiming requests, linking them to a job, recording what became of them."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @contextlib.contextmanager
    def linking(
        self,
        job: str,
        job_file: str,
        inputs: Callable[[], JobInput | None] = lambda: None,
    ) -> Iterator[Callable[[Iterable[Link]], None]]:
        """Record that `job` asks for the requests given to the function this yields (a request
        may belong to many jobs), with the label and meta the job gives each; the job's other
        rows (from before an edit) are superseded. What `inputs` gives when the block ends (what
        the requests were made from, see unchanged.py) is recorded with them, in one transaction.

        The requests are staged in a temporary table, which takes no lock on the ledger, and
        written in one transaction when the block ends well: a run validates and links in one
        pass over its job, and a job that fails validation links nothing."""
        q = self.store.sql.mark
        with self.store._locked() as conn:
            conn.execute(
                # No key index: appending is several times faster than keeping random keys in
                # order, and the two statements below each need one pass over the table.
                "CREATE TEMP TABLE IF NOT EXISTS staged_links (key TEXT, label TEXT, meta TEXT)"
            )
            conn.execute("DELETE FROM staged_links")

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
            with self.store._locked() as conn, self.store.long_calls():
                conn.execute(
                    "BEGIN"
                )  # deferred, and only the temp database is written: no write lock
                conn.executemany(
                    f"INSERT INTO staged_links (key, label, meta) VALUES ({q}, {q}, {q})", rows
                )
                conn.execute("COMMIT")

        try:
            yield stage
            with self.store.long_calls(), self.store.transaction() as conn:
                # A row is written only when something changed: a rerun of a big job rewrites nothing.
                # In key order: the three indexes it goes into are ordered by key, and random
                # inserts into them cost ~5x more (a first run of a million requests: 22 s).
                differs = self.store.sql.distinct
                conn.execute(
                    "INSERT INTO job_tasks (job, job_file, key, label, meta, current)"
                    f" SELECT {q}, {q}, key, label, meta, 1 FROM staged_links WHERE true ORDER BY key"
                    " ON CONFLICT (job, key) DO UPDATE SET job_file = excluded.job_file, label = excluded.label,"
                    " meta = excluded.meta, current = 1"
                    f" WHERE job_tasks.current = 0 OR job_tasks.job_file {differs} excluded.job_file"
                    f" OR job_tasks.label {differs} excluded.label OR job_tasks.meta {differs} excluded.meta",
                    (job, job_file),
                )
                # In the links' transaction: a digest never describes links another run made.
                JobInputs.write(conn, job, job_file, inputs())
                # Every staged key is current now; any other current row is one the file dropped.
                staged = conn.execute("SELECT count(*) FROM staged_links").fetchone()[0]
                current = conn.execute(  # kept by triggers: no pass over the job's rows
                    f"SELECT coalesce(sum(n), 0) FROM job_counts WHERE job = {q} AND current = 1",
                    (job,),
                ).fetchone()[0]
                if current > staged:
                    conn.execute(
                        f"UPDATE job_tasks SET current = 0 WHERE job = {q} AND current = 1"
                        " AND key NOT IN (SELECT key FROM staged_links)",
                        (job,),
                    )
        finally:
            with self.store._locked() as conn:
                conn.execute("DELETE FROM staged_links")

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

        def claim_in(conn: Connection) -> str | None:
            if answered is not None:
                _set(
                    conn,
                    answered.key,
                    _submitted(
                        answered.task_id,
                        answered.estimated_time,
                        answered.received_at,
                        answered.handle,
                    ),
                )
            if _insert_claim(conn, request, sent, job, api_base, run_id, stamp):
                return "new"
            return _reclaim(conn, request, stamp, run_id, allow)

        # Checked before joining a group, as `record_submitted` does: raised inside one, it
        # would fail the other workers' claims and answers committed with it.
        self.store.check_same_file()
        return self.store._group.write(claim_in)

    def release(self, key: str, previous: str) -> None:
        """Undo a claim whose request was never sent (the run stopped first)."""
        q = self.store.sql.mark
        with self.store.transaction() as conn:
            if previous == "new":
                conn.execute(f"DELETE FROM tasks WHERE key = {q} AND state = 'sending'", (key,))
            elif previous == "generation_failed":  # put the earlier task back where it was
                last = conn.execute(
                    f"SELECT rowid, * FROM task_history WHERE key = {q} ORDER BY rowid DESC LIMIT 1",
                    (key,),
                ).fetchone()
                conn.execute(
                    f"UPDATE tasks SET state = 'submitted', attempts = attempts - 1, task_id = {q}, submitted_at = {q}, status = {q},"
                    f" result_urls = {q}, error = {q}, updated_at = {q} WHERE key = {q} AND state = 'sending'",
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
                conn.execute(f"DELETE FROM task_history WHERE rowid = {q}", (last["rowid"],))
            else:
                conn.execute(
                    f"UPDATE tasks SET state = {q}, attempts = attempts - 1, updated_at = {q} WHERE key = {q} AND state = 'sending'",
                    (previous, timestamp(), key),
                )

    def record_submitted(
        self,
        key: str,
        task_id: str,
        estimated_time: float | None,
        submitted_at: str | None = None,
        handle: str | None = None,
    ) -> None:
        """Write a task id, and its `handle` if the provider gave one (committed in a group
        with other workers' answers). Raises `LedgerUnsound` if the ledger file was deleted or
        replaced (see `claim`)."""
        self.store.check_same_file()
        self._update(key, **_submitted(task_id, estimated_time, submitted_at, handle))

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
        with self.store.transaction() as conn:
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
        with self.store.transaction() as conn:
            for key, task_id, files in found:
                _set(conn, key, {"files": json.dumps(files)}, task_id=task_id)

    def _update(self, key: str, **fields: Any) -> None:
        # Answers not riding with a claim (a worker's last task id, rejections, failures) are
        # committed in groups (group_commit.py), as claims are (`claim`).
        self.store._group.write(lambda conn: _set(conn, key, fields), one_statement=True)


def _insert_claim(
    conn: Connection,
    request: Request,
    sent: str,
    job: str,
    api_base: str,
    run_id: int,
    stamp: str,
) -> bool:
    """Claim a request the ledger has no row for; False if it has one."""
    q = conn.dialect.mark
    body = request.body
    inserted = conn.execute(
        "INSERT INTO tasks (key, job, api_base, provider, model, prompt, request, variant, state,"
        f" attempts, updated_at, run_id) VALUES ({q}, {q}, {q}, {q}, {q}, {q}, {q}, {q}, 'sending', 1, {q}, {q}) ON CONFLICT (key) DO NOTHING",
        (
            request.key,
            job,
            api_base,
            request.provider,
            request.model,
            body.get("prompt"),
            sent,
            request.variant,
            stamp,
            run_id,
        ),
    )
    return bool(inserted.rowcount == 1)


def _reclaim(
    conn: Connection, request: Request, stamp: str, run_id: int, allow: set[str]
) -> str | None:
    """Claim a request the ledger has a row for, if its state is in `allow`; inside the
    caller's transaction. Returns the state it had, or None."""
    q = conn.dialect.mark
    row = conn.execute(
        f"SELECT {_EFFECTIVE_STATE} AS state, task_id FROM tasks WHERE key = {q}", (request.key,)
    ).fetchone()
    if row["state"] not in allow:
        return None
    conn.execute(
        f"UPDATE tasks SET state = 'sending', attempts = attempts + 1, updated_at = {q}, run_id = {q}, error = NULL WHERE key = {q}",
        (stamp, run_id, request.key),
    )
    if row["task_id"] is not None:
        # Its earlier task (a failed generation; or an answer another run wrote) is kept in
        # task_history by the tasks_keep_replaced_task_id trigger (migrations.py), not lost.
        conn.execute(
            "UPDATE tasks SET task_id = NULL, estimated_time = NULL, submitted_at = NULL, eta_at = NULL,"
            f" status = NULL, result_urls = NULL, checked_at = NULL, files = NULL WHERE key = {q}",
            (request.key,),
        )
    return str(row["state"])


def _set(conn: Connection, key: str, fields: dict[str, Any], *, task_id: str | None = None) -> None:
    """UPDATE the task `key` with `fields` (and `updated_at`), inside the caller's transaction;
    with `task_id`, only if the row still holds that task."""
    q = conn.dialect.mark
    fields = {**fields, "updated_at": timestamp()}
    assignments = ", ".join(f"{name} = {q}" for name in fields)
    if task_id is None:
        conn.execute(f"UPDATE tasks SET {assignments} WHERE key = {q}", (*fields.values(), key))
    else:
        conn.execute(
            f"UPDATE tasks SET {assignments} WHERE key = {q} AND task_id = {q}",
            (*fields.values(), key, task_id),
        )


def _insert_entry(conn: Connection, entry: dict[str, Any], state: str) -> None:
    q = conn.dialect.mark
    body = entry.get("body") or {}
    conn.execute(
        "INSERT INTO tasks (key, job, api_base, provider, model, prompt, request, variant, state,"
        f" attempts, error, updated_at, run_id) VALUES ({q}, {q}, {q}, {q}, {q}, {q}, {q}, {q}, {q}, 1, {q}, {q}, {q})",
        (
            entry["key"],
            entry.get("job") or "",
            entry.get("api_base") or "",
            entry.get("provider"),
            entry.get("model"),
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
            f"INSERT INTO job_tasks (job, job_file, key) VALUES ({q}, {q}, {q}) ON CONFLICT DO NOTHING",
            (entry["job"], entry.get("job_file") or "", entry["key"]),
        )


def _submitted(
    task_id: str,
    estimated_time: float | None,
    submitted_at: str | None,
    handle: str | None = None,
) -> dict[str, Any]:
    """The fields of a row whose create call answered with `task_id` (and `handle`)."""
    submitted = parse_timestamp(submitted_at) if submitted_at else now()
    eta = later(submitted, estimated_time)
    return {
        "state": "submitted",
        "task_id": task_id,
        "task_handle": handle,
        "estimated_time": estimated_time if eta is not None else None,
        "submitted_at": timestamp(submitted),
        "eta_at": timestamp(eta) if eta is not None else None,
        "status": "processing",
        "error": None,
        "result_urls": None,
        "files": None,
        "checked_at": None,
    }
