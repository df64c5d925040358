"""A rerun of a job whose files and code are unchanged, with nothing to send, is planned from
the ledger's counts without making its requests again; any change, or anything a run would
send, takes the full plan, and sends exactly what it did before."""

from __future__ import annotations

import helpers
import pytest
from helpers import LITE, PRO_DEFAULTS, png

from batchgen.jobs import unchanged, validate

FAST = ("--yes", "--rpm", "0")
PROMPTS_JOB = (
    "version: 1\n" + PRO_DEFAULTS + "requests:\n  - matrix: {prompt: {file: prompts.txt}}\n"
)


@pytest.fixture
def expansions(monkeypatch) -> list[int]:
    """How many times validation expands a job (each call appended)."""
    made: list[int] = []
    real = validate.expand

    def counted(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(validate, "expand", counted)
    return made


def ledger_sql(env, sql: str, *params) -> None:
    helpers.ledger_sql(env.ledger_path, sql, *params)


def test_a_rerun_with_nothing_to_send_is_planned_without_its_requests(
    shared_world, write_job, expansions
):
    env = shared_world(time_scale=0)
    job = write_job(PROMPTS_JOB, files={"prompts.txt": "a\nb\nc\n"})
    assert env.cli("run", job, *FAST).exit_code == 0
    expansions.clear()
    quick = env.cli("run", job, *FAST)
    assert quick.exit_code == 0, quick.output
    assert expansions == []
    ledger_sql(env, "DELETE FROM job_inputs")  # the same rerun, planned in full
    full = env.cli("run", job, *FAST)
    assert expansions and full.exit_code == 0
    assert quick.stdout == full.stdout and "3 done" in quick.stdout
    assert len(env.sandbox.created()) == 3


def test_an_edited_prompts_file_is_planned_in_full_and_sends_the_new_line(
    shared_world, write_job, expansions
):
    env = shared_world(time_scale=0)
    job = write_job(PROMPTS_JOB, files={"prompts.txt": "a\nb\n"})
    env.cli("run", job, *FAST)
    write_job(PROMPTS_JOB, files={"prompts.txt": "a\nb\nc\n"})  # the job file is the same
    expansions.clear()
    assert env.cli("run", job, *FAST).exit_code == 0
    assert expansions
    assert sorted(c.body["prompt"] for c in env.sandbox.created()) == ["a", "b", "c"]


def test_a_local_image_with_new_bytes_under_the_same_name_is_sent(world, write_job, tmp_path):
    env = world(time_scale=0)
    (tmp_path / ".git").mkdir()
    (tmp_path / "cat.png").write_bytes(png(seed=1))
    job = write_job(LITE + "requests:\n  - {prompt: a, image_urls: cat.png}\n")
    env.cli("run", job, *FAST)
    (tmp_path / "cat.png").write_bytes(png(seed=2))
    assert env.cli("run", job, *FAST).exit_code == 0
    assert len(env.sandbox.created()) == 2


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE tasks SET state = 'failed', task_id = NULL WHERE rowid = 1",  # sent again
        "DELETE FROM tasks WHERE rowid = 1",  # forgotten: new again
    ],
)
def test_a_request_a_plain_run_would_send_takes_the_full_plan(world, write_job, change):
    env = world(time_scale=0)
    job = write_job(PROMPTS_JOB, files={"prompts.txt": "a\nb\n"})
    env.cli("run", job, *FAST)
    ledger_sql(env, change)
    assert env.cli("run", job, *FAST).exit_code == 0
    assert len(env.sandbox.created()) == 3


def test_a_run_with_a_limit_leaves_the_rest_to_the_next(world, write_job):
    env = world(time_scale=0)
    job = write_job(PROMPTS_JOB, files={"prompts.txt": "a\nb\nc\n"})
    env.cli("run", job, *FAST, "--limit", "1")
    assert env.cli("run", job, *FAST).exit_code == 0
    assert len(env.sandbox.created()) == 3


def test_a_flag_that_sends_again_takes_the_full_plan(world, write_job):
    env = world(time_scale=0)
    job = write_job(PROMPTS_JOB, files={"prompts.txt": "a\nb\n"})
    env.cli("run", job, *FAST)
    ledger_sql(env, "UPDATE tasks SET state = 'in_doubt' WHERE rowid = 1")
    skipped = env.cli("run", job, *FAST)
    assert "1 in_doubt" in skipped.stdout and len(env.sandbox.created()) == 2
    assert env.cli("run", job, *FAST, "--resubmit-in-doubt").exit_code == 0
    assert len(env.sandbox.created()) == 3


def test_new_code_is_a_new_digest(world, write_job, expansions, monkeypatch):
    env = world(time_scale=0)
    job = write_job(PROMPTS_JOB, files={"prompts.txt": "a\n"})
    env.cli("run", job, *FAST)
    monkeypatch.setattr(unchanged, "code_identity", lambda: "another version")
    expansions.clear()
    assert env.cli("run", job, *FAST).exit_code == 0
    assert expansions


def test_the_warnings_of_a_job_are_given_again(world, write_job, expansions):
    env = world(time_scale=0)
    job = write_job(PROMPTS_JOB, files={"prompts.txt": "a\na\n"})  # a duplicate line
    first = env.cli("run", job, *FAST)
    assert ": warning:" in first.stderr
    expansions.clear()
    again = env.cli("run", job, *FAST)
    assert expansions == [] and again.exit_code == 0
    assert [line for line in again.stderr.splitlines() if ": warning:" in line] == [
        line for line in first.stderr.splitlines() if ": warning:" in line
    ]


def test_a_job_with_a_problem_is_refused_whatever_was_recorded(world, write_job):
    env = world(time_scale=0)
    job = write_job(PROMPTS_JOB, files={"prompts.txt": "a\n"})
    env.cli("run", job, *FAST)
    (job.parent / "prompts.txt").unlink()
    result = env.cli("run", job, *FAST)
    assert result.exit_code == 2 and "file not found" in result.stderr
