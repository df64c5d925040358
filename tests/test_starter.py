"""`batchgen init`: a folder ready for jobs, with what batchgen writes kept out of git."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from batchgen.app.init import STARTER_JOB

RUN = ("--yes", "--rpm", "0", "--wait", "--download")


def git(folder, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=folder, capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_after_init_and_a_run_git_sees_only_the_job_and_the_gitignore(world):
    env = world(time_scale=0)
    project = env.tmp / "films"
    project.mkdir()
    git(project, "init", "-q")
    own_ledger = {"BATCHGEN_LEDGER": None}  # the project's ledger, as a user's run finds it

    made = env.cli("init", project)
    assert made.exit_code == 0, made.output
    assert "films/jobs/first.yaml: a starter job" in made.output
    job = project / STARTER_JOB
    ran = env.cli("run", job, *RUN, env=own_ledger)
    assert ran.exit_code == 0, ran.output
    assert "(found above the job's folder)" in ran.output  # init's ledger made films/ the project
    assert len(list(env.outputs("first").glob("*.mp4"))) == 2

    # The ledger, its WAL, the liveness folder, the journal's reserve: none of it shows.
    (project / "outputs").mkdir()
    (project / "outputs" / "a.mp4").write_bytes(b"video")
    assert git(project, "status", "--porcelain", "--untracked-files=all").split() == [
        "??",
        ".gitignore",
        "??",
        "jobs/first.yaml",
    ]
    again = env.cli("plan", job, env=own_ledger)
    assert "done 2" in again.output and "a run would send 0" in again.output, again.output


def test_init_keeps_what_is_there_and_adds_only_what_lacks(cli, tmp_path):
    (tmp_path / ".gitignore").write_text("node_modules/\noutputs/", encoding="utf-8")
    (tmp_path / "jobs").mkdir()
    (tmp_path / STARTER_JOB).write_text("version: 1\nrequests: []\n", encoding="utf-8")

    first = cli("init", tmp_path)
    assert first.exit_code == 0, first.output
    assert "jobs/first.yaml: exists, left as it is" in first.output
    assert (tmp_path / STARTER_JOB).read_text() == "version: 1\nrequests: []\n"
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert lines[:3] == ["node_modules/", "outputs/", ""]  # the user's lines, then ours
    assert lines.count("outputs/") == 1 and "batchgen.db" in lines and "batchgen.db.*" in lines

    second = cli("init", tmp_path)
    assert "already ignores what batchgen writes" in second.output
    assert (tmp_path / ".gitignore").read_text().splitlines() == lines


def test_init_below_a_project_uses_its_ledger_and_makes_no_second_one(cli, tmp_path):
    assert cli("init", tmp_path).exit_code == 0
    below = tmp_path / "season-2"
    made = cli("init", below)
    assert made.exit_code == 0, made.output
    assert "the project's ledger, found here or above" in made.output
    assert not (below / "batchgen.db").exists()  # a second ledger would forget what was paid for
    assert (tmp_path / "batchgen.db").exists()


def test_the_starter_job_validates_and_plans_two_requests(cli, tmp_path):
    cli("init", tmp_path)
    checked = cli("validate", tmp_path / STARTER_JOB)
    assert checked.exit_code == 0, checked.output
    planned = cli("plan", tmp_path / STARTER_JOB)
    assert planned.exit_code == 0 and "new 2" in planned.output, planned.output


def test_init_of_a_file_is_refused(cli, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("x", encoding="utf-8")
    result = cli("init", target)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "notes.txt" in result.output


def test_init_with_a_server_writes_batchgen_yaml_and_no_unused_ledger_file(
    cli, tmp_path, new_database
):
    """`init` in a project whose batchgen.yaml names a server wrote an empty batchgen.db that
    nothing used; `init --ledger URL` writes the batchgen.yaml instead, and makes the tables."""
    url = new_database()
    project = tmp_path / "team"
    made = cli("init", project, "--ledger", url)
    assert made.exit_code == 0, made.output
    assert (project / "batchgen.yaml").read_text().endswith(f"ledger: {url}\n")
    assert not (project / "batchgen.db").exists()
    assert "commit it, and every clone uses it" in made.output
    from batchgen.ledger import Ledger

    with Ledger(url, create=False) as ledger:  # the tables are there
        assert ledger.runs.latest() == []
    again = cli("init", project / "sub")  # below a project that names a server
    assert again.exit_code == 0 and not (project / "sub" / "batchgen.db").exists()
    secret = url.replace("://batchgen@", "://batchgen:S3cret@")
    refused = cli("init", tmp_path / "other", "--ledger", secret)
    assert refused.exit_code == 2 and "S3cret" not in refused.output
    assert "may not hold a password" in refused.output
