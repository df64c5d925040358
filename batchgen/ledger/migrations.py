"""The ledger's schema, as numbered migrations applied in order and recorded in a table.

Each migration is a small function; a ledger created by any version of batchgen is brought
up to date by applying the ones it lacks. Never edit a migration that has shipped: add one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite_utils

Migration = Callable[["sqlite_utils.Database"], None]
MIGRATIONS: list[tuple[str, Migration]] = []
TABLE = "_batchgen_migrations"
# SQL both engines take, shared by a migration and its PostgreSQL step (postgres_schema.STEPS).
RUNS_OPEN_INDEX = "CREATE INDEX IF NOT EXISTS runs_open ON runs (id) WHERE ended_at IS NULL"


def migration(function: Migration) -> Migration:
    MIGRATIONS.append((function.__name__, function))
    return function


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations the ledger lacks, all in one transaction; return their names.

    Under BEGIN IMMEDIATE, so two processes opening a new ledger at once don't both migrate:
    the second waits, then finds the work done.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, applied_at TEXT)")
        done = {row[0] for row in conn.execute(f"SELECT name FROM {TABLE}")}
        pending = [(name, function) for name, function in MIGRATIONS if name not in done]
        applied = []
        if pending:
            # Imported only when there is work for it: a ledger already up to date (every
            # command after the first) does not pay sqlite-utils' ~35 ms import at each start.
            import sqlite_utils

            db = sqlite_utils.Database(conn)
        for name, function in pending:
            function(db)  # sqlite-utils joins the open transaction
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            conn.execute(f"INSERT INTO {TABLE} (name, applied_at) VALUES (?, ?)", (name, stamp))
            applied.append(name)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return applied


@migration
def m001_tasks_jobs_runs(db: sqlite_utils.Database) -> None:
    db.table("tasks").create(
        {
            "key": str,  # SHA-256 of {api, body, variant}: the request's identity
            "job": str,  # the first job that asked for it
            "api_base": str,
            "model_id": str,
            "prompt": str,
            "request": str,  # the body as sent (JSON)
            "variant": int,
            "state": str,  # sending, submitted, rejected, failed, in_doubt
            "task_id": str,
            "estimated_time": float,
            "submitted_at": str,
            "eta_at": str,
            "attempts": int,
            "error": str,
            "status": str,  # processing, completed, failed
            "result_urls": str,  # JSON list
            "checked_at": str,
            "files": str,  # JSON list of paths
            "updated_at": str,
            "run_id": int,  # the run that last claimed it (to tell a crashed run's rows)
        },
        pk="key",
        not_null={"job", "api_base", "request", "variant", "state", "attempts"},
        defaults={"attempts": 0},
    )
    db.table("tasks").create_index(["state"])
    db.table("tasks").create_index(["task_id"])
    db.table("job_tasks").create({"job": str, "job_file": str, "key": str}, pk=("job", "key"))
    db.table("job_tasks").create_index(["key"])
    db.table("runs").create(
        {
            "id": int,
            "started_at": str,
            "ended_at": str,
            "job": str,
            "job_file": str,
            "api_base": str,
            "flags": str,  # JSON: the options the run was given
            "counts": str,  # JSON: what it did
            "exit_code": int,
            "pid": int,
        },
        pk="id",
    )


@migration
def m002_canonical_api_base(db: sqlite_utils.Database) -> None:
    """Store each `api_base` in its canonical spelling, but only where the row's key stays
    right: a key is the hash of {api, body, variant}, so a row whose key was made from another
    spelling keeps that spelling (and its key). Ledgers made before keep working as they were."""
    import hashlib
    import json

    from ..errors import UsageError
    from ..urls import canonical_base_url

    conn = db.conn
    for (api_base,) in conn.execute("SELECT DISTINCT api_base FROM tasks").fetchall():
        try:
            canonical = canonical_base_url(api_base)
        except UsageError:
            continue
        if canonical == api_base:
            continue
        rows = conn.execute(
            "SELECT key, request, variant FROM tasks WHERE api_base = ?", (api_base,)
        ).fetchall()
        for key, request, variant in rows:
            document = {"api": canonical, "body": json.loads(request), "variant": variant}
            text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            if hashlib.sha256(text.encode("utf-8")).hexdigest() == key:
                conn.execute("UPDATE tasks SET api_base = ? WHERE key = ?", (canonical, key))


@migration
def m003_credits(db: sqlite_utils.Database) -> None:
    """Spend control: the balance around each run, the prices learned from it, and the earlier
    task ids of requests generated again (`run --regenerate-failed`)."""
    db.table("runs").add_column("credits_before", int)
    db.table("runs").add_column("credits_after", int)
    db.table("prices").create(
        {
            "class": str,  # the request class (JSON: as the provider's catalogue spells it)
            "api_base": str,
            "credits": int,
            "run_id": int,  # the evidence: the run whose balance drop taught it
            "requests": int,  # how many requests that run submitted
            "learned_at": str,
        },
        pk=("class", "api_base"),
    )
    db.table("task_history").create(
        {
            "key": str,
            "task_id": str,
            "submitted_at": str,
            "status": str,
            "result_urls": str,
            "error": str,
            "replaced_at": str,  # when a later run sent the request again
            "run_id": int,  # that later run
        },
    )
    db.table("task_history").create_index(["key"])


@migration
def m004_labels(db: sqlite_utils.Database) -> None:
    """A request's `id` and `meta`, per job that asks for it (neither is sent)."""
    db.table("job_tasks").add_column("label", str)
    db.table("job_tasks").add_column("meta", str)  # JSON


