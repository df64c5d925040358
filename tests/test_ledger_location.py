"""The ledger belongs to the job's project, not to the folder a command runs in."""

from __future__ import annotations

from helpers import (
    job_text,
    prompts,
)

from batchgen.ledger import Ledger

FAST = ("--yes", "--rpm", "60000")


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
