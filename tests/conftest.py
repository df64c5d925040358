from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from helpers import FAULT_TABLE, REPO

from batchgen.cli import main
from batchgen.jobs.spec import Job, load_job
from batchgen.ledger import Ledger
from batchgen.providers.pixwith.sandbox import TEST_KEY, SandboxConfig, running
from batchgen.sending import limits

# A rehearsal (`--sandbox`) in the tests ends its tasks near at once: a tenth of the 5 s a user
# waits for a 240 s generation. Set before any test starts a batchgen process, which inherits it.
os.environ.setdefault("BATCHGEN_SANDBOX_TIME_SCALE", "0.002")


@pytest.fixture(autouse=True, scope="session")
def no_backoff_sleeps():
    """Retries in the tests happen without their backoff sleeps (pacing by rpm is kept)."""
    limits.set_testing(True)
    yield


@pytest.fixture(autouse=True)
def no_stored_keys_of_the_user(tmp_path, monkeypatch):
    """The user's own stored keys (`batchgen keys set`) never reach a test: each has an empty
    config folder of its own."""
    monkeypatch.setenv("BATCHGEN_USER_DIR", str(tmp_path / "user-config"))


@pytest.fixture(autouse=True, scope="session")
def ctrl_c_reaches_the_runs_the_tests_start():
    """A shell starts a background job (`.ci/run &`) with SIGINT ignored, and its children
    inherit that: the batchgen processes the tests interrupt would never see their Ctrl-C.
    Handled here (not ignored), it is back to the default in every process started from here."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


# Caches the tools keep beside the code; anything else a test writes belongs under tmp_path.
_TOOL_CACHES = (".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache", "__pycache__")


def _files_git_does_not_track() -> set[str] | None:
    try:
        listed = subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None  # not a git checkout (an unpacked sdist): nothing to compare with
    paths = {line[3:] for line in listed.splitlines() if line[:2] in ("??", "!!")}
    return {p for p in paths if not any(part in _TOOL_CACHES for part in Path(p).parts)}


@pytest.fixture(autouse=True, scope="session")
def the_checkout_is_left_as_it_was():
    """No test leaves files in the checkout (a ledger, outputs/, a download)."""
    before = _files_git_does_not_track()
    yield
    after = _files_git_does_not_track()
    if before is not None and after is not None:
        left = sorted(after - before)
        assert not left, f"the tests left files in the checkout: {left}"


@pytest.fixture
def write_job(tmp_path: Path):
    """Write a job file (and the files it refers to) into a temporary folder; return its path."""

    def write(text: str, name: str = "job.yaml", files: dict[str, str] | None = None) -> Path:
        for filename, content in (files or {}).items():
            target = tmp_path / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(content), encoding="utf-8")
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def load(write_job):
    """Write and load a job file in one step."""

    def load_text(text: str, files: dict[str, str] | None = None) -> Job:
        return load_job(write_job(text, files=files))

    return load_text


@pytest.fixture
def cli():
    """Run the batchgen command line in-process; returns click's Result."""
    runner = CliRunner()

    def invoke(*args: str, **kwargs):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


# -- running batchgen against a sandbox -----------------------------------------------------------


class Env:
    """A sandbox and a ledger in a temporary folder, and ways to run batchgen against them.
    The ledger is a file there, or the PostgreSQL database `ledger` names."""

    def __init__(self, tmp_path: Path, sandbox, ledger: str | Path | None = None):
        self.tmp = tmp_path
        self.sandbox = sandbox
        self.ledger_path = ledger or tmp_path / "ledger.db"
        self.runner = CliRunner()

    @property
    def env(self) -> dict[str, str]:
        return {
            "PIXWITH_API_KEY": TEST_KEY,
            "PIXWITH_BASE_URL": self.sandbox.base_url,
            "BATCHGEN_LEDGER": str(self.ledger_path),
            "BATCHGEN_TESTING": "1",  # retries without backoff sleeps (limits.set_testing)
        }

    def cli(self, *args, env: dict[str, str] | None = None, input: str | None = None):
        """batchgen in this process (fast); returns click's Result."""
        return self.runner.invoke(
            main,
            [str(a) for a in args],
            env={**self.env, **(env or {})},
            catch_exceptions=False,
            input=input,
        )

    def popen(self, *args, env: dict[str, str] | None = None) -> subprocess.Popen:
        """batchgen as a separate process (for kills, signals and concurrent runs)."""
        full_env = {**os.environ, **self.env, **(env or {})}
        return subprocess.Popen(
            [sys.executable, "-m", "batchgen", *map(str, args)],
            env=full_env,
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def outputs(self, job: str) -> Path:
        """Where a job's videos go by default: a folder of this API's own, since the sandbox
        served here is not the API a job is paid on (outputs/127.0.0.1-PORT/<job>/)."""
        from batchgen.app.session import output_folder
        from batchgen.urls import canonical_base_url

        return self.tmp / output_folder(job, api_base=canonical_base_url(self.sandbox.base_url))

    def ledger(self) -> Ledger:
        """The ledger as the next command would find it: opened and repaired."""
        return Ledger.open(self.ledger_path)

    def rows(self) -> list[dict]:
        with self.ledger() as ledger:
            return list(ledger.tasks.rows())

    def created_bodies(self):
        """canonical body → number of tasks the sandbox created for it."""
        return self.sandbox.created_per_body()


@pytest.fixture
def world(tmp_path, monkeypatch):
    """world(**sandbox_settings) → an Env with a fresh sandbox (stopped after the test).
    Commands run in tmp_path, so what they write by default (outputs/) stays there."""
    import contextlib

    monkeypatch.chdir(tmp_path)

    with contextlib.ExitStack() as stack:

        def make(ledger: str | Path | None = None, **settings) -> Env:
            sandbox = stack.enter_context(running(SandboxConfig(**settings)))
            return Env(tmp_path, sandbox, ledger)

        yield make


# -- the ledger's two backends: the shared suite runs against both ----------------------------

POSTGRES_URL = os.environ.get("BATCHGEN_TEST_POSTGRES")
_databases = itertools.count()


def start_postgres() -> tuple[Path, str]:
    """A throwaway PostgreSQL server from the machine's binaries (`.ci/start-postgres`, which
    installs nothing here): (its folder, its URL); skips, saying why, when none can start."""
    import shutil
    import tempfile

    script = REPO / ".ci" / "start-postgres"
    if not script.exists():
        pytest.skip(
            "no PostgreSQL server: BATCHGEN_TEST_POSTGRES is not set, and .ci/start-postgres"
            " (in a clone) is not here to start one"
        )
    # Straight under the temporary folder: the server runs as the postgres user when the
    # tests run as root, and must reach it (pytest's own folders are root's alone).
    folder = Path(tempfile.mkdtemp(prefix="batchgen-pg-"))
    started = subprocess.run(
        [script, folder],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "BATCHGEN_NO_INSTALL": "1"},
    )
    if started.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        reason = started.stderr.strip().splitlines()[-1:] or ["it did not start"]
        pytest.skip(f"no PostgreSQL server could start here: {reason[0]}")
    return folder, started.stdout.strip()


