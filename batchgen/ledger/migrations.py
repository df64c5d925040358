"""The ledger's schema, said once for both engines: numbered migrations applied in order and
recorded in a table (`_batchgen_migrations`).

Each migration is a few steps: a table made (its columns as Python types, the way sqlite-utils
takes them), a column added, an index, SQL (with its PostgreSQL spelling where the two engines
differ), or a pass over the rows. A SQLite ledger takes them through sqlite-utils (`migrate`);
a PostgreSQL one through `postgres_schema.py`, which spells the same steps in its own DDL. A new
ledger on either engine is made by the same steps an old one is brought up to date by, so the
two cannot drift apart. Never edit a migration that has shipped: add one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from .connections import SQLITE, Connection, Dialect

if TYPE_CHECKING:
    import sqlite_utils

TABLE = "_batchgen_migrations"


@dataclass(frozen=True)
class Table:
    """A table made: columns in order, as sqlite-utils takes them (`str`, `int`, `float`)."""

    name: str
    columns: dict[str, type]
    pk: str | tuple[str, ...] | None = None  # a single `int` key counts up on its own
    not_null: frozenset[str] = frozenset()
    defaults: dict[str, Any] = field(default_factory=dict)
    wide: frozenset[str] = frozenset()  # BIGINT in PostgreSQL (credits and sizes past 2**31)
    # PostgreSQL's own copy of the `rowid` SQLite gives every table, where the ledger reads it
    rowid: bool = False


@dataclass(frozen=True)
class Column:
    """A column added to a table."""

    table: str
    name: str
    type: type
    not_null_default: Any = None
    wide: bool = False


@dataclass(frozen=True)
class Index:
    """An index on columns (named as sqlite-utils names it, `idx_<table>_<columns>`, if not)."""

    table: str
    columns: tuple[str, ...]
    name: str | None = None

    @property
    def called(self) -> str:
        return self.name or f"idx_{self.table}_{'_'.join(self.columns)}"


@dataclass(frozen=True)
class Sql:
    """Statements both engines take, or each its own (`postgresql`: "" for none)."""

    sqlite: str
    postgresql: str | None = None  # None: the same as SQLite's

    def for_engine(self, dialect: Dialect) -> str:
        if dialect.name == SQLITE.name or self.postgresql is None:
            return self.sqlite
        return self.postgresql


@dataclass(frozen=True)
class Rows:
    """A pass over the rows (a migration of data, not of shape)."""

    function: Callable[[Connection, Dialect], None]


Step = Table | Column | Index | Sql | Rows
MIGRATIONS: list[tuple[str, tuple[Step, ...]]] = []


def migration(name: str, *steps: Step) -> None:
    MIGRATIONS.append((name, steps))


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations a SQLite ledger lacks, all in one transaction; return their names.

    Under BEGIN IMMEDIATE, so two processes opening a new ledger at once don't both migrate:
    the second waits, then finds the work done.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, applied_at TEXT)")
        done = {row[0] for row in conn.execute(f"SELECT name FROM {TABLE}")}
        pending = [(name, steps) for name, steps in MIGRATIONS if name not in done]
        applied = []
        if pending:
            # Imported only when there is work for it: a ledger already up to date (every
            # command after the first) does not pay sqlite-utils' ~35 ms import at each start.
            import sqlite_utils

            db = sqlite_utils.Database(conn)
        for name, steps in pending:
            for step in steps:
                _apply_sqlite(db, step)  # sqlite-utils joins the open transaction
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            conn.execute(f"INSERT INTO {TABLE} (name, applied_at) VALUES (?, ?)", (name, stamp))
            applied.append(name)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return applied


def _apply_sqlite(db: sqlite_utils.Database, step: Step) -> None:
    if isinstance(step, Table):
        db.table(step.name).create(
            step.columns,
            pk=step.pk,
            not_null=set(step.not_null) or None,
            defaults=step.defaults or None,
        )
    elif isinstance(step, Column):
        db.table(step.table).add_column(
            step.name, step.type, not_null_default=step.not_null_default
        )
    elif isinstance(step, Index):
        db.table(step.table).create_index(list(step.columns), index_name=step.name)
    elif isinstance(step, Sql):
        if step.sqlite:
            db.conn.execute(step.sqlite)
    else:
        step.function(cast(Connection, db.conn), SQLITE)


def canonical_api_base(conn: Connection, dialect: Dialect) -> None:
    """Store each `api_base` in its canonical spelling, but only where the row's key stays
    right: a key is the hash of {api, body, variant}, so a row whose key was made from another
    spelling keeps that spelling (and its key). Ledgers made before keep working as they were."""
    import hashlib
    import json

    from ..errors import UsageError
    from ..urls import canonical_base_url

    q = dialect.mark
    for (api_base,) in conn.execute("SELECT DISTINCT api_base FROM tasks").fetchall():
        try:
            canonical = canonical_base_url(api_base)
        except UsageError:
            continue
        if canonical == api_base:
            continue
        rows = conn.execute(
            f"SELECT key, request, variant FROM tasks WHERE api_base = {q}", (api_base,)
        ).fetchall()
        for key, request, variant in rows:
            document = {"api": canonical, "body": json.loads(request), "variant": variant}
            text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            if hashlib.sha256(text.encode("utf-8")).hexdigest() == key:
                conn.execute(f"UPDATE tasks SET api_base = {q} WHERE key = {q}", (canonical, key))


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


def _count_function(name: str, statements: list[str], *, replace: bool = False) -> str:
    """A job count trigger's statements as a PostgreSQL function."""
    # In PostgreSQL a bare `n` in an upsert's SET could be the existing row's or the one
    # proposed: it must be named. (SQLite's triggers, shipped, are left as they are.)
    body = " ".join(s.replace("SET n = n + 1", "SET n = job_counts.n + 1") for s in statements)
    return (
        f"CREATE {'OR REPLACE ' if replace else ''}FUNCTION {name}() RETURNS trigger"
        f" LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$;"
    )


