"""Money never leaks (issue 10): each hole an adversarial review found, as a test
that failed before its fix. Judged from the sandbox's record and the ledger."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from helpers import (
    FakeClock,
    Loopback,
    assert_consistent,
    can_unshare_pid,
    canonical,
    corrupt_index,
    job_text,
    prompts,
    wait_for_calls,
    wait_for_sending,
)

from batchgen import journal
from batchgen.ledger import Ledger
from batchgen.sandbox import TEST_KEY

FAST = ("--yes", "--rpm", "60000")


# -- 1. the ledger belongs to the job's project -------------------------------------------------


def test_the_same_job_run_from_any_directory_never_sends_twice(world, tmp_path, monkeypatch):
    env = world()
    project = tmp_path / "project"
    (project / "jobs").mkdir(parents=True)
    (project / ".git").mkdir()
    job = project / "jobs" / "cats.yaml"
    job.write_text(job_text(prompts(3)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    no_ledger_env = {"BATCHGEN_LEDGER": None}
    monkeypatch.chdir(elsewhere)
    first = env.cli("run", job, *FAST, env=no_ledger_env)
    assert first.exit_code == 0, first.output
    assert f"ledger: {project / 'batchgen.db'}" in first.stderr
    monkeypatch.chdir(project / "jobs")
    second = env.cli("run", "cats.yaml", *FAST, env=no_ledger_env)
    assert second.exit_code == 0 and "3 done" in second.output
    assert len(env.sandbox.created()) == 3
    assert (
        not (elsewhere / "batchgen.db").exists() and not (project / "jobs" / "batchgen.db").exists()
    )
    monkeypatch.chdir(project / "jobs")  # a job's name walks up from the current directory
    status = env.cli("status", "cats", env=no_ledger_env)
    assert status.exit_code == 0 and "submitted" in status.output


def test_an_existing_ledger_above_the_job_is_found_before_the_git_root(
    world, tmp_path, monkeypatch
):
    env = world()
    (tmp_path / ".git").mkdir()
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    Ledger(tmp_path / "sub" / "batchgen.db").close()
    job = tmp_path / "sub" / "deeper" / "job.yaml"
    job.write_text(job_text(prompts(1)))
    monkeypatch.chdir(tmp_path)
    result = env.cli("run", job, *FAST, env={"BATCHGEN_LEDGER": None})
    assert result.exit_code == 0 and f"ledger: {tmp_path / 'sub' / 'batchgen.db'}" in result.stderr


def test_reading_commands_never_create_a_ledger(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATCHGEN_LEDGER", raising=False)
    for args in (["status"], ["tasks"], ["status", "--json"]):
        result = cli(*args)
        assert result.exit_code == 0 and "no ledger" in result.stderr
    assert cli("download", "somejob").exit_code == 2
    assert cli("gallery", "somejob").exit_code == 2
    assert list(tmp_path.iterdir()) == []


# -- 2. one identity per API, however it is spelled ------------------------------------------------


def test_spellings_of_one_base_url_are_one_api(world, write_job):
    env = world()
    job = write_job(job_text(prompts(3)))
    host, port = env.sandbox.base_url.rsplit(":", 1)
    spellings = [
        env.sandbox.base_url,
        f"HTTP://127.0.0.1:{port}/",
        f"http://127.0.0.1:{port}/api/..",
        f"http://127.0.0.1:{port}/./",
    ]
    for spelling in spellings:
        result = env.cli("run", job, *FAST, "--base-url", spelling)
        assert result.exit_code == 0, (spelling, result.output)
    assert len(env.sandbox.created()) == 3
    assert {r["api_base"] for r in env.rows()} == {env.sandbox.base_url}


@pytest.mark.parametrize("suffix", ["?x=1", "#frag", "?"])
def test_a_base_url_with_a_query_or_fragment_is_refused(world, write_job, suffix):
    env = world()
    job = write_job(job_text(prompts(1)))
    result = env.cli("run", job, *FAST, "--base-url", env.sandbox.base_url + "/" + suffix)
    assert result.exit_code == 2 and "base URL" in result.stderr
    assert env.sandbox.calls == []


def test_user_info_in_a_base_url_is_refused_without_echoing_it(world, write_job):
    env = world()
    job = write_job(job_text(prompts(1)))
    secret_url = env.sandbox.base_url.replace("http://", "http://me:hunter2secret@")
    result = env.cli("run", job, *FAST, "--base-url", secret_url)
    assert result.exit_code == 2 and "hunter2secret" not in result.output
    assert env.sandbox.calls == []


def test_old_ledgers_keep_their_keys_through_the_migration(tmp_path):
    import hashlib

    from batchgen.migrations import m002_canonical_api_base

    path = tmp_path / "old.db"
    with Ledger(path) as ledger:
        body = {"prompt": "a", "model_id": "2-9", "options": {}}
        for api_base in ("HTTP://127.0.0.1:9/", "https://api.pixwith.ai"):
            document = {"api": api_base, "body": body, "variant": 0}
            key = hashlib.sha256(
                json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()
            ledger.db.conn.execute(
                "INSERT INTO tasks (key, job, api_base, request, variant, state, attempts) VALUES (?, 'j', ?, ?, 0, 'submitted', 1)",
                [key, api_base, json.dumps(body)],
            )
        before = {r["key"]: r["api_base"] for r in ledger.rows()}
        m002_canonical_api_base(ledger.db)
        assert {
            r["key"]: r["api_base"] for r in ledger.rows()
        } == before  # keys made from a spelling keep it


# -- 3. liveness is a lock, across PID namespaces -------------------------------------------------


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
    time.sleep(2.5)  # the calls in flight reach the sandbox and create their tasks
    with env.ledger() as ledger:
        pid = ledger.db.conn.execute("SELECT pid FROM runs").fetchone()[0]
        assert pid < 10  # a PID from inside the namespace: as a host PID it means another process
        assert ledger.recovered >= 1
    states = {r["state"] for r in env.rows()}
    assert "sending" not in states and "in_doubt" in states
    result = env.cli("run", job, *FAST)
    assert "being sent by another run" not in result.output
    assert_consistent(env)


# -- 4. a received answer is never thrown away ------------------------------------------------------


def submission_against(ledger, handler, n=3, **kwargs):
    import httpx

    from batchgen.api import Api
    from batchgen.expand import Origin, Request
    from batchgen.liveness import RunLock
    from batchgen.submit import RunSettings, Submission

    notices: list[str] = []
    requests = [
        Request(f"{i:064x}", 0, {"prompt": f"p{i}", "model_id": "2-9", "options": {}}, Origin(0))
        for i in range(n)
    ]
    run_id = ledger.start_run("j", "j.yaml", "https://api.pixwith.ai", {})
    lock = RunLock(ledger.path, run_id)
    with Api(
        "https://api.pixwith.ai", "key_testtesttest", transport=httpx.MockTransport(handler)
    ) as api:
        settings = RunSettings(rpm=None, concurrency=1, max_identical_errors=1000)
        report = Submission(
            ledger,
            api,
            settings,
            job="j",
            api_base="https://api.pixwith.ai",
            run_id=run_id,
            notice=notices.append,
            **kwargs,
        ).run(requests)
    lock.release()
    return report, notices


def creates_each(request):
    """An API that creates every request it is sent: task `task-<prompt>`."""
    import httpx

    prompt = json.loads(request.content)["prompt"]
    return httpx.Response(
        200, json={"code": 1, "data": {"task_id": f"task-{prompt}", "estimated_time": 30}}
    )


def cut_short_by_two_ctrl_cs(
    ledger, handler, ready: threading.Event, settle: float = 0.0
) -> tuple[list[str], float]:
    """Send two requests, one at a time, and press Ctrl-C twice once `ready` is set and `settle`
    seconds more have passed; the run must raise Interrupted. (Its notices, the seconds it took.)"""
    import httpx

    from batchgen.api import Api
    from batchgen.expand import Origin, Request
    from batchgen.submit import Interrupted, RunSettings, Submission

    class CtrlCTwice:  # the run's wait for its workers (`Submission._all_done`), cut short
        def wait(self, timeout):
            assert ready.wait(10)
            time.sleep(settle)
            raise KeyboardInterrupt

        def set(self):
            pass

    notices: list[str] = []
    requests = [
        Request(f"{i:064x}", 0, {"prompt": f"p{i}", "model_id": "2-9", "options": {}}, Origin(0))
        for i in range(2)
    ]
    run_id = ledger.start_run("j", "j.yaml", "https://api.pixwith.ai", {})
    with Api(
        "https://api.pixwith.ai", "key_testtesttest", transport=httpx.MockTransport(handler)
    ) as api:
        submission = Submission(
            ledger,
            api,
            RunSettings(rpm=None, concurrency=1),
            job="j",
            api_base="https://api.pixwith.ai",
            run_id=run_id,
            notice=notices.append,
        )
        submission._all_done = CtrlCTwice()  # type: ignore[assignment]
        started = time.monotonic()
        with pytest.raises(Interrupted):
            submission.run(requests)
    return notices, time.monotonic() - started


def join_senders(timeout: float) -> None:
    """Wait for the send workers a test's run left behind (a second Ctrl-C does not)."""
    for thread in threading.enumerate():
        if thread.name.startswith("batchgen-send-"):
            thread.join(timeout)


