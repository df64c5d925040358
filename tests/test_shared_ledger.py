"""A team's ledger on PostgreSQL: a jobs repository cloned on two machines, its batchgen.yaml
naming one server's ledger. What one clone paid for, the other sees; runs from both at once,
with kills and lost answers, create each request once and lose no task; a SQLite ledger
pushed to the server plans nothing new; a pull makes a local copy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    FAULT_TABLE,
    assert_counts_kept,
    canonical,
    duplicates_and_lost,
    job_text,
    prompts,
    wait_for_runs_to_end,
    wait_until,
)

from batchgen.cli import main
from batchgen.ledger import Ledger
from batchgen.ledger.location import shown
from batchgen.providers.pixwith.sandbox import TEST_KEY

FAST = ("--yes", "--rpm", "0", "--concurrency", "4")


class Machine:
    """A clone of the jobs repository, with this machine's own files (the journal)."""

    def __init__(self, folder: Path, sandbox):
        self.folder = folder
        self.sandbox = sandbox

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "BATCHGEN_LEDGER"}
        return env | {
            "PIXWITH_API_KEY": TEST_KEY,
            "PIXWITH_BASE_URL": self.sandbox.base_url,
            "BATCHGEN_TESTING": "1",
            "XDG_STATE_HOME": str(self.folder.parent / f"{self.folder.name}-state"),
        }

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "batchgen", *args],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "batchgen", *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def team(world, new_database, tmp_path):
    """team(job_text, **sandbox) → (the server's URL, the sandbox, two machines), each a
    clone of one jobs repository whose batchgen.yaml names the server's ledger."""

    def make(job: str, **settings):
        url = new_database()
        env = world(ledger=url, **settings)
        origin = tmp_path / "origin"
        (origin / "jobs").mkdir(parents=True)
        (origin / "batchgen.yaml").write_text(f"ledger: {url}\n", encoding="utf-8")
        (origin / "jobs" / "shots.yaml").write_text(job, encoding="utf-8")
        (origin / ".gitignore").write_text("outputs/\n", encoding="utf-8")
        git("init", "-q", ".", cwd=origin)
        git("add", ".", cwd=origin)
        git("commit", "-q", "-m", "jobs", cwd=origin)
        machines = []
        for name in ("machine-a", "machine-b"):
            git("clone", "-q", str(origin), name, cwd=tmp_path)
            machines.append(Machine(tmp_path / name, env.sandbox))
        return url, env, machines

    return make


def test_what_one_clone_paid_for_the_other_plans_as_done(team):
    url, env, (a, b) = team(job_text(prompts(6)), time_scale=0)
    first = a.run("run", "jobs/shots.yaml", *FAST)
    assert first.returncode == 0, first.stderr
    assert f"ledger: {url} (named by " in first.stderr
    plan = b.run("plan", "jobs/shots.yaml")
    assert plan.returncode == 0, plan.stderr
    assert "done 6" in plan.stdout and "new" not in plan.stdout, plan.stdout
    again = b.run("run", "jobs/shots.yaml", *FAST)
    assert again.returncode == 0 and "nothing sent" in again.stdout, again.stdout
    assert len(env.sandbox.created()) == 6
    runs = b.run("runs")
    assert runs.stdout.count("shots") == 2  # both clones' runs, one table


@pytest.mark.slow
def test_two_machines_at_once_with_kills_and_lost_answers_create_once_and_lose_nothing(team):
    url, env, (a, b) = team(
        job_text(prompts(150, tag="team")),
        seed=7,
        latency_ms=5,
        lose_answer_rate=0.05,
        drop_rate=0.04,
        rate_500=0.03,
        rate_429=0.05,
        retry_after=0.05,
    )
    flags = ("run", "jobs/shots.yaml", "--yes", "--rpm", "6000", "--read-timeout", "1")
    flags += ("--max-identical-errors", "1000", "--concurrency", "4")
    kills = 0
    for victim, answered in ((a, 20), (b, 60), (a, 100)):
        running = {machine: machine.popen(*flags) for machine in (a, b)}
        # Killed once that many create calls were answered in all: mid-run, by condition.
        env.sandbox.wait_answered(answered, timeout=60)
        running[victim].kill()
        kills += 1
        for process in running.values():
            process.communicate(timeout=120)
    wait_for_runs_to_end(url)  # until then, a killed run's rows are a live run's
    for machine in (a, b):
        machine.run(*flags)

    created = env.created_bodies()  # counted by the server's own log of create calls
    with Ledger.open(url) as ledger:
        rows = {canonical(json.loads(r["request"])): r for r in ledger.tasks.rows()}
    duplicates, lost = duplicates_and_lost(created, rows)
    FAULT_TABLE.append(
        {
            "scenario": "two machines (postgresql)",
            "requests": 150,
            "faults": sum(
                1 for c in env.sandbox.calls if c.outcome in ("lost", "dropped", "500", "429")
            ),
            "kills": kills,
            "interrupts": 0,
            "duplicates": duplicates,
            "lost": lost,
            "unsent in_doubt": 0,
            "steps": "a+b, kill a; a+b, kill b; a+b, kill a; a; b",
        }
    )
    assert duplicates == 0
    assert lost == 0
    assert not [r for r in rows.values() if r["state"] == "sending"]
    for body, row in rows.items():
        if row["state"] == "submitted":
            assert body in created
    assert_counts_kept(url)