@migration
def m005_uploads(db: sqlite_utils.Database) -> None:
    """Local images uploaded, once per distinct content and place they were uploaded to."""
    db.table("uploads").create(
        {
            "sha256": str,
            "upload_base": str,
            "image_url": str,
            "name": str,
            "size": int,
            "uploaded_at": str,
        },
        pk=("sha256", "upload_base"),
    )


@migration
def m006_current(db: sqlite_utils.Database) -> None:
    """Whether the job's file still asks for the request (0: superseded by an edit)."""
    db.table("job_tasks").add_column("current", int, not_null_default=1)


@migration
def m007_reviews(db: sqlite_utils.Database) -> None:
    """What a person made of each video of a job (`batchgen review`): picked or rejected, a
    rating, a note. Per job: the same request can be a winner in one job and not another."""
    db.table("reviews").create(
        {
            "key": str,
            "job": str,
            "pick": int,  # 1 picked, 0 rejected, NULL not decided
            "rating": int,  # 1-5, or NULL
            "note": str,
            "updated_at": str,
        },
        pk=("job", "key"),
    )


@migration
def m008_standing_indexes(db: sqlite_utils.Database) -> None:
    """Indexes that answer "where does each request of this job stand" without reading the
    tasks' rows (bodies, URLs: ~1 KB each), so a run's plan and summary and `status JOB`
    cost in proportion to the job, and little per request (SPEC §6.7)."""
    db.table("tasks").create_index(
        ["key", "state", "status", "eta_at", "model_id"], index_name="tasks_standing"
    )
    db.table("job_tasks").create_index(["job", "current", "key"], index_name="job_tasks_current")


@migration
def m009_keep_replaced_task_ids(db: sqlite_utils.Database) -> None:
    """Whatever writes over a row's task id (a request sent again, a second answer, a journal
    replayed), the earlier id goes to `task_history` first. A task id is a paid video: one
    the ledger forgets is paid for and never fetched. In the schema, not in each writer, so
    that no way of updating a row can drop one."""
    db.execute(
        """
        CREATE TRIGGER tasks_keep_replaced_task_id
        BEFORE UPDATE OF task_id ON tasks
        WHEN OLD.task_id IS NOT NULL AND NEW.task_id IS NOT OLD.task_id
        BEGIN
            INSERT INTO task_history (key, task_id, submitted_at, status, result_urls, error, replaced_at, run_id)
            VALUES (OLD.key, OLD.task_id, OLD.submitted_at, OLD.status, OLD.result_urls, OLD.error,
                    coalesce(NEW.updated_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), NEW.run_id);
        END
        """
    )


