"""A provider that lives outside the `batchgen` package: `batchgen-studio` (plugin_studio.py),
laid out as pip installs a distribution (its package and its .dist-info, whose entry_points.txt
registers it under `batchgen.providers`), with its own catalogue, request schema, money unit
and local fake. A job naming it is validated, planned, run, polled and downloaded end to end,
and nothing under batchgen/ names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO, install_provider

from batchgen import providers
from batchgen.ledger import Ledger


@pytest.fixture
def studio(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    install_provider(site, "studio", (REPO / "tests" / "plugin_studio.py").read_text())
    monkeypatch.syspath_prepend(str(site))
    providers.refresh()
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    import batchgen_studio

    yield batchgen_studio
    providers.refresh()


JOB = """\
version: 1
name: reel
provider: studio
defaults: {model: studio-best, options: {frames: 48, size: large}}
requests:
  - matrix:
      prompt: [A lighthouse at dawn, A lighthouse in a storm]
      model: [studio-fast, studio-best]
    exclude: [{model: studio-fast, options.size: large}]
    include: [{prompt: A lighthouse at night, model: studio-fast, options: {size: small}}]
"""


def test_a_provider_of_its_own_distribution_runs_a_job_end_to_end(studio, cli):
    job = "reel.yaml"
    with open(job, "w") as f:
        f.write(JOB)

    checked = cli("validate", job)
    assert checked.exit_code == 0, checked.output
    assert "3 requests (2 studio-best, 1 studio-fast)" in checked.output

    planned = cli("plan", job, "--sandbox", "--json")
    assert planned.exit_code == 0, planned.output
    bodies = [r["body"] for r in json.loads(planned.stdout)["requests"]]
    assert bodies[0] == {
        "engine": "eng-best",
        "text": "A lighthouse at dawn",
        "frames": 48,
        "size": "large",
    }
    assert {b["engine"] for b in bodies} == {"eng-fast", "eng-best"}  # the studio's own words

    ran = cli("run", job, "--sandbox", "--yes", "--wait", "--download", "--rpm", "0")
    assert ran.exit_code == 0, ran.output
    fake = studio.SERVED[-1]
    assert len(fake.tasks) == 3
    videos = sorted(p.name for p in (studio_outputs() / "reel").glob("*.mp4"))
    assert len(videos) == 3 and all(n.startswith("studio-") for n in videos), videos
    for path in (studio_outputs() / "reel").glob("*.mp4"):
        assert path.read_bytes() == studio.CLIP

    with Ledger("batchgen.db") as ledger:  # each task's status URL, which its id cannot make
        rows = list(ledger.tasks.rows("reel"))
    assert {r["provider"] for r in rows} == {"studio"}
    assert {r["task_handle"] for r in rows} == {
        f"/queue/{r['model']}/status/{r['task_id']}" for r in rows
    }

    again = cli("run", job, "--sandbox", "--yes")  # a rerun sends nothing
    assert again.exit_code == 0, again.output
    assert len(studio.SERVED[-1].tasks) == 0

    status = cli("status", job, "--json")
    counts = json.loads(status.stdout)["counts"]
    assert {(c["model"], c["status"], c["n"]) for c in counts} == {
        ("studio-fast", "completed", 1),
        ("studio-best", "completed", 2),
    }
    polled = cli("poll", job, "--sandbox", "--rpm", "0")
    assert polled.exit_code == 0, polled.output
    (studio_outputs() / "reel" / videos[0]).unlink()
    fetched = cli("download", job, "--sandbox")
    assert fetched.exit_code == 0, fetched.output
    assert (studio_outputs() / "reel" / videos[0]).read_bytes() == studio.CLIP


def test_the_provider_s_rules_are_said_at_the_line_that_broke_them(studio, cli):
    with open("bad.yaml", "w") as f:
        f.write(
            "version: 1\nprovider: studio\nrequests:\n"
            "  - {prompt: A lighthouse, model: studio-fast, options: {frames: 4, size: large}}\n"
        )
    checked = cli("validate", "bad.yaml")
    assert checked.exit_code == 2
    assert "bad.yaml:4:" in checked.stderr and "requests[0].options.frames" in checked.stderr
    assert "requests[0].options.size" in checked.stderr  # studio-fast renders small only


def test_a_job_names_an_unknown_provider(studio, cli):
    with open("x.yaml", "w") as f:
        f.write("version: 1\nprovider: stdio\nrequests: [{prompt: a, model: m}]\n")
    checked = cli("validate", "x.yaml")
    assert checked.exit_code == 2
    assert "x.yaml:2:" in checked.stderr and "no provider named 'stdio'" in checked.stderr


def studio_outputs():
    return Path("outputs", "sandbox")  # a rehearsal's folder, whichever provider's sandbox


def test_a_run_refuses_a_job_whose_provider_it_did_not_connect_to(studio, cli):
    # `run` connects by the job's `provider:` line before it loads the file: a provider given
    # only in flow style is not on such a line, and the run sends nothing.
    with open("flow.yaml", "w") as f:
        f.write(
            '{version: 1, provider: studio, requests: [{prompt: "A lighthouse",'
            " model: studio-fast, options: {frames: 24}}]}\n"
        )
    ran = cli("run", "flow.yaml", "--sandbox", "--yes")
    assert ran.exit_code == 2, ran.output
    assert "the job's provider is 'studio', but this command connected to 'pixwith'" in ran.stderr
