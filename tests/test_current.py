"""A job is what its file asks for now (issue 14, part): requests an edit dropped are kept in the
ledger, marked superseded, and left out of what the job shows unless --all; and `runs`."""

from __future__ import annotations

import json

from helpers import job_text, prompts

FAST = ("--yes", "--rpm", "0")


def test_an_edited_job_shows_only_what_its_file_asks_for_now(world, write_job):
    env = world(time_scale=0)
    job = write_job(job_text(prompts(5), name="cats"))
    assert env.cli("run", job, *FAST, "--wait").exit_code == 0
    write_job(job_text(prompts(3) + ["a new prompt"], name="cats"))  # two dropped, one added
    assert env.cli("run", job, *FAST, "--wait").exit_code == 0
    status = json.loads(env.cli("status", "cats", "--json").stdout)
    assert sum(row["n"] for row in status["counts"]) == 4
    everything = json.loads(env.cli("status", "cats", "--json", "--all").stdout)
    assert sum(row["n"] for row in everything["counts"]) == 6
    assert len(env.cli("tasks", "cats", "--json").stdout.splitlines()) == 4
    assert len(env.cli("tasks", "cats", "--json", "--all").stdout.splitlines()) == 6
    out = env.tmp / "videos"
    assert env.cli("download", "cats", "--out", out).exit_code == 0
    assert len(list(out.glob("*.mp4"))) == 4
    assert env.cli("download", "cats", "--out", out, "--all").exit_code == 0
    assert len(list(out.glob("*.mp4"))) == 6
    write_job(job_text(prompts(5), name="cats"))  # asked for again: current again, nothing sent
    result = env.cli("run", job, *FAST)
    assert "5 done" in result.output
    assert len(env.cli("tasks", "cats", "--json").stdout.splitlines()) == 5


def test_runs_lists_the_history_newest_first(world, write_job):
    env = world(credits=1000)
    job = write_job(job_text(prompts(2), name="hist"))
    env.cli("run", job, *FAST)
    env.cli("run", job, *FAST, "--limit", "0")
    lines = env.cli("runs", "hist").stdout.splitlines()
    assert lines[0].split() == ["run", "started", "(UTC)", "job", "did", "balance", "exit"]
    assert lines[1].startswith("2 ") and lines[2].startswith("1 ") and "2 submitted" in lines[2] and "1,000 → 960" in lines[2]
    history = [json.loads(line) for line in env.cli("runs", "--json").stdout.splitlines()]
    assert [r["id"] for r in history] == [2, 1]
    assert history[1]["counts"]["submitted"] == 2 and history[1]["flags"]["limit"] is None
    assert history[0]["flags"]["limit"] == 0 and history[1]["exit_code"] == 0


def test_on_done_runs_once_with_the_outcome_in_its_environment_and_not_the_key(world, write_job):
    import sys

    env = world(time_scale=0)
    job = write_job(job_text(prompts(3), name="notify"))
    out = env.tmp / "done.json"
    command = (
        f"{sys.executable} -c \"import os, json; json.dump({{k: v for k, v in os.environ.items()"
        f" if k.startswith(('BATCHGEN_', 'PIXWITH_API'))}}, open(r'{out}', 'a')); open(r'{out}', 'a').write('\\n')\""
    )
    assert env.cli("run", job, *FAST, "--wait", "--on-done", command).exit_code == 0
    seen = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert len(seen) == 1  # once
    assert seen[0]["BATCHGEN_JOB"] == "notify" and seen[0]["BATCHGEN_EXIT"] == "0"
    assert seen[0]["BATCHGEN_COMPLETED"] == "3" and json.loads(seen[0]["BATCHGEN_COUNTS"])["generation"]["completed"] == 3
    assert "PIXWITH_API_KEY" not in seen[0]
    out.unlink()
    assert env.cli("poll", "notify", "--wait", "--on-done", command).exit_code == 0
    assert json.loads(out.read_text().splitlines()[0])["BATCHGEN_EXIT"] == "0"


def test_download_without_wait_takes_what_is_done_and_says_what_is_pending(world, write_job):
    env = world(time_scale=1)  # minutes: nothing is done yet
    job = write_job(job_text(prompts(2), name="soon"))
    result = env.cli("run", job, *FAST, "--download")
    assert result.exit_code == 1 and "2 still processing" in result.output and "0 downloaded" in result.output
    env.sandbox.config.time_scale = 0  # (new tasks would be done at once; these keep their ETA)
    quick = write_job(job_text(prompts(2, tag="quick"), name="quick"), name="quick.yaml")
    done = env.cli("run", quick, *FAST, "--download")
    assert done.exit_code == 0 and "2 downloaded" in done.output


def test_the_progress_bar_fits_the_terminal_and_shows_the_true_rate():
    import io

    from batchgen.display import ProgressDisplay
    from batchgen.submit import RunReport

    stream = io.StringIO()
    bar = ProgressDisplay(500, stream=stream, tty=True, columns=60)
    report = RunReport()
    report.outcomes["submitted"] = 1
    bar(report)
    assert all(len(part) <= 59 for part in stream.getvalue().split("\r") if part)
    # At --rpm 300 a call every 0.2 s: 6 done 1 s after the first is 300/min, not 6/1 s = 360.
    fresh = ProgressDisplay(500, stream=io.StringIO(), tty=True)
    assert fresh.rate(1, 10.0) == 0.0
    assert fresh.rate(6, 11.0) * 60 == 300


def test_an_edit_that_fails_validation_links_and_supersedes_nothing(world, write_job):
    env = world()
    job = write_job(job_text(prompts(4), name="cats"))
    assert env.cli("run", job, *FAST).exit_code == 0
    with env.ledger() as ledger:
        before = [dict(r) for r in ledger.db.conn.execute("SELECT * FROM job_tasks ORDER BY key")]
    # Two prompts dropped, one added, and the last request breaks the schema: checked last,
    # after the plan has met (and staged) every other request.
    write_job(job_text(prompts(2) + ["a new prompt"], name="cats") + "  - prompt: x\n    options: {duration: 7}\n")
    refused = env.cli("run", job, *FAST)
    assert refused.exit_code == 2 and "duration" in refused.output
    with env.ledger() as ledger:
        after = [dict(r) for r in ledger.db.conn.execute("SELECT * FROM job_tasks ORDER BY key")]
    assert after == before and len(env.sandbox.created()) == 4


def test_a_job_that_fails_validation_leaves_no_ledger_behind(world, write_job):
    env = world()
    job = write_job(job_text(prompts(3), name="cats") + "  - prompt: x\n    options: {duration: 7}\n")
    assert env.cli("run", job, *FAST).exit_code == 2
    assert not env.ledger_path.exists() and env.sandbox.calls == []


def test_a_run_expands_its_job_once(world, write_job, monkeypatch):
    """Validation, the plan and the links share one pass (SPEC §6.7: a no-op rerun of a big job
    pays for one expansion), on a first run and on a rerun alike."""
    import batchgen.validate

    passes = []
    real = batchgen.validate.expand

    def counted(*args, **kwargs):
        passes.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(batchgen.validate, "expand", counted)
    env = world()
    job = write_job(job_text(prompts(3), name="cats"))
    assert env.cli("run", job, *FAST).exit_code == 0  # no ledger yet
    assert len(passes) == 1
    assert "3 done" in env.cli("run", job, *FAST).output
    assert len(passes) == 2
    assert len(env.cli("tasks", "cats", "--json").stdout.splitlines()) == 3
