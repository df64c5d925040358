"""A job is what its file asks for now: requests an edit dropped are kept in the
ledger, marked superseded, and left out of what the job shows unless --all; and `runs`."""

from __future__ import annotations

import json

import pytest
from helpers import PRO_DEFAULTS, job_text, prompts, wait_for_runs_to_end

FAST = ("--yes", "--rpm", "0")


def test_an_edited_job_shows_only_what_its_file_asks_for_now(shared_world, write_job):
    env = shared_world(time_scale=0)
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


def test_runs_lists_the_history_newest_first(shared_world, write_job):
    env = shared_world(credits=1000)
    job = write_job(job_text(prompts(2), name="hist"))
    env.cli("run", job, *FAST)
    env.cli("run", job, *FAST, "--limit", "0")
    lines = env.cli("runs", "hist").stdout.splitlines()
    assert lines[0].split() == [
        "run",
        "started",
        "(UTC)",
        "job",
        "api",
        "did",
        "spent",
        "balance",
        "exit",
    ]
    assert (
        lines[1].startswith("2 ")
        and lines[2].startswith("1 ")
        and "2 submitted" in lines[2]
        and "1,000 → 960" in lines[2]
    )
    assert " 40 (prices: 0) " in lines[2]  # no price declared: only the balance knows it
    assert env.sandbox.base_url.split("://")[1] in lines[2]  # the API the run sent to
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
        f'{sys.executable} -c "import os, json; json.dump({{k: v for k, v in os.environ.items()'
        f" if k.startswith(('BATCHGEN_', 'PIXWITH_API'))}}, open(r'{out}', 'a')); open(r'{out}', 'a').write('\\n')\""
    )
    assert env.cli("run", job, *FAST, "--wait", "--on-done", command).exit_code == 0
    seen = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    assert len(seen) == 1  # once
    assert seen[0]["BATCHGEN_JOB"] == "notify" and seen[0]["BATCHGEN_EXIT"] == "0"
    assert (
        seen[0]["BATCHGEN_COMPLETED"] == "3"
        and json.loads(seen[0]["BATCHGEN_COUNTS"])["generation"]["completed"] == 3
    )
    assert "PIXWITH_API_KEY" not in seen[0]
    out.unlink()
    assert env.cli("poll", "notify", "--wait", "--on-done", command).exit_code == 0
    assert json.loads(out.read_text().splitlines()[0])["BATCHGEN_EXIT"] == "0"


def test_on_done_is_not_run_on_a_ledger_it_cannot_read_and_says_so(tmp_path):
    import sqlite3

    from batchgen.app.follow import on_done

    class BusyTasks:
        def job_states(self, job):
            raise sqlite3.OperationalError("the ledger is busy: another thread is waiting on it")

    class Busy:  # a ledger a worker still holds after a second Ctrl-C (Ledger.quitting)
        path = tmp_path / "batchgen.db"
        tasks = BusyTasks()

    said: list[str] = []
    console = type(
        "Console", (), {"err": staticmethod(said.append), "out": staticmethod(said.append)}
    )()
    marker = tmp_path / "ran"
    on_done(f"touch {marker}", Busy(), "job", "job.yaml", 130, console)  # type: ignore[arg-type]
    assert not marker.exists()
    assert said == [
        "--on-done not run: the ledger could not be read (the ledger is busy: another thread is waiting on it)"
    ]


def test_download_without_wait_takes_what_is_done_and_says_what_is_pending(world, write_job):
    env = world(time_scale=1)  # minutes: nothing is done yet
    job = write_job(job_text(prompts(2), name="soon"))
    result = env.cli("run", job, *FAST, "--download")
    assert (
        result.exit_code == 1
        and "2 still processing" in result.output
        and "0 downloaded" in result.output
    )
    env.sandbox.config.time_scale = 0  # (new tasks would be done at once; these keep their ETA)
    quick = write_job(job_text(prompts(2, tag="quick"), name="quick"), name="quick.yaml")
    done = env.cli("run", quick, *FAST, "--download")
    assert done.exit_code == 0 and "2 downloaded" in done.output


def test_the_progress_bar_fits_the_terminal_and_shows_the_true_rate():
    import io

    from batchgen.output.progress import ProgressDisplay
    from batchgen.sending.run_report import RunReport

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
    write_job(
        job_text(prompts(2) + ["a new prompt"], name="cats")
        + "  - prompt: x\n    options: {duration: 7}\n"
    )
    refused = env.cli("run", job, *FAST)
    assert refused.exit_code == 2 and "duration" in refused.output
    with env.ledger() as ledger:
        after = [dict(r) for r in ledger.db.conn.execute("SELECT * FROM job_tasks ORDER BY key")]
    assert after == before and len(env.sandbox.created()) == 4