# A job's counts: (job, current, model, state, status) → how many of its requests stand
# there, kept by triggers in the same transaction as every write, so `status JOB` and a
# run's summary read a few rows whatever the job's or the ledger's size. A request the job
# asks for that was never claimed (no tasks row) counts under model, state and status ''.
# The model's column was called `model_id` until m014: the statements are made for either name.
_COUNT_UP = (
    "INSERT INTO job_counts (job, current, {column}, state, status, n) {rows}"
    " ON CONFLICT (job, current, {column}, state, status) DO UPDATE SET n = n + 1;"
)
_COUNT_DOWN = (
    "UPDATE job_counts SET n = n - 1"
    " WHERE {column} = {model} AND state = {state} AND status = {status} AND {which};"
)
_LINKS = "(job, current) IN (SELECT job, current FROM job_tasks WHERE key = {row}.key)"
_UNSENT = {"model": "''", "state": "''", "status": "''"}


def _task(row: str, column: str) -> dict[str, str]:
    return {
        "model": f"coalesce({row}.{column}, '')",
        "state": f"{row}.state",
        "status": f"coalesce({row}.status, '')",
    }


def _linked(row: str, column: str) -> dict[str, str]:
    """A job_tasks row's tuple, looking its task up (missing: the unsent tuple)."""
    task = f"(SELECT {{}} FROM tasks WHERE key = {row}.key)"
    return {
        "model": f"coalesce({task.format(column)}, '')",
        "state": f"coalesce({task.format('state')}, '')",
        "status": f"coalesce({task.format('status')}, '')",
    }


def _up_each_link(row: str, of: dict[str, str], column: str) -> str:
    rows = (
        f"SELECT job, current, {of['model']}, {of['state']}, {of['status']}, 1"
        f" FROM job_tasks WHERE key = {row}.key"
    )
    return _COUNT_UP.format(rows=rows, column=column)


def _down_each_link(row: str, of: dict[str, str], column: str) -> str:
    return _COUNT_DOWN.format(**of, which=_LINKS.format(row=row), column=column)


def _up_link(row: str, column: str) -> str:
    of = _linked(row, column)
    rows = f"SELECT {row}.job, {row}.current, {of['model']}, {of['state']}, {of['status']}, 1"
    return _COUNT_UP.format(rows=rows + " WHERE true", column=column)


def _down_link(row: str, column: str) -> str:
    which = f"job = {row}.job AND current = {row}.current"
    return _COUNT_DOWN.format(**_linked(row, column), which=which, column=column)


def job_counts_from_rows(column: str = "model") -> str:
    """job_counts made from the rows, as the triggers keep it (m010 fills it so; a copied
    ledger too)."""
    return (
        f"INSERT INTO job_counts (job, current, {column}, state, status, n)"
        f" SELECT j.job, j.current, coalesce(t.{column}, ''), coalesce(t.state, ''),"
        " coalesce(t.status, ''), count(*)"
        " FROM job_tasks j LEFT JOIN tasks t ON t.key = j.key GROUP BY 1, 2, 3, 4, 5"
    )


def job_count_triggers(column: str = "model") -> dict[str, tuple[str, str, list[str]]]:
    """name → (when it fires, on what condition, its statements): SQLite's triggers here, and
    the same statements in PostgreSQL's functions (ledger/postgres_schema.py)."""
    task_old, task_new = _task("OLD", column), _task("NEW", column)
    return {
        "job_counts_link": ("AFTER INSERT ON job_tasks", "", [_up_link("NEW", column)]),
        "job_counts_unlink": ("AFTER DELETE ON job_tasks", "", [_down_link("OLD", column)]),
        "job_counts_relink": (
            "AFTER UPDATE OF job, key, current ON job_tasks",
            "",
            [_down_link("OLD", column), _up_link("NEW", column)],
        ),
        "job_counts_claim": (
            "AFTER INSERT ON tasks",
            "",
            [_down_each_link("NEW", _UNSENT, column), _up_each_link("NEW", task_new, column)],
        ),
        "job_counts_forget": (
            "AFTER DELETE ON tasks",
            "",
            [_down_each_link("OLD", task_old, column), _up_each_link("OLD", _UNSENT, column)],
        ),
        "job_counts_move": (
            f"AFTER UPDATE OF {column}, state, status ON tasks",
            f"coalesce(OLD.{column}, '') != coalesce(NEW.{column}, '')"
            " OR OLD.state != NEW.state OR coalesce(OLD.status, '') != coalesce(NEW.status, '')",
            [_down_each_link("OLD", task_old, column), _up_each_link("NEW", task_new, column)],
        ),
    }


