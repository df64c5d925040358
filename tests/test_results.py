"""poll, run --wait and download against the sandbox over loopback."""

from __future__ import annotations

import csv
import json

import pytest
from helpers import FakeClock, job_text, prompts

from batchgen.providers.pixwith.sandbox import TEST_KEY, parse_task_id, sample_video


@pytest.mark.slow
def test_run_wait_ends_with_each_task_as_the_sandbox_decided(world, write_job):
    env = world(time_scale=0.002, fail_fraction=0.4, seed=5)
    job = write_job(job_text(prompts(10)))
    result = env.cli("run", job, "--yes", "--rpm", "60000", "--wait")
    assert result.exit_code == 1, result.output  # some generations failed
    rows = env.rows()
    assert {r["status"] for r in rows} == {"completed", "failed"}
    for row in rows:
        fails = parse_task_id(row["task_id"]).fails
        assert row["status"] == ("failed" if fails else "completed")
        assert bool(json.loads(row["result_urls"])) is not fails
        assert row["checked_at"]


@pytest.mark.slow
def test_poll_checks_only_tasks_past_their_eta_unless_all(world, write_job):
    env = world(time_scale=1)  # minutes: nothing is due
    job = write_job(job_text(prompts(3)))
    env.cli("run", job, "--yes", "--rpm", "60000")
    result = env.cli("poll", job)
    assert result.exit_code == 0 and "checked 0" in result.output
    result = env.cli("poll", job, "--all")
    assert "checked 3: 0 completed, 0 failed, 3 processing" in result.output


def test_unknown_task_ids_are_reported(world, write_job):
    env = world(time_scale=0)
    job = write_job(job_text(prompts(2)))
    env.cli("run", job, "--yes", "--rpm", "60000")
    with env.ledger() as ledger:
        ledger.db.conn.execute("UPDATE tasks SET task_id = 'not-a-sandbox-id' WHERE rowid = 1")
    result = env.cli("poll", job, "--all", "--rpm", "0")
    assert result.exit_code == 1 and "1 task ids unknown" in result.output


def done_job(env, write_job, n=4):
    job = write_job(job_text(prompts(n), name="shots"))
    result = env.cli("run", job, "--yes", "--rpm", "60000", "--wait")
    assert result.exit_code == 0, result.output
    return job


