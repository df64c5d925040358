"""The provider seam: the run speaks only `Provider` (create, get, balance, upload) and
`Outcome`, so a provider is any distribution registering a `Description` under the
`batchgen.providers` entry-point group."""

from __future__ import annotations

import re
import textwrap

import pytest
from helpers import REPO, install_provider, job_text, prompts

from batchgen import providers
from batchgen.app.run import RunOptions, execute_run
from batchgen.app.session import Target
from batchgen.errors import UsageError
from batchgen.ledger import Ledger
from batchgen.ledger.location import Project

# A whole provider in one module of its own distribution: an in-memory API that creates a task per call, answers
# every get as completed, and charges 7 credits a task. Nothing in it speaks HTTP.
MEMORY_PROVIDER = """
import contextlib
from batchgen.providers.base import Balance, Description, Kind, Outcome, TaskState, Uploaded
from batchgen.providers.pixwith.catalogue import CATALOGUE  # its models: pixwith's, borrowed

CREATED = []


class Memory:
    def __init__(self, base_url, key, **options):
        self.credits = 1000

    def create(self, body):
        CREATED.append(body)
        self.credits -= 7
        return Outcome(Kind.OK, task_id=f"mem-{len(CREATED)}", estimated_time=0.0)

    def get(self, task_id, handle=None):
        return Outcome(Kind.OK, task=TaskState("completed", (f"https://memory/{task_id}.mp4",)))

    def balance(self):
        return Balance(self.credits)

    def upload(self, image, data):
        return Uploaded(Kind.OK, url=f"https://memory/{image.sha256}.png")

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


PROVIDER = Description(
    name="memory",
    default_base_url="https://memory.invalid",
    key_variable="MEMORY_API_KEY",
    connect=Memory,
    catalogue=lambda: CATALOGUE,
    images_shown=lambda body: iter(()),
    with_images=lambda body, urls: body,
    sandbox=lambda time_scale: contextlib.nullcontext(),
    sandbox_identity="https://memory.invalid",
    sandbox_credits=1000,
)
"""


class Quiet:
    interactive = False

    def __init__(self):
        self.lines: list[str] = []

    def out(self, line: str) -> None:
        self.lines.append(line)

    def err(self, line: str) -> None:
        self.lines.append(line)

    def detail(self, line: str) -> None:
        pass

    def confirm(self, question: str) -> bool:
        return False


@pytest.fixture
def memory_provider(tmp_path, monkeypatch):
    """A provider of another distribution, `batchgen-memory`, installed as pip would lay it out
    (its package and its .dist-info, whose entry_points.txt registers it) in a folder on the
    path: batchgen finds it by its entry point, and no file under batchgen/ names it."""
    site = tmp_path / "site-packages"
    install_provider(site, "memory", textwrap.dedent(MEMORY_PROVIDER))
    monkeypatch.syspath_prepend(str(site))
    providers.refresh()
    yield providers.named("memory")
    providers.refresh()


def test_pixwith_is_the_provider_there_is():
    assert providers.available() == ("pixwith",)
    assert providers.named().default_base_url == "https://api.pixwith.ai"
    with pytest.raises(UsageError, match="no provider named 'nope' \\(there are: pixwith\\)"):
        providers.named("nope")


def test_a_provider_of_another_distribution_is_found_by_entry_point_and_runs_a_job(
    memory_provider, tmp_path
):
    import importlib

    module = importlib.import_module("batchgen_memory")
    job = tmp_path / "job.yaml"
    job.write_text(job_text(prompts(3), name="mem") + "provider: memory\n")
    project = Project(tmp_path, tmp_path / "batchgen.db", "test")
    base = memory_provider.default_base_url
    target = Target(base, base, "key_memory", provider=memory_provider)
    console = Quiet()

    code = execute_run(RunOptions(str(job), yes=True, wait=True, rpm=0), target, project, console)

    assert code == 0, console.lines
    assert len(module.CREATED) == 3
    with Ledger(project.ledger) as ledger:
        rows = list(ledger.tasks.rows("mem"))
        assert sorted(r["task_id"] for r in rows) == ["mem-1", "mem-2", "mem-3"]
        assert {r["status"] for r in rows} == {"completed"}, rows[0]
    # A rerun sends nothing: what the provider created is in the ledger.
    assert execute_run(RunOptions(str(job), yes=True), target, project, Quiet()) == 0
    assert len(module.CREATED) == 3


def test_only_pixwith_s_folder_knows_pixwith():
    """The core names no provider: no import, name, environment variable, model id or wire
    field of pixwith's outside batchgen/providers/pixwith/ (pixwith registers itself by entry
    point, as any provider does). The one exception is history: the migrations that made the
    ledger's `model_id` column (as ledgers before m014 have it) and the one renaming it."""
    package = REPO / "batchgen"
    words = re.compile(r"pixwith|PIXWITH|model_id|image_urls|prompt_optimization|\b2-(?:8|9|10)\b")
    history = {"ledger/migrations.py", "ledger/postgres_schema.py"}
    naming = set()
    for path in package.rglob("*"):
        if path.suffix not in (".py", ".html", ".json", ".yaml", ".js", ".css"):
            continue
        where = path.relative_to(package)
        if ("providers", "pixwith") == where.parts[:2]:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found = set(words.findall(line)) - ({"model_id"} if str(where) in history else set())
            if found:
                naming.add(f"{where}:{number}: {line.strip()}")
    assert not naming, sorted(naming)


def test_no_provider_s_key_is_passed_to_the_on_done_command(memory_provider, tmp_path, monkeypatch):
    """--on-done's environment lost only PIXWITH_API_KEY: a second provider's key was passed
    on. Every registered provider's key variable is left out now."""
    import json
    import sys

    monkeypatch.setenv("MEMORY_API_KEY", "key_memory_secret")
    monkeypatch.setenv("PIXWITH_API_KEY", "key_00000000000000000000000000000000")
    job = tmp_path / "job.yaml"
    job.write_text(job_text(prompts(1), name="mem") + "provider: memory\n")
    project = Project(tmp_path, tmp_path / "batchgen.db", "test")
    base = memory_provider.default_base_url
    target = Target(base, base, "key_memory", provider=memory_provider)
    seen = tmp_path / "env.json"
    command = f"{sys.executable} -c \"import os, json; json.dump(dict(os.environ), open(r'{seen}', 'w'))\""
    options = RunOptions(str(job), yes=True, rpm=0, on_done=command)
    assert execute_run(options, target, project, Quiet()) == 0
    told = json.loads(seen.read_text())
    assert "MEMORY_API_KEY" not in told and "PIXWITH_API_KEY" not in told
    assert told["BATCHGEN_JOB"] == "mem"