def test_a_job_that_fails_validation_leaves_no_ledger_behind(world, write_job):
    env = world()
    job = write_job(
        job_text(prompts(3), name="cats") + "  - prompt: x\n    options: {duration: 7}\n"
    )
    assert env.cli("run", job, *FAST).exit_code == 2
    assert not env.ledger_path.exists() and env.sandbox.calls == []


def test_a_run_checks_plans_and_links_in_one_pass_and_holds_no_request(
    world, write_job, monkeypatch
):
    """Validation, the plan and the links share one pass (a no-op rerun of a big job
    pays for one expansion). What a run sends is held as keys and prices, and the requests
    are made again as they are sent: a first run never holds them all (a million of them were
    ~650 MB); a rerun with nothing to send makes none."""
    import batchgen.jobs.validate
    import batchgen.sending.plan

    passes = []
    real = batchgen.jobs.validate.expand

    def counted(*args, **kwargs):
        passes.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(batchgen.jobs.validate, "expand", counted)
    monkeypatch.setattr(batchgen.sending.plan, "expand", counted)
    env = world()
    job = write_job(job_text(prompts(3), name="cats"))
    assert env.cli("run", job, *FAST).exit_code == 0  # no ledger yet
    assert len(passes) == 2  # checked, planned and linked; sent
    assert "3 done" in env.cli("run", job, *FAST).output
    assert len(passes) == 2  # unchanged, nothing to send: planned from its counts (unchanged.py)
    job.write_text(job.read_text() + "# edited\n")
    assert "3 done" in env.cli("run", job, *FAST).output
    assert len(passes) == 3  # edited: checked, planned and linked in one pass; nothing to send
    assert len(env.cli("tasks", "cats", "--json").stdout.splitlines()) == 3


def test_a_request_made_again_unlike_the_plan_is_never_sent(world, write_job, monkeypatch):
    """Sending makes the requests again from the job already read, which gives the same ones;
    were it not so, nothing unplanned goes out: only the planned requests met before the
    difference are sent, and the run stops saying so (exit 3). The rest stay unsent."""
    import batchgen.sending.plan
    from batchgen.jobs.expand import expand

    def changed_at_third(*args, **kwargs):
        for i, request in enumerate(expand(*args, **kwargs)):
            yield (
                request._replace(key="f" * 64, body={**request.body, "prompt": "unplanned"})
                if i == 2
                else request
            )

    monkeypatch.setattr(batchgen.sending.plan, "expand", changed_at_third)
    env = world()
    job = write_job(job_text(prompts(5), name="cats"))
    result = env.cli("run", job, *FAST, "--concurrency", "1")
    assert (
        result.exit_code == 3
        and "were not the ones planned: 3 of them were not sent" in result.output
    )
    assert [c.body["prompt"] for c in env.sandbox.calls if c.endpoint == "create"] == prompts(5)[:2]
    monkeypatch.undo()
    assert "3 submitted" in env.cli("run", job, *FAST).output  # planned, never sent: sent now


def test_what_a_run_sends_is_held_as_keys_and_prices(load):
    """plan.ToSend: job order, duplicates once, a head, bodies resolved or left out."""
    from batchgen.jobs.validate import ValidatedJob
    from batchgen.sending.plan import no_ledger, prepare_run

    validated = ValidatedJob(load(job_text(["a", "b", "a", "c", "d"])), "https://api.pixwith.ai")
    plan, to_send = prepare_run(validated, no_ledger, set(), book=None)
    assert len(to_send) == 4 and plan.counts["new"] == 4
    assert [item.request.body["prompt"] for item in to_send] == ["a", "b", "c", "d"]
    assert [item.request.body["prompt"] for item in to_send] == [
        "a",
        "b",
        "c",
        "d",
    ]  # again, the same
    head = to_send.head(3)
    assert len(head) == 3 and list(head.prices()) == [None] * 3
    resolved = head.resolved(
        lambda body: None if body["prompt"] == "b" else {**body, "prompt": body["prompt"].upper()},
        left_out=1,
    )
    assert len(resolved) == 2 and [item.request.body["prompt"] for item in resolved] == ["A", "C"]
    assert len(to_send.head(0)) == 0 and list(to_send.head(0)) == []


def test_a_first_run_links_each_request_with_its_id_and_meta_from_the_keys_held(load):
    from batchgen.jobs.expand import expand
    from batchgen.jobs.validate import ValidatedJob
    from batchgen.sending.plan import no_ledger, prepare_run

    job = load(
        "version: 1\n"
        + PRO_DEFAULTS
        + "requests:\n  - {prompt: a, id: shot-a, meta: {take: 1}}\n  - {prompt: b}\n"
    )
    _, to_send = prepare_run(ValidatedJob(job, "https://api.pixwith.ai"), no_ledger, set())
    keys = [r.key for r in expand(job, "https://api.pixwith.ai")]
    assert list(to_send.links()) == [(keys[0], "shot-a", {"take": 1}), (keys[1], None, None)]