def test_a_killed_runs_rows_wait_for_its_session_to_end(team):
    """Its rows are a live run's while the server holds its session, whatever its process
    did; once the session ends (here the server ends it) the next command makes them
    in_doubt, and nothing is sent again without --resubmit-in-doubt."""
    url, env, (a, b) = team(job_text(prompts(3)), slow_rate=1.0, slow_seconds=5)
    process = a.popen("run", "jobs/shots.yaml", "--yes", "--rpm", "0", "--concurrency", "3")
    try:
        with Ledger(url) as ledger:
            wait_until(lambda: len(env.sandbox.created()) == 3, timeout=30)
            (run,) = {r["run_id"] for r in ledger.tasks.rows()}
            assert ledger.run_is_alive(run)
            assert ledger.recovery.recover() == 0  # a live run's: left sending
            ledger._query(  # its connection dies (a network cut, the server restarted)
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'batchgen' AND pid <> pg_backend_pid()"
                " AND datname = current_database()"
            )
            wait_for_runs_to_end(url)
            assert ledger.recovery.recover() == 3
            assert {r["state"] for r in ledger.tasks.rows()} == {"in_doubt"}
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    again = b.run("run", "jobs/shots.yaml", *FAST)
    assert again.returncode == 1 and "3 in_doubt" in again.stdout, again.stdout
    assert len(env.sandbox.created()) == 3  # none sent twice


def test_a_pushed_ledger_plans_nothing_new_and_a_pull_is_a_local_copy(
    world, write_job, new_database, tmp_path
):
    env = world(time_scale=0)
    job = write_job(job_text(prompts(5)))
    assert env.cli("run", job, *FAST).exit_code == 0
    url = new_database()
    pushed = env.cli("ledger", "push", env.ledger_path, "--to", url)
    assert pushed.exit_code == 0, pushed.output
    assert "5 tasks" in pushed.stdout and "nothing was sent" in pushed.stdout
    assert_counts_kept(url)  # made from the rows at the copy's end, and kept by triggers again
    on_server = env.cli("--ledger", url, "plan", job, "--base-url", env.sandbox.base_url)
    assert on_server.exit_code == 0 and "done 5" in on_server.output, on_server.output
    rerun = env.cli("--ledger", url, "run", job, *FAST)
    assert rerun.exit_code == 0 and "nothing sent" in rerun.output
    assert len(env.sandbox.created()) == 5
    with Ledger(url) as ledger:  # runs go on from the pushed ones' ids
        assert [run["id"] for run in ledger.runs.latest()] == [2, 1]

    copy = tmp_path / "copy.db"
    pulled = env.cli("ledger", "pull", copy, "--from", url)
    assert pulled.exit_code == 0, pulled.output
    with Ledger(copy) as local, Ledger(url) as server:
        assert list(local.tasks.rows()) == list(server.tasks.rows())
        assert local.runs.latest() == server.runs.latest()
    more = write_job(job_text(prompts(2, "more"), name="more"), name="more.yaml")
    assert env.cli("--ledger", url, "run", more, *FAST).exit_code == 0
    assert_counts_kept(url)  # the triggers count again once the copy is made


def test_push_refuses_a_ledger_that_is_not_empty_and_changes_nothing(
    world, write_job, new_database
):
    env = world(time_scale=0)
    job = write_job(job_text(prompts(2)))
    env.cli("run", job, *FAST)
    url = new_database()
    assert env.cli("ledger", "push", env.ledger_path, "--to", url).exit_code == 0
    again = env.cli("ledger", "push", env.ledger_path, "--to", url)
    assert again.exit_code == 2
    assert "already holds a ledger (2 tasks, 1 runs, 2 job_tasks)" in again.output
    with Ledger(url) as ledger:
        assert len(list(ledger.tasks.rows())) == 2


def test_push_needs_a_server_to_push_to(world, write_job):
    env = world()
    result = env.cli("ledger", "push", env.ledger_path, "--to", "elsewhere.db")
    assert result.exit_code == 2
    assert "--to: expected a postgresql:// URL" in result.output


