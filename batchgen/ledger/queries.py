"""Read queries: where requests stand, by key, by job, by state. Nothing here writes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from .store import _BATCH, _EFFECTIVE_STATE, _PROCESSING, FAILURES, Store, current


class Standing(NamedTuple):
    """Where a job's requests stand: how many are in each state (`generation_failed` apart),
    how many were never claimed (a --limit run, say), the latest ETA of those processing."""

    states: dict[str, int]
    unsent: int
    last_due: str | None


# A job at least 1/_WALK_SHARE of the ledger is paged by walking the ledger's order.
_WALK_SHARE = 8
_NO_LIMIT = 2**62  # a LIMIT both engines take for "none" (SQLite's -1 is an error in PostgreSQL)


def _linked_to_job(current_only: bool, q: str) -> str:
    """A subquery true of a task `t` the job (the first parameter, marked `q`) asks for."""
    return f"SELECT 1 FROM job_tasks j WHERE j.job = {q} AND j.key = t.key" + current(current_only)


class Queries:
    """What the ledger knows, read."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def states(self, keys: Iterable[str]) -> dict[str, str]:
        """key → state, for the keys the ledger knows; a submitted task whose generation failed
        reads `generation_failed` (sent again only with --regenerate-failed)."""
        found: dict[str, str] = {}
        keys = list(keys)
        with self.store._locked() as conn:
            cursor = conn.cursor()
            cursor.row_factory = None  # plain tuples: this runs once per request of a plan
            for start in range(0, len(keys), _BATCH):
                chunk = keys[start : start + _BATCH]
                marks = self.store.sql.marks(len(chunk))
                # The index holds what is read: the rows themselves are never touched.
                found.update(
                    cursor.execute(
                        f"SELECT key, {_EFFECTIVE_STATE} FROM tasks{self.store.sql.use_index('tasks_standing')} WHERE key IN ({marks})",
                        chunk,
                    )
                )
        return found

    def task(self, key: str) -> dict[str, Any] | None:
        q = self.store.sql.mark
        rows = self.store._query(f"SELECT * FROM tasks WHERE key = {q}", [key])
        return dict(rows[0]) if rows else None

    def job_names(self) -> list[str]:
        return [
            row["job"]
            for row in self.store._query("SELECT DISTINCT job FROM job_tasks ORDER BY job")
        ]

    def rows(
        self, job: str | None = None, state: str | None = None, *, current_only: bool = True
    ) -> Iterator[dict[str, Any]]:
        """The tasks of `job` (every task if None) that the ledger has rows for, oldest first."""
        select = "t.*" + (", j.label, j.meta" if job is not None else "")
        for row in self._stream(*self._rows_sql(select, job, state, current_only)):
            yield dict(row)

    def rows_as_json(
        self, job: str | None = None, state: str | None = None, *, current_only: bool = True
    ) -> Iterator[str]:
        """The rows `rows` gives, each one JSON object of every column, made by SQLite: a
        million rows in seconds, where a dict and `json.dumps` for each took ~15 s. Text is
        kept as text (`request`, `result_urls` and `meta` are JSON inside a string, as
        `rows` gives them)."""
        columns = [("t", name) for name in self.store.columns()]
        if job is not None:
            columns += [("j", "label"), ("j", "meta")]  # the job gives these
        fields = ", ".join(f"'{name}', {table}.\"{name}\"" for table, name in columns)
        sql, params = self._rows_sql(
            self.store.sql.json_object.format(fields=fields), job, state, current_only
        )
        for row in self._stream(sql, params, plain=True):
            yield row[0]

    def rows_of(
        self, job: str, keys: list[str], *, current_only: bool = True
    ) -> list[dict[str, Any]]:
        """The rows `rows(job)` gives for these keys (a page of them), in the keys' order."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), _BATCH):
            chunk = keys[start : start + _BATCH]
            sql, params = self._rows_sql("t.*, j.label, j.meta", job, None, current_only)
            sql = sql.replace(
                " ORDER BY", f" AND t.key IN ({self.store.sql.marks(len(chunk))}) ORDER BY"
            )
            found.update(
                (row["key"], dict(row)) for row in self.store._query(sql, [*params, *chunk])
            )
        return [found[key] for key in keys if key in found]

    def keys_in_order(
        self, job: str, *, start: int = 0, limit: int | None = None, current_only: bool = True
    ) -> Iterator[str]:
        """The keys of `rows(job)`, in its order, from the `start`-th (`limit` of them): a page
        of the job's tiles, found in time that grows with neither the job nor the ledger.

        A job that is a good part of the ledger (an eighth or more) is read in the ledger's
        own order (`tasks_oldest_first`), its tasks picked out as they come: a page costs at
        most eight pages' worth of index entries. A smaller job's keys (not its rows, ~1 KB
        each) are sorted: that costs in proportion to the job, a small part of the ledger."""
        q = self.store.sql.mark
        if self.sent_count(job, current_only=current_only) * _WALK_SHARE >= self.store.size_hint():
            sql = (
                f"SELECT t.key FROM tasks t{self.store.sql.use_index('tasks_oldest_first')}"
                f" WHERE EXISTS ({_linked_to_job(current_only, q)})"
                " ORDER BY t.submitted_at IS NULL, t.submitted_at, t.key"
            )
            params: list[Any] = [job]
        else:
            sql, params = self._rows_sql("t.key", job, None, current_only)
        if limit is not None or start:
            sql += f" LIMIT {q} OFFSET {q}"
            params += [_NO_LIMIT if limit is None else limit, start]
        for row in self._stream(sql, params, plain=True):
            yield row[0]

    def sent_count(self, job: str, *, current_only: bool = True) -> int:
        """How many of the job's requests the ledger has a task row for (`rows(job)`'s length),
        from its maintained counts."""
        return sum(row["n"] for row in self.counts(job, current_only) if row["state"])

    def _rows_sql(
        self, select: str, job: str | None, state: str | None, current_only: bool
    ) -> tuple[str, list[Any]]:
        q = self.store.sql.mark
        sql = f"SELECT {select} FROM tasks t"
        params: list[Any] = []
        where = []
        if job is not None:
            sql += " JOIN job_tasks j ON j.key = t.key"
            where.append(f"j.job = {q}" + current(current_only))
            params.append(job)
        if state is not None:
            where.append(f"t.state = {q}")
            params.append(state)
        if where:
            sql += " WHERE " + " AND ".join(where)
        # Every task: read in this order from its index (migration 12), not sorted in a temporary
        # b-tree (a million rows of ~1 KB each). A job's tasks: found by the job and sorted; the
        # unary + keeps the planner from walking the whole ledger's index to find them.
        plus = "" if job is None else self.store.sql.unary_plus
        order = f"{plus}t.submitted_at IS NULL, {plus}t.submitted_at"
        return sql + f" ORDER BY {order}, t.key", params

    def _stream(self, sql: str, params: list[Any], *, plain: bool = False) -> Iterator[Any]:
        # Streamed, a batch at a time: `tasks --json` of a million rows holds one batch, not
        # a million. (Not for use while another thread writes through this ledger.)
        with self.store._locked(), self.store.long_calls():
            cursor = self.store.backend.streaming_cursor()
            if plain:
                cursor.row_factory = None
            cursor.execute(sql, params)
        try:
            while True:
                with self.store._locked(), self.store.long_calls():
                    batch = cursor.fetchmany(_BATCH)
                if not batch:
                    return
                yield from batch
        finally:
            with contextlib.suppress(*FAILURES):
                with self.store._locked():
                    cursor.close()

    def standing(self, job: str, *, current_only: bool = True) -> Standing:
        """Where the job's requests stand: from its maintained counts (`job_counts`, a few rows
        whatever the job's size) and one look for its latest ETA."""
        states: dict[str, int] = {}
        unsent = 0
        for row in self.counts(job, current_only):
            if not row["state"]:
                unsent += row["n"]
                continue
            state = (
                "generation_failed"
                if row["state"] == "submitted" and row["status"] == "failed"
                else row["state"]
            )
            states[state] = states.get(state, 0) + row["n"]
        return Standing(states, unsent, self.last_due(job, current_only=current_only))

    def job_states(self, job: str) -> dict[str, int]:
        """state → how many of the job's requests are in it (`generation_failed` apart)."""
        return self.standing(job).states

    def status_counts(self, job: str | None, *, current_only: bool = True) -> list[dict[str, Any]]:
        """(model, state, status, n) rows for `job`, or for every task if None."""
        if job is not None:
            return [
                {**row, "model": row["model"] or None}
                for row in self.counts(job, current_only)
                if row["state"]
            ]
        sql = (
            "SELECT t.model, t.state, coalesce(t.status, '') AS status, count(*) AS n FROM tasks t"
        )
        return [dict(r) for r in self.store._query(sql + " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")]

    def counts(self, job: str, current_only: bool = True) -> list[dict[str, Any]]:
        """The job's rows of `job_counts`: (model, state, status, n), '' state for unsent."""
        q = self.store.sql.mark
        sql = (
            f"SELECT model, state, status, sum(n) AS n FROM job_counts WHERE job = {q}"
            + (" AND current = 1" if current_only else "")
            + " GROUP BY 1, 2, 3 HAVING sum(n) > 0 ORDER BY 1, 2, 3"
        )
        return [dict(r) for r in self.store._query(sql, [job])]

    def last_due(self, job: str | None, *, current_only: bool = True) -> str | None:
        """The latest ETA among the submitted tasks (of `job`) still processing.

        For a job, first from the latest ETA down (the processing tasks' own index), looking at
        as many as the job has requests: a big job's latest is found at once. Only if none of
        those is the job's are the job's own rows read, so either way the cost is in proportion
        to the job, not to the ledger."""
        q = self.store.sql.mark
        if job is None:
            sql = f"SELECT max(t.eta_at) FROM tasks t WHERE {_PROCESSING}"
            latest: str | None = self.store._query(sql)[0][0]
            return latest
        counts = self.counts(job, current_only)
        links = sum(row["n"] for row in counts)
        if not any(  # none processing (a job all done): nothing to look for
            row["state"] == "submitted" and (row["status"] or "processing") == "processing"
            for row in counts
        ):
            return None
        member = _linked_to_job(current_only, q)
        rows = self.store._query(
            f"SELECT t.eta_at FROM (SELECT key, eta_at FROM tasks{self.store.sql.use_index('tasks_processing_eta')}"
            f" WHERE state = 'submitted' AND coalesce(status, 'processing') = 'processing'"
            f" ORDER BY eta_at DESC LIMIT {q}) t WHERE EXISTS ({member}) LIMIT 1",
            [links, job],
        )
        if rows:
            found: str | None = rows[0][0]
            return found
        sql = (
            f"SELECT max(t.eta_at) FROM job_tasks j JOIN tasks t{self.store.sql.use_index('tasks_standing')}"
            f" ON t.key = j.key WHERE j.job = {q}{current(current_only)} AND {_PROCESSING}"
        )
        due: str | None = self.store._query(sql, [job])[0][0]
        return due

    def unsent_count(self, job: str) -> int:
        """Requests linked to `job` that were never claimed (a --limit run, say)."""
        return self.standing(job).unsent

    def open_tasks(self, job: str | None, *, current_only: bool = True) -> list[dict[str, Any]]:
        """Submitted tasks (of `job`) whose generation has not ended, soonest ETA first."""
        q = self.store.sql.mark
        sql = "SELECT t.* FROM tasks t" + (
            f" JOIN job_tasks j ON j.key = t.key AND j.job = {q}" + current(current_only)
            if job
            else ""
        )
        sql += f" WHERE {_PROCESSING} ORDER BY t.eta_at"
        return [dict(r) for r in self.store._query(sql, [job] if job else [])]

    def completed_tasks(self, job: str, *, current_only: bool = True) -> list[dict[str, Any]]:
        """The job's tasks whose generation completed, in the order they were submitted."""
        q = self.store.sql.mark
        return [
            dict(r)
            for r in self.store._query(
                f"SELECT t.*, j.label, j.meta FROM tasks t JOIN job_tasks j ON j.key = t.key AND j.job = {q}"
                + current(current_only)
                + " WHERE t.state = 'submitted' AND t.status = 'completed' ORDER BY t.submitted_at, t.key",
                [job],
            )
        ]

    def generation_counts(self, job: str | None, *, current_only: bool = True) -> dict[str, int]:
        """processing / completed / failed → how many submitted tasks (of `job`) are in it."""
        q = self.store.sql.mark
        sql = "SELECT coalesce(t.status, 'processing') AS status, count(*) AS n FROM tasks t"
        sql += (
            f" JOIN job_tasks j ON j.key = t.key AND j.job = {q}" + current(current_only)
            if job
            else ""
        )
        sql += " WHERE t.state = 'submitted' GROUP BY 1"
        counts = {"processing": 0, "completed": 0, "failed": 0}
        for row in self.store._query(sql, [job] if job else []):
            counts[row["status"]] = row["n"]
        return counts

    def unpolled_count(self, job: str, *, current_only: bool = True) -> int:
        """Submitted tasks of `job` that no poll has asked about yet."""
        q = self.store.sql.mark
        sql = (
            f"SELECT count(*) FROM tasks t JOIN job_tasks j ON j.key = t.key AND j.job = {q}"
            + current(current_only)
        )
        return int(
            self.store._query(sql + " WHERE t.state = 'submitted' AND t.checked_at IS NULL", [job])[
                0
            ][0]
        )

    def history(self, key: str) -> list[dict[str, Any]]:
        q = self.store.sql.mark
        return [
            dict(r)
            for r in self.store._query(
                f"SELECT * FROM task_history WHERE key = {q} ORDER BY replaced_at", [key]
            )
        ]

    def asks_for(self, job: str, key: str, *, current_only: bool = True) -> bool:
        """Whether `key` is one of the job's requests (a current one, unless not `current_only`)."""
        q = self.store.sql.mark
        sql = f"SELECT 1 FROM job_tasks j WHERE j.job = {q} AND j.key = {q}" + current(current_only)
        return bool(self.store._query(sql, [job, key]))
