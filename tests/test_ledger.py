"""The ledger: its public tables, durability settings, claims and recovery."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import threading
import time

import pytest
import sqlite_utils
from helpers import canonical, corrupt_index, job_text, prompts, wait_for_calls, wait_until

from batchgen.errors import LedgerBusy, LedgerUnsound, UsageError
from batchgen.jobs.expand import Origin, Request
from batchgen.ledger import BUSY_TIMEOUT, FAILURES, Answered, Ledger, journal
from batchgen.ledger.migrations import MIGRATIONS

FAST = ("--yes", "--rpm", "60000")

BODY = {"prompt": "a", "model_id": "2-9", "options": {"duration": 5}}


def request(key: str = "k1") -> Request:
    return Request(key, 0, BODY, Origin(0))


@pytest.fixture
def ledger(ledger_location):
    """An open ledger: each test that takes it runs on SQLite, then on PostgreSQL."""
    with Ledger(ledger_location) as opened:
        yield opened


@pytest.fixture
def sqlite_ledger(tmp_path):
    """For what only a SQLite file has (WAL, its mode, the lock files beside it)."""
    with Ledger(tmp_path / "ledger.db") as opened:
        yield opened


def test_tables_and_columns_are_exactly_the_documented_ones(ledger):
    # Pinned exactly, in order (as llm's test_migrate does): the tables are a public interface.
    assert ledger.columns("tasks") == [
        "key",
        "job",
        "api_base",
        "model",
        "prompt",
        "request",
        "variant",
        "state",
        "task_id",
        "estimated_time",
        "submitted_at",
        "eta_at",
        "attempts",
        "error",
        "status",
        "result_urls",
        "checked_at",
        "files",
        "updated_at",
        "run_id",
        "provider",
        "task_handle",
    ]
    assert ledger.columns("job_tasks") == ["job", "job_file", "key", "label", "meta", "current"]
    assert ledger.columns("runs") == [
        "id",
        "started_at",
        "ended_at",
        "job",
        "job_file",
        "api_base",
        "flags",
        "counts",
        "exit_code",
        "pid",
        "credits_before",
        "credits_after",
    ]
    assert ledger.columns("prices") == [
        "class",
        "api_base",
        "credits",
        "run_id",
        "requests",
        "learned_at",
    ]
    assert ledger.columns("task_history") == [
        "key",
        "task_id",
        "submitted_at",
        "status",
        "result_urls",
        "error",
        "replaced_at",
        "run_id",
    ]
    assert ledger.columns("reviews") == ["key", "job", "pick", "rating", "note", "updated_at"]
    # What a job's standing is read from, without touching the task rows.
    assert {"tasks_standing", "job_tasks_current", "tasks_oldest_first"} <= indexes(ledger)
    if ledger.sql.name == "sqlite":
        db = sqlite_utils.Database(ledger.db.conn)  # as a user would look at it
        assert db["tasks"].pks == ["key"]
        assert db["reviews"].pks == ["job", "key"]


def indexes(ledger) -> set[str]:
    sql = (
        "SELECT name FROM sqlite_master WHERE type = 'index'"
        if ledger.sql.name == "sqlite"
        else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    )
    return {row[0] for row in ledger._query(sql)}


def test_migrations_are_recorded_and_applied_once(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    with Ledger(path) as again:
        names = [
            row["name"] for row in sqlite_utils.Database(again.db.conn)["_batchgen_migrations"].rows
        ]
    assert names == [name for name, _ in MIGRATIONS]


def test_opening_an_up_to_date_ledger_does_not_import_sqlite_utils(tmp_path):
    """Every command opens the ledger: only one that migrates it pays for sqlite-utils."""
    import subprocess
    import sys

    path = tmp_path / "ledger.db"
    Ledger(path).close()
    code = f"import sys; from batchgen.ledger import Ledger; Ledger({str(path)!r}).close(); print('sqlite_utils' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


def test_wal_full_sync_and_private_file(sqlite_ledger):
    ledger = sqlite_ledger
    assert ledger.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert stat.S_IMODE(os.stat(ledger.path).st_mode) == 0o600


def test_not_a_ledger_is_a_clear_error(tmp_path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("these are my notes, not a database" * 100)
    with pytest.raises(UsageError, match="not a batchgen ledger"):
        Ledger(bogus)


def test_a_claim_is_taken_once(ledger, tmp_path):
    run = ledger.runs.start("job", "job.yaml", "https://api", {})
    ledger.hold_run(run)  # a live run (the lock goes with the test's process)
    assert ledger.claims.claim(request(), "job", "https://api", run, allow={"failed"}) == "new"
    with Ledger(ledger.location) as other:  # another process, in effect
        assert (
            other.claims.claim(request(), "job", "https://api", run + 1, allow={"failed"}) is None
        )
    assert ledger.tasks.task("k1")["state"] == "sending"


def test_failed_requests_may_be_claimed_again_in_doubt_only_when_allowed(ledger):
    run = ledger.runs.start("job", "job.yaml", "https://api", {})
    ledger.claims.claim(request(), "job", "https://api", run, allow=set())
    ledger.claims.record_outcome("k1", "failed", "HTTP 503")
    assert ledger.claims.claim(request(), "job", "https://api", run, allow={"failed"}) == "failed"
    ledger.claims.record_outcome("k1", "in_doubt", "read timeout")
    assert ledger.claims.claim(request(), "job", "https://api", run, allow={"failed"}) is None
    assert (
        ledger.claims.claim(request(), "job", "https://api", run, allow={"failed", "in_doubt"})
        == "in_doubt"
    )
    assert ledger.tasks.task("k1")["attempts"] == 3


def test_a_workers_answer_is_written_in_the_same_commit_as_its_next_claim(ledger):
    run = ledger.runs.start("job", "job.yaml", "https://api", {})
    ledger.claims.claim(request("k1"), "job", "https://api", run, allow=set())
    statements: list[str] = []
    tracing = ledger.sql.name == "sqlite"  # which statements went, as SQLite can tell
    if tracing:
        ledger.db.conn.set_trace_callback(statements.append)
    answered = Answered("k1", "task-1", 30, "2026-11-30T10:00:00.000Z")
    commits = ledger._group.commits
    assert (
        ledger.claims.claim(
            request("k2"), "job", "https://api", run, allow=set(), answered=answered
        )
        == "new"
    )
    assert ledger._group.commits - commits == 1  # one commit for both
    if tracing:
        ledger.db.conn.set_trace_callback(None)
        # SQLite traces an UPDATE again as it enters the task-history trigger: one statement.
        statements = [s for i, s in enumerate(statements) if i == 0 or s != statements[i - 1]]
        assert [s.split()[0] for s in statements] == ["BEGIN", "UPDATE", "INSERT", "COMMIT"]
    assert (
        ledger.tasks.task("k1")["task_id"] == "task-1"
        and ledger.tasks.task("k1")["state"] == "submitted"
    )
    assert ledger.tasks.task("k1")["eta_at"] == "2026-11-30T10:00:30.000Z"
    assert ledger.tasks.task("k2")["state"] == "sending"


def test_claims_that_queue_behind_a_commit_share_the_next_one(ledger):
    """Workers' claims are group-committed: the three that arrive while the first claim's
    commit waits for the ledger go out in one commit after it, not three."""
    run = ledger.runs.start("job", "job.yaml", "https://api", {})
    results: dict[str, str | None] = {}

    def claim(key: str) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: results.__setitem__(
                key, ledger.claims.claim(request(key), "job", "https://api", run, allow=set())
            )
        )
        thread.start()
        return thread

    before = ledger._group.commits
    with ledger._lock:  # the first claim's commit is under way, waiting for the ledger
        threads = [claim("k1")]
        wait_until(lambda: ledger._group._leading and not ledger._group._queued)
        threads += [claim(key) for key in ("k2", "k3", "k4")]
        wait_until(lambda: len(ledger._group._queued) == 3)
        assert not results  # none is claimed (so none may be sent) before its commit
    for thread in threads:
        thread.join()
    assert results == {"k1": "new", "k2": "new", "k3": "new", "k4": "new"}
    assert ledger._group.commits - before == 2
    assert {ledger.tasks.task(key)["state"] for key in results} == {"sending"}


def test_a_claim_that_cannot_commit_writes_neither_it_nor_the_answer_riding_with_it(
    ledger, tmp_path
):
    run = ledger.runs.start("job", "job.yaml", "https://api", {})
    ledger.claims.claim(request("k1"), "job", "https://api", run, allow=set())
    ledger.claims.claim(request("k2"), "job", "https://api", run, allow=set())
    if ledger.sql.name == "sqlite":
        ledger.db.conn.execute(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON tasks WHEN NEW.key = 'k3' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    else:
        ledger.db.conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'disk full'; END $$;"
            " CREATE TRIGGER refuse BEFORE INSERT ON tasks FOR EACH ROW WHEN (NEW.key = 'k3')"
            " EXECUTE FUNCTION refuse()"
        )
    with pytest.raises(FAILURES, match="disk full"):
        ledger.claims.claim(
            request("k3"),
            "job",
            "https://api",
            run,
            allow=set(),
            answered=Answered("k1", "task-1", 30, "2026-11-30T10:00:00.000Z"),
        )
    assert (
        ledger.tasks.task("k1")["state"] == "sending" and ledger.tasks.task("k1")["task_id"] is None
    )  # rolled back with the claim
    assert ledger.tasks.task("k3") is None
    assert not ledger.db.conn.in_transaction


def test_a_claim_into_a_ledger_replaced_under_the_run_is_refused(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        run = ledger.runs.start("job", "job.yaml", "https://api", {})
        os.rename(path, tmp_path / "moved.db")
        with pytest.raises(LedgerUnsound, match="deleted"):
            ledger.claims.claim(request(), "job", "https://api", run, allow=set())
        with pytest.raises(LedgerUnsound, match="deleted"):
            ledger.claims.record_submitted("k1", "task-1", 30)


def test_release_undoes_a_claim_that_was_never_sent(ledger):
    run = ledger.runs.start("job", "job.yaml", "https://api", {})
    ledger.claims.claim(request(), "job", "https://api", run, allow=set())
    ledger.claims.release("k1", "new")
    assert ledger.tasks.task("k1") is None


def test_sending_rows_of_a_run_that_is_gone_become_in_doubt(ledger):
    run = ledger.runs.start("job", "job.yaml", "https://api", {})
    lock = ledger.hold_run(run)
    ledger.claims.claim(request("mine"), "job", "https://api", run, allow=set())
    dead = ledger.runs.start("job", "job.yaml", "https://api", {})
    ledger.claims.claim(
        request("theirs"), "job", "https://api", dead, allow=set()
    )  # it never held a lock
    assert ledger.recovery.recover() == 1
    assert ledger.tasks.task("theirs")["state"] == "in_doubt"
    assert ledger.tasks.task("mine")["state"] == "sending"  # this live run's row is left alone
    lock.release()
    assert ledger.recovery.recover() == 1 and ledger.tasks.task("mine")["state"] == "in_doubt"


def test_liveness_is_the_lock_not_the_pid(ledger):
    # A run whose recorded PID is alive (this very process, or PID 1 as inside a container)
    # but which holds no lock is gone: its rows are recovered. The old PID check kept them
    # `sending` forever.
    run = ledger.runs.start("job", "job.yaml", "https://api", {})
    ledger.db.conn.execute(f"UPDATE runs SET pid = 1 WHERE id = {ledger.sql.mark}", [run])
    ledger.claims.claim(request(), "job", "https://api", run, allow=set())
    assert ledger.recovery.recover() == 1
    assert ledger.tasks.task("k1")["state"] == "in_doubt"


def test_a_run_held_by_another_process_is_alive_until_that_process_is_gone(ledger):
    import subprocess
    import sys

    run = ledger.runs.start("job", "job.yaml", "https://api", {})
    ledger.claims.claim(request(), "job", "https://api", run, allow=set())
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from batchgen.ledger import Ledger;"
            f"Ledger({ledger.location!r}).hold_run({run}); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert ledger.recovery.recover() == 0  # alive: its row is left alone
        assert ledger.tasks.task("k1")["state"] == "sending"
    finally:
        holder.kill()
        holder.wait()
    # Gone once the kernel released its file lock, or the server ended its session (which it
    # does when it reads the closed connection: waited for, not assumed).
    wait_until(lambda: not ledger.run_is_alive(run))
    assert ledger.recovery.recover() == 1
    assert ledger.tasks.task("k1")["state"] == "in_doubt"


def test_recover_never_touches_a_row_another_run_reclaimed(ledger, monkeypatch):
    # The check and the update are apart: the update names the dead run, so a row some live
    # run claimed in between is not flipped.
    dead = ledger.runs.start("job", "job.yaml", "https://api", {})
    ledger.claims.claim(request(), "job", "https://api", dead, allow=set())
    live = ledger.runs.start("job", "job.yaml", "https://api", {})
    lock = ledger.hold_run(live)
    checked = ledger.run_is_alive

    def reclaimed_meanwhile(run: int) -> bool:
        # Between the check and the update, the live run claims the row.
        ledger.db.conn.execute(
            f"UPDATE tasks SET run_id = {ledger.sql.mark} WHERE key = 'k1'", [live]
        )
        return run != dead and checked(run)

    monkeypatch.setattr(ledger, "run_is_alive", reclaimed_meanwhile)
    try:
        assert ledger.recovery.recover() == 0
    finally:
        lock.release()
    assert ledger.tasks.task("k1")["state"] == "sending"


def test_a_ledger_with_two_hard_links_is_refused(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    os.link(path, tmp_path / "other.db")
    with pytest.raises(UsageError, match="hard links"):
        Ledger(path)
    with pytest.raises(UsageError, match="hard links"):
        Ledger(tmp_path / "other.db")


def test_a_ledger_reached_through_a_symlink_is_the_same_ledger_with_the_same_runs(tmp_path):
    """Run A opens the ledger by its real name, run B through a linked folder: B must see A's
    claims as a live run's (not "left by a run that ended"), so that even with
    --resubmit-in-doubt it does not send them again."""
    project = tmp_path / "project"
    with Ledger.open(project / "batchgen.db") as a:
        run = a.runs.start("job", "job.yaml", "https://api", {})
        lock = a.hold_run(run)  # run A, still going
        a.claims.claim(request(), "job", "https://api", run, allow=set())
        (tmp_path / "elsewhere").symlink_to(project)
        with Ledger.open(tmp_path / "elsewhere" / "batchgen.db") as b:
            assert b.repaired.recovered == 0 and b.tasks.task("k1")["state"] == "sending"
            assert (
                b.claims.claim(
                    request(), "job", "https://api", run + 1, allow={"failed", "in_doubt"}
                )
                is None
            )
            assert journal.journal_path(b.path) == journal.journal_path(a.path)
        lock.release()


def test_a_task_id_written_over_is_kept_in_the_history(ledger):
    """However a second task id reaches a row (two runs' answers, a journal replayed, a
    reclaim), the first one, a paid video, stays findable in task_history."""
    run = ledger.runs.start("job", "job.yaml", "https://api", {})
    ledger.claims.claim(request(), "job", "https://api", run, allow=set())
    ledger.claims.record_submitted("k1", "task-A", 30)
    ledger.claims.record_submitted("k1", "task-B", 30)
    assert [h["task_id"] for h in ledger.tasks.history("k1")] == ["task-A"]
    ledger.claims.record_outcome(
        "k1", "in_doubt", "a second answer"
    )  # a row in doubt that holds a task
    assert (
        ledger.claims.claim(request(), "job", "https://api", run, allow={"in_doubt"}) == "in_doubt"
    )
    assert [h["task_id"] for h in ledger.tasks.history("k1")] == ["task-A", "task-B"]
    assert ledger.tasks.task("k1")["task_id"] is None


def test_a_corrupt_index_is_found_before_sending(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        run = ledger.runs.start("job", "job.yaml", "https://api", {})
        for i in range(50):
            ledger.claims.claim(request(f"k{i:03d}"), "job", "https://api", run, allow=set())
        ledger.db.conn.execute("UPDATE tasks SET state = 'submitted'")
        ledger.db.conn.execute("PRAGMA writable_schema = ON")
        # Point the primary key's index at the wrong page: SQLite's own way to a corrupt index.
        ledger.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    corrupt_index(path, "sqlite_autoindex_tasks_1")
    with Ledger(path) as ledger:
        with pytest.raises(LedgerUnsound, match="corrupt"):
            ledger.quick_check()


def test_a_ledger_deleted_or_replaced_under_a_command_is_noticed(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        ledger.check_same_file()
        os.rename(path, tmp_path / "moved.db")
        path.write_bytes(b"")
        with pytest.raises(LedgerUnsound, match="replaced"):
            ledger.check_same_file()
        path.unlink()
        with pytest.raises(LedgerUnsound, match="deleted"):
            ledger.check_same_file()


def test_the_journal_is_replayed_when_the_ledger_is_next_opened(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        run = ledger.runs.start("job", "job.yaml", "https://api", {})
        ledger.claims.claim(request("known"), "job", "https://api", run, allow=set())
    entry = {
        "key": "known",
        "task_id": "t-known",
        "estimated_time": 1e308,
        "received_at": "2026-11-25T10:00:00.000Z",
    }
    journal.append(path, entry)
    journal.append(
        path,
        {
            "key": "lost",
            "task_id": "t-lost",
            "estimated_time": 30,
            "received_at": "2026-11-25T10:00:01.000Z",
            "job": "job",
            "api_base": "https://api",
            "variant": 0,
            "body": BODY,
        },
    )
    with open(journal.journal_path(path), "a") as f:
        f.write('{"key": "torn')  # a crash mid-write
    with Ledger.open(path) as ledger:
        assert ledger.repaired.replayed == 2
        known, lost = ledger.tasks.task("known"), ledger.tasks.task("lost")
        assert (
            known["state"] == "submitted"
            and known["task_id"] == "t-known"
            and known["eta_at"] is None
        )
        assert (
            lost["state"] == "submitted"
            and lost["task_id"] == "t-lost"
            and lost["eta_at"] == "2026-11-25T10:00:31.000Z"
        )
        assert [r["key"] for r in ledger.tasks.rows("job")] == [
            "lost"
        ]  # rebuilt, and linked to its job
    assert not journal.journal_path(path).exists()
    with Ledger.open(path) as ledger:
        assert ledger.repaired.replayed == 0


def answer(key: str) -> dict:
    return {
        "key": key,
        "task_id": f"t-{key}",
        "estimated_time": 30,
        "received_at": "2026-11-25T10:00:00.000Z",
        "job": "job",
        "api_base": "https://api",
        "variant": 0,
        "body": {**BODY, "prompt": key},
    }


def test_a_task_id_journaled_while_another_command_replays_the_journal_is_kept(
    tmp_path, monkeypatch
):
    # A run whose ledger is locked journals a task id just as another command (opening the
    # same ledger) records the journal: the new line must not be removed unread with the rest.
    path = tmp_path / "ledger.db"
    Ledger.open(path).close()
    journal.append(path, answer("early"))
    transaction = Ledger.transaction

    @contextlib.contextmanager
    def racing(self):
        journal.append(path, answer("meanwhile"))  # the other process, while the replay commits
        monkeypatch.setattr(Ledger, "transaction", transaction)
        with transaction(self) as conn:
            yield conn

    monkeypatch.setattr(Ledger, "transaction", racing)
    with Ledger.open(path) as ledger:
        assert ledger.repaired.replayed == 1 and ledger.tasks.task("early")["task_id"] == "t-early"
    with Ledger.open(path) as ledger:  # the next command records it
        assert (
            ledger.repaired.replayed == 1
            and ledger.tasks.task("meanwhile")["task_id"] == "t-meanwhile"
        )
    assert list(journal.entries(path)) == []


def test_task_ids_journaled_by_one_process_while_two_others_replay_are_all_recorded(tmp_path):
    # The same race as above, between real processes: one journals 200 task ids (a run whose
    # ledger is locked) while two others open the ledger over and over. Before the journal
    # was taken under its lock, half of them or more were lost this way.
    import subprocess
    import sys

    path = tmp_path / "ledger.db"
    Ledger.open(path).close()
    appender = (
        "import sys, time; from batchgen.ledger import journal; from pathlib import Path\n"
        "folder = Path(sys.argv[1]).parent\n"
        "deadline = time.monotonic() + 120\n"
        "while len(list(folder.glob('replaying-*'))) < 2 and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "for i in range(200):\n"
        "    journal.append(Path(sys.argv[1]), {'key': f'k{i:03d}', 'task_id': f't{i}', 'estimated_time': 30,"
        " 'received_at': '2026-11-25T10:00:00.000Z', 'job': 'job', 'api_base': 'https://api', 'variant': 0,"
        " 'body': {'prompt': f'p{i}', 'model_id': '2-9', 'options': {}}})\n"
        "    time.sleep(0.002)\n"
        "(folder / 'appended').touch()\n"
    )
    # Each replayer stops once the appender is done, or after two minutes whatever happens (a
    # failed appender left them looping, and slowing every later test, for good).
    replayer = (
        "import os, sys, time; from pathlib import Path; from batchgen.ledger import Ledger\n"
        "folder = Path(sys.argv[1]).parent\n"
        "deadline = time.monotonic() + 120\n"
        "while time.monotonic() < deadline:\n"
        "    Ledger.open(Path(sys.argv[1])).close()\n"
        "    (folder / f'replaying-{os.getpid()}').touch()\n"
        "    if (folder / 'appended').exists(): break\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, str(path)])
        for code in (appender, replayer, replayer)
    ]
    try:
        assert [process.wait(60) for process in processes] == [0, 0, 0]
    finally:
        for process in processes:
            process.kill()
    with Ledger.open(path) as ledger:
        recorded = ledger.db.conn.execute(
            "SELECT count(*) FROM tasks WHERE task_id IS NOT NULL"
        ).fetchone()[0]
    assert recorded == 200
    assert list(journal.entries(path)) == []


def test_an_append_that_finds_its_journal_taken_for_replay_writes_to_the_new_one(
    tmp_path, monkeypatch
):
    path = tmp_path / "ledger.db"
    journal.append(path, answer("first"))
    flock = journal.fcntl.flock
    taken: list = []

    def replay_between_open_and_lock(fd, operation):
        if not taken:  # the append has opened the journal: a replay moves it aside first
            taken.append(None)
            taken[:] = journal.take(path)
        return flock(fd, operation)

    monkeypatch.setattr(journal.fcntl, "flock", replay_between_open_and_lock)
    journal.append(path, answer("second"))
    assert [e["key"] for e in journal.read(taken)] == ["first"]
    assert [e["key"] for e in journal.read([journal.journal_path(path)])] == ["second"]


def test_a_journal_taken_by_a_replay_that_then_failed_is_replayed_by_the_next_command(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger.open(path).close()
    journal.append(path, answer("kept"))
    assert len(journal.take(path)) == 1  # and the replay's process died before its commit
    journal.append(path, answer("later"))
    with Ledger.open(path) as ledger:
        assert ledger.repaired.replayed == 2
        assert (
            ledger.tasks.task("kept")["task_id"] == "t-kept"
            and ledger.tasks.task("later")["task_id"] == "t-later"
        )
    assert sorted(p.name for p in tmp_path.iterdir() if "journal" in p.name) == []


def disk_stays_full(monkeypatch) -> None:
    """Every append to a journal file finds the disk full, as when the ledger's WAL took the
    space the moment anything was freed."""
    import errno

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal, "_append", full)


def test_on_a_full_disk_a_received_task_id_goes_into_the_space_the_run_set_aside(
    tmp_path, monkeypatch
):
    path = tmp_path / "ledger.db"
    Ledger.open(path).close()
    journal.reserve(path)  # as a run does at its start
    disk_stays_full(monkeypatch)
    where = journal.append(
        path,
        {
            "key": "k1",
            "task_id": "task-1",
            "job": "job",
            "api_base": "https://api",
            "variant": 0,
            "body": BODY,
        },
    )
    assert where.name.startswith("ledger.db.journal.reserve-")
    assert [e["task_id"] for e in journal.entries(path)] == ["task-1"]
    journal.release_reserve(path)  # the run ends: its reserve goes to the next replay
    monkeypatch.undo()
    with Ledger.open(path) as ledger:
        assert ledger.repaired.replayed == 1 and ledger.tasks.task("k1")["task_id"] == "task-1"
    assert sorted(p.name for p in tmp_path.iterdir() if ".journal" in p.name) == []


def test_the_reserve_of_a_run_killed_on_a_full_disk_is_replayed_by_the_next_command(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "ledger.db"
    Ledger.open(path).close()
    killed_run = (
        "import errno, os, sys\n"
        "from pathlib import Path\n"
        "from batchgen.ledger import journal\n"
        "path = Path(sys.argv[1])\n"
        "journal.reserve(path)\n"
        "def full(p, d): raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "journal._append = full\n"
        "journal.append(path, {'key': 'k1', 'task_id': 'task-1', 'job': 'job', 'api_base': 'https://api', 'variant': 0, 'body': {}})\n"
        "os._exit(9)\n"  # killed: the reserve is never handed over
    )
    subprocess.run([sys.executable, "-c", killed_run, str(path)], check=False, timeout=60)
    with Ledger.open(path) as ledger:
        assert ledger.repaired.replayed == 1 and ledger.tasks.task("k1")["task_id"] == "task-1"
    assert not [p for p in tmp_path.iterdir() if ".journal" in p.name]


def test_a_live_runs_reserve_is_left_to_it(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    journal.reserve(path)
    try:
        with Ledger(path):  # another command opens the ledger meanwhile
            pass
        assert len([p for p in tmp_path.iterdir() if ".journal.reserve-" in p.name]) == 1
    finally:
        journal.release_reserve(path)
    assert not [p for p in tmp_path.iterdir() if ".journal" in p.name]


def test_a_line_torn_by_a_crash_does_not_swallow_the_next_entry(tmp_path):
    path = tmp_path / "ledger.db"
    journal.journal_path(path).write_text('{"key": "torn", "task_id": "t-to')
    journal.append(path, answer("whole"))
    assert [e["key"] for e in journal.entries(path)] == ["whole"]


def test_files_saved_for_a_task_the_request_no_longer_holds_are_not_recorded_on_its_row(ledger):
    # A download of t-1's video ends after the request was sent again (t-2): the file is
    # t-1's, and the row must not say t-2's video is on disk.
    run = ledger.runs.start("job", "job.yaml", "https://api", {})
    ledger.claims.claim(request(), "job", "https://api", run, allow=set())
    ledger.claims.record_submitted("k1", "t-2", 30)
    ledger.claims.record_files_of([("k1", "t-1", ["outputs/t-1.mp4"])])
    assert ledger.tasks.task("k1")["files"] is None
    ledger.claims.record_files_of([("k1", "t-2", ["outputs/t-2.mp4"])])
    assert ledger.tasks.task("k1")["files"] == '["outputs/t-2.mp4"]'


def test_once_quitting_a_statement_waits_only_briefly_for_a_busy_ledger(ledger):
    # After a second Ctrl-C: a worker holds the ledger while its claim waits for another
    # process's write lock (up to the busy timeout); the exiting thread gives up instead.
    held, let_go = threading.Event(), threading.Event()

    def worker():
        with ledger._lock:
            held.set()
            let_go.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    assert held.wait(5)
    ledger.quitting(0.2)
    started = time.monotonic()
    with pytest.raises(LedgerBusy, match="busy"):
        ledger.tasks.task("k1")
    with pytest.raises(LedgerBusy, match="busy"):
        ledger.tasks.states(["k1"])
    with pytest.raises(LedgerBusy, match="busy"):
        list(ledger.tasks.rows())
    with pytest.raises(LedgerBusy, match="busy"):
        ledger.runs.end(1, {}, 130)
    ledger.close()  # gives up too: the process's exit closes it
    # Each of the five gave up after its brief wait, not the busy timeout (30 s each).
    assert time.monotonic() - started < BUSY_TIMEOUT
    let_go.set()
    thread.join()


def test_reading_never_creates_a_ledger(tmp_path):
    with pytest.raises(UsageError, match="no ledger"):
        Ledger(tmp_path / "none.db", create=False)
    assert not (tmp_path / "none.db").exists()


def test_submitted_records_the_eta(ledger):
    run = ledger.runs.start("job", "job.yaml", "https://api", {})
    ledger.claims.claim(request(), "job", "https://api", run, allow=set())
    ledger.claims.record_submitted("k1", "task-1", 150)
    row = ledger.tasks.task("k1")
    assert (
        row["state"] == "submitted" and row["status"] == "processing" and row["task_id"] == "task-1"
    )
    from batchgen.times import parse_timestamp

    assert (
        parse_timestamp(row["eta_at"]) - parse_timestamp(row["submitted_at"])
    ).total_seconds() == 150
    assert row["submitted_at"].endswith("Z")


@pytest.mark.slow
def test_processes_opening_a_new_ledger_at_once_all_succeed(tmp_path):
    # Two batchgen processes on a ledger that doesn't exist yet: both switch it to WAL and
    # migrate it. Before the fix one of them failed with "database is locked" every few rounds.
    import subprocess
    import sys

    path = tmp_path / "new.db"
    for _ in range(10):
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"new.db{suffix}").unlink(missing_ok=True)
        command = [
            sys.executable,
            "-c",
            f"from batchgen.ledger import Ledger; Ledger({str(path)!r}).close()",
        ]
        processes = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        for process in processes:
            _, err = process.communicate(timeout=60)
            assert process.returncode == 0, err


# -- the ledger is trusted only when sound --------------------------------------------------------


def test_a_hard_linked_ledger_is_refused_before_anything_is_sent(world, write_job):
    env = world()
    job = write_job(job_text(prompts(4)))
    Ledger(env.ledger_path).close()
    os.link(env.ledger_path, env.tmp / "second-name.db")
    for ledger in (env.ledger_path, env.tmp / "second-name.db"):
        result = env.cli("run", job, *FAST, env={"BATCHGEN_LEDGER": str(ledger)})
        assert result.exit_code == 2 and "hard links" in result.output
    assert env.sandbox.calls == []


def test_a_corrupt_ledger_sends_nothing(world, write_job):
    env = world()
    job = write_job(job_text(prompts(40)))
    assert env.cli("run", job, *FAST).exit_code == 0
    with env.ledger() as ledger:
        ledger.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    corrupt_index(env.ledger_path, "sqlite_autoindex_tasks_1")
    result = env.cli("run", job, *FAST)
    assert result.exit_code == 3 and "corrupt" in result.output
    assert len(env.sandbox.created()) == 40  # nothing resent


@pytest.mark.slow
def test_a_ledger_deleted_mid_run_stops_the_run_and_the_journal_keeps_what_it_received(
    world, write_job
):
    env = world(latency_ms=150)
    job = write_job(job_text(prompts(40)))
    process = env.popen("run", job, *FAST, "--concurrency", "2")
    wait_for_calls(env, 4)
    for suffix in ("", "-wal", "-shm"):
        (env.tmp / f"ledger.db{suffix}").unlink(missing_ok=True)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 3, err
    assert "deleted" in err
    created = len(env.sandbox.created())
    assert created < 40  # it stopped
    # The next command records what the journal kept; nothing the sandbox created is lost,
    # and a rerun does not pay again for it.
    result = env.cli("run", job, *FAST)
    assert "task ids kept in the journal" in result.output
    assert max(env.created_bodies().values()) == 1
    known = {canonical(json.loads(r["request"])) for r in env.rows() if r["task_id"]}
    first_run_bodies = [canonical(c.body) for c in env.sandbox.created()[:created]]
    assert set(first_run_bodies) <= known


def test_repair_is_asked_for_and_says_what_it_did(tmp_path):
    """Opening a ledger only opens it; Ledger.open (what every command uses) also makes it
    whole, and `repaired` says how: here a row left `sending` by a run that is gone."""
    with Ledger(tmp_path / "l.db") as ledger:
        run = ledger.runs.start("job", "job.yaml", "https://api", {})  # no lock: a run now gone
        ledger.claims.claim(request(), "job", "https://api", run, allow=set())
    with Ledger(tmp_path / "l.db") as opened:
        assert opened.repaired == (0, 0) and opened.tasks.task("k1")["state"] == "sending"
    with Ledger.open(tmp_path / "l.db") as repaired:
        assert repaired.repaired == (0, 1) and repaired.tasks.task("k1")["state"] == "in_doubt"


def test_a_ledger_made_by_the_previous_release_is_migrated_in_place_and_keeps_every_row(
    ledger_location,
):
    """The previous release's schema is this one without m013 (the index of open runs): made
    so, with rows in it, it is brought up to date by the next open, on either backend (a
    PostgreSQL ledger was refused: 'this batchgen cannot add to a PostgreSQL ledger yet')."""
    with Ledger(ledger_location) as ledger:
        run = ledger.runs.start("job", "job.yaml", "https://api", {})
        ledger.claims.claim(request(), "job", "https://api", run, allow=set())
        ledger.claims.record_submitted("k1", "t-1", 30)
        ledger.runs.end(run, {"submitted": 1}, 0)
        with ledger.transaction() as conn:  # back to the previous release's schema
            conn.execute("DROP INDEX runs_open")
            conn.execute("DELETE FROM _batchgen_migrations WHERE name = 'm013_runs_open'")
        rows_before, runs_before = list(ledger.tasks.rows()), ledger.runs.latest()
    with Ledger.open(ledger_location) as ledger:
        names = [r[0] for r in ledger._query("SELECT name FROM _batchgen_migrations")]
        assert "m013_runs_open" in names
        assert list(ledger.tasks.rows()) == rows_before and ledger.runs.latest() == runs_before
        index = (
            "SELECT 1 FROM pg_indexes WHERE indexname = 'runs_open'"
            if ledger.sql.name == "postgresql"
            else "SELECT 1 FROM sqlite_master WHERE name = 'runs_open'"
        )
        assert ledger._query(index)


def test_a_ledger_of_the_release_before_providers_is_migrated_and_keeps_every_row(
    ledger_location,
):
    """m014 renames `model_id` to `model` (in `tasks` and `job_counts`) and adds
    `tasks.provider`. A ledger made by the release before it, rows in it, is brought up to date
    by the next open on either backend: every row kept, and the job's counts still kept by
    their triggers (PostgreSQL's are functions, whose bodies a rename does not reach)."""
    from batchgen.ledger import migrations

    since = migrations.MIGRATIONS[13:]  # the release before: the schema without m014 on
    del migrations.MIGRATIONS[13:]
    assert since[0][0] == "m014_providers"
    try:
        with Ledger(ledger_location) as old:
            with old.transaction() as conn:
                conn.execute(
                    "INSERT INTO tasks (key, job, api_base, model_id, prompt, request, variant, state,"
                    " attempts, task_id) VALUES ('k1', 'job', 'https://api', '2-9', 'a cat', '{}', 0,"
                    " 'submitted', 1, 't-1')"
                )
                conn.execute(
                    "INSERT INTO job_tasks (job, job_file, key) VALUES ('job', 'job.yaml', 'k1')"
                )
            before = old._query("SELECT key, model_id, task_id FROM tasks")
            assert [tuple(r) for r in before] == [("k1", "2-9", "t-1")]
    finally:
        migrations.MIGRATIONS.extend(since)
    with Ledger.open(ledger_location) as ledger:
        names = [r[0] for r in ledger._query("SELECT name FROM _batchgen_migrations")]
        assert "m014_providers" in names
        row = ledger.tasks.task("k1")
        assert (row["model"], row["provider"], row["task_id"]) == ("2-9", None, "t-1")
        assert [(c["model"], c["state"], c["n"]) for c in ledger.tasks.counts("job")] == [
            ("2-9", "submitted", 1)
        ]
        with ledger.transaction() as conn:  # the counts' triggers follow a move of the model
            conn.execute("UPDATE tasks SET model = '2-10' WHERE key = 'k1'")
        assert [(c["model"], c["state"], c["n"]) for c in ledger.tasks.counts("job")] == [
            ("2-10", "submitted", 1)
        ]


def test_a_journaled_answer_keeps_its_handle_model_and_provider(tmp_path):
    """A task id kept in the journal (the ledger could not take it) comes back with what the
    provider answered beside it (its status URL, `task_handle`) and what the request was for:
    a provider whose tasks are found by that URL could not be asked after the task without it."""
    path = tmp_path / "ledger.db"
    Ledger.open(path).close()
    journal.append(
        path,
        {**answer("k"), "handle": "/queue/eng/status/t-k", "model": "eng", "provider": "studio"},
    )
    with Ledger.open(path) as ledger:
        row = ledger.tasks.task("k")
    assert (row["task_id"], row["task_handle"], row["model"], row["provider"]) == (
        "t-k",
        "/queue/eng/status/t-k",
        "eng",
        "studio",
    )