JOB_COUNTS_FROM_ROWS = job_counts_from_rows()
JOB_COUNT_TRIGGERS = job_count_triggers()


@migration
def m010_job_counts(db: sqlite_utils.Database) -> None:
    """Counts per job kept by triggers (see `_COUNT_UP`), filled once from what is there."""
    conn = db.conn
    shipped = "model_id"  # the model's column as it was then (m014 renames it)
    conn.execute(
        "CREATE TABLE job_counts (job TEXT NOT NULL, current INTEGER NOT NULL,"
        f" {shipped} TEXT NOT NULL, state TEXT NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL,"
        f" PRIMARY KEY (job, current, {shipped}, state, status)) WITHOUT ROWID"
    )
    conn.execute(job_counts_from_rows(shipped))
    for name, (when, condition, statements) in job_count_triggers(shipped).items():
        condition = f" WHEN {condition}" if condition else ""
        conn.execute(
            f"CREATE TRIGGER {name} {when} FOR EACH ROW{condition} BEGIN {' '.join(statements)} END"
        )
    # The latest ETA of a job's tasks still processing, found from the latest down.
    conn.execute(
        "CREATE INDEX tasks_processing_eta ON tasks (eta_at, key)"
        " WHERE state = 'submitted' AND coalesce(status, 'processing') = 'processing'"
    )


@migration
def m011_job_inputs(db: sqlite_utils.Database) -> None:
    """What a job's current links were made from (see unchanged.py): a digest of the job file,
    the files it refers to and the code that expanded them, with the job's warnings."""
    db.conn.execute(
        "CREATE TABLE job_inputs (job TEXT PRIMARY KEY, job_file TEXT NOT NULL,"
        " digest TEXT NOT NULL, requests INTEGER NOT NULL, warnings TEXT NOT NULL,"
        " recorded_at TEXT NOT NULL)"
    )


@migration
def m012_tasks_oldest_first(db: sqlite_utils.Database) -> None:
    """`tasks` (oldest first) of a whole ledger read in this index's order, not sorted: a
    million rows of ~1 KB each went through a temporary b-tree (~60% of `tasks --json`)."""
    db.conn.execute(
        "CREATE INDEX tasks_oldest_first ON tasks (submitted_at IS NULL, submitted_at, key)"
    )


@migration
def m013_runs_open(db: sqlite_utils.Database) -> None:
    """The runs whose end is not recorded, in an index of their own: every command's recovery
    looks for them (runs that ended without a word), and a long history of runs is not read
    to find the few. (The first migration a PostgreSQL ledger is brought up to as well:
    postgres_schema.STEPS.)"""
    db.conn.execute(RUNS_OPEN_INDEX)


# m014: a task's provider, and the model's column named for what it holds in any provider's
# ledger (the provider's id for the model), not for one provider's wire field.
PROVIDERS_AND_MODEL = (
    "ALTER TABLE tasks RENAME COLUMN model_id TO model",
    "ALTER TABLE job_counts RENAME COLUMN model_id TO model",
    "ALTER TABLE tasks ADD COLUMN provider TEXT",
)


@migration
def m014_providers(db: sqlite_utils.Database) -> None:
    """`tasks.provider` (the provider a request went to; NULL: the default, for rows of the
    ledgers before it), and `model_id` renamed `model` in `tasks` and `job_counts`. SQLite
    renames the column in the indexes and triggers that name it, too."""
    for statement in PROVIDERS_AND_MODEL:
        db.conn.execute(statement)
