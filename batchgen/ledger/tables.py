"""The small tables beside the tasks, each an object of its own on the ledger, as
sqlite-utils has a Table beside its Database: `ledger.prices` (prices learned from balances),
`ledger.uploads` (local images uploaded), `ledger.reviews` (picks, ratings and notes),
`ledger.runs` (every run: when, flags, counts, balances, exit code), `ledger.job_inputs`
(what each job's links were made from)."""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

from ..times import timestamp
from .backend import RunHold
from .connections import Connection
from .store import Store, current


class Table:
    """One of the ledger's tables, reached through the ledger's store (its lock and
    transactions)."""

    def __init__(self, store: Store) -> None:
        self.store = store


class Prices(Table):
    """The `prices` table: a price per class of request and API, learned from a run's balance."""

    def learned(self, api_base: str) -> dict[str, tuple[int, int | None]]:
        """class key → (credits, the run that taught it), for one API."""
        q = self.store.sql.mark
        rows = self.store._query(
            f"SELECT class, credits, run_id FROM prices WHERE api_base = {q}", [api_base]
        )
        return {row["class"]: (row["credits"], row["run_id"]) for row in rows}

    def all(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.store._query("SELECT * FROM prices ORDER BY api_base, class")]

    def record(self, api_base: str, cls: str, credits: int, run_id: int, requests: int) -> None:
        q = self.store.sql.mark
        with self.store.transaction() as conn:
            conn.execute(
                f"INSERT INTO prices (class, api_base, credits, run_id, requests, learned_at) VALUES ({q}, {q}, {q}, {q}, {q}, {q})"
                " ON CONFLICT (class, api_base) DO UPDATE SET credits = excluded.credits,"
                " run_id = excluded.run_id, requests = excluded.requests, learned_at = excluded.learned_at",
                (cls, api_base, credits, run_id, requests, timestamp()),
            )


class Uploads(Table):
    """The `uploads` table: where each local image was uploaded, per API."""

    def find(self, sha256: str, upload_base: str) -> str | None:
        """The URL a local image was uploaded to (at this API), if it was."""
        q = self.store.sql.mark
        rows = self.store._query(
            f"SELECT image_url FROM uploads WHERE sha256 = {q} AND upload_base = {q}",
            [sha256, upload_base],
        )
        return str(rows[0][0]) if rows else None

    def name_of(self, image_url: str) -> str | None:
        """The local file an uploaded image came from (as the job named it), if it was one."""
        q = self.store.sql.mark
        rows = self.store._query(
            f"SELECT name FROM uploads WHERE image_url = {q} LIMIT 1", [image_url]
        )
        return str(rows[0][0]) if rows else None

    def record(self, sha256: str, upload_base: str, image_url: str, name: str, size: int) -> None:
        q = self.store.sql.mark
        with self.store.transaction() as conn:
            conn.execute(
                f"INSERT INTO uploads (sha256, upload_base, image_url, name, size, uploaded_at) VALUES ({q}, {q}, {q}, {q}, {q}, {q})"
                " ON CONFLICT (sha256, upload_base) DO UPDATE SET image_url = excluded.image_url,"
                " name = excluded.name, size = excluded.size, uploaded_at = excluded.uploaded_at",
                (sha256, upload_base, image_url, name, size, timestamp()),
            )