def test_a_task_id_the_locked_ledger_cannot_take_is_journaled_printed_and_replayed(tmp_path):
    import httpx

    path = tmp_path / "ledger.db"
    blocker = {}

    def handler(request):
        # While the call is out, another process takes the ledger's write lock and keeps it.
        if "conn" not in blocker:
            blocker["conn"] = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            blocker["conn"].execute("BEGIN IMMEDIATE")
        return httpx.Response(
            200, json={"code": 1, "data": {"task_id": "task-locked-out", "estimated_time": 30}}
        )

    with Ledger(path, busy_timeout=0.3) as ledger:
        report, notices = submission_against(ledger, handler)
    assert report.aborted and "could not record" in report.aborted
    assert report.unrecorded == ["task-locked-out"]
    assert any("task-locked-out" in line and ".journal" in line for line in notices)
    assert "task-locked-out" in journal.journal_path(path).read_text()
    blocker["conn"].execute("ROLLBACK")
    blocker["conn"].close()
    with Ledger(path) as ledger:  # the next command records it
        assert ledger.replayed == 1
        row = ledger.task(f"{0:064x}")
        assert row["state"] == "submitted" and row["task_id"] == "task-locked-out"
        assert {r["state"] for r in ledger.rows()} == {"submitted"}  # the rest were never sent


