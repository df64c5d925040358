"""`batchgen run` end to end over loopback HTTP, judged from the sandbox's own record."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest
from helpers import (
    StderrLines,
    assert_consistent,
    canonical,
    job_text,
    ledger_sql,
    prompts,
    wait_for_runs_to_end,
    wait_for_sending,
    write_lock_held,
)

from batchgen.providers.pixwith.sandbox import TEST_KEY


def planned_bodies(env, job) -> list[dict]:
    result = env.cli("plan", job, "--json", "--base-url", env.sandbox.base_url)
    return [r["body"] for r in json.loads(result.stdout)["requests"]]


def test_each_request_is_created_once_with_the_documented_headers_and_body(shared_world, write_job):
    env = shared_world()
    job = write_job(job_text(prompts(6)))
    result = env.cli("run", job, "--yes", "--rpm", "6000")
    assert result.exit_code == 0, result.output
    creates = [c for c in env.sandbox.calls if c.endpoint == "create"]
    assert all(c.api_key_ok and c.content_type == "application/json" for c in creates)
    assert sorted(map(canonical, (c.body for c in creates))) == sorted(
        map(canonical, planned_bodies(env, job))
    )
    assert set(env.created_bodies().values()) == {1}
    rows = env.rows()
    assert len(rows) == 6 and {r["state"] for r in rows} == {"submitted"}
    by_task = {c.task_id: canonical(c.body) for c in creates}
    for row in rows:  # the ledger's task id is the one the sandbox created for that body
        assert by_task[row["task_id"]] == canonical(json.loads(row["request"]))
        assert row["eta_at"] > row["submitted_at"]


def test_a_rerun_sends_nothing_and_an_edit_sends_exactly_the_edit(shared_world, write_job):
    env = shared_world()
    job = write_job(job_text(prompts(5)))
    assert env.cli("run", job, "--yes", "--rpm", "6000").exit_code == 0
    assert env.cli("run", job, "--yes", "--rpm", "6000").exit_code == 0
    assert len(env.sandbox.created()) == 5
    edited = prompts(5)
    edited[2] = "a dog in the garden"
    write_job(job_text(edited))
    assert env.cli("run", job, "--yes", "--rpm", "6000").exit_code == 0
    assert len(env.sandbox.created()) == 6
    assert env.sandbox.created()[-1].body["prompt"] == "a dog in the garden"


def test_raising_repeat_sends_only_the_new_variants(shared_world, write_job):
    env = shared_world()
    job = write_job(job_text(prompts(2), repeat=2))
    env.cli("run", job, "--yes", "--rpm", "6000")
    write_job(job_text(prompts(2), repeat=3))
    env.cli("run", job, "--yes", "--rpm", "6000")
    assert len(env.sandbox.created()) == 6
    assert set(env.created_bodies().values()) == {3}


def test_a_run_warns_as_plan_does_with_how_many_requests_each_warning_covers(world, write_job):
    env = world()
    job = write_job(job_text(["a", "b", "a", "a"]))  # two duplicates of one prompt
    warned = [line for line in env.cli("plan", job).stderr.splitlines() if "same request" in line]
    assert len(warned) == 1 and warned[0].endswith("[2 requests]")
    run = env.cli("run", job, "--yes", "--rpm", "0")
    assert run.exit_code == 0 and warned[0] in run.stderr.splitlines()
    again = env.cli("run", job, "--yes", "--rpm", "0")  # unchanged: the warnings as recorded
    assert again.exit_code == 0 and warned[0] in again.stderr.splitlines()
    assert len(env.sandbox.created()) == 2


def test_a_copy_of_the_job_under_another_name_sends_nothing(shared_world, write_job):
    env = shared_world()
    original = write_job(job_text(prompts(3), name="first"))
    env.cli("run", original, "--yes", "--rpm", "6000")
    copy = write_job(job_text(prompts(3), name="second"), name="copy.yaml")
    result = env.cli("run", copy, "--yes", "--rpm", "6000")
    assert result.exit_code == 0 and "3 done" in result.output
    assert len(env.sandbox.created()) == 3
    with env.ledger() as ledger:  # the copy is linked to the same tasks
        assert len(list(ledger.tasks.rows("second"))) == 3
        assert {r["job"] for r in ledger.tasks.rows("second")} == {"first"}


def test_dry_run_sends_and_writes_nothing(world, write_job):
    env = world()
    job = write_job(job_text(prompts(3)))
    result = env.cli("run", job, "--dry-run")
    assert result.exit_code == 0 and result.output.count("would send") == 3
    assert env.sandbox.calls == []
    assert env.rows() == []


def test_limit_sends_at_most_n(shared_world, write_job):
    env = shared_world()
    job = write_job(job_text(prompts(5)))
    result = env.cli("run", job, "--yes", "--limit", "2", "--rpm", "6000")
    assert result.exit_code == 0 and "3 not sent yet" in result.output
    assert len(env.sandbox.created()) == 2
    env.cli("run", job, "--yes", "--rpm", "6000")
    assert len(env.sandbox.created()) == 5


def test_plan_reports_what_the_ledger_knows(shared_world, write_job):
    env = shared_world()
    job = write_job(job_text(prompts(4)))
    env.cli("run", job, "--yes", "--limit", "3", "--rpm", "6000")
    plan = json.loads(env.cli("plan", job, "--json").stdout)
    assert plan["counts"]["done"] == 3 and plan["counts"]["new"] == 1
    assert [r["action"] for r in plan["requests"]].count("done") == 3
    # The text report comes from the same path, and says the same.
    text = env.cli("plan", job)
    assert (
        text.exit_code == 0
        and "wan2.2-pro     done 3  new 1" in text.stdout
        and "a run would send 1" in text.stdout
    )
    assert "ledger: " in text.stderr


FAULTS = dict(
    rate_429=0.15,
    rate_503=0.1,
    rate_500=0.1,
    drop_rate=0.1,
    lose_answer_rate=0.1,
    retry_after=0.05,
    seed=3,
)


def test_faults_never_create_twice_and_resubmitting_in_doubt_completes_the_job(
    shared_world, write_job
):
    env = shared_world(**FAULTS)
    job = write_job(job_text(prompts(40)))
    result = env.cli(
        "run",
        job,
        "--yes",
        "--rpm",
        "60000",
        "--concurrency",
        "8",
        "--max-identical-errors",
        "1000",
    )
    assert result.exit_code == 1, result.output  # some in doubt
    assert_consistent(env)
    states = {r["state"] for r in env.rows()}
    assert "in_doubt" in states and "submitted" in states
    assert "--resubmit-in-doubt" in result.output
    # With faults off: a plain rerun retries failed ones only; the flag resends in-doubt ones.
    env.sandbox.config.__dict__.update(
        rate_429=0, rate_503=0, rate_500=0, drop_rate=0, lose_answer_rate=0
    )
    env.cli("run", job, "--yes", "--rpm", "60000")
    assert {r["state"] for r in env.rows()} <= {"submitted", "in_doubt"}
    result = env.cli("run", job, "--yes", "--rpm", "60000", "--resubmit-in-doubt")
    assert result.exit_code == 0, result.output
    assert {r["state"] for r in env.rows()} == {"submitted"}


@pytest.mark.slow
def test_429_and_503_are_retried_and_retry_after_pauses_sending(world, write_job):
    # In the sandbox's record: throttled calls were retried until every request got through.
    env = world(rate_429=0.3, rate_503=0.3, retry_after=0.2, seed=1)
    job = write_job(job_text(prompts(6)))
    result = env.cli("run", job, "--yes", "--rpm", "60000", "--max-attempts", "30")
    assert result.exit_code == 0, result.output
    assert len(env.sandbox.created()) == 6 and set(env.created_bodies().values()) == {1}
    outcomes = {c.outcome for c in env.sandbox.calls}
    assert {"429", "503"} <= outcomes


def test_retry_after_in_seconds_and_as_a_date_pauses_every_call(tmp_path):
    # On a fake clock: the pause each Retry-After asks for is waited, by the whole run.
    import email.utils
    import time as real_time

    import httpx

    from batchgen.jobs.expand import Origin, Request
    from batchgen.ledger import Ledger
    from batchgen.ledger.run_locks import RunLock
    from batchgen.providers.pixwith.client import PixwithApi
    from batchgen.sending.limits import RateLimiter
    from batchgen.sending.run_report import RunSettings
    from batchgen.sending.submit import Submission

    class Clock:
        at = 0.0

        def now(self):
            return self.at

        def sleep(self, seconds, stop=None):
            self.at += max(0.0, seconds)
            return False

    clock = Clock()
    answers = [
        httpx.Response(503, headers={"Retry-After": "20"}),
        httpx.Response(
            429, headers={"Retry-After": email.utils.formatdate(real_time.time() + 40, usegmt=True)}
        ),
    ]
    arrivals = []

    def handler(request):
        arrivals.append(clock.at)
        if answers:
            return answers.pop(0)
        return httpx.Response(
            200, json={"code": 1, "data": {"task_id": f"t{len(arrivals)}", "estimated_time": 9}}
        )

    with (
        Ledger(tmp_path / "ledger.db") as ledger,
        PixwithApi(
            "https://api.pixwith.ai", "key_testtesttest", transport=httpx.MockTransport(handler)
        ) as api,
    ):
        run_id = ledger.runs.start("j", "j.yaml", "https://api.pixwith.ai", {})
        RunLock(ledger.path, run_id)
        request = Request("a" * 64, 0, {"prompt": "p", "model_id": "2-9", "options": {}}, Origin(0))
        limiter = RateLimiter(None, clock=clock)
        report = Submission(
            ledger,
            api,
            RunSettings(rpm=None, concurrency=1),
            job="j",
            api_base="https://api.pixwith.ai",
            run_id=run_id,
            limiter=limiter,
        ).run([request])
    assert report.outcomes["submitted"] == 1
    assert arrivals[1] - arrivals[0] >= 20  # Retry-After: 20
    assert arrivals[2] - arrivals[1] >= 38  # Retry-After: a date 40 s ahead (1 s resolution)
    assert limiter.slowdown > 1  # and then slower for a while


def test_a_refused_key_stops_at_once_with_exit_3_and_the_key_is_nowhere(world, write_job):
    env = world(keys=("key_the_right_one",))
    secret = "key_wrong_0123456789abcdef"
    job = write_job(job_text(prompts(30)))
    result = env.cli(
        "run", job, "--yes", "--rpm", "60000", "--concurrency", "4", env={"PIXWITH_API_KEY": secret}
    )
    assert result.exit_code == 3, result.output
    assert "refused the key" in result.output
    assert len([c for c in env.sandbox.calls if c.endpoint == "create"]) <= 4
    assert env.sandbox.created() == []
    assert secret not in result.output
    for path in env.tmp.iterdir():
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert (
        env.rows() == []
    )  # refused at the balance check, before any claim: sent once the key is right


def test_the_key_from_a_file(world, write_job):
    env = world()
    key_file = env.tmp / "key.txt"
    key_file.write_text(TEST_KEY + "\n")
    job = write_job(job_text(prompts(1)))
    result = env.cli("run", job, "--yes", "--api-key-file", key_file, env={"PIXWITH_API_KEY": ""})
    assert result.exit_code == 0, result.output


def test_no_key_is_a_usage_error(world, write_job):
    env = world()
    job = write_job(job_text(prompts(1)))
    result = env.cli("run", job, "--yes", env={"PIXWITH_API_KEY": ""})
    assert result.exit_code == 2 and "no API key" in result.output
    assert env.sandbox.calls == []


def test_plain_http_only_to_loopback(world, write_job):
    env = world()
    job = write_job(job_text(prompts(1)))
    result = env.cli("run", job, "--yes", "--base-url", "http://api.example.com")
    assert result.exit_code == 2 and "loopback" in result.output


def test_out_of_credit_stops_with_exit_3(world, write_job):
    env = world(credits=40)  # two Pro 480p 5 s at the sandbox's (invented) 20 each
    job = write_job(job_text(prompts(10)))
    result = env.cli("run", job, "--yes", "--rpm", "60000", "--concurrency", "1")
    assert result.exit_code == 3 and "out of credit" in result.output
    assert len(env.sandbox.created()) == 2


def test_a_run_of_identical_errors_stops(world, write_job):
    env = world(rate_500=1.0)
    job = write_job(job_text(prompts(20)))
    result = env.cli(
        "run", job, "--yes", "--rpm", "60000", "--concurrency", "1", "--max-identical-errors", "3"
    )
    assert result.exit_code == 3 and "3 requests in a row" in result.output
    assert len([c for c in env.sandbox.calls if c.endpoint == "create"]) == 3


def test_rejected_requests_are_only_retried_when_asked(shared_world, write_job):
    env = shared_world(reject_rate=1.0)
    job = write_job(job_text(prompts(2)))
    result = env.cli("run", job, "--yes", "--rpm", "60000")
    assert result.exit_code == 1 and "2 rejected" in result.output
    assert "--retry-rejected" in result.output
    assert {r["error"] for r in env.rows()} == {"code 0: prompt refused by content moderation"}
    env.sandbox.config.reject_rate = 0
    env.cli("run", job, "--yes", "--rpm", "60000")
    assert env.sandbox.created() == []  # not resent without the flag
    assert env.cli("run", job, "--yes", "--rpm", "60000", "--retry-rejected").exit_code == 0
    assert len(env.sandbox.created()) == 2


@pytest.mark.slow
def test_the_rpm_ceiling_holds_in_the_sandbox_record(world, write_job):
    rpm = 300  # one call every 0.2 s
    env = world(rpm_limit=rpm)
    job = write_job(job_text(prompts(12)))
    result = env.cli("run", job, "--yes", "--rpm", rpm, "--concurrency", "8")
    assert result.exit_code == 0, result.output
    times = sorted(c.at for c in env.sandbox.calls if c.endpoint == "create")
    assert len(times) == 12 and not [c for c in env.sandbox.calls if c.outcome == "429"]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # Evenly spread, not bursts. Arrival times carry scheduling jitter (a thread woken 40 ms
    # late on a busy machine), hence the margin; the ceiling itself is checked exactly below,
    # and by the sandbox, which enforces the same rpm and answered no 429.
    assert min(gaps) >= 60 / rpm * 0.75, gaps
    for i, start in enumerate(times):  # and never more than rpm in any 60 s window
        assert sum(1 for t in times[i:] if t - start < 60) <= rpm


def test_status_and_tasks(shared_world, write_job):
    env = shared_world()
    job = write_job(job_text(prompts(3), name="cats"))
    env.cli("run", job, "--yes", "--rpm", "6000")
    status = json.loads(env.cli("status", "cats", "--json").stdout)
    assert (
        status["job"] == "cats"
        and status["counts"][0]["n"] == 3
        and status["counts"][0]["model"] == "wan2.2-pro"
    )
    lines = env.cli("tasks", job, "--json").stdout.splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["state"] == "submitted"
    csv_out = env.cli("tasks", "cats", "--csv", "--state", "submitted").stdout.splitlines()
    assert csv_out[0].startswith("key,job,") and len(csv_out) == 4
    assert env.cli("status", "nope").exit_code == 2


def test_tasks_json_is_every_row_of_the_ledger_as_it_holds_it(shared_world, write_job):
    """`tasks --json` is made by SQLite, not by Python: the same values, types and order as
    the ledger's rows, whatever their text (non-ASCII, quotes, newlines); numbers to 15
    significant digits (SQLite's own), which every time the API gives keeps exactly."""
    env = shared_world()
    job = write_job(job_text(["a cat", 'Chat "été" 猫\n２', "a dog"], name="cats"))
    env.cli("run", job, "--yes", "--rpm", "0")
    ledger_sql(
        env.ledger_path,
        "UPDATE tasks SET estimated_time = 85.3, submitted_at = NULL"
        " WHERE key = (SELECT min(key) FROM tasks)",
    )
    ledger_sql(env.ledger_path, "UPDATE job_tasks SET meta = '{\"shot\": \"ü\"}', label = 'x\ty'")
    with env.ledger() as ledger:
        every = list(ledger.tasks.rows())
        of_job = list(ledger.tasks.rows("cats"))
    for args, expected in ((["tasks", "--json"], every), (["tasks", "cats", "--json"], of_job)):
        lines = env.cli(*args).stdout.splitlines()
        assert [json.loads(line) for line in lines] == expected
    assert any("été" in row["prompt"] for row in every) and every[-1]["submitted_at"] is None
    assert set(of_job[0]) == set(every[0]) | {"label", "meta"}


# -- processes: kills, signals, concurrency -------------------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_loses_nothing(world, write_job):
    env = world(latency_ms=15)
    job = write_job(job_text(prompts(60)))
    rng = random.Random(11)
    for _ in range(4):
        process = env.popen("run", job, "--yes", "--rpm", "60000", "--concurrency", "4")
        time.sleep(rng.uniform(0.4, 1.2))
        process.kill()
        process.wait()
    final = env.popen("run", job, "--yes", "--rpm", "60000")
    final.communicate(timeout=60)
    assert final.returncode in (0, 1)
    assert_consistent(env)
    with env.ledger() as ledger:
        assert ledger.integrity() == "ok"
    assert len(env.rows()) == 60
    assert {r["state"] for r in env.rows()} <= {"submitted", "in_doubt"}


def test_two_concurrent_runs_on_one_ledger_never_send_twice(shared_world, write_job):
    env = shared_world(latency_ms=10)
    job = write_job(job_text(prompts(40)))
    runs = [
        env.popen("run", job, "--yes", "--rpm", "60000", "--concurrency", "4") for _ in range(2)
    ]
    for process in runs:
        process.communicate(timeout=60)
        assert process.returncode == 0
    assert len(env.sandbox.created()) == 40
    assert set(env.created_bodies().values()) == {1}


@pytest.mark.slow
def test_ctrl_c_finishes_calls_in_flight_and_leaves_the_job_resumable(world, write_job):
    env = world(latency_ms=200)
    job = write_job(job_text(prompts(30)))
    process = env.popen("run", job, "--yes", "--rpm", "60000", "--concurrency", "4")
    assert env.sandbox.wait_answered(4, timeout=20)  # some answered, more on the way
    wait_for_sending(env, 1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "stopping" in err
    rows = env.rows()
    assert rows and {r["state"] for r in rows} == {"submitted"}, [
        (r["state"], r["error"]) for r in rows if r["state"] != "submitted"
    ]  # nothing left sending
    assert len(env.sandbox.created()) == len(rows)
    assert env.cli("run", job, "--yes", "--rpm", "60000").exit_code == 0
    assert len(env.sandbox.created()) == 30


@pytest.mark.slow
def test_on_a_terminal_a_big_run_asks_first_and_no_sends_nothing(world, write_job, monkeypatch):
    import batchgen.cli

    env = world()
    job = write_job(job_text(prompts(25)))
    monkeypatch.setattr(batchgen.cli.Terminal, "interactive", True, raising=False)
    made = batchgen.cli.Terminal.__init__

    def on_a_terminal(self, **options):
        made(self, **options)
        self.interactive = True

    monkeypatch.setattr(batchgen.cli.Terminal, "__init__", on_a_terminal)
    declined = env.runner.invoke(batchgen.cli.main, ["run", str(job)], env=env.env, input="n\n")
    assert (
        "send 25 requests (cost 0 credits at known prices + 25 of unknown price, balance 1,000,000; each may be billed)?"
        in declined.output
    )
    assert (
        declined.exit_code == 1 and [c for c in env.sandbox.calls if c.endpoint == "create"] == []
    )
    assert env.rows() == []
    accepted = env.runner.invoke(
        batchgen.cli.main, ["run", str(job), "--rpm", "60000"], env=env.env, input="y\n"
    )
    assert accepted.exit_code == 0 and len(env.sandbox.created()) == 25
    small = write_job(job_text(prompts(3, tag="small")), name="small.yaml")
    assert (
        env.runner.invoke(batchgen.cli.main, ["run", str(small)], env=env.env).exit_code == 0
    )  # 3 ≤ 20: no question


@pytest.mark.slow
def test_a_second_ctrl_c_quits_at_once_and_calls_in_flight_become_in_doubt(shared_world, write_job):
    env = shared_world(latency_ms=1500)
    job = write_job(job_text(prompts(8)))
    process = env.popen("run", job, "--yes", "--rpm", "60000", "--concurrency", "4")
    wait_for_sending(env, 4)  # four calls are in flight, each answered after 1.5 s
    stderr = StderrLines(process)
    process.send_signal(signal.SIGINT)
    stderr.wait_for("stopping")  # the first is handled: the run waits for its calls
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130
    err = stderr.text()
    assert "calls in flight are in_doubt" in err
    # It did not wait for the answers: had it, they would be recorded as submitted.
    rows = env.rows()
    assert rows and {r["state"] for r in rows} == {"in_doubt"}
    assert len(rows) == 4
    result = env.cli("run", job, "--yes", "--rpm", "60000")  # not resent without the flag
    assert result.exit_code == 1 and len(env.sandbox.created()) == 4 + 4


def _first_created(env, timeout: float = 20) -> None:
    """Until the sandbox has created a task (it records the call before holding the answer back)."""
    deadline = time.monotonic() + timeout
    while not env.sandbox.created():
        assert time.monotonic() < deadline, "the run never created a task"
        time.sleep(0.01)


def _rerun_after_the_kill(env, job) -> None:
    rerun = env.cli("run", job, "--yes", "--rpm", "60000")
    assert rerun.exit_code == 1 and "1 in_doubt" in rerun.output, rerun.output  # not sent again
    assert_consistent(env)
    assert len(env.sandbox.created()) == 3
    assert sorted(r["state"] for r in env.rows()) == ["in_doubt", "submitted", "submitted"]


def test_a_kill_after_the_task_was_created_and_before_its_answer_arrived_leaves_it_in_doubt(
    shared_world, write_job
):
    """Paid for, no task id: the request is in_doubt (never lost, never sent again unasked)."""
    env = shared_world(slow_rate=1.0, slow_seconds=3)
    job = write_job(job_text(prompts(3)))
    process = env.popen(
        "run", job, "--yes", "--rpm", "60000", "--concurrency", "1", "--read-timeout", "60"
    )
    _first_created(env)
    env.sandbox.config.slow_rate = 0.0  # the rerun's calls answer at once
    process.kill()
    process.wait()
    _rerun_after_the_kill(env, job)


@pytest.mark.slow
def test_a_kill_after_the_answer_arrived_and_before_its_commit_leaves_it_in_doubt(
    shared_world, write_job
):
    """The answer is in the process's memory and nowhere else: held off the ledger by a write
    lock this test takes once the task exists, the run is killed waiting for it."""
    env = shared_world(slow_rate=1.0, slow_seconds=0.3)
    job = write_job(job_text(prompts(3)))
    process = env.popen("run", job, "--yes", "--rpm", "60000", "--concurrency", "1")
    _first_created(env)
    env.sandbox.config.slow_rate = 0.0
    with write_lock_held(env.ledger_path):  # no write can commit: not the answer, not a claim
        # The task id is written back (after 0.3 s), and the run waits on the lock to record it.
        assert env.sandbox.wait_answered(1, timeout=20)
        assert process.poll() is None
        process.kill()
        process.wait()
    wait_for_runs_to_end(env.ledger_path)
    with env.ledger() as ledger:  # opening recovers the row the killed run left sending
        assert [r["state"] for r in ledger.tasks.rows()] == ["in_doubt"]
    _rerun_after_the_kill(env, job)


@pytest.mark.slow
def test_a_kill_while_a_group_of_answers_waits_for_its_commit_leaves_each_in_doubt(
    shared_world, write_job
):
    """Answers are committed in groups: four arrive while a write lock holds the ledger (one
    leads a commit that waits for the lock, three queue behind it), and the run is killed.
    All four are in_doubt, none is sent again, and the rerun sends only the four requests
    that were never claimed."""
    env = shared_world(slow_rate=1.0, slow_seconds=0.5)
    job = write_job(job_text(prompts(8)))
    process = env.popen("run", job, "--yes", "--rpm", "60000", "--concurrency", "4")
    deadline = time.monotonic() + 20
    while len(env.sandbox.created()) < 4:  # four calls in flight, each answered after 0.5 s
        assert time.monotonic() < deadline, "the run never had four calls in flight"
        time.sleep(0.005)
    with write_lock_held(env.ledger_path):
        env.sandbox.config.slow_rate = 0.0
        assert env.sandbox.wait_answered(4, timeout=20)  # the four wait in the group commit
        assert process.poll() is None
        process.kill()
        process.wait()
    wait_for_runs_to_end(env.ledger_path)
    with env.ledger() as ledger:
        assert [r["state"] for r in ledger.tasks.rows()] == ["in_doubt"] * 4
    rerun = env.cli("run", job, "--yes", "--rpm", "60000")
    assert rerun.exit_code == 1 and "4 in_doubt" in rerun.output, rerun.output
    assert_consistent(env)
    assert len(env.sandbox.created()) == 8
    assert sorted(r["state"] for r in env.rows()) == ["in_doubt"] * 4 + ["submitted"] * 4


def test_the_summary_says_why_requests_were_skipped():
    """'3 skipped' in a two-machine run did not say another run had claimed them."""
    from collections import Counter

    from batchgen.output.progress import summary_lines
    from batchgen.sending.run_report import RunReport

    report = RunReport(calls=1)
    report.outcomes.update(submitted=1, skipped=3)
    first = summary_lines("j", "j.yaml", report, Counter(), None, 0)[0]
    assert (
        first
        == "run done: 1 create call; 3 skipped (another run on this ledger claimed them first), 1 submitted"
    )
