"""A job's counts (`job_counts`) are kept by triggers, so `status JOB` and a run's summary read a
few rows whatever the job's or the ledger's size; and they always equal what the rows say."""

from __future__ import annotations

import sqlite3

from helpers import assert_counts_kept, counts_recomputed, job_text, ledger_sql, prompts, steps

from batchgen.ledger import Ledger

FAST = ("--yes", "--rpm", "0")
STAMP = "2026-11-30T12:00:00.000Z"


def fill(ledger: Ledger, job: str, first: int, n: int, *, eta: str = STAMP) -> None:
    """`n` submitted tasks linked to `job`, a third of them completed, the rest processing."""
    conn = ledger.db.conn
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO tasks (key, job, api_base, model, request, variant, state, task_id,"
        " submitted_at, eta_at, attempts, status) VALUES (?, ?, 'https://api', '2-9', '{}', 0,"
        " 'submitted', ?, ?, ?, 1, ?)",
        (
            (f"{i:064x}", job, f"t{i}", STAMP, eta, "completed" if i % 3 == 0 else "processing")
            for i in range(first, first + n)
        ),
    )
    conn.executemany(
        "INSERT INTO job_tasks (job, job_file, key) VALUES (?, ?, ?)",
        ((job, f"{job}.yaml", f"{i:064x}") for i in range(first, first + n)),
    )
    conn.execute("COMMIT")


def test_status_of_a_job_does_not_grow_with_the_rest_of_the_ledger(tmp_path):
    def read(ledger):
        return ledger.tasks.standing("small"), ledger.tasks.status_counts("small")

    costs = []
    for others in (1_000, 5_000):
        with Ledger(tmp_path / f"{others}.db") as ledger:
            # The small job's ETAs are the oldest: the latest-first look finds none of its own.
            fill(ledger, "small", 0, 100)
            fill(ledger, "big", 100, others, eta="2026-12-01T12:00:00.000Z")
            assert read(ledger)[0].states == {"submitted": 100}
            assert read(ledger)[0].last_due == STAMP
            costs.append(steps(ledger, lambda ledger=ledger: read(ledger)))
    fewer, more = costs
    assert more <= 1.5 * fewer + 5, costs


def test_status_of_a_big_job_reads_its_counts_not_its_rows(tmp_path):
    with Ledger(tmp_path / "l.db") as small, Ledger(tmp_path / "m.db") as big:
        fill(small, "job", 0, 100)
        fill(big, "job", 0, 5_000)
        assert big.tasks.standing("job").states == {"submitted": 5_000}
        assert big.tasks.standing("job").last_due == STAMP
        few = steps(small, lambda: (small.tasks.standing("job"), small.tasks.status_counts("job")))
        many = steps(big, lambda: (big.tasks.standing("job"), big.tasks.status_counts("job")))
    assert many <= 2 * few + 5, (few, many)


def test_standing_of_a_job_all_done_looks_for_no_eta(tmp_path):
    # Nothing processing, says its counts: no row is read for the latest ETA (a gallery asks
    # on every page).
    costs = []
    for size in (100, 5_000):
        with Ledger(tmp_path / f"{size}.db") as ledger:
            fill(ledger, "job", 0, size)
            ledger.db.conn.execute("UPDATE tasks SET status = 'completed'")
            assert ledger.tasks.standing("job").last_due is None
            costs.append(steps(ledger, lambda ledger=ledger: ledger.tasks.standing("job")))
    few, many = costs
    assert many <= 1.5 * few + 5, costs


def test_the_counts_follow_every_way_a_row_changes(shared_world, write_job):
    env = shared_world(time_scale=0, reject_rate=0.3, seed=3)
    job = write_job(job_text(prompts(12), name="kept"))
    assert env.cli("run", job, *FAST).exit_code in (0, 1)
    assert_counts_kept(env.ledger_path)
    env.cli("poll", "--all", "--rpm", "0")  # statuses move: processing → completed
    assert_counts_kept(env.ledger_path)
    write_job(job_text(prompts(5), name="kept"))  # an edit supersedes seven requests
    env.cli("run", job, *FAST, "--limit", "0")
    assert_counts_kept(env.ledger_path)
    write_job(job_text(prompts(15), name="kept"))  # back, and three never sent
    env.cli("run", job, *FAST, "--limit", "0", "--retry-rejected")
    assert_counts_kept(env.ledger_path)
    with env.ledger() as ledger:
        standing = ledger.tasks.standing("kept")
        assert standing.unsent == 3
        assert sum(standing.states.values()) == 12
    env.cli("run", job, *FAST, "--retry-rejected")
    assert_counts_kept(env.ledger_path)
    # A row deleted by hand, a link too.
    ledger_sql(env.ledger_path, "DELETE FROM tasks WHERE key = (SELECT min(key) FROM tasks)")
    ledger_sql(
        env.ledger_path, "DELETE FROM job_tasks WHERE key = (SELECT max(key) FROM job_tasks)"
    )
    assert_counts_kept(env.ledger_path)


def test_a_ledger_made_before_the_counts_gets_them_from_its_rows(tmp_path):
    path = tmp_path / "old.db"
    with Ledger(path) as ledger:
        fill(ledger, "a", 0, 30)
        fill(ledger, "b", 30, 7)
    with sqlite3.connect(path) as conn:  # as a ledger from before the migration
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'job_counts_%'"
        ).fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE job_counts")
        conn.execute("DROP INDEX tasks_processing_eta")
        conn.execute("DELETE FROM _batchgen_migrations WHERE name = 'm010_job_counts'")
        # and from before m014, which m010 comes before
        conn.execute("ALTER TABLE tasks RENAME COLUMN model TO model_id")
        conn.execute("ALTER TABLE tasks DROP COLUMN provider")
        conn.execute("DELETE FROM _batchgen_migrations WHERE name = 'm014_providers'")
    with Ledger(path) as ledger:
        assert ledger.tasks.standing("a").states == {"submitted": 30}
        assert ledger.tasks.standing("b").states == {"submitted": 7}
    assert_counts_kept(path)
    assert counts_recomputed(path)