def test_each_task_id_shares_a_commit_with_the_next_claim_and_is_counted_once_written(tmp_path):
    import httpx

    commits: list[str] = []
    n = 0

    def handler(request):
        nonlocal n
        n += 1
        return httpx.Response(
            200, json={"code": 1, "data": {"task_id": f"task-{n}", "estimated_time": 30}}
        )

    last = [""]

    def trace(statement: str) -> None:  # a statement outside BEGIN … COMMIT is a commit of its own
        echo, last[0] = (
            statement == last[0],
            statement,
        )  # SQLite traces an UPDATE again as it enters a trigger
        if not echo and (
            statement.startswith("COMMIT")
            or (statement.startswith(("INSERT", "UPDATE")) and not in_transaction())
        ):
            commits.append(statement.split()[0])

    with Ledger(tmp_path / "ledger.db") as ledger:
        in_transaction = lambda: ledger.db.conn.in_transaction  # noqa: E731
        ledger.db.conn.set_trace_callback(trace)
        report, _ = submission_against(ledger, handler, n=3)
        ledger.db.conn.set_trace_callback(None)
        rows = sorted((row["task_id"], row["state"]) for row in ledger.rows())
    assert report.outcomes["submitted"] == 3 and report.calls == 3
    assert rows == [("task-1", "submitted"), ("task-2", "submitted"), ("task-3", "submitted")]
    # the run's start | claim 1 | answer 1 + claim 2 | answer 2 + claim 3 | answer 3 alone
    # (one statement, its own transaction): four commits for three requests, not six
    assert commits == ["COMMIT", "COMMIT", "COMMIT", "COMMIT", "UPDATE"], commits


