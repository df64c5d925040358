"""What the tests share: paths, job texts, and the checks several test files make (tests/ is on
sys.path; the repo root is not, so `import batchgen` finds the installed package, as a user's
install would). Fixtures live in conftest.py; no test file imports another."""

import contextlib
import json
import shutil
import sqlite3
import struct
import subprocess
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent

PRO_DEFAULTS = """
defaults:
  model: wan2.2-pro
  options: {prompt_optimization: true, aspect_ratio: "16:9", resolution: 480p, duration: 5}
"""


# The fault suite's table: scenarios append their rows, conftest prints it at the end.
FAULT_TABLE: list[dict] = []


class FakeClock:
    """Time that passes only when someone sleeps (a `limits.Clock`)."""

    def __init__(self):
        self.at = 0.0
        self.slept: list[float] = []

    def now(self):
        return self.at

    def sleep(self, seconds, stop=None):
        self.slept.append(seconds)
        self.at += max(0.0, seconds)
        return bool(stop is not None and stop.is_set())


def canonical(body) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def job_text(
    prompts: list[str], *, name: str | None = None, repeat: int | None = None, limits: str = ""
) -> str:
    axis = ", ".join(json.dumps(p) for p in prompts)
    head = (
        "version: 1\n"
        + (f"name: {name}\n" if name else "")
        + (f"limits: {limits}\n" if limits else "")
    )
    entry = f"  - matrix: {{prompt: [{axis}]}}\n" + (f"    repeat: {repeat}\n" if repeat else "")
    return head + PRO_DEFAULTS + "requests:\n" + entry


def prompts(n: int, tag: str = "p") -> list[str]:
    return [f"{tag} {i}: a cat in the garden" for i in range(n)]


def assert_consistent(env):
    """The ledger and the sandbox's record agree; no body was created twice."""
    created = env.created_bodies()
    assert max(created.values(), default=0) <= 1, "a request was created twice"
    task_ids = {c.task_id for c in env.sandbox.created()}
    rows = {canonical(json.loads(r["request"])): r for r in env.rows()}
    for body in created:  # everything the sandbox created is tracked, never lost
        assert body in rows, "the sandbox created a task the ledger does not know"
        assert rows[body]["state"] in ("submitted", "in_doubt")
    for body, row in rows.items():
        if row["state"] == "submitted":
            assert row["task_id"] in task_ids
        if row["state"] in ("failed", "rejected"):
            assert body not in created, f"{row['state']} but created"
        assert row["state"] != "sending"
    assert_counts_kept(env.ledger_path)


def _ledger_rows(location, sql: str) -> set[tuple]:
    from batchgen.ledger import Ledger

    with Ledger(location, create=False) as ledger:
        return {tuple(row) for row in ledger._query(sql)}


def duplicates_and_lost(created: dict[str, int], rows: dict[str, dict]) -> tuple[int, int]:
    """From the sandbox's tasks created per body and the ledger's rows by body: requests
    created more than once (each extra one paid twice), and created tasks the ledger does not
    hold as submitted or in_doubt (paid for and lost)."""
    duplicates = sum(n - 1 for n in created.values() if n > 1)
    lost = sum(
        1 for body in created if rows.get(body, {}).get("state") not in ("submitted", "in_doubt")
    )
    return duplicates, lost


def counts_recomputed(location) -> set[tuple]:
    """job_counts as a GROUP BY over job_tasks and tasks would give it now."""
    return _ledger_rows(
        location,
        "SELECT j.job, j.current, coalesce(t.model, ''), coalesce(t.state, ''),"
        " coalesce(t.status, ''), count(*) FROM job_tasks j LEFT JOIN tasks t ON t.key = j.key"
        " GROUP BY 1, 2, 3, 4, 5",
    )


def assert_counts_kept(location) -> None:
    """The counts the triggers keep are the counts the rows give."""
    if not str(location).startswith("postgresql://") and not Path(location).exists():
        return
    kept = _ledger_rows(
        location, "SELECT job, current, model, state, status, n FROM job_counts WHERE n != 0"
    )
    assert kept == counts_recomputed(location)


def is_postgres(location) -> bool:
    return str(location).startswith("postgresql://")


def ledger_sql(location, sql: str, *params) -> None:
    """A statement run by hand on the ledger, as a user's sqlite3 or psql would."""
    from batchgen.ledger import Ledger

    with Ledger(location, create=False) as ledger:
        ledger.db.conn.execute(sql, params)


