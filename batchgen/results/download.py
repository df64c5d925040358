"""Download: put a job's videos on disk, within bounds a hostile file host cannot stretch.

Result URLs come from the API's answers, so they are treated as untrusted input:
- only `https://` (or loopback URLs when the API itself is on loopback, as the sandbox is);
- no private, link-local, loopback or reserved address (checked for every address the host
  resolves to), so a URL cannot point batchgen at the user's own network;
- redirects are followed by hand, at most `MAX_REDIRECTS`, each hop held to the same rules;
- a size cap per file, a deadline per file and a stall timeout (no byte for that long);
- transient failures (network errors, 5xx, a cut body) are retried within the command with
  bounded backoff before being reported.

Files go to `<name>.part`, are fsynced, and renamed into place once their length is right: a
file under its final name is always complete. No API key is sent to file hosts.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import httpx

from .. import __version__, providers
from ..errors import DownloadRefused, DownloadTransient, UrlRefused
from ..jobs.expand import label_file_stem
from ..ledger import Ledger
from ..providers import model_label
from ..sending.http_transport import OneConnectionEach
from ..sending.limits import REAL_CLOCK, Clock, attempts
from ..urls import check_result_url, is_loopback_host
from .bounds import DEFAULT_BOUNDS, Bounds

MAX_REDIRECTS = 5


@dataclass
class DownloadReport:
    downloaded: int = 0
    skipped: int = 0  # already complete on disk
    failed: list[str] = field(default_factory=list)  # "file: reason"
    bytes: int = 0


@dataclass(frozen=True)
class ResultFile:
    """One result URL of a completed task, and where it goes on disk."""

    row: dict[str, Any]
    url: str
    path: Path

    @property
    def loopback_api(self) -> bool:
        return is_loopback_host(urlsplit(self.row.get("api_base") or "").hostname)


def slug(text: str, length: int = 40) -> str:
    """A short, safe, readable piece of a file name: `a-cat-walking-in-the-garden`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return words[:length].rstrip("-") or "video"


def file_name(row: dict[str, Any], index: int, count: int) -> str:
    """`wan2.2-pro_a-cat-walking-in-the-garden_d6da5c44_v0.mp4`, or the request's label
    (`shot-12-wan2.2-pro.mp4`) when the job gives it one; `_2` etc. for more files."""
    extra = f"_{index + 1}" if count > 1 else ""
    if row.get("label"):
        return f"{label_file_stem(row['label'])}{extra}.mp4"
    model = model_label(row["model"] or "")
    return f"{model}_{slug(row['prompt'] or '')}_{row['key'][:8]}_v{row['variant']}{extra}.mp4"