class GatedClock:
    """Fake time whose waits block until the test lets them through."""

    def __init__(self):
        self.at = 0.0
        self.waiting = threading.Event()
        self.go = threading.Event()

    def now(self):
        return self.at

    def sleep(self, seconds, stop=None):
        self.waiting.set()
        self.go.wait(10)
        self.at += max(0.0, seconds)
        return bool(stop is not None and stop.is_set())


def test_a_request_waiting_for_its_rpm_slot_is_not_yet_claimed_and_the_task_id_before_it_is_written(
    tmp_path,
):
    from batchgen.limits import RateLimiter

    path = tmp_path / "ledger.db"
    clock = GatedClock()
    done: dict = {}
    with Ledger(path) as ledger:
        limiter = RateLimiter(60, clock=clock)  # one call a second: the second request waits
        run = threading.Thread(
            target=lambda: done.update(
                report=submission_against(ledger, creates_each, limiter=limiter)[0]
            )
        )
        run.start()
        assert clock.waiting.wait(10)
        # What a SIGKILL now would leave: the first request's task id, and nothing `sending`
        # that was never sent (which would come back in_doubt, and not be sent again).
        with contextlib.closing(sqlite3.connect(path)) as other_process:
            rows = other_process.execute(
                "SELECT key, state, task_id FROM tasks ORDER BY key"
            ).fetchall()
        clock.go.set()
        run.join(10)
    assert rows == [(f"{0:064x}", "submitted", "task-p0")]
    assert done["report"].outcomes["submitted"] == 3 and done["report"].calls == 3


def test_a_call_whose_claim_took_long_takes_a_new_slot_so_the_rpm_ceiling_holds(
    tmp_path, monkeypatch
):
    import httpx

    from batchgen.limits import LATE, RateLimiter

    clock = FakeClock()
    sent_at: list[float] = []
    slots: list[float] = []

    def handler(request):
        sent_at.append(clock.at)
        return httpx.Response(
            200, json={"code": 1, "data": {"task_id": f"task-{len(sent_at)}", "estimated_time": 30}}
        )

    limiter = RateLimiter(60, clock=clock)
    reserve = limiter.reserve
    monkeypatch.setattr(limiter, "reserve", lambda: slots.append(reserve()) or slots[-1])
    with Ledger(tmp_path / "ledger.db") as ledger:
        claim = ledger.claim

        def slow_claim(*args, **kwargs):  # another process holds the ledger's lock a while
            clock.at += 2.0
            return claim(*args, **kwargs)

        monkeypatch.setattr(ledger, "claim", slow_claim)
        report, _ = submission_against(ledger, handler, n=3, limiter=limiter)
    assert report.outcomes["submitted"] == 3
    # Each call went out in a slot of its own, on time: none late enough to bunch with the next.
    assert all(0 <= at - max(s for s in slots if s <= at) <= LATE for at in sent_at), (
        sent_at,
        slots,
    )
    assert all(b - a >= 1.0 for a, b in zip(sent_at, sent_at[1:]))


def test_a_task_id_is_written_before_the_spend_cap_re_reads_the_balance(tmp_path, monkeypatch):
    from batchgen import budget
    from batchgen.prices import PriceBook, PriceRule

    path = tmp_path / "ledger.db"
    seen: list = []

    def read_balance():  # a round trip, which a kill may cut: the ledger as it stands then
        with contextlib.closing(sqlite3.connect(path)) as other_process:
            seen.append(
                other_process.execute("SELECT state, task_id FROM tasks ORDER BY key").fetchall()
            )
        return 1000

    monkeypatch.setattr(budget, "CHECK_AFTER", 1)  # re-read after every create
    cap = budget.Budget(
        100,
        PriceBook([PriceRule((), 1, "j", 1, 1, "prices[0]")]),
        balance_before=1000,
        read_balance=read_balance,
    )
    with Ledger(path) as ledger:
        report, _ = submission_against(ledger, creates_each, n=2, budget=cap)
    assert seen == [
        [("submitted", "task-p0")],
        [("submitted", "task-p0"), ("submitted", "task-p1")],
    ]
    assert report.outcomes["submitted"] == 2 and report.capped is None


