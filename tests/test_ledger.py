"""The ledger: its public tables, durability settings, claims and recovery."""

from __future__ import annotations

import os
import stat

import pytest

from batchgen.expand import Origin, Request
from batchgen.ledger import Ledger
from batchgen.migrations import MIGRATIONS

BODY = {"prompt": "a", "model_id": "2-9", "options": {"duration": 5}}


def request(key: str = "k1") -> Request:
    return Request(key, 0, BODY, Origin(0))


@pytest.fixture
def ledger(tmp_path):
    with Ledger(tmp_path / "ledger.db") as opened:
        yield opened


def test_tables_and_columns_are_the_documented_ones(ledger):
    columns = {name: set(ledger.db[name].columns_dict) for name in ("tasks", "job_tasks", "runs")}
    assert columns["tasks"] >= {
        "key", "job", "api_base", "model_id", "prompt", "request", "variant", "state", "task_id",
        "estimated_time", "submitted_at", "eta_at", "attempts", "error", "status", "result_urls",
        "checked_at", "files", "updated_at",
    }
    assert columns["job_tasks"] == {"job", "job_file", "key"}
    assert columns["runs"] >= {"started_at", "ended_at", "job", "flags", "counts", "exit_code"}
    assert ledger.db["tasks"].pks == ["key"]


def test_migrations_are_recorded_and_applied_once(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    with Ledger(path) as again:
        names = [row["name"] for row in again.db["_batchgen_migrations"].rows]
    assert names == [name for name, _ in MIGRATIONS]


def test_wal_full_sync_and_private_file(ledger):
    assert ledger.query("PRAGMA journal_mode")[0][0] == "wal"
    assert ledger.query("PRAGMA synchronous")[0][0] == 2  # FULL
    assert stat.S_IMODE(os.stat(ledger.path).st_mode) == 0o600


def test_not_a_ledger_is_a_clear_error(tmp_path):
    from batchgen.errors import UsageError

    bogus = tmp_path / "notes.db"
    bogus.write_text("these are my notes, not a database" * 100)
    with pytest.raises(UsageError, match="not a batchgen ledger"):
        Ledger(bogus)


def test_a_claim_is_taken_once(ledger, tmp_path):
    run = ledger.start_run("job", "job.yaml", "https://api", {})
    assert ledger.claim(request(), "job", "https://api", run, allow={"failed"}) == "new"
    with Ledger(tmp_path / "ledger.db") as other:  # another process, in effect
        assert other.claim(request(), "job", "https://api", run + 1, allow={"failed"}) is None
    assert ledger.task("k1")["state"] == "sending"


def test_failed_requests_may_be_claimed_again_in_doubt_only_when_allowed(ledger):
    run = ledger.start_run("job", "job.yaml", "https://api", {})
    ledger.claim(request(), "job", "https://api", run, allow=set())
    ledger.record_outcome("k1", "failed", "HTTP 503")
    assert ledger.claim(request(), "job", "https://api", run, allow={"failed"}) == "failed"
    ledger.record_outcome("k1", "in_doubt", "read timeout")
    assert ledger.claim(request(), "job", "https://api", run, allow={"failed"}) is None
    assert ledger.claim(request(), "job", "https://api", run, allow={"failed", "in_doubt"}) == "in_doubt"
    assert ledger.task("k1")["attempts"] == 3


def test_release_undoes_a_claim_that_was_never_sent(ledger):
    run = ledger.start_run("job", "job.yaml", "https://api", {})
    ledger.claim(request(), "job", "https://api", run, allow=set())
    ledger.release("k1", "new")
    assert ledger.task("k1") is None


def test_sending_rows_of_a_run_that_is_gone_become_in_doubt(ledger):
    run = ledger.start_run("job", "job.yaml", "https://api", {})
    ledger.claim(request("mine"), "job", "https://api", run, allow=set())
    dead = ledger.start_run("job", "job.yaml", "https://api", {})
    ledger.db.conn.execute("UPDATE runs SET pid = 999999999 WHERE id = ?", [dead])
    ledger.claim(request("theirs"), "job", "https://api", dead, allow=set())
    assert ledger.recover() == 1
    assert ledger.task("theirs")["state"] == "in_doubt"
    assert ledger.task("mine")["state"] == "sending"  # this live run's row is left alone


def test_submitted_records_the_eta(ledger):
    run = ledger.start_run("job", "job.yaml", "https://api", {})
    ledger.claim(request(), "job", "https://api", run, allow=set())
    ledger.record_submitted("k1", "task-1", 150)
    row = ledger.task("k1")
    assert row["state"] == "submitted" and row["status"] == "processing" and row["task_id"] == "task-1"
    from batchgen.ledger import parse_timestamp

    assert (parse_timestamp(row["eta_at"]) - parse_timestamp(row["submitted_at"])).total_seconds() == 150
    assert row["submitted_at"].endswith("Z")


def test_processes_opening_a_new_ledger_at_once_all_succeed(tmp_path):
    # Two batchgen processes on a ledger that doesn't exist yet: both switch it to WAL and
    # migrate it. Before the fix one of them failed with "database is locked" every few rounds.
    import subprocess
    import sys

    path = tmp_path / "new.db"
    for _ in range(10):
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"new.db{suffix}").unlink(missing_ok=True)
        command = [sys.executable, "-m", "batchgen", "--ledger", str(path), "status"]
        processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for process in processes:
            _, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