def result_files(rows: list[dict[str, Any]], out: Path) -> list[ResultFile]:
    """Every video of `rows`, each with a path of its own.

    Validation keeps a job's ids apart as file names, but a ledger written before it did (or
    labels a later edit made equal) can still name two tasks alike: each of those then gets
    its key's first 8 characters too, whatever order the rows come in, so that no download
    overwrites another task's paid video."""
    named: list[tuple[dict[str, Any], str, str]] = []
    owners: dict[str, set[str]] = {}
    for row in rows:
        try:
            urls = json.loads(row["result_urls"] or "[]")
        except ValueError:
            urls = []
        urls = [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []
        for i, url in enumerate(urls):
            name = file_name(row, i, len(urls))
            named.append((row, url, name))
            owners.setdefault(name.casefold(), set()).add(row["key"])
    return [
        ResultFile(
            row,
            url,
            out
            / (name if len(owners[name.casefold()]) == 1 else f"{name[:-4]}_{row['key'][:8]}.mp4"),
        )
        for row, url, name in named
    ]


def download(
    ledger: Ledger,
    job: str,
    out: Path,
    *,
    client: Getter | None = None,
    concurrency: int = 4,
    bounds: Bounds = DEFAULT_BOUNDS,
    rebase: Callable[[str], str] = lambda url: url,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    stop: threading.Event | None = None,
    current_only: bool = True,
    api_base: str | None = None,
) -> DownloadReport:
    """Save every completed task's videos under `out`; record their paths; write the manifest.

    `rebase` maps a recorded URL to the one to fetch (`download --sandbox` points the
    sandbox's file URLs at the sandbox serving now)."""
    completed = ledger.tasks.completed_tasks(job, current_only=current_only)
    if api_base is not None:  # a rehearsal's videos and the real ones never share a folder
        completed = [row for row in completed if row["api_base"] == api_base]
    work = result_files(completed, out)
    # A file on disk is this task's only if no other task's row records it: a ledger written
    # when two tasks could share a name may hold either video there (fetched again, then).
    recorded: dict[str, set[str]] = {}
    for item in work:
        for path in _recorded_files(item.row):
            recorded.setdefault(path, set()).add(item.row["key"])
    report = DownloadReport()
    lock = threading.Lock()
    done = 0
    stop = stop or threading.Event()
    own_client = client is None
    client = client or Files(
        httpx.Timeout(30.0, read=bounds.stall_timeout), max_connections=concurrency
    )

    def fetch(item: ResultFile) -> None:
        nonlocal done
        result: int | str
        if item.path.exists() and recorded.get(str(item.path), set()) <= {item.row["key"]}:
            result = "skipped"
        else:
            result = fetch_file(
                client,
                rebase(item.url),
                item.path,
                loopback_api=item.loopback_api,
                bounds=bounds,
                stop=stop,
            )
        with lock:
            if result == "skipped":
                report.skipped += 1
            elif isinstance(result, int):
                report.downloaded += 1
                report.bytes += result
            else:
                report.failed.append(f"{item.path.name}: {result}")
            done += 1
            on_progress(done, len(work))

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(fetch, work))
    finally:
        if own_client:
            client.close()
    present = [item for item in work if item.path.exists()]
    by_task: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for item in work:
        by_task.setdefault(item.row["key"], (item.row, []))
    for item in present:
        by_task[item.row["key"]][1].append(str(item.path))
    ledger.claims.record_files_of(
        (row["key"], row["task_id"], paths)
        for row, paths in by_task.values()
        if paths != _recorded_files(row)
    )
    write_manifest(present, out)
    return report


def _recorded_files(row: dict[str, Any]) -> list[str]:
    try:
        files = json.loads(row["files"] or "[]")
    except ValueError:
        return []
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


class Getter(Protocol):
    """What a download fetches with: `httpx.Client`, or `Files`."""

    def stream(self, method: str, url: str) -> AbstractContextManager[httpx.Response]: ...

    def close(self) -> None: ...


class Files:
    """GETs of result files, straight to a transport that lends each a connection of its own
    (connections.OneConnectionEach, as API calls have).

    Not through httpx.Client, for the reason api.Api gives: its per-request work (merging
    URLs and headers, cookies, auth and redirect machinery) was a tenth of a small file's
    time, and none of it applies: redirects are followed by hand (each hop checked), no cookies
    or credentials go to file hosts, and no proxy is taken from the environment. Nor through
    httpcore's shared pool: at 8 downloads its checks of every connection on every call cost
    ~5% of their time."""

    def __init__(self, timeout: httpx.Timeout, *, max_connections: int = 8):
        self._transport = OneConnectionEach(max_connections)
        self._timeout = timeout.as_dict()
        self._headers = httpx.Headers({"User-Agent": f"batchgen/{__version__}"})

    @contextlib.contextmanager
    def stream(self, method: str, url: str) -> Iterator[httpx.Response]:
        request = httpx.Request(
            method, url, headers=self._headers, extensions={"timeout": self._timeout}
        )
        response = self._transport.handle_request(request)
        try:
            yield response
        finally:
            response.close()

    def close(self) -> None:
        self._transport.close()