def test_a_second_ctrl_c_journals_the_task_ids_workers_received_but_had_not_written(
    tmp_path, monkeypatch
):
    holding, let_go = threading.Event(), threading.Event()
    path = tmp_path / "ledger.db"
    with Ledger(path) as ledger:
        claim = ledger.claim

        def stuck_claim(*args, answered=None, **kwargs):  # the next claim waits on a locked ledger
            if answered is not None:
                holding.set()
                let_go.wait(10)
            return claim(*args, answered=answered, **kwargs)

        monkeypatch.setattr(ledger, "claim", stuck_claim)
        notices, _ = cut_short_by_two_ctrl_cs(ledger, creates_each, holding)
        # What the process leaves as it exits: the row in_doubt, as any call it quit on,
        # and the task id in the journal.
        assert ledger.task(f"{0:064x}")["state"] == "in_doubt"
        assert [e["task_id"] for e in journal.entries(path)] == ["task-p0"]
        assert any("task-p0" in line and ".journal" in line for line in notices)
        let_go.set()  # (in this test the worker lives on: it may write the id too)
        join_senders(10)
    with Ledger(path) as ledger:  # the next command records it
        row = ledger.task(f"{0:064x}")
        assert row["state"] == "submitted" and row["task_id"] == "task-p0"


@pytest.mark.slow
def test_a_second_ctrl_c_quits_within_seconds_while_a_worker_waits_on_a_ledger_another_process_holds(
    tmp_path,
):
    """The user's second Ctrl-C means "quit now". A worker whose next claim waits for another
    process's write lock holds the ledger for up to the busy timeout; the run quits after
    `QUIT_WAIT` instead, leaving what it could not write to the next command."""
    from batchgen.ledger import QUIT_WAIT

    path = tmp_path / "ledger.db"
    other_process = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holding = threading.Event()

    def handler(request):  # the first answer comes; then another process takes the write lock
        other_process.execute("BEGIN IMMEDIATE")
        holding.set()
        return creates_each(request)

    with Ledger(path, busy_timeout=20) as ledger:
        # 0.2 s after the answer, the worker's next claim is waiting for the lock.
        notices, quit_after = cut_short_by_two_ctrl_cs(ledger, handler, holding, settle=0.2)
        assert quit_after < QUIT_WAIT + 3, quit_after  # not the busy timeout (20 s here)
        assert any("ledger is busy" in line and "in_doubt" in line for line in notices), notices
        assert [e["task_id"] for e in journal.entries(path)] == ["task-p0"]
        other_process.execute("ROLLBACK")  # (in this test the worker lives on, and ends)
        join_senders(20)
    other_process.close()
    with Ledger(path) as ledger:  # the next command: the task id is recorded, nothing is sending
        assert ledger.task(f"{0:064x}")["task_id"] == "task-p0"
        assert [row["state"] for row in ledger.rows()] == ["submitted"]


@pytest.mark.parametrize("eta", [b"1e308", b"Infinity", b"NaN", b"-1", b"1" + b"0" * 400])
def test_an_absurd_estimated_time_is_recorded_as_unknown_not_a_crash(tmp_path, eta):
    import httpx

    def handler(request):
        return httpx.Response(
            200,
            content=b'{"code": 1, "data": {"task_id": "t-'
            + str(len(eta)).encode()
            + b'", "estimated_time": '
            + eta
            + b"}}",
        )

    with Ledger(tmp_path / "ledger.db") as ledger:
        report, _ = submission_against(ledger, handler, n=1)
        row = next(ledger.rows())
    assert report.outcomes["submitted"] == 1 and not report.unrecorded
    assert row["state"] == "submitted" and row["estimated_time"] is None and row["eta_at"] is None


def mount_tiny_tmpfs(folder) -> bool:
    folder.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )


def test_disk_full_while_recording_keeps_the_task_id(tmp_path):
    import httpx

    small = tmp_path / "small"
    if not mount_tiny_tmpfs(small):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    try:
        path = small / "ledger.db"
        filler = small / "filler"

        def handler(request):
            # The disk fills while the call is out (another program writing).
            if not filler.exists():
                try:
                    with open(filler, "wb") as f:
                        while True:
                            f.write(b"\0" * 4096)
                            f.flush()
                except OSError:
                    pass
            return httpx.Response(
                200, json={"code": 1, "data": {"task_id": "task-disk-full", "estimated_time": 30}}
            )

        with Ledger(path) as ledger:
            ledger.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            journal.reserve(path)  # as a run does at its start
            report, notices = submission_against(ledger, handler, n=2)
        assert report.aborted and "could not record" in report.aborted
        assert any("task-disk-full" in line and ".journal" in line for line in notices), notices
        assert [e["task_id"] for e in journal.entries(path)] == ["task-disk-full"]
        journal.release_reserve(path)  # as a run does at its end
        filler.unlink()  # space again
        with Ledger(path) as ledger:
            assert ledger.replayed == 1
            row = ledger.task(f"{0:064x}")
        assert row["state"] == "submitted" and row["task_id"] == "task-disk-full"
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


# -- 5. SIGTERM, SIGHUP and a closed stdout -------------------------------------------------------


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


# -- 6. classification by what the API documents ------------------------------------------------------


def test_a_moderation_refusal_is_a_rejection_and_the_batch_goes_on(world, write_job):
    env = world(reject_rate=0.3, reject_message="Prompt contains forbidden content", seed=2)
    job = write_job(job_text(prompts(20)))
    result = env.cli("run", job, *FAST, "--concurrency", "1")
    assert result.exit_code == 1, result.output  # not 3: the key was not refused
    assert "refused the key" not in result.output and "out of credit" not in result.output
    states = [r["state"] for r in env.rows()]
    assert len(states) == 20 and "rejected" in states and "failed" not in states
    assert states.count("submitted") == len(env.sandbox.created())
    again = env.cli("run", job, *FAST)  # the rejected ones are not sent again first
    assert again.exit_code == 1 and len(env.sandbox.created()) == states.count("submitted")


# -- 7. the key appears nowhere ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", [TEST_KEY + "\n", TEST_KEY + "\r", "\t" + TEST_KEY, TEST_KEY[:-1] + "é"]
)
def test_a_key_with_whitespace_or_non_ascii_is_refused_and_shown_nowhere(world, write_job, bad):
    env = world()
    job = write_job(job_text(prompts(2)))
    result = env.cli("run", job, *FAST, env={"PIXWITH_API_KEY": bad})
    assert result.exit_code == 2, result.output
    assert TEST_KEY[4:] not in result.output and "PIXWITH_API_KEY" in result.output
    assert env.sandbox.calls == []
    for path in env.tmp.rglob("*"):
        if path.is_file():
            assert TEST_KEY[4:].encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    "content", [b"\x7fELF\x02\x01\x01" + bytes(range(256)), b"", b"k\xc3\xa9y_0123456789"]
)
def test_a_key_file_that_is_no_key_is_refused_without_a_traceback(world, write_job, content):
    env = world()
    key_file = env.tmp / "key.bin"
    key_file.write_bytes(content)
    result = env.cli(
        "run",
        write_job(job_text(prompts(1))),
        *FAST,
        "--api-key-file",
        key_file,
        env={"PIXWITH_API_KEY": None},
    )
    assert result.exit_code == 2 and "--api-key-file" in result.output
    assert env.sandbox.calls == []


# -- 9. the ledger is trusted only when sound ------------------------------------------------------


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


# -- 11. smaller ones --------------------------------------------------------------------------------


def test_a_null_csv_cell_deletes_in_every_column(cli, write_job):
    job = write_job(
        "version: 1\ndefaults:\n  model: wan2.2-pro\n"
        "  options: {prompt_optimization: true, aspect_ratio: '16:9', resolution: 480p, duration: 5}\n"
        "requests:\n  - rows: {file: shots.csv}\n",
        files={
            "shots.csv": "prompt,model,options.aspect_ratio\nA cat,null,9:16\nA dog,wan2.2-fast,null\nnull,2-9,16:9\n"
        },
    )
    result = cli("validate", job)
    assert result.exit_code == 2
    assert "missing model" in result.stderr and "missing options.aspect_ratio" in result.stderr
    assert '"null" is not one of' not in result.stderr  # not the text "null"
    ok = write_job(
        "version: 1\ndefaults:\n  model: wan2.2-pro\n  image_urls: https://e.com/a.jpg\n"
        "  options: {prompt_optimization: true, aspect_ratio: '16:9', resolution: 480p, duration: 5}\n"
        "requests:\n  - rows: {file: ok.csv}\n",
        name="ok.yaml",
        files={"ok.csv": "prompt,image_urls\nnull,null\n"},
    )
    body = json.loads(cli("plan", ok, "--json").stdout)["requests"][0]["body"]
    assert body["prompt"] == "null" and "image_urls" not in body  # a prompt may be the word null