def stop_postgres(folder: Path) -> None:
    import shutil

    subprocess.run([folder / "stop"], capture_output=True, timeout=60)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    """The server the PostgreSQL tests use: BATCHGEN_TEST_POSTGRES's, else one the suite starts
    (and stops) itself from the machine's PostgreSQL binaries."""
    if POSTGRES_URL:
        yield POSTGRES_URL
        return
    folder, url = start_postgres()
    yield url
    stop_postgres(folder)


@pytest.fixture(scope="session")
def postgres_admin(postgres_url):
    """A connection to the test server, to make and drop databases; skips, saying why, when
    there is none."""
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed: pip install '.[test]'")
    try:
        conn = psycopg.connect(postgres_url, autocommit=True, connect_timeout=10)
    except psycopg.Error as e:
        pytest.skip(f"the PostgreSQL server for the tests cannot be reached: {e}")
    yield conn
    conn.close()


@pytest.fixture
def new_database(postgres_admin, postgres_url, tmp_path, monkeypatch):
    """() → the URL of a new, empty PostgreSQL database, dropped after the test. This
    machine's files for it (the journal) go under tmp_path."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    made = []

    def make() -> str:
        name = f"batchgen_test_{os.getpid()}_{next(_databases)}"
        postgres_admin.execute(f"CREATE DATABASE {name}")
        made.append(name)
        return urlsplit(postgres_url)._replace(path=f"/{name}").geturl()

    yield make
    for name in made:
        postgres_admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class PrivateServer:
    """A PostgreSQL server of one test's own, to crash and start again (`.ci/start-postgres`
    makes it, from the machine's PostgreSQL binaries)."""

    def __init__(self, folder: Path, url: str):
        self.folder = folder
        self.url = url

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: every session cut, nothing shut down cleanly."""
        subprocess.run([self.folder / "stop"], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        subprocess.run([self.folder / "start"], check=True, capture_output=True, timeout=60)


@pytest.fixture
def private_postgres():
    """A throwaway PostgreSQL server for one test (which may crash it); skips, saying why, when
    none can start here."""
    folder, url = start_postgres()
    yield PrivateServer(folder, url)
    stop_postgres(folder)


@pytest.fixture
def shared_world(world, ledger_location):
    """`world`, on each backend in turn: the run's guarantees, shown on both."""
    return lambda **settings: world(ledger=ledger_location, **settings)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_location(request, tmp_path) -> str | Path:
    """Where a test's ledger is: a SQLite file, then a PostgreSQL database (each test that
    takes this runs once on each backend)."""
    if request.param == "sqlite":
        return tmp_path / "ledger.db"
    return request.getfixturevalue("new_database")()


# -- the fast set and the whole suite -------------------------------------------------------------


def pytest_addoption(parser):
    parser.addoption(
        "--all",
        action="store_true",
        help="also run the slow scenario tests: kills, signals, the fault suite, browsers (CI does)",
    )


_LEFT_OUT: list[str] = []


def pytest_collection_modifyitems(config, items):
    # A test file or test named on the command line runs whatever its marker
    # (`pytest tests/test_faults.py` means it), as does a marker expression (`-m slow`).
    named = any(".py" in arg for arg in config.args)
    if config.getoption("--all") or named or config.option.markexpr:
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
        config.hook.pytest_deselected(items=slow)
        _LEFT_OUT.extend(item.nodeid for item in slow)


# -- the fault suite's table ----------------------------------------------------------------------


def pytest_terminal_summary(terminalreporter):
    if _LEFT_OUT:
        terminalreporter.write_line(
            f"the fast set: {len(_LEFT_OUT)} slow tests left out; `pytest --all` runs them (CI does)"
        )
    if not FAULT_TABLE:
        return
    columns = [
        "scenario",
        "requests",
        "faults",
        "kills",
        "interrupts",
        "duplicates",
        "lost",
        "unsent in_doubt",
        "steps",
    ]
    write = terminalreporter.write_line
    write("")
    write(
        "fault suite: "
        + ", ".join(f"{sum(r[c] for r in FAULT_TABLE)} {c}" for c in columns[1:-1])
        + f" over {len(FAULT_TABLE)} scenarios"
    )
    write("| " + " | ".join(columns) + " |")
    write("|" + "---|" * len(columns))
    for row in FAULT_TABLE:
        write("| " + " | ".join(str(row[c]) for c in columns) + " |")