def _count_triggers(column: str) -> list[Sql]:
    """The job counts' triggers on the model's `column`, one step each: SQLite's, and
    PostgreSQL's functions running the same statements."""
    steps = []
    for name, (when, condition, statements) in job_count_triggers(column).items():
        if_so = f" WHEN {condition}" if condition else ""
        steps.append(
            Sql(
                f"CREATE TRIGGER {name} {when} FOR EACH ROW{if_so} BEGIN {' '.join(statements)} END",
                _count_function(name, statements)
                + f" CREATE TRIGGER {name} {when} FOR EACH ROW"
                + (f" WHEN ({condition})" if condition else "")
                + f" EXECUTE FUNCTION {name}();",
            )
        )
    return steps


# The columns of each table in order, with SQLite's affinities (TEXT, INTEGER, REAL), so a
# query of the README's works in psql as in sqlite3.
migration(
    "m001_tasks_jobs_runs",
    Table(
        "tasks",
        {
            "key": str,  # SHA-256 of {api, body, variant}: the request's identity
            "job": str,  # the first job that asked for it
            "api_base": str,
            "model_id": str,  # (m014 names it `model`)
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
        not_null=frozenset({"job", "api_base", "request", "variant", "state", "attempts"}),
        defaults={"attempts": 0},
    ),
    Index("tasks", ("state",)),
    Index("tasks", ("task_id",)),
    Table("job_tasks", {"job": str, "job_file": str, "key": str}, pk=("job", "key")),
    Index("job_tasks", ("key",)),
    Table(
        "runs",
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
    ),
)
migration("m002canonical_api_base", Rows(canonical_api_base))
# Spend control: the balance around each run, the prices learned from it, and the earlier
# task ids of requests generated again (`run --regenerate-failed`).
migration(
    "m003_credits",
    Column("runs", "credits_before", int, wide=True),
    Column("runs", "credits_after", int, wide=True),
    Table(
        "prices",
        {
            "class": str,  # the request class (JSON: as the provider's catalogue spells it)
            "api_base": str,
            "credits": int,
            "run_id": int,  # the evidence: the run whose balance drop taught it
            "requests": int,  # how many requests that run submitted
            "learned_at": str,
        },
        pk=("class", "api_base"),
        wide=frozenset({"credits"}),
    ),
    Table(
        "task_history",
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
        rowid=True,  # the ledger reads a request's last earlier task by it
    ),
    Index("task_history", ("key",)),
)
# A request's `id` and `meta`, per job that asks for it (neither is sent).
migration("m004_labels", Column("job_tasks", "label", str), Column("job_tasks", "meta", str))
# Local images uploaded, once per distinct content and place they were uploaded to.
migration(
    "m005_uploads",
    Table(
        "uploads",
        {
            "sha256": str,
            "upload_base": str,
            "image_url": str,
            "name": str,
            "size": int,
            "uploaded_at": str,
        },
        pk=("sha256", "upload_base"),
        wide=frozenset({"size"}),
    ),
)
# Whether the job's file still asks for the request (0: superseded by an edit).
migration("m006_current", Column("job_tasks", "current", int, not_null_default=1))
# What a person made of each video of a job (`batchgen review`): picked or rejected, a
# rating, a note. Per job: the same request can be a winner in one job and not another.
migration(
    "m007_reviews",
    Table(
        "reviews",
        {
            "key": str,
            "job": str,
            "pick": int,  # 1 picked, 0 rejected, NULL not decided
            "rating": int,  # 1-5, or NULL
            "note": str,
            "updated_at": str,
        },
        pk=("job", "key"),
    ),
)
# Indexes that answer "where does each request of this job stand" without reading the tasks'
# rows (bodies, URLs: ~1 KB each), so a run's plan and summary and `status JOB` cost in
# proportion to the job, and little per request (SPEC §6.7).
migration(
    "m008_standing_indexes",
    Index("tasks", ("key", "state", "status", "eta_at", "model_id"), "tasks_standing"),
    Index("job_tasks", ("job", "current", "key"), "job_tasks_current"),
)
# Whatever writes over a row's task id (a request sent again, a second answer, a journal
# replayed), the earlier id goes to `task_history` first. A task id is a paid video: one the
# ledger forgets is paid for and never fetched. In the schema, not in each writer, so that no
# way of updating a row can drop one.
migration(
    "m009_keep_replaced_task_ids",
    Sql(
        """
        CREATE TRIGGER tasks_keep_replaced_task_id
        BEFORE UPDATE OF task_id ON tasks
        WHEN OLD.task_id IS NOT NULL AND NEW.task_id IS NOT OLD.task_id
        BEGIN
            INSERT INTO task_history (key, task_id, submitted_at, status, result_urls, error, replaced_at, run_id)
            VALUES (OLD.key, OLD.task_id, OLD.submitted_at, OLD.status, OLD.result_urls, OLD.error,
                    coalesce(NEW.updated_at, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), NEW.run_id);
        END
        """,
        """
CREATE FUNCTION tasks_keep_replaced_task_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_history (key, task_id, submitted_at, status, result_urls, error, replaced_at, run_id)
    VALUES (OLD.key, OLD.task_id, OLD.submitted_at, OLD.status, OLD.result_urls, OLD.error,
            coalesce(NEW.updated_at,
                     to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
            NEW.run_id);
    RETURN NEW;
END $$;
CREATE TRIGGER tasks_keep_replaced_task_id BEFORE UPDATE OF task_id ON tasks FOR EACH ROW
    WHEN (OLD.task_id IS NOT NULL AND NEW.task_id IS DISTINCT FROM OLD.task_id)
    EXECUTE FUNCTION tasks_keep_replaced_task_id();
""",
    ),
)
# Counts per job kept by triggers (see `_COUNT_UP`), filled once from what is there; and the
# latest ETA of a job's tasks still processing, found from the latest down.
_SHIPPED = "model_id"  # the model's column as it was then (m014 renames it)
_COUNTS = (
    "CREATE TABLE job_counts (job TEXT NOT NULL, current INTEGER NOT NULL,"
    f" {_SHIPPED} TEXT NOT NULL, state TEXT NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL,"
    f" PRIMARY KEY (job, current, {_SHIPPED}, state, status))"
)
migration(
    "m010_job_counts",
    Sql(_COUNTS + " WITHOUT ROWID", _COUNTS),
    Sql(job_counts_from_rows(_SHIPPED)),
    *_count_triggers(_SHIPPED),
    Sql(
        "CREATE INDEX tasks_processing_eta ON tasks (eta_at, key)"
        " WHERE state = 'submitted' AND coalesce(status, 'processing') = 'processing'"
    ),
)
# What a job's current links were made from (see unchanged.py): a digest of the job file, the
# files it refers to and the code that expanded them, with the job's warnings.
migration(
    "m011_job_inputs",
    Sql(
        "CREATE TABLE job_inputs (job TEXT PRIMARY KEY, job_file TEXT NOT NULL,"
        " digest TEXT NOT NULL, requests INTEGER NOT NULL, warnings TEXT NOT NULL,"
        " recorded_at TEXT NOT NULL)"
    ),
)
# `tasks` (oldest first) of a whole ledger read in this index's order, not sorted: a million
# rows of ~1 KB each went through a temporary b-tree (~60% of `tasks --json`).
migration(
    "m012_tasks_oldest_first",
    Sql(
        "CREATE INDEX tasks_oldest_first ON tasks (submitted_at IS NULL, submitted_at, key)",
        "CREATE INDEX tasks_oldest_first ON tasks ((submitted_at IS NULL), submitted_at, key)",
    ),
)
# The runs whose end is not recorded, in an index of their own: every command's recovery
# looks for them (runs that ended without a word), and a long history of runs is not read to
# find the few.
migration(
    "m013_runs_open",
    Sql("CREATE INDEX IF NOT EXISTS runs_open ON runs (id) WHERE ended_at IS NULL"),
)
# `tasks.provider` (the provider a request went to; NULL: the default, for rows of the ledgers
# before it), and `model_id` renamed `model` in `tasks` and `job_counts`: named for what it
# holds in any provider's ledger (the provider's id for the model). SQLite renames the column
# in the indexes and triggers that name it; PostgreSQL in its triggers' columns and
# conditions, but not in their functions' bodies, which are made again.
migration(
    "m014_providers",
    Sql("ALTER TABLE tasks RENAME COLUMN model_id TO model"),
    Sql("ALTER TABLE job_counts RENAME COLUMN model_id TO model"),
    Sql("ALTER TABLE tasks ADD COLUMN provider TEXT"),
    Sql(
        "",
        "\n".join(
            _count_function(name, statements, replace=True)
            for name, (_, _, statements) in job_count_triggers("model").items()
        ),
    ),
)
# What a provider's create answered beside the task id that its get needs to find the task
# again (`Outcome.handle`: a status URL, where a provider's URLs name more than the id).
migration("m015_task_handles", Column("tasks", "task_handle", str))