def test_tasks_csv_with_no_rows_has_every_column(world, write_job):
    env = world()
    job = write_job(job_text(prompts(1)))
    env.cli("run", job, *FAST)
    header = env.cli("tasks", "--csv", "--state", "rejected").stdout.splitlines()
    with env.ledger() as ledger:
        assert header == [",".join(ledger.columns())]
    assert len(header[0].split(",")) == 20


def test_manifest_cells_that_look_like_formulas_are_text(world, write_job):
    import csv

    env = world(time_scale=0)
    hostile = ['=HYPERLINK("http://evil","x")', "+1+2", "-cmd", "@SUM(A1)"]
    job = write_job(
        "version: 1\nname: formulas\ndefaults:\n  model: wan2.2-pro\n"
        "  options: {prompt_optimization: true, aspect_ratio: '16:9', resolution: 480p, duration: 5}\n"
        "requests:\n  - matrix: {prompt: " + json.dumps(hostile) + "}\n"
    )
    assert env.cli("run", job, *FAST, "--wait").exit_code == 0
    out = env.tmp / "videos"
    assert env.cli("download", job, "--out", out).exit_code == 0
    with open(out / "manifest.csv", newline="") as f:
        prompts_written = sorted(row["prompt"] for row in csv.DictReader(f))
    assert prompts_written == sorted("'" + p for p in hostile)


