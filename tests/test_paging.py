"""A page of a job's tiles (the review page, each gallery file) is found in the order `tasks JOB`
lists the job, at a cost that grows with neither the job nor the rest of the ledger."""

from __future__ import annotations

import pytest
from helpers import steps

from batchgen.ledger import Ledger

PAGE = 50


def fill(ledger: Ledger, job: str, first: int, n: int) -> None:
    """`n` completed tasks linked to `job`, sent in the reverse of their keys' order (so the
    ledger's order is not the keys')."""
    conn = ledger.db.conn
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO tasks (key, job, api_base, model, request, variant, state, task_id,"
        " submitted_at, attempts, status) VALUES (?, ?, 'https://api', '2-9', '{}', 0,"
        " 'submitted', ?, ?, 1, 'completed')",
        (
            (f"{i:064x}", job, f"t{i}", f"2026-12-01T{(10**6 - i) // 3600 % 24:02}:{i % 60:02}:00Z")
            for i in range(first, first + n)
        ),
    )
    conn.executemany(
        "INSERT INTO job_tasks (job, job_file, key) VALUES (?, ?, ?)",
        ((job, f"{job}.yaml", f"{i:064x}") for i in range(first, first + n)),
    )
    conn.execute("COMMIT")


def page(ledger: Ledger, job: str, number: int) -> list[str]:
    return list(ledger.tasks.keys_in_order(job, start=(number - 1) * PAGE, limit=PAGE))


@pytest.mark.parametrize("job", ["small", "big"])  # sorted, and picked from the ledger's order
def test_the_pages_of_a_job_are_its_rows_in_order_a_page_at_a_time(tmp_path, job):
    with Ledger(tmp_path / "l.db") as ledger:
        fill(ledger, "small", 0, 120)
        fill(ledger, "big", 120, 2_000)
        fill(ledger, "other", 2_120, 40)
        ledger.db.conn.execute(
            "INSERT INTO job_tasks (job, job_file, key) VALUES ('small', 's', 'unsent')"
        )
        rows = [row["key"] for row in ledger.tasks.rows(job)]
        assert rows != sorted(rows)
        pages = [page(ledger, job, n) for n in range(1, len(rows) // PAGE + 2)]
        assert [key for keys in pages for key in keys] == rows
        assert list(ledger.tasks.keys_in_order(job)) == rows


def test_the_first_page_of_a_job_costs_the_same_whatever_its_size(tmp_path):
    costs = []
    for size in (1_000, 8_000):
        with Ledger(tmp_path / f"{size}.db") as ledger:
            fill(ledger, "job", 0, size)
            costs.append(steps(ledger, lambda ledger=ledger: page(ledger, "job", 1)))
    smaller, bigger = costs
    assert bigger <= 1.5 * smaller + 5, costs


def test_the_first_page_of_a_small_job_costs_the_same_whatever_the_ledgers_size(tmp_path):
    costs = []
    for others in (1_000, 8_000):
        with Ledger(tmp_path / f"{others}.db") as ledger:
            fill(ledger, "small", 0, 100)
            fill(ledger, "others", 100, others)
            costs.append(steps(ledger, lambda ledger=ledger: page(ledger, "small", 1)))
    fewer, more = costs
    assert more <= 1.5 * fewer + 5, costs
