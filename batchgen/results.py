"""Results: follow submitted tasks to their end (poll, wait) and put the videos on disk.

Get-task is safe to repeat, so every transport error is simply retried. Polling shares the
rate limiter's pacing with creation. Downloads go through a client that carries no API key
(result files live on a CDN, which has no business seeing it), to `.part` files renamed
into place once their length is right: a file under its final name is always complete.
"""

from __future__ import annotations

import csv
import json
import os
import re
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx

from . import models
from .api import Api, Kind
from .ledger import Ledger, now, parse_timestamp
from .limits import Backoff, RateLimiter

STATUS = {1: "processing", 2: "completed", 3: "failed"}
POLL_BACKOFF = Backoff(max_attempts=4)  # get-task is safe to retry; a round gives up sooner
UNREACHABLE_ROUNDS = 5  # --wait gives up (resumably) after this many rounds with no answer


@dataclass
class PollReport:
    checked: int = 0
    changed: int = 0
    completed: int = 0
    failed: int = 0
    processing: int = 0
    unknown: list[str] = field(default_factory=list)  # task ids the API does not know
    errors: int = 0  # calls that kept failing (tried again next time)
    aborted: str | None = None  # the API refused the key: exit 3
    gave_up: str | None = None  # the API stayed unreachable: resumable, exit 1


def pending(ledger: Ledger, job: str | None, *, due_only: bool) -> list[dict[str, Any]]:
    """Submitted tasks whose generation has not ended (only those past their ETA if `due_only`)."""
    sql = "SELECT t.* FROM tasks t" + (" JOIN job_tasks j ON j.key = t.key AND j.job = ?" if job else "")
    sql += " WHERE t.state = 'submitted' AND coalesce(t.status, 'processing') = 'processing'"
    rows = [dict(r) for r in ledger.query(sql + " ORDER BY t.eta_at", [job] if job else [])]
    if due_only:
        stamp = now()
        rows = [r for r in rows if not r["eta_at"] or parse_timestamp(r["eta_at"]) <= stamp]
    return rows


def poll(
    ledger: Ledger,
    api: Api,
    tasks: list[dict[str, Any]],
    *,
    limiter: RateLimiter,
    concurrency: int = 4,
    backoff: Backoff = POLL_BACKOFF,
    stop: threading.Event | None = None,
) -> PollReport:
    """Get-task for each of `tasks`; record status, result URLs and when it was checked."""
    report = PollReport()
    lock = threading.Lock()
    stop = stop or threading.Event()

    def check(row: dict[str, Any]) -> None:
        for attempt in range(1, backoff.max_attempts + 1):
            if stop.is_set() or not limiter.wait(stop):
                return
            outcome = api.get(row["task_id"])
            if outcome.kind is Kind.RETRY:
                if outcome.throttled:
                    limiter.throttled(outcome.retry_after)
                if stop.wait(backoff.delay(attempt)):
                    return
                continue
            with lock:
                _record(ledger, row, outcome, report, stop)
            return
        with lock:
            report.errors += 1

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        list(pool.map(check, tasks))
    return report


def _record(ledger: Ledger, row: dict[str, Any], outcome: Any, report: PollReport, stop: threading.Event) -> None:
    report.checked += 1
    if outcome.kind in (Kind.AUTH, Kind.NO_CREDIT):
        report.aborted = f"the API refused the key ({outcome.message})"
        stop.set()
        return
    if outcome.kind is not Kind.OK:  # code ≠ 1: the API does not know this task id
        report.unknown.append(row["task_id"])
        ledger.record_status(row["key"], "processing", None, error=f"get-task: {outcome.message}")
        return
    data = outcome.data or {}
    status = STATUS.get(data.get("status"), "processing")
    urls = data.get("result_urls")
    urls = [u for u in urls if isinstance(u, str)] if isinstance(urls, list) else []
    error = data.get("error") if status == "failed" and isinstance(data.get("error"), str) else None
    ledger.record_status(row["key"], status, urls, error=error)
    if status != (row.get("status") or "processing"):
        report.changed += 1
    if status == "completed":
        report.completed += 1
    elif status == "failed":
        report.failed += 1
    else:
        report.processing += 1