@contextlib.contextmanager
def write_lock_held(location):
    """Another program holds the ledger's write lock: no write can commit meanwhile."""
    if is_postgres(location):
        import psycopg

        from batchgen.ledger.connections import WRITERS_LOCK

        with psycopg.connect(str(location), autocommit=True) as conn:
            conn.execute("BEGIN")
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (WRITERS_LOCK,))
            yield
            conn.execute("ROLLBACK")
        return
    conn = sqlite3.connect(location, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def wait_for_runs_to_end(location, timeout: float = 30) -> None:
    """Until no run with `sending` rows is alive: a killed run's file lock goes at once, its
    PostgreSQL session when the server reads the closed connection (waited for, not assumed)."""
    from batchgen.errors import NoLedger
    from batchgen.ledger import Ledger

    try:
        ledger = Ledger(location, create=False)
    except NoLedger:  # every run was killed before it made the ledger: none to wait for
        return
    with ledger:
        runs = [
            r[0] for r in ledger._query("SELECT DISTINCT run_id FROM tasks WHERE state = 'sending'")
        ]
        wait_until(
            lambda: not any(run is not None and ledger.run_is_alive(run) for run in runs), timeout
        )


def corrupt_index(path, index: str) -> None:
    """Zero the first index page of `index` (the rows stay, the index forgets them)."""
    import sqlite3

    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", [index]).fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size + 8)  # keep the page header's type byte: an empty leaf
        f.write(b"\x00" * 4)


def can_unshare_pid() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", "true"], capture_output=True
    )
    return probe.returncode == 0


def wait_for_calls(env, n: int, timeout: float = 20) -> None:
    """Until `n` create calls were answered (the sandbox records a call when it answers)."""
    deadline = time.monotonic() + timeout
    while len([c for c in env.sandbox.calls if c.endpoint == "create"]) < n:
        assert time.monotonic() < deadline, "the run never started sending"
        time.sleep(0.02)


def wait_for_sending(env, n: int, timeout: float = 20) -> None:
    """Until `n` rows are `sending`: calls in flight, not answered yet."""
    deadline = time.monotonic() + timeout
    while _sending(env.ledger_path) < n:
        assert time.monotonic() < deadline, "the run never started sending"
        time.sleep(0.02)


def _sending(location) -> int:
    sql = "SELECT count(*) FROM tasks WHERE state = 'sending'"
    if is_postgres(location):  # read as psql would: no batchgen in the way
        import psycopg

        with psycopg.connect(str(location), autocommit=True) as conn:
            try:
                return conn.execute(sql).fetchone()[0]
            except psycopg.errors.UndefinedTable:  # the run has not made the tables yet
                return 0
    with sqlite3.connect(location) as conn:
        try:
            return conn.execute(sql).fetchone()[0]
        except sqlite3.OperationalError:
            return 0


class StderrLines:
    """A process's stderr, read as it comes by a thread, so that a test can wait until the
    process says something (its state is then known) instead of sleeping and hoping."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._reader = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 30) -> None:
        """Until a line holds `text` (a bound only against a hang, never a measure)."""

        def said() -> bool:
            return any(text in line for line in self.lines)

        with self._changed:
            self._changed.wait_for(lambda: self._ended or said(), timeout)
            assert said(), f"the process never said {text!r}: {''.join(self.lines)}"

    def text(self, timeout: float = 30) -> str:
        """Everything it wrote, once it closed its stderr (it has exited)."""
        self._reader.join(timeout)
        assert not self._reader.is_alive(), "the process never closed its stderr"
        return "".join(self.lines)


class Loopback:
    """An HTTP server on 127.0.0.1 answering with `handler` from a background thread: a
    test's stand-in for an API, a proxy or a file host."""

    def __init__(self, handler):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()  # shut down within 0.05 s, not the default 0.5

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class CountingServer:
    """A keep-alive server on loopback that counts the connections made to it: a stand-in for
    an API or a file host whose `answer(handler)` answers each GET and POST."""

    def __init__(self):
        outer = self
        self.connections = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a connection serves many calls

            def setup(self):
                super().setup()
                outer.connections += 1

            def do_GET(self):
                outer.answer(self)

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.loopback = Loopback(Handler)
        self.base_url = self.loopback.base_url

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def close(self):
        self.loopback.close()


def wait_until(condition, timeout: float = 10.0) -> None:
    """Until `condition()` is true (a test fails past `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def steps(ledger, read) -> int:
    """SQLite virtual-machine steps (in hundreds) that `read()` takes: a count, not a time."""
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0

    ledger.db.conn.set_progress_handler(tick, 100)
    try:
        read()
    finally:
        ledger.db.conn.set_progress_handler(None, 100)
    return counted[0]


# A job of WAN 2.2 Lite requests (each takes one image), and a small valid PNG to give them.
LITE = (
    "version: 1\ndefaults:\n  model: wan2.2-lite\n"
    "  options: {prompt_optimization: true, aspect_ratio: 16:9, resolution: 720p}\n"
)


def png(width: int = 4, seed: int = 0) -> bytes:
    """A valid PNG of width x width pixels, its colour from `seed` (distinct seeds, distinct files)."""
    rows = b"".join(b"\x00" + bytes([seed % 256, 0, 0]) * width for _ in range(width))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, width, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def install_provider(site: Path, name: str, source: str) -> None:
    """A provider's distribution `batchgen-<name>` laid out in `site` as pip would lay it out:
    its package `batchgen_<name>` (holding `source`) and its .dist-info, whose
    entry_points.txt registers `batchgen_<name>:PROVIDER` under `batchgen.providers`. Put
    `site` on the path and call `providers.refresh()` for batchgen to find it."""
    package = f"batchgen_{name}"
    (site / package).mkdir(parents=True)
    (site / package / "__init__.py").write_text(source)
    info = site / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: batchgen-{name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[batchgen.providers]\n{name} = {package}:PROVIDER\n")