def test_download_fetches_each_file_once_byte_identical_with_a_manifest(world, write_job):
    env = world(time_scale=0)
    job = done_job(env, write_job)
    out = env.tmp / "videos"
    result = env.cli("download", job, "--out", out)
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.mp4"))
    assert len(files) == 4
    for path in files:
        assert path.read_bytes() == sample_video("16:9", 5)
        assert path.name.startswith("wan2.2-pro_p-") and "_v0" in path.name
    served = [c for c in env.sandbox.calls if c.endpoint == "file"]
    assert len(served) == 4
    again = env.cli("download", job, "--out", out)
    assert (
        again.exit_code == 0
        and "0 downloaded" in again.output
        and "4 already there" in again.output
    )
    assert len([c for c in env.sandbox.calls if c.endpoint == "file"]) == 4  # no new file requests
    with open(out / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert sorted(r["file"] for r in manifest) == [p.name for p in files]
    assert {r["model"] for r in manifest} == {"wan2.2-pro"}
    assert all(
        r["task_id"] and r["prompt"] and json.loads(r["options"])["duration"] == 5 for r in manifest
    )
    recorded = [json.loads(r["files"]) for r in env.rows()]
    assert sorted(p for paths in recorded for p in paths) == sorted(map(str, files))


def test_an_interrupted_download_leaves_no_partial_file_and_the_next_call_completes_it(
    world, write_job
):
    env = world(time_scale=0, cut_download_rate=1.0)
    job = done_job(env, write_job, n=2)
    out = env.tmp / "videos"
    result = env.cli("download", job, "--out", out)
    assert result.exit_code == 1 and "failed" in result.output
    assert list(out.glob("*.mp4")) == [] and list(out.glob("*.part")) == []
    env.sandbox.config.cut_download_rate = 0
    assert env.cli("download", job, "--out", out).exit_code == 0
    assert [p.read_bytes() == sample_video("16:9", 5) for p in out.glob("*.mp4")] == [True, True]


def test_download_defaults_to_outputs_job(world, write_job, monkeypatch):
    env = world(time_scale=0)
    done_job(env, write_job, n=1)
    monkeypatch.chdir(env.tmp)
    assert env.cli("download", "shots").exit_code == 0
    assert len(list(env.outputs("shots").glob("*.mp4"))) == 1


def unreachable_wait(env, write_job, n: int, name: str):
    """wait_for against an API that refuses every connection; (report, get calls, fake seconds)."""
    import httpx

    from batchgen.providers.pixwith.client import PixwithApi
    from batchgen.results.poll import wait_for
    from batchgen.sending.limits import RateLimiter

    job = write_job(job_text(prompts(n, tag=name), name=name), name=f"{name}.yaml")
    assert env.cli("run", job, "--yes", "--rpm", "0").exit_code == 0
    calls = []

    def unreachable(request):
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    clock = FakeClock()
    with (
        env.ledger() as ledger,
        PixwithApi(env.sandbox.base_url, "k", transport=httpx.MockTransport(unreachable)) as api,
    ):
        report = wait_for(ledger, api, name, limiter=RateLimiter(60, clock=clock), clock=clock)
    return report, len(calls), clock.at


def test_wait_gives_up_on_an_unreachable_api_within_a_bound_that_does_not_grow_with_the_tasks(
    world, write_job
):
    env = world(time_scale=0)
    small = unreachable_wait(env, write_job, 4, "few")
    large = unreachable_wait(env, write_job, 120, "many")
    for report, calls, seconds in (small, large):
        assert (
            report.gave_up and "could not be reached" in report.gave_up and report.aborted is None
        )
        assert calls <= 3 * (6 + 4)  # UNREACHABLE_ROUNDS x (UNREACHABLE_CALLS + calls in flight)
        assert seconds < 60  # at rpm 60: a minute of (fake) pacing at most
    assert large[0].processing == 120  # nothing recorded wrongly; poll --wait resumes later
    assert large[1] <= small[1] + 4


def test_a_huge_eta_does_not_keep_wait_from_polling(world, write_job):
    from datetime import timedelta

    from batchgen.providers.pixwith.client import PixwithApi
    from batchgen.results.poll import MAX_SLEEP, REPOLL, wait_for
    from batchgen.sending.limits import RateLimiter
    from batchgen.times import now, timestamp

    env = world(time_scale=0)
    job = write_job(job_text(prompts(2), name="slowpoke"))
    env.cli("run", job, "--yes", "--rpm", "0")
    with env.ledger() as ledger:  # the API promised a year; it was last heard of 11 minutes ago
        ledger.db.conn.execute(
            "UPDATE tasks SET eta_at = ?, submitted_at = ?",
            [
                timestamp(now() + timedelta(days=365)),
                timestamp(now() - REPOLL - timedelta(minutes=1)),
            ],
        )
    clock = FakeClock()
    with env.ledger() as ledger, PixwithApi(env.sandbox.base_url, TEST_KEY) as api:
        report = wait_for(
            ledger, api, "slowpoke", limiter=RateLimiter(None, clock=clock), clock=clock
        )
    assert report.completed == 2
    assert all(s <= MAX_SLEEP for s in clock.slept)


def test_a_poll_records_its_answers_in_groups_and_each_answer_once(world, write_job, monkeypatch):
    """A status is re-asked if lost, so a poll commits answers together, not one
    durable commit per task; every answer still lands."""
    from batchgen.ledger.claims import Claims
    from batchgen.results.poll import RECORD_GROUP

    env = world(time_scale=0)
    job = write_job(job_text(prompts(100)))
    assert env.cli("run", job, "--yes", "--rpm", "0").exit_code == 0
    commits = []
    real = Claims.record_statuses

    def counted(self, found):
        found = list(found)
        commits.append(len(found))
        return real(self, found)

    monkeypatch.setattr(Claims, "record_statuses", counted)
    result = env.cli("poll", job, "--all", "--rpm", "0")
    assert "checked 100: 100 completed" in result.output
    assert sum(commits) == 100 and len(commits) <= 100 // RECORD_GROUP + 1
    assert {row["status"] for row in env.rows()} == {"completed"}


def test_a_poll_killed_mid_group_loses_only_answers_that_are_asked_again(world, write_job):
    import time

    env = world(time_scale=0)
    job = write_job(job_text(prompts(120)))
    assert env.cli("run", job, "--yes", "--rpm", "0").exit_code == 0
    env.sandbox.config.latency_ms = 20  # a get-task answer takes a while: the kill lands mid-poll
    process = env.popen("poll", job, "--all", "--rpm", "0", "--concurrency", "4")
    deadline = time.monotonic() + 20
    while sum(1 for c in env.sandbox.calls if c.endpoint == "get") < 40:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the poll never got going"
        time.sleep(0.01)
    process.kill()
    process.wait()
    statuses = [row["status"] for row in env.rows()]
    assert statuses.count("completed") < 120  # some answers were not recorded yet
    env.sandbox.config.latency_ms = 0
    result = env.cli("poll", job, "--rpm", "0")  # due ones only: every task not known to have ended
    assert "completed" in result.output
    assert {row["status"] for row in env.rows()} == {"completed"}
    with env.ledger() as ledger:
        assert ledger.integrity() == "ok"


def test_an_answer_about_a_task_the_request_no_longer_holds_is_not_recorded(tmp_path):
    """`poll` in one terminal, `run --regenerate-failed` in another: the old task's `failed`,
    answered after the request was sent again, must not land on the new task (a second
    --regenerate-failed would then pay for the request once more)."""
    import httpx

    from batchgen.jobs.expand import Origin, Request
    from batchgen.ledger import Ledger
    from batchgen.providers.pixwith.client import PixwithApi
    from batchgen.results.poll import pending, poll
    from batchgen.sending.limits import RateLimiter

    path = tmp_path / "ledger.db"
    request = Request("k" * 64, 0, {"prompt": "p", "model_id": "2-9", "options": {}}, Origin(0))
    with Ledger(path) as ledger:
        first = ledger.runs.start("j", "j.yaml", "https://api", {})
        ledger.claims.claim(request, "j", "https://api", first, allow=set())
        ledger.claims.record_submitted(request.key, "t-1", 30)
        tasks = pending(ledger, None, due_only=False)  # the poll's view: t-1, processing

        def answer(call):
            # Meanwhile, in another process, an earlier poll saw t-1 fail and a rerun with
            # --regenerate-failed sent the request again.
            with Ledger(path) as other:
                other.db.conn.execute(
                    "UPDATE tasks SET status = 'failed' WHERE key = ?", (request.key,)
                )
                rerun = other.runs.start("j", "j.yaml", "https://api", {})
                assert (
                    other.claims.claim(
                        request, "j", "https://api", rerun, allow={"generation_failed"}
                    )
                    == "generation_failed"
                )
                other.claims.record_submitted(request.key, "t-2", 30)
            return httpx.Response(
                200, json={"code": 1, "data": {"status": 3, "error": "t-1 failed"}}
            )

        with PixwithApi("https://api", "key_test", transport=httpx.MockTransport(answer)) as api:
            report = poll(ledger, api, tasks, limiter=RateLimiter(None))
        assert report.failed == 1  # what the API said of t-1
        row = ledger.tasks.task(request.key)
    assert row["task_id"] == "t-2" and row["status"] == "processing" and row["error"] is None


@pytest.mark.slow
def test_a_rehearsal_s_videos_never_land_among_another_api_s(world, write_job, monkeypatch):
    """A run against the API the job is configured for, then the same job on the built-in
    sandbox: each API's videos in a folder of its own, and `runs` says which API each used."""
    env = world(time_scale=0)
    monkeypatch.chdir(env.tmp)
    job = write_job(job_text(prompts(2), name="rehearsed"))
    assert env.cli("run", job, "--yes", "--rpm", "0", "--wait", "--download").exit_code == 0
    assert env.cli("plan", job, "--sandbox").output.count("new 2") == 1  # not the same requests
    rehearsal = env.cli("run", job, "--sandbox", "--yes", "--rpm", "0", "--wait", "--download")
    assert rehearsal.exit_code == 0, rehearsal.output
    real, sandbox = env.outputs("rehearsed"), env.tmp / "outputs" / "sandbox" / "rehearsed"
    assert real != sandbox
    assert len(list(real.glob("*.mp4"))) == 2 and len(list(sandbox.glob("*.mp4"))) == 2
    assert env.cli("download", "rehearsed").exit_code == 0  # the configured API's only
    assert len(list(real.glob("*.mp4"))) == 2
    runs = env.cli("runs", "rehearsed").stdout.splitlines()
    assert "sandbox" in runs[1] and env.sandbox.base_url.split("://")[1] in runs[2]