# -- what the commands say is what happened -------------------------------------------------------


def test_runs_records_the_exit_code_the_command_ended_with(world, write_job):
    """Sending went well (0), the download found tasks still processing (1): the run's record
    says 1, as the shell saw."""
    env = world(time_scale=1)
    job = write_job(job_text(prompts(2), name="later"))
    result = env.cli("run", job, *FAST, "--download")
    assert result.exit_code == 1
    (run,) = [json.loads(line) for line in env.cli("runs", "--json").stdout.splitlines()]
    assert run["exit_code"] == 1


def test_credits_that_cannot_reach_the_api_is_not_a_usage_error(world):
    env = world()
    result = env.cli(
        "credits", env={"PIXWITH_BASE_URL": "http://127.0.0.1:9"}
    )  # nothing listens there
    assert result.exit_code == 1 and "the balance could not be read" in result.output


@pytest.mark.slow
def test_download_after_a_run_without_wait_says_the_tasks_were_never_polled(world, write_job):
    env = world(time_scale=0)  # done at once, but no poll has asked yet
    job = write_job(job_text(prompts(3), name="unpolled"))
    assert env.cli("run", job, *FAST).exit_code == 0
    result = env.cli("download", "unpolled", "--out", env.tmp / "videos")
    assert result.exit_code == 1, result.output
    assert (
        "3 still processing as last polled (3 never polled since they were sent): batchgen poll unpolled --wait"
        in result.output
    )
    assert env.cli("poll", "unpolled").exit_code == 0
    assert "3 downloaded" in env.cli("download", "unpolled", "--out", env.tmp / "videos").output


def test_run_download_says_it_checks_the_tasks_before_downloading(world, write_job):
    env = world(time_scale=0)
    job = write_job(job_text(prompts(2), name="look"))
    result = env.cli("run", job, *FAST, "--download")
    assert result.exit_code == 0 and "checking 2 tasks before downloading" in result.stderr


def test_the_gallery_shows_each_requests_meta(world, write_job):
    env = world(time_scale=0)
    job = write_job(
        "version: 1\nname: shots\n"
        + PRO_DEFAULTS
        + "requests:\n  - {prompt: a fox, id: fox, meta: {scene: 12, take: <b>one</b>}}\n"
    )
    assert env.cli("run", job, *FAST, "--wait").exit_code == 0
    assert env.cli("gallery", "shots", "--out", env.tmp / "g").exit_code == 0
    page = (env.tmp / "g" / "index.html").read_text()
    assert "<span class=meta>scene: 12, take: &lt;b&gt;one&lt;/b&gt;</span>" in page


def test_ctrl_c_while_batchgen_starts_is_a_quiet_exit_130(tmp_path):
    """The console script imports batchgen before anything runs: a Ctrl-C then (here, on
    importing the command line) prints one line, not a traceback."""
    import subprocess
    import sys

    starting = (
        "import sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'batchgen.cli':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "sys.argv = ['batchgen', '--help']\n"
        "from batchgen.__main__ import command\n"  # what the installed `batchgen` script does
        "command()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", starting], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert (
        result.returncode == 130
        and "Traceback" not in result.stderr
        and "interrupted" in result.stderr
    )


@pytest.mark.slow
def test_a_killed_run_s_row_is_closed_and_the_next_run_learns_its_price(shared_world, write_job):
    """A killed run's row stayed 'running' forever, and every later run said 'no price learned:
    another run on this ledger overlapped this one'."""
    env = shared_world(credits=10_000, latency_ms=200)
    killed = env.popen("run", write_job(job_text(prompts(20, "killed"), name="killed")), *FAST)
    assert env.sandbox.wait_answered(1, timeout=60)
    killed.kill()
    killed.communicate(timeout=60)
    wait_for_runs_to_end(env.ledger_path)
    learner = write_job(job_text(prompts(2, "learner"), name="learner"), name="learner.yaml")
    result = env.cli("run", learner, *FAST)
    assert result.exit_code == 0, result.output
    assert "learned: " in result.stderr, result.stderr
    history = [json.loads(line) for line in env.cli("runs", "--json").stdout.splitlines()]
    assert history[1]["job"] == "killed" and history[1]["ended_at"] is not None
    assert history[1]["exit_code"] is None and "gone" in history[1]["counts"]
    assert "gone" in env.cli("runs", "killed").stdout.splitlines()[1]