def next_check(tasks: list[dict[str, Any]], unknown: set[str]) -> float | None:
    """Seconds to sleep before the next poll: until the next ETA, or a fraction of the
    estimate for tasks already past theirs (the ETA is only an estimate). None: nothing left."""
    waits = []
    stamp = now()
    for row in tasks:
        if row["task_id"] in unknown:
            continue
        if row["eta_at"]:
            until = (parse_timestamp(row["eta_at"]) - stamp).total_seconds()
            if until > 0:
                waits.append(until)
                continue
        estimate = row["estimated_time"] or 30
        waits.append(min(30.0, max(1.0, estimate * 0.1)))
    return min(waits) if waits else None


def wait_for(
    ledger: Ledger,
    api: Api,
    job: str,
    *,
    limiter: RateLimiter,
    on_progress: Callable[[dict[str, int]], None] = lambda counts: None,
    stop: threading.Event | None = None,
    sleep: Callable[[float], bool] | None = None,
    backoff: Backoff = POLL_BACKOFF,
) -> PollReport:
    """Poll the job's tasks until every one has ended (or is unknown to the API)."""
    stop = stop or threading.Event()
    sleep = sleep or stop.wait
    total = PollReport()
    unknown: set[str] = set()
    unreachable = 0  # rounds in a row where no task could be checked
    while not stop.is_set():
        open_tasks = [r for r in pending(ledger, job, due_only=False) if r["task_id"] not in unknown]
        on_progress(generation_counts(ledger, job))
        if not open_tasks:
            break
        due = [r for r in open_tasks if not r["eta_at"] or parse_timestamp(r["eta_at"]) <= now()]
        if due:
            report = poll(ledger, api, due, limiter=limiter, stop=stop, backoff=backoff)
            unknown.update(report.unknown)
            total.checked += report.checked
            total.errors += report.errors
            if report.aborted:
                total.aborted = report.aborted
                break
            unreachable = unreachable + 1 if report.errors and not report.checked else 0
            if unreachable >= UNREACHABLE_ROUNDS:
                total.gave_up = f"the API could not be reached in {unreachable} rounds of polling; batchgen poll --wait resumes"
                break
            open_tasks = [r for r in pending(ledger, job, due_only=False) if r["task_id"] not in unknown]
        delay = next_check(open_tasks, unknown)
        if delay is None:
            break
        if sleep(delay):
            break
    total.unknown = sorted(unknown)
    counts = generation_counts(ledger, job)
    total.completed, total.failed, total.processing = counts["completed"], counts["failed"], counts["processing"]
    return total


def generation_counts(ledger: Ledger, job: str | None) -> dict[str, int]:
    sql = "SELECT coalesce(t.status, 'processing') AS status, count(*) AS n FROM tasks t"
    sql += " JOIN job_tasks j ON j.key = t.key AND j.job = ?" if job else ""
    sql += " WHERE t.state = 'submitted' GROUP BY 1"
    counts = {"processing": 0, "completed": 0, "failed": 0}
    for row in ledger.query(sql, [job] if job else []):
        counts[row["status"]] = row["n"]
    return counts


# -- download -----------------------------------------------------------------------------------


@dataclass
class DownloadReport:
    downloaded: int = 0
    skipped: int = 0  # already complete on disk
    failed: list[str] = field(default_factory=list)  # "file: reason"
    bytes: int = 0