def fetch_file(
    client: Getter,
    url: str,
    path: Path,
    *,
    loopback_api: bool,
    bounds: Bounds = DEFAULT_BOUNDS,
    stop: threading.Event | None = None,
    clock: Clock = REAL_CLOCK,
) -> int | str:
    """Fetch `url` to `path` within `bounds`, retrying what may pass next time; the byte
    count, or why it failed."""
    stop = stop or threading.Event()
    reason = "not tried"
    for attempt in attempts(bounds.backoff, wait=lambda seconds: clock.sleep(seconds, stop)):
        try:
            return _fetch_once(client, url, path, loopback_api=loopback_api, bounds=bounds)
        except DownloadRefused as e:
            return str(e)
        except DownloadTransient as e:
            reason = str(e)
            if attempt > 1:
                reason += f" (after {attempt} attempts)"
    return reason


def _fetch_once(client: Getter, url: str, path: Path, *, loopback_api: bool, bounds: Bounds) -> int:
    part = path.with_name(path.name + ".part")
    deadline = time.monotonic() + bounds.deadline
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                check_result_url(url, loopback_api=loopback_api)
            except UrlRefused as e:
                raise DownloadRefused(f"refused {_brief(url)}: {e}") from None
            with client.stream("GET", url) as response:
                if response.is_redirect:
                    location = response.headers.get("Location")
                    if not location:
                        raise DownloadRefused(f"HTTP {response.status_code} without a Location")
                    url = urljoin(url, location)
                    continue
                if response.status_code >= 500 or response.status_code == 429:
                    raise DownloadTransient(f"HTTP {response.status_code}")
                if response.status_code != 200:
                    raise DownloadRefused(f"HTTP {response.status_code}")
                size = _save(response, part, bounds, deadline)
            os.replace(part, path)
            return size
        raise DownloadRefused(f"more than {MAX_REDIRECTS} redirects")
    except httpx.HTTPError as e:
        raise DownloadTransient(f"{type(e).__name__}: {e}") from None
    except OSError as e:
        raise DownloadRefused(f"cannot write {part}: {e.strerror}") from None
    finally:
        part.unlink(missing_ok=True)


def _save(response: httpx.Response, part: Path, bounds: Bounds, deadline: float) -> int:
    expected = response.headers.get("Content-Length")
    declared = int(expected) if expected is not None and expected.isdigit() else None
    if declared is not None and declared > bounds.max_file_size:
        raise DownloadRefused(
            f"{declared:,} bytes is over --max-file-size ({bounds.max_file_size:,})"
        )
    size = 0
    with open(part, "wb") as f:
        # As the bytes arrive (no chunk_size): a fixed chunk size would wait to fill each
        # chunk, and a trickling server would never reach the deadline check below.
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > bounds.max_file_size:
                raise DownloadRefused(
                    f"over --max-file-size ({bounds.max_file_size:,} bytes); stopped there"
                )
            if time.monotonic() > deadline:
                raise DownloadTransient(
                    f"not done within {bounds.deadline:g} s ({size:,} bytes so far)"
                )
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    if declared is not None and declared != size:
        raise DownloadTransient(f"got {size} of {declared} bytes")
    return size


def _brief(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."


MANIFEST_COLUMNS = (
    "file",
    "id",
    "key",
    "task_id",
    "model",
    "api_model",  # the model as its provider's API names it
    "prompt",
    "options",
    "images",
    "variant",
    "status",
    "url",
    "meta",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A cell a spreadsheet shows as text: one starting like a formula gets a leading `'`."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_manifest(files: list[ResultFile], out: Path) -> Path:
    """`manifest.csv`: every downloaded file with its prompt, model, options and task id."""
    path = out / "manifest.csv"
    part = path.with_name("manifest.csv.part")
    with open(part, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for item in files:
            row = item.row
            asked = providers.fields_of(row.get("provider"), json.loads(row["request"]))
            cells = {
                "file": item.path.name,
                "id": row.get("label") or "",
                "key": row["key"],
                "task_id": row["task_id"],
                "model": model_label(row["model"] or ""),
                "api_model": row["model"],
                "prompt": row["prompt"],
                "options": json.dumps(dict(asked.options), sort_keys=True),
                "images": " ".join(asked.images),
                "variant": row["variant"],
                "status": row["status"],
                "url": item.url,
                "meta": row.get("meta") or "",
            }
            writer.writerow({name: spreadsheet_safe(value) for name, value in cells.items()})
    os.replace(part, path)
    return path
