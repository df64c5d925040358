"""poll, run --wait and download against the sandbox over loopback."""

from __future__ import annotations

import csv
import json

from test_run import job_text, prompts

from batchgen.sandbox import parse_task_id, sample_video


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
    result = env.cli("poll", job, "--all")
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
        assert path.read_bytes() == sample_video("2-9")
        assert path.name.startswith("wan2.2-pro_p-") and "_v0" in path.name
    served = [c for c in env.sandbox.calls if c.endpoint == "file"]
    assert len(served) == 4
    again = env.cli("download", job, "--out", out)
    assert again.exit_code == 0 and "0 downloaded" in again.output and "4 already there" in again.output
    assert len([c for c in env.sandbox.calls if c.endpoint == "file"]) == 4  # no new file requests
    with open(out / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert sorted(r["file"] for r in manifest) == [p.name for p in files]
    assert {r["model"] for r in manifest} == {"wan2.2-pro"}
    assert all(r["task_id"] and r["prompt"] and json.loads(r["options"])["duration"] == 5 for r in manifest)
    recorded = [json.loads(r["files"]) for r in env.rows()]
    assert sorted(p for paths in recorded for p in paths) == sorted(map(str, files))


def test_an_interrupted_download_leaves_no_partial_file_and_the_next_call_completes_it(world, write_job):
    env = world(time_scale=0, cut_download_rate=1.0)
    job = done_job(env, write_job, n=2)
    out = env.tmp / "videos"
    result = env.cli("download", job, "--out", out)
    assert result.exit_code == 1 and "failed" in result.output
    assert list(out.glob("*.mp4")) == [] and list(out.glob("*.part")) == []
    env.sandbox.config.cut_download_rate = 0
    assert env.cli("download", job, "--out", out).exit_code == 0
    assert [p.read_bytes() == sample_video("2-9") for p in out.glob("*.mp4")] == [True, True]


def test_download_defaults_to_outputs_job(world, write_job, monkeypatch):
    env = world(time_scale=0)
    done_job(env, write_job, n=1)
    monkeypatch.chdir(env.tmp)
    assert env.cli("download", "shots").exit_code == 0
    assert len(list((env.tmp / "outputs" / "shots").glob("*.mp4"))) == 1


def test_wait_gives_up_when_the_api_stays_unreachable(world, write_job, tmp_path):
    import httpx

    from batchgen.api import Api
    from batchgen.limits import Backoff, RateLimiter
    from batchgen.results import wait_for

    env = world(time_scale=0)
    job = write_job(job_text(prompts(2), name="down"))
    env.cli("run", job, "--yes", "--rpm", "60000")

    def unreachable(request):
        raise httpx.ConnectError("connection refused", request=request)

    with env.ledger() as ledger, Api(env.sandbox.base_url, "k", transport=httpx.MockTransport(unreachable)) as api:
        report = wait_for(
            ledger, api, "down", limiter=RateLimiter(None), sleep=lambda seconds: False, backoff=Backoff(base=0, max_attempts=2)
        )
    assert report.gave_up and "could not be reached" in report.gave_up and report.aborted is None
    assert report.processing == 2  # nothing recorded wrongly; poll --wait resumes later