def slug(text: str, length: int = 40) -> str:
    """A short, safe, readable piece of a file name: `a-cat-walking-in-the-garden`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return words[:length].rstrip("-") or "video"


def file_name(row: dict[str, Any], index: int, count: int) -> str:
    """`wan2.2-pro_a-cat-walking-in-the-garden_d6da5c44_v0.mp4` (`_2` etc. for more files)."""
    model = models.label(row["model_id"] or "")
    extra = f"_{index + 1}" if count > 1 else ""
    return f"{model}_{slug(row['prompt'] or '')}_{row['key'][:8]}_v{row['variant']}{extra}.mp4"


def completed(ledger: Ledger, job: str) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in ledger.query(
            "SELECT t.* FROM tasks t JOIN job_tasks j ON j.key = t.key AND j.job = ?"
            " WHERE t.state = 'submitted' AND t.status = 'completed' ORDER BY t.submitted_at, t.key",
            [job],
        )
    ]


def download(
    ledger: Ledger,
    job: str,
    out: Path,
    *,
    client: httpx.Client | None = None,
    concurrency: int = 4,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
) -> DownloadReport:
    """Save every completed task's videos under `out`; record their paths; write the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    work = result_files(completed(ledger, job), out)
    report = DownloadReport()
    lock = threading.Lock()
    done = 0
    own_client = client is None
    client = client or httpx.Client(timeout=httpx.Timeout(30.0, read=120.0), follow_redirects=True)

    def fetch(item: ResultFile) -> None:
        nonlocal done
        path = item.path
        if path.exists():
            result = "skipped"
        else:
            result = _fetch(client, item.url, path)
        with lock:
            if result == "skipped":
                report.skipped += 1
            elif isinstance(result, int):
                report.downloaded += 1
                report.bytes += result
            else:
                report.failed.append(f"{path.name}: {result}")
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
    for row, paths in by_task.values():
        if paths != json.loads(row["files"] or "[]"):
            ledger.record_files(row["key"], paths)
    write_manifest(present, out)
    return report


@dataclass(frozen=True)
class ResultFile:
    """One result URL of a completed task, and where it goes on disk."""

    row: dict[str, Any]
    url: str
    path: Path


def result_files(rows: list[dict[str, Any]], out: Path) -> list[ResultFile]:
    files = []
    for row in rows:
        urls = json.loads(row["result_urls"] or "[]")
        files.extend(ResultFile(row, url, out / file_name(row, i, len(urls))) for i, url in enumerate(urls))
    return files


def _fetch(client: httpx.Client, url: str, path: Path) -> int | str:
    """Stream `url` to `path` via `path.part`; the byte count, or why it failed."""
    part = path.with_name(path.name + ".part")
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            expected = response.headers.get("Content-Length")
            size = 0
            with open(part, "wb") as f:
                for chunk in response.iter_bytes(64 * 1024):
                    f.write(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
        if expected is not None and expected.isdigit() and int(expected) != size:
            return f"got {size} of {expected} bytes"
        os.replace(part, path)
        return size
    except httpx.HTTPError as e:
        return f"{type(e).__name__}: {e}"
    except OSError as e:
        return f"cannot write: {e.strerror}"
    finally:
        if part.exists():
            part.unlink()


MANIFEST_COLUMNS = ("file", "key", "task_id", "model", "model_id", "prompt", "options", "image_urls", "variant", "status", "url")


def write_manifest(files: list[ResultFile], out: Path) -> Path:
    """`manifest.csv`: every downloaded file with its prompt, model, options and task id."""
    path = out / "manifest.csv"
    part = path.with_name("manifest.csv.part")
    with open(part, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for item in files:
            row = item.row
            body = json.loads(row["request"])
            writer.writerow(
                {
                    "file": item.path.name,
                    "key": row["key"],
                    "task_id": row["task_id"],
                    "model": models.label(row["model_id"]),
                    "model_id": row["model_id"],
                    "prompt": row["prompt"],
                    "options": json.dumps(body.get("options", {}), sort_keys=True),
                    "image_urls": " ".join(body.get("image_urls", [])),
                    "variant": row["variant"],
                    "status": row["status"],
                    "url": item.url,
                }
            )
    os.replace(part, path)
    return path
