"""The fault suite's database faults: a team's PostgreSQL ledger failing under a run.

Three ways a database fails: the run's session ended at the very COMMIT that holds its claims
(deterministic: a deferred trigger terminates its own backend), the server crashed and started
again while a run sends with slow commits, and the server stopping to answer (its backend
stopped). After each: no request created twice, and every task id the API answered is in the
ledger once the next command has replayed the journal: none is dropped, none left for a user
told to `--resubmit-in-doubt` (which would pay for it again). The run ends with exit 3 and its
summary, never a traceback; a second signal exits at once, whatever the server does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from helpers import FAULT_TABLE, canonical, duplicates_and_lost, job_text, prompts

from batchgen.errors import LedgerFailed
from batchgen.ledger import Ledger

pytestmark = pytest.mark.slow

FAST = ("--yes", "--rpm", "0")


def received_but_unrecorded(env) -> set[str]:
    """Task ids whose answer the sandbox wrote back to the client, and the ledger (after the
    journal's replay) does not hold: paid for, and nowhere to be found."""
    answered = {
        c.task_id for c in env.sandbox.calls if c.endpoint == "create" and c.outcome == "created"
    }
    with env.ledger() as ledger:
        held = {
            row[0] for row in ledger._query("SELECT task_id FROM tasks WHERE task_id IS NOT NULL")
        }
        held |= {row[0] for row in ledger._query("SELECT task_id FROM task_history")}
    return answered - held


def judged(env, scenario: str, size: int, faults: int, interrupts: int = 0) -> None:
    """The fault suite's checks and its table's row, after the next command made the ledger whole."""
    created = env.created_bodies()
    rows = {canonical(json.loads(r["request"])): r for r in env.rows()}
    duplicates, lost = duplicates_and_lost(created, rows)
    unrecorded = received_but_unrecorded(env)
    received = {canonical(c.body) for c in env.sandbox.calls if c.endpoint == "create"}
    FAULT_TABLE.append(
        {
            "scenario": scenario,
            "requests": size,
            "faults": faults,
            "kills": 0,
            "interrupts": interrupts,
            "duplicates": duplicates,
            "lost": lost + len(unrecorded),
            "unsent in_doubt": sum(
                1 for b, r in rows.items() if r["state"] == "in_doubt" and b not in received
            ),
            "steps": "database faults",
        }
    )
    assert duplicates == 0
    assert lost == 0
    assert not unrecorded, f"task ids answered and not in the ledger: {sorted(unrecorded)}"
    assert not [r for r in rows.values() if r["state"] == "sending"]


def ended_with_summary(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    assert "Traceback" not in err and "Exception in thread" not in err, err
    return process.returncode, out, err


def test_a_session_ended_at_the_commit_of_its_claims_sends_nothing_unclaimed(world, new_database):
    """The session dies at the COMMIT that holds a group's claims: none of them was committed,
    so none of their requests goes out; the ids already answered go to the journal."""
    url = new_database()
    env = world(ledger=url, latency_ms=5)
    with Ledger(url) as ledger:  # the schema, for the trigger to go on
        ledger.db.conn.execute(
            """
            CREATE SEQUENCE fault_claims;
            CREATE FUNCTION fault_end_session() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF nextval('fault_claims') = 6 THEN
                PERFORM pg_terminate_backend(pg_backend_pid());
              END IF;
              RETURN NULL;
            END $$;
            CREATE CONSTRAINT TRIGGER fault_end_session AFTER INSERT ON tasks
              DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault_end_session();
            """
        )
    job = env.tmp / "job.yaml"
    job.write_text(job_text(prompts(30, "claim")), encoding="utf-8")

    code, out, err = ended_with_summary(env.popen("run", job, *FAST, "--concurrency", "8"))
    assert code == 3
    assert "run aborted" in out and "the ledger failed" in err

    judged(env, "session ended at a claim's commit (postgresql)", 30, 1)
    again = env.popen("run", job, *FAST, "--concurrency", "8")
    assert ended_with_summary(again)[0] in (0, 1)  # in doubt, if any, is settled by the user
    judged(env, "… and the rerun (postgresql)", 30, 0)


def test_a_server_that_crashes_and_restarts_mid_run_creates_once_and_loses_no_id(
    world, private_postgres, monkeypatch, tmp_path
):
    """`pg_ctl stop -m immediate` while a run sends, with commits slowed down so that claims
    and answers are on their way to disk when it goes; three times, then a run to the end."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    url = private_postgres.url
    env = world(ledger=url, latency_ms=10)
    with Ledger(url) as ledger:
        ledger.db.conn.execute(
            """
            CREATE FUNCTION fault_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER fault_slow_commit AFTER INSERT OR UPDATE ON tasks
              DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault_slow_commit();
            """
        )
    size = max(60, 20 * int(os.environ.get("BATCHGEN_DB_CRASHES", "3")))
    job = env.tmp / "job.yaml"
    job.write_text(job_text(prompts(size, "crash")), encoding="utf-8")
    crashes = 0
    # Three in CI; more for a change near sending: BATCHGEN_DB_CRASHES=12 pytest tests/test_database_faults.py
    for cycle in range(int(os.environ.get("BATCHGEN_DB_CRASHES", "3"))):
        answered = env.sandbox.tasks_answered
        run = env.popen("run", job, *FAST, "--concurrency", "8")
        if not env.sandbox.wait_answered(answered + 6 + 2 * (cycle % 4), timeout=60):
            run.kill()
            pytest.fail("the run sent nothing")
        private_postgres.crash()
        crashes += 1
        code, out, err = ended_with_summary(run)
        assert code == 3, (out, err)
        assert "run aborted" in out
        private_postgres.start()
    final = env.popen("run", job, *FAST, "--concurrency", "8")
    assert ended_with_summary(final)[0] in (0, 1)
    judged(env, f"server crashed and restarted x{crashes} (postgresql)", size, crashes)


def _backends(url: str) -> list[int]:
    """The ledger's sessions on the server but the asker's own."""
    with Ledger(url, create=False) as ledger:
        rows = ledger._query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'batchgen' AND pid <> pg_backend_pid()"
        )
    return [row[0] for row in rows]


def test_a_second_signal_quits_at_once_when_the_server_stopped_answering(world, new_database):
    """The run's backend is stopped (SIGSTOP): the server accepts and never answers. A first
    SIGTERM waits for calls that cannot end; the second quits at once, without a word to the
    server. Once it answers again, the next command finds every answered id in the journal."""
    url = new_database()
    env = world(ledger=url, latency_ms=30)
    Ledger(url).close()
    job = env.tmp / "job.yaml"
    job.write_text(job_text(prompts(40, "stopped")), encoding="utf-8")
    run = env.popen("run", job, *FAST, "--concurrency", "4")
    assert env.sandbox.wait_answered(4, timeout=60)
    stopped = _backends(url)
    assert stopped
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(
            0.3
        )  # the workers meet the silent server (a fault's timing, not a wait on another thread)
        run.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        run.send_signal(signal.SIGTERM)
        second = time.monotonic()
        code, out, err = ended_with_summary(run, timeout=30)
        quit_after = time.monotonic() - second
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert code == 143
    assert "quit" in err
    assert quit_after < 10, f"the second signal took {quit_after:.1f} s to quit"
    judged(env, "server stopped answering, two signals (postgresql)", 40, 1, interrupts=2)


def test_a_write_to_a_server_that_stopped_answering_fails_in_seconds(new_database):
    """Without a signal: a writer's call the server never answers fails once it outlives its
    allowance (the watchdog shuts its socket), as a lost connection would, instead of waiting
    forever with every other machine's writers behind it."""
    url = new_database()
    with Ledger(url) as ledger:
        (pid,) = ledger._query("SELECT pg_backend_pid()")[0]
        ledger.backend._pg.allowance = 1.0
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(LedgerFailed, match="stopped answering"):
                ledger.runs.start("job", "job.yaml", "https://api", {})
        finally:
            os.kill(pid, signal.SIGCONT)
