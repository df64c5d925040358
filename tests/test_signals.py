"""SIGTERM and SIGHUP end a run as Ctrl-C does; a closed stdout loses no record."""

from __future__ import annotations

import signal
import time

import pytest
from helpers import (
    job_text,
    prompts,
    wait_for_calls,
    wait_for_sending,
)

FAST = ("--yes", "--rpm", "60000")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_finish_the_calls_in_flight_like_ctrl_c(world, write_job, sig, code):
    env = world(latency_ms=300)
    job = write_job(job_text(prompts(30)))
    process = env.popen("run", job, *FAST, "--concurrency", "4")
    wait_for_calls(env, 4)
    process.send_signal(sig)
    out, err = process.communicate(timeout=30)
    assert process.returncode == code, err
    assert "stopping" in err
    rows = env.rows()
    assert rows and {r["state"] for r in rows} == {"submitted"}  # the calls in flight were recorded
    assert len(env.sandbox.created()) == len(rows)
    assert env.cli("run", job, *FAST).exit_code == 0
    assert len(env.sandbox.created()) == 30 and set(env.created_bodies().values()) == {1}


@pytest.mark.slow
def test_a_second_sigterm_quits_at_once_and_leaves_in_doubt(world, write_job):
    env = world(latency_ms=3000)
    job = write_job(job_text(prompts(8)))
    process = env.popen("run", job, *FAST, "--concurrency", "4")
    wait_for_sending(env, 4)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143, err
    assert {r["state"] for r in env.rows()} == {"in_doubt"}


def test_a_closed_stdout_loses_no_record(world, write_job):
    env = world(latency_ms=20)
    job = write_job(job_text(prompts(20)))
    process = env.popen("run", job, *FAST, "--concurrency", "2")
    first = process.stdout.readline()  # like `| head -1`
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert first.startswith("job: 20 requests")
    assert process.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert {r["state"] for r in env.rows()} == {"submitted"} and len(env.rows()) == 20
    with env.ledger() as ledger:
        run = ledger.db.conn.execute("SELECT ended_at, exit_code FROM runs").fetchone()
    assert run[0] is not None and run[1] == 0  # the run was closed in the ledger