@pytest.mark.slow
def test_two_sandbox_runs_at_once_each_have_their_own_and_keys_stay_the_same(tmp_path, write_job):
    job = write_job(job_text(prompts(3)))
    other = write_job(job_text(prompts(3, tag="other")), name="other.yaml")
    env = {**os.environ, "BATCHGEN_LEDGER": str(tmp_path / "ledger.db"), "BATCHGEN_TESTING": "1"}
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchgen",
                "run",
                str(j),
                "--sandbox",
                "--yes",
                "--wait",
                "--rpm",
                "0",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for j in (job, other)
    ]
    for process in runs:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, out + err
    again = subprocess.run(
        [sys.executable, "-m", "batchgen", "run", str(job), "--sandbox", "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and "3 done" in again.stdout  # same identities from a new sandbox
    with Ledger(tmp_path / "ledger.db") as ledger:
        assert {r["api_base"] for r in ledger.rows()} == {"http://127.0.0.1:47878"}


# -- 8. downloads are bounded -------------------------------------------------------------------


class HostileFiles:
    """A file host on loopback that misbehaves on purpose, path by path."""

    def __init__(self):
        import http.server

        outer = self
        self.hits: list[str] = []
        self.headers: list[dict[str, str]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.hits.append(self.path)
                outer.headers.append(dict(self.headers))
                name = self.path.strip("/")
                try:
                    getattr(outer, "serve_" + name.split("?")[0].replace("-", "_"))(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.loopback = Loopback(Handler)
        self.base = self.loopback.base_url

    def close(self):
        self.loopback.close()

    @staticmethod
    def serve_endless(h):  # no length, never ends
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        h.end_headers()
        chunk = b"\0" * 65536
        for _ in range(100_000):
            h.wfile.write(chunk)

    @staticmethod
    def serve_slow(h):  # a byte now and then: never stalls, never ends
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(1000):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.2)

    @staticmethod
    def serve_huge(h):  # says so up front
        h.send_response(200)
        h.send_header("Content-Length", str(10 << 30))
        h.end_headers()

    @staticmethod
    def redirect(h, status: int, location: str) -> None:
        h.send_response(status)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def serve_loop(self, h):
        self.redirect(h, 302, "/loop")

    def serve_to_private(self, h):
        self.redirect(h, 302, "https://10.1.2.3/internal.mp4")  # refused before any connection

    def serve_to_metadata(self, h):
        self.redirect(h, 301, "https://169.254.169.254/latest/meta-data")

    @staticmethod
    def serve_flaky(h):  # a 503 first, then the file
        if HostileFiles.flaky_done:
            body = b"fine video"
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        else:
            HostileFiles.flaky_done = True
            h.send_response(503)
            h.send_header("Content-Length", "0")
            h.end_headers()

    flaky_done = False


@pytest.fixture
def hostile():
    files = HostileFiles()
    yield files
    files.close()


def fetch(url, tmp_path, *, loopback_api=True, **bounds):
    import httpx

    from batchgen.download import Bounds, Files, fetch_file
    from batchgen.limits import Backoff

    target = tmp_path / "video.mp4"
    files = Files(
        httpx.Timeout(5.0, read=bounds.pop("stall_timeout", 5.0))
    )  # what `download` fetches with
    try:
        started = time.monotonic()
        result = fetch_file(
            files,
            url,
            target,
            loopback_api=loopback_api,
            bounds=Bounds(backoff=Backoff(base=0, max_attempts=2), **bounds),
        )
    finally:
        files.close()
    return result, time.monotonic() - started, target


def test_a_file_host_is_sent_the_agent_and_nothing_of_the_users(hostile, tmp_path):
    result, _, target = fetch(hostile.base + "/flaky", tmp_path)  # 503, then the file
    assert result == len(b"fine video") and target.read_bytes() == b"fine video"
    for sent in hostile.headers:
        assert sent["User-Agent"].startswith("batchgen/")
        assert not {"Api-Key", "Cookie", "Authorization"} & set(sent)


def test_an_endless_body_stops_at_the_size_cap(hostile, tmp_path):
    result, took, target = fetch(hostile.base + "/endless", tmp_path, max_file_size=1 << 20)
    assert isinstance(result, str) and "max-file-size" in result
    assert not target.exists() and not list(tmp_path.glob("*.part")) and took < 10


def test_a_declared_size_over_the_cap_is_not_even_read(hostile, tmp_path):
    result, took, _ = fetch(hostile.base + "/huge", tmp_path)
    assert "max-file-size" in result and took < 5


@pytest.mark.slow
def test_a_trickle_meets_the_per_file_deadline(hostile, tmp_path):
    result, took, target = fetch(hostile.base + "/slow", tmp_path, deadline=1.0)
    assert "within 1 s" in result and not target.exists()
    assert took < 8  # two attempts of about a second each


def test_redirects_are_bounded_and_each_hop_is_checked(hostile, tmp_path):
    result, _, _ = fetch(hostile.base + "/loop", tmp_path)
    assert "more than 5 redirects" in result
    assert hostile.hits.count("/loop") == 6
    result, _, _ = fetch(hostile.base + "/to-private", tmp_path)
    assert "10.1.2.3" in result and "private" in result
    result, _, _ = fetch(hostile.base + "/to-metadata", tmp_path)
    assert "169.254.169.254" in result


def test_loopback_and_plain_http_only_when_the_api_is_loopback(hostile, tmp_path):
    result, _, _ = fetch(hostile.base + "/flaky", tmp_path, loopback_api=False)
    assert "only https" in result and hostile.hits == []


def test_a_transient_failure_is_retried_within_the_command(hostile, tmp_path):
    HostileFiles.flaky_done = False
    result, _, target = fetch(hostile.base + "/flaky", tmp_path)
    assert result == len(b"fine video") and target.read_bytes() == b"fine video"
    assert hostile.hits == ["/flaky", "/flaky"]


def test_download_command_applies_the_bounds_to_what_the_api_said(world, write_job, hostile):
    env = world(time_scale=0)
    job = write_job(job_text(prompts(2), name="hostile"))
    assert env.cli("run", job, *FAST, "--wait").exit_code == 0
    with env.ledger() as ledger:
        ledger.db.conn.execute(
            "UPDATE tasks SET result_urls = ?", [json.dumps([hostile.base + "/endless"])]
        )
    out = env.tmp / "videos"
    result = env.cli("download", job, "--out", out, "--max-file-size", "100000")
    assert result.exit_code == 1 and "max-file-size" in result.output
    assert list(out.glob("*.mp4")) == []
    assert env.cli("download", job, "--out", out, "--max-file-size", "nan").exit_code == 2
