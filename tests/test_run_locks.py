"""A run's liveness is a lock, so a run killed anywhere (even inside a PID namespace) is
recovered by the next command, and a live one never is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import (
    assert_consistent,
    can_unshare_pid,
    job_text,
    prompts,
)

FAST = ("--yes", "--rpm", "60000")


@pytest.mark.skipif(
    not can_unshare_pid(),
    reason="unshare --pid is not permitted here (needs root or user namespaces)",
)
@pytest.mark.slow
def test_a_run_killed_inside_a_pid_namespace_is_recovered(world, write_job):
    env = world(latency_ms=2000)
    job = write_job(job_text(prompts(8)))
    process = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            sys.executable,
            "-m",
            "batchgen",
            "run",
            str(job),
            *FAST,
            "--concurrency",
            "4",
        ],
        env={**os.environ, **env.env},
        cwd=env.tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while (
        time.monotonic() < deadline
        and len([c for c in env.sandbox.calls if c.endpoint == "create"]) < 4
    ):
        if len(env.rows()) >= 4 and any(r["state"] == "sending" for r in env.rows()):
            break
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert env.sandbox.wait_idle(30)  # the calls in flight were answered: the record is whole
    with env.ledger() as ledger:
        pid = ledger.db.conn.execute("SELECT pid FROM runs").fetchone()[0]
        assert pid < 10  # a PID from inside the namespace: as a host PID it means another process
        assert ledger.repaired.recovered >= 1
    states = {r["state"] for r in env.rows()}
    assert "sending" not in states and "in_doubt" in states
    result = env.cli("run", job, *FAST)
    assert "being sent by another run" not in result.output
    assert_consistent(env)
