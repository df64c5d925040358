"""A received answer is never thrown away: a task id the ledger cannot take (locked, full,
interrupted) is journaled, printed and replayed, and is written before anything that waits."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time

import pytest
from helpers import FakeClock, job_text, prompts

from batchgen.ledger import Ledger, journal

FAST = ("--yes", "--rpm", "60000")


def submission_against(ledger, handler, n=3, **kwargs):
    import httpx

    from batchgen.jobs.expand import Origin, Request
    from batchgen.ledger.run_locks import RunLock
    from batchgen.providers.pixwith.client import PixwithApi
    from batchgen.sending.run_report import RunSettings
    from batchgen.sending.submit import Submission

    notices: list[str] = []
    requests = [
        Request(f"{i:064x}", 0, {"prompt": f"p{i}", "model_id": "2-9", "options": {}}, Origin(0))
        for i in range(n)
    ]
    run_id = ledger.runs.start("j", "j.yaml", "https://api.pixwith.ai", {})
    lock = RunLock(ledger.path, run_id)
    with PixwithApi(
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


def cut_short_by_two_ctrl_cs(ledger, handler, ready: threading.Event) -> tuple[list[str], float]:
    """Send two requests, one at a time, and press Ctrl-C twice once `ready` is set; the run
    must raise Interrupted. (Its notices, the seconds it took.)"""
    import httpx

    from batchgen.errors import Interrupted
    from batchgen.jobs.expand import Origin, Request
    from batchgen.providers.pixwith.client import PixwithApi
    from batchgen.sending.run_report import RunSettings
    from batchgen.sending.submit import Submission

    class CtrlCTwice:  # the run's wait for its workers (`Submission._all_done`), cut short
        def wait(self, timeout):
            assert ready.wait(10)
            raise KeyboardInterrupt

        def set(self):
            pass

    notices: list[str] = []
    requests = [
        Request(f"{i:064x}", 0, {"prompt": f"p{i}", "model_id": "2-9", "options": {}}, Origin(0))
        for i in range(2)
    ]
    run_id = ledger.runs.start("j", "j.yaml", "https://api.pixwith.ai", {})
    with PixwithApi(
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

    with Ledger.open(path, busy_timeout=0.3) as ledger:
        report, notices = submission_against(ledger, handler)
    assert report.aborted and "could not record" in report.aborted
    assert report.unrecorded == ["task-locked-out"]
    assert any("task-locked-out" in line and ".journal" in line for line in notices)
    assert "task-locked-out" in journal.journal_path(path).read_text()
    blocker["conn"].execute("ROLLBACK")
    blocker["conn"].close()
    with Ledger.open(path) as ledger:  # the next command records it
        assert ledger.repaired.replayed == 1
        row = ledger.tasks.task(f"{0:064x}")
        assert row["state"] == "submitted" and row["task_id"] == "task-locked-out"
        assert {r["state"] for r in ledger.tasks.rows()} == {
            "submitted"
        }  # the rest were never sent


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
        rows = sorted((row["task_id"], row["state"]) for row in ledger.tasks.rows())
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
    from batchgen.sending.limits import RateLimiter

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

    from batchgen.sending.limits import LATE, RateLimiter

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
        claim = ledger.claims.claim

        def slow_claim(*args, **kwargs):  # another process holds the ledger's lock a while
            clock.at += 2.0
            return claim(*args, **kwargs)

        monkeypatch.setattr(ledger.claims, "claim", slow_claim)
        report, _ = submission_against(ledger, handler, n=3, limiter=limiter)
    assert report.outcomes["submitted"] == 3
    # Each call went out in a slot of its own, on time: none late enough to bunch with the next.
    assert all(0 <= at - max(s for s in slots if s <= at) <= LATE for at in sent_at), (
        sent_at,
        slots,
    )
    assert all(b - a >= 1.0 for a, b in zip(sent_at, sent_at[1:]))


def test_a_task_id_is_written_before_the_spend_cap_re_reads_the_balance(tmp_path, monkeypatch):
    from batchgen.jobs.prices import PriceBook, PriceRule
    from batchgen.sending import budget

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
        claim = ledger.claims.claim

        def stuck_claim(*args, answered=None, **kwargs):  # the next claim waits on a locked ledger
            if answered is not None:
                holding.set()
                let_go.wait(10)
            return claim(*args, answered=answered, **kwargs)

        monkeypatch.setattr(ledger.claims, "claim", stuck_claim)
        notices, _ = cut_short_by_two_ctrl_cs(ledger, creates_each, holding)
        # What the process leaves as it exits: the row in_doubt, as any call it quit on,
        # and the task id in the journal.
        assert ledger.tasks.task(f"{0:064x}")["state"] == "in_doubt"
        assert [e["task_id"] for e in journal.entries(path)] == ["task-p0"]
        assert any("task-p0" in line and ".journal" in line for line in notices)
        let_go.set()  # (in this test the worker lives on: it may write the id too)
        join_senders(10)
    with Ledger(path) as ledger:  # the next command records it
        row = ledger.tasks.task(f"{0:064x}")
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
    busy_timeout = 60.0

    def handler(request):  # the first answer comes; then another process takes the write lock
        other_process.execute("BEGIN IMMEDIATE")
        return creates_each(request)

    with Ledger(path, busy_timeout=busy_timeout) as ledger:
        claim, claiming = ledger.claims.claim, threading.Event()

        def next_claim(*args, answered=None, **kwargs):  # records the answer, claims the next
            if answered is not None:
                claiming.set()  # and now waits for the lock the other process holds
            return claim(*args, answered=answered, **kwargs)

        ledger.claims.claim = next_claim  # type: ignore[method-assign]
        notices, quit_after = cut_short_by_two_ctrl_cs(ledger, handler, claiming)
        # Not the busy timeout: QUIT_WAIT, with a margin that no loaded machine comes near.
        assert quit_after < busy_timeout / 2, (quit_after, QUIT_WAIT)
        assert any("ledger is busy" in line and "in_doubt" in line for line in notices), notices
        assert [e["task_id"] for e in journal.entries(path)] == ["task-p0"]
        other_process.execute("ROLLBACK")  # (in this test the worker lives on, and ends)
        join_senders(20)
    other_process.close()
    with Ledger(path) as ledger:  # the next command: the task id is recorded, nothing is sending
        assert ledger.tasks.task(f"{0:064x}")["task_id"] == "task-p0"
        assert [row["state"] for row in ledger.tasks.rows()] == ["submitted"]


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
        row = next(ledger.tasks.rows())
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

        with Ledger.open(path) as ledger:
            ledger.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            journal.reserve(path)  # as a run does at its start
            report, notices = submission_against(ledger, handler, n=2)
        assert report.aborted and "could not record" in report.aborted
        assert any("task-disk-full" in line and ".journal" in line for line in notices), notices
        assert [e["task_id"] for e in journal.entries(path)] == ["task-disk-full"]
        journal.release_reserve(path)  # as a run does at its end
        filler.unlink()  # space again
        with Ledger.open(path) as ledger:
            assert ledger.repaired.replayed == 1
            row = ledger.tasks.task(f"{0:064x}")
        assert row["state"] == "submitted" and row["task_id"] == "task-disk-full"
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_a_run_on_a_disk_too_full_for_the_journal_s_reserve_says_so(world, write_job, monkeypatch):
    """With less free than the journal's reserve, a run started with none, and said nothing:
    it still sends (as it would without a journal), and warns once, before sending."""
    import errno

    from batchgen.ledger import journal

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    env = world(time_scale=0)
    job = write_job(job_text(prompts(2)))
    monkeypatch.setattr(journal.os, "posix_fallocate", full)
    result = env.cli("run", job, "--yes", "--rpm", "0")
    assert result.exit_code == 0, result.output
    assert "warning: no space set aside for the journal" in result.stderr
    assert "No space left on device" in result.stderr