def test_a_url_s_password_is_never_shown():
    assert shown("postgresql://ann:s3cret@db.example/jobs") == "postgresql://ann@db.example/jobs"
    assert "s3cret" not in shown("postgresql://db.example/jobs?password=s3cret&sslmode=require")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "ledger: [1, 2]\n",
            "batchgen.yaml:1: ledger: expected a postgresql:// URL or a file's path",
        ),
        ("ledger: x\n  bad: : :\n", "batchgen.yaml:2: not valid YAML"),
        ("legder: postgresql://db/x\n", "unknown setting 'legder'"),
    ],
)
def test_a_bad_project_config_is_named_with_its_line(world, write_job, tmp_path, text, message):
    env = world()
    job = write_job(job_text(prompts(1)))
    (tmp_path / "batchgen.yaml").write_text(text, encoding="utf-8")
    result = env.runner.invoke(main, ["plan", str(job)], env={**env.env, "BATCHGEN_LEDGER": None})
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:S3cr%zz@127.0.0.1:1/db",  # a bad %-escape: psycopg's message quotes it
        "postgresql://u:S3cret@[::1",  # an IPv6 host never closed
        "postgresql://u:S3c@ret@127.0.0.1:1/db",  # an `@` in the password, not %-encoded
    ],
)
def test_a_malformed_ledger_url_is_refused_without_its_password(cli, url):
    result = cli("--ledger", url, "status")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "S3c" not in result.output and "ret@" not in result.output
    assert "not a PostgreSQL URL batchgen can read" in result.output


def test_on_done_is_given_the_ledger_without_its_password(world, new_database, write_job):
    """The server takes any password here (trust): the URL with one works, and the command
    run at the end is told the ledger without it."""
    url = new_database().replace("://batchgen@", "://batchgen:S3cret@")
    assert "S3cret" in url
    env = world(ledger=url, time_scale=0)
    job = write_job(job_text(prompts(2), name="secret"))
    seen = env.tmp / "env.json"
    command = f"{sys.executable} -c \"import os, json; json.dump(dict(os.environ), open(r'{seen}', 'w'))\""
    result = env.cli("run", job, *FAST, "--on-done", command)
    assert result.exit_code == 0, result.output
    assert "S3cret" not in result.output
    told = json.loads(seen.read_text())
    assert told["BATCHGEN_LEDGER"] == shown(url)
    assert not [k for k, v in told.items() if "S3cret" in v]


@pytest.mark.slow
def test_push_refuses_while_a_run_on_the_source_is_alive_between_its_claims(
    world, write_job, new_database
):
    """A run paced by --rpm has no `sending` row between two claims; a push then copied two
    tasks, the run sent more, and a clone on the server sent those again. Refused while the run
    holds its lock; once it is gone (killed here), the push goes and its row is closed."""
    env = world(time_scale=0)
    job = write_job(job_text(prompts(5, "paced")))
    run = env.popen("run", job, "--yes", "--rpm", "6", "--concurrency", "1")  # 10 s apart
    assert env.sandbox.wait_answered(1, timeout=60)
    url = new_database()
    pushed = env.cli("ledger", "push", env.ledger_path, "--to", url)
    assert pushed.exit_code == 2 and "is still going" in pushed.output, pushed.output
    run.kill()
    run.communicate(timeout=60)
    pushed = env.cli("ledger", "push", env.ledger_path, "--to", url)
    assert pushed.exit_code == 0, pushed.output
    with Ledger(url) as ledger:
        (gone,) = ledger.runs.latest()
        assert gone["ended_at"] is not None and gone["exit_code"] is None
        assert "ended without recording its end" in gone["counts"]


def test_a_read_as_big_as_the_ledger_is_streamed_from_the_server(new_database):
    """`tasks --json` of a million rows was fetched whole by the client on PostgreSQL. A big
    read now goes through a server-side cursor: the rows wait on the server until fetched."""
    with Ledger(new_database()) as ledger:
        rows = ledger.tasks._stream("SELECT g FROM generate_series(1, 1200) g", [], plain=True)
        assert next(rows) == (1,)
        open_cursors = [r[0] for r in ledger._query("SELECT name FROM pg_cursors")]
        assert any(name.startswith("batchgen_stream_") for name in open_cursors)
        assert sum(1 for _ in rows) == 1199
        assert ledger._query("SELECT count(*) FROM pg_cursors")[0][0] == 0  # closed at the end


@pytest.mark.slow
def test_two_machines_running_different_jobs_on_one_key_share_one_pace(
    world, new_database, tmp_path
):
    """Each machine paced itself alone: two teammates' runs of different jobs on one key at
    --rpm N sent up to 2N a minute. On a server's ledger the key's slots come from one row, so
    the ceiling holds for the key: here never more than N/60 creates a second, summed."""
    rpm = 1200  # 20 a second: the two runs together take ~2 s, not the 1 s each alone would
    env = world(ledger=new_database(), latency_ms=2)
    runs = []
    for machine in ("a", "b"):
        folder = tmp_path / machine
        folder.mkdir()
        job = folder / f"{machine}.yaml"
        job.write_text(job_text(prompts(20, machine), name=machine))
        runs.append(
            env.popen(
                "run",
                job,
                "--yes",
                "--rpm",
                str(rpm),
                "--concurrency",
                "4",
                env={"XDG_STATE_HOME": str(folder / "state")},
            )
        )
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    times = sorted(c.at for c in env.sandbox.calls if c.endpoint == "create")
    assert len(times) == 40
    per_second = rpm / 60
    busiest = max(sum(1 for u in times[i:] if u - t < 1.0) for i, t in enumerate(times))
    assert busiest <= per_second + 3, f"{busiest} creates in one second, summed over both"