class Reviews(Table):
    """The `reviews` table: a job's picks, ratings and notes."""

    def of(self, job: str, keys: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """key → the job's review of it (pick, rating, note, updated_at); of `keys` only, if
        given (a page of the job)."""
        q = self.store.sql.mark
        sql = f"SELECT key, pick, rating, note, updated_at FROM reviews WHERE job = {q}"
        if keys is None:
            return {row["key"]: dict(row) for row in self.store._query(sql, [job])}
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = self.store.sql.marks(len(chunk))
            rows = self.store._query(sql + f" AND key IN ({marks})", [job, *chunk])
            found.update((row["key"], dict(row)) for row in rows)
        return found

    def picked(self, job: str, *, current_only: bool = True) -> int:
        """How many of the job's requests are picked (its current ones, unless not
        `current_only`)."""
        q = self.store.sql.mark
        rows = self.store._query(
            # CROSS JOIN: from the job's reviews (a few) to their links, not from its links (all)
            f"SELECT count(*) FROM reviews r {self.store.sql.ordered_join} job_tasks j"
            " ON j.job = r.job AND j.key = r.key"
            f" WHERE r.job = {q} AND r.pick = 1" + current(current_only),
            [job],
        )
        return int(rows[0][0])

    def record(self, job: str, key: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Set some of `pick`, `rating`, `note` of the job's review of `key` (the others are
        kept); return the review as it now stands. `key` must be one of the job's requests."""
        q = self.store.sql.mark
        unknown = set(fields) - {"pick", "rating", "note"}
        if unknown:
            raise ValueError(f"not a review field: {', '.join(sorted(unknown))}")
        with self.store.transaction() as conn:
            if (
                conn.execute(
                    f"SELECT 1 FROM job_tasks WHERE job = {q} AND key = {q}", (job, key)
                ).fetchone()
                is None
            ):
                raise KeyError(key)
            conn.execute(
                f"INSERT INTO reviews (job, key) VALUES ({q}, {q}) ON CONFLICT DO NOTHING",
                (job, key),
            )
            assigned = ", ".join(f"{name} = {q}" for name in fields)
            conn.execute(
                f"UPDATE reviews SET {assigned}{', ' if assigned else ''}updated_at = {q} WHERE job = {q} AND key = {q}",
                (*fields.values(), timestamp(), job, key),
            )
            row = conn.execute(
                f"SELECT key, pick, rating, note, updated_at FROM reviews WHERE job = {q} AND key = {q}",
                (job, key),
            ).fetchone()
        return dict(row)

    def chosen(
        self, job: str, *, picked: bool, rating_at_least: int | None, current_only: bool = True
    ) -> list[dict[str, Any]]:
        """The job's current requests a review chose (picked, and/or rated at least N), with
        their label and meta, in the order they were submitted."""
        q = self.store.sql.mark
        where = []
        params: list[Any] = [job]
        if picked:
            where.append("r.pick = 1")
        if rating_at_least is not None:
            where.append(f"r.rating >= {q}")
            params.append(rating_at_least)
        sql = (
            "SELECT t.*, j.label, j.meta, j.job_file, r.pick, r.rating, r.note FROM reviews r"
            " JOIN job_tasks j ON j.job = r.job AND j.key = r.key JOIN tasks t ON t.key = r.key"
            f" WHERE r.job = {q}{current(current_only)} AND "
            + " AND ".join(where or ["true"])
            + " ORDER BY t.submitted_at IS NULL, t.submitted_at, t.key"
        )
        return [dict(r) for r in self.store._query(sql, params)]


class Runs(Table):
    """The `runs` table: one row per run."""

    def latest(self, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest runs (of `job`), newest first."""
        q = self.store.sql.mark
        sql = (
            "SELECT * FROM runs"
            + (f" WHERE job = {q}" if job else "")
            + f" ORDER BY id DESC LIMIT {q}"
        )
        return [dict(r) for r in self.store._query(sql, [job, limit] if job else [limit])]

    def start(self, job: str, job_file: str, api_base: str, flags: dict[str, Any]) -> int:
        """A run's row, without its hold (see `begin`, which a run uses)."""
        with self.store.transaction() as conn:
            return self._insert(conn, job, job_file, api_base, flags)

    @staticmethod
    def _insert(
        conn: Connection, job: str, job_file: str, api_base: str, flags: dict[str, Any]
    ) -> int:
        q = conn.dialect.mark
        conn.execute(
            f"INSERT INTO runs (started_at, job, job_file, api_base, flags, pid) VALUES ({q}, {q}, {q}, {q}, {q}, {q})",
            (timestamp(), job, job_file, api_base, json.dumps(flags), os.getpid()),
        )
        # Read back in its transaction, which writes alone (in either engine): the spelling
        # both share, where a cursor's lastrowid is SQLite's own.
        return int(conn.execute("SELECT max(id) FROM runs").fetchone()[0])

    def of_this_process(self, job: str) -> dict[str, Any] | None:
        """The latest run of `job` this process made (`run --json` reports it)."""
        q = self.store.sql.mark
        rows = self.store._query(
            f"SELECT * FROM runs WHERE job = {q} AND pid = {q} ORDER BY id DESC LIMIT 1",
            [job, os.getpid()],
        )
        return dict(rows[0]) if rows else None

    def begin(
        self, job: str, job_file: str, api_base: str, flags: dict[str, Any]
    ) -> tuple[int, RunHold]:
        """A run's row, and its hold (`Store.hold_run`) taken in the row's own transaction: no
        other process ever sees the row of a live run without its hold, and takes it for gone
        (`Recovery.recover`)."""
        with self.store.transaction() as conn:
            run_id = self._insert(conn, job, job_file, api_base, flags)
            return run_id, self.store.hold_run(run_id)

    def open_ids(self) -> list[int]:
        """The runs whose end is not recorded: going, or gone without a word (killed)."""
        return [int(r[0]) for r in self.store._query("SELECT id FROM runs WHERE ended_at IS NULL")]

    def alive(self) -> list[int]:
        """The runs going now, in any process on any machine (each holds its lock)."""
        return [run for run in self.open_ids() if self.store.run_is_alive(run)]

    def end(self, run_id: int, counts: dict[str, Any], exit_code: int) -> None:
        q = self.store.sql.mark
        with self.store.transaction() as conn:
            conn.execute(
                f"UPDATE runs SET ended_at = {q}, counts = {q}, exit_code = {q} WHERE id = {q}",
                (timestamp(), json.dumps(counts), exit_code, run_id),
            )

    def set_exit_code(self, run_id: int, exit_code: int) -> None:
        """The command's exit code, once what came after the sending (wait, download) ended."""
        q = self.store.sql.mark
        with self.store.transaction() as conn:
            conn.execute(f"UPDATE runs SET exit_code = {q} WHERE id = {q}", (exit_code, run_id))

    def record_balance(
        self, run_id: int, *, before: int | None = None, after: int | None = None
    ) -> None:
        q = self.store.sql.mark
        with self.store.transaction() as conn:
            if before is not None:
                conn.execute(
                    f"UPDATE runs SET credits_before = {q} WHERE id = {q}", (before, run_id)
                )
            if after is not None:
                conn.execute(f"UPDATE runs SET credits_after = {q} WHERE id = {q}", (after, run_id))

    def overlapping(self, run_id: int) -> int:
        """How many other runs on this ledger were going at any time during run `run_id`."""
        q = self.store.sql.mark
        row = self.store._query(
            f"SELECT count(*) FROM runs o, runs r WHERE r.id = {q} AND o.id != r.id"
            " AND o.started_at <= coalesce(r.ended_at, o.started_at) AND coalesce(o.ended_at, '9999') >= r.started_at",
            [run_id],
        )
        return int(row[0][0])


class JobInput(NamedTuple):
    """What a job's links were made from (a digest, see unchanged.py), how many requests they
    are, and the validation's warnings (as `Problem` fields)."""

    digest: str
    requests: int
    warnings: list[dict[str, Any]]


class JobInputs(Table):
    """The `job_inputs` table: per job, what its current links were made from. It is written
    only by linking, in the links' own transaction (`Claims.linking`)."""

    def recorded(self, job: str, job_file: str, digest: str) -> JobInput | None:
        """What was recorded for `job` linked from `job_file`, if it was made from `digest`."""
        q = self.store.sql.mark
        rows = self.store._query(
            f"SELECT requests, warnings FROM job_inputs WHERE job = {q} AND job_file = {q} AND digest = {q}",
            [job, job_file, digest],
        )
        if not rows:
            return None
        return JobInput(digest, int(rows[0]["requests"]), json.loads(rows[0]["warnings"]))

    @staticmethod
    def write(conn: Connection, job: str, job_file: str, made: JobInput | None) -> None:
        """Replace the job's row, within the caller's transaction; None leaves it without one
        (its next run is planned in full)."""
        q = conn.dialect.mark
        conn.execute(f"DELETE FROM job_inputs WHERE job = {q}", (job,))
        if made is not None:
            conn.execute(
                "INSERT INTO job_inputs (job, job_file, digest, requests, warnings, recorded_at)"
                f" VALUES ({q}, {q}, {q}, {q}, {q}, {q})",
                (job, job_file, made.digest, made.requests, json.dumps(made.warnings), timestamp()),
            )
