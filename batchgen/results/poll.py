"""Results: follow submitted tasks to their end (poll, wait).

Get-task is safe to repeat, so every transport error is simply retried, through the same
retry loop as create calls (`limits.attempts`). Polling shares the rate limiter's pacing with
creation. An API that cannot be reached is noticed after a few calls in a row fail to reach
it, whatever the number of tasks, and the round stops there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..ledger import Checked, Ledger
from ..providers import Kind, Outcome, Provider, TaskState
from ..sending.limits import REAL_CLOCK, Backoff, Clock, RateLimiter, attempts
from ..times import now, parse_timestamp

POLL_BACKOFF = Backoff(max_attempts=4)  # get-task is safe to retry; a round gives up sooner
UNREACHABLE_CALLS = 6  # get calls in a row that did not reach the API: the round stops
# Answers recorded per commit. A status is not money: one lost to a crash is asked again, so a
# poll need not pay a durable commit per task (SPEC §6.7).
RECORD_GROUP = 32
UNREACHABLE_ROUNDS = 3  # --wait gives up (resumably) after this many such rounds in a row
# A task is checked at least this often, whatever its ETA says: an ETA is only an estimate,
# and a huge one must not keep --wait asleep while the task is long done.
REPOLL = timedelta(minutes=10)
MAX_SLEEP = 60.0  # --wait never sleeps longer than this between looks at the ledger


@dataclass
class PollReport:
    checked: int = 0
    completed: int = 0
    failed: int = 0
    processing: int = 0
    unknown: list[str] = field(default_factory=list)  # task ids the API does not know
    errors: int = 0  # calls that kept failing (tried again next time)
    unreachable: bool = False  # the round stopped: the API could not be reached
    aborted: str | None = None  # the API refused the key: exit 3
    gave_up: str | None = None  # the API stayed unreachable: resumable, exit 1


def is_due(row: dict[str, Any], at: Any = None) -> bool:
    """Past its ETA, or not heard of for `REPOLL`."""
    at = at or now()
    if not row["eta_at"] or parse_timestamp(row["eta_at"]) <= at:
        return True
    last = row.get("checked_at") or row.get("submitted_at")
    return isinstance(last, str) and parse_timestamp(last) + REPOLL <= at


def pending(ledger: Ledger, job: str | None, *, due_only: bool) -> list[dict[str, Any]]:
    """Submitted tasks whose generation has not ended (only those due if `due_only`)."""
    rows = ledger.tasks.open_tasks(job)
    if due_only:
        at = now()
        rows = [r for r in rows if is_due(r, at)]
    return rows


def poll(
    ledger: Ledger,
    api: Provider,
    tasks: list[dict[str, Any]],
    *,
    limiter: RateLimiter,
    concurrency: int = 4,
    backoff: Backoff = POLL_BACKOFF,
    stop: threading.Event | None = None,
    on_progress: Callable[[PollReport], None] = lambda report: None,
) -> PollReport:
    """Get-task for each of `tasks`; record status, result URLs and when it was checked.
    `on_progress` is told after each answer (under the report's lock: keep it short)."""
    report = PollReport()
    lock = threading.Lock()
    outer = stop or threading.Event()
    round_over = threading.Event()  # set on abort or when the API is unreachable
    misses = [0]  # calls in a row that did not reach the API

    def stopped() -> bool:
        return outer.is_set() or round_over.is_set()

    def wait(seconds: float) -> bool:
        return limiter.clock.sleep(seconds, round_over) or stopped()

    def check(row: dict[str, Any]) -> None:
        outcome: Outcome | None = None
        for _ in attempts(backoff, wait=wait):
            if stopped() or not limiter.wait(round_over):
                return
            outcome = api.get(row["task_id"], row.get("task_handle"))
            if outcome.kind is not Kind.RETRY:
                break
            if outcome.throttled:
                limiter.throttled(outcome.retry_after)
            if outcome.http_status is None:
                with lock:
                    misses[0] += 1
                    if misses[0] >= UNREACHABLE_CALLS:
                        report.unreachable = True
                        round_over.set()
        with lock:
            if outcome is None or outcome.kind is Kind.RETRY:
                report.errors += 1
                return
            misses[0] = 0
            found = _record(row, outcome, report)
            if found is not None:
                answers.append(found)
            on_progress(report)
            if report.aborted:
                round_over.set()
                outer.set()
            group = answers[:] if len(answers) >= RECORD_GROUP else []
            if group:
                answers.clear()
        if group:
            ledger.claims.record_statuses(group)

    answers: list[Checked] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(check, tasks))
    finally:
        ledger.claims.record_statuses(answers)  # the last group, whatever ended the round
    return report


def _record(row: dict[str, Any], outcome: Outcome, report: PollReport) -> Checked | None:
    """Count an answer; what to record of it (for `Claims.record_statuses`), if anything."""
    report.checked += 1
    if outcome.kind is Kind.AUTH:
        report.aborted = f"the API refused the key ({outcome.message})"
        return None
    if outcome.kind is not Kind.OK:  # code ≠ 1: the API does not know this task id
        report.unknown.append(row["task_id"])
        return Checked(
            row["key"], row["task_id"], "processing", None, f"get-task: {outcome.message}"
        )
    task = outcome.task or TaskState("processing")
    status = task.status
    if status == "completed":
        report.completed += 1
    elif status == "failed":
        report.failed += 1
    else:
        report.processing += 1
    return Checked(row["key"], row["task_id"], status, list(task.result_urls), task.error)


def next_check(tasks: list[dict[str, Any]], unknown: set[str]) -> float | None:
    """Seconds to sleep before the next poll: until the next task is due (its ETA, or a
    fraction of its estimate once past it; never more than `MAX_SLEEP`). None: nothing left."""
    waits = []
    at = now()
    for row in tasks:
        if row["task_id"] in unknown:
            continue
        if row["eta_at"]:
            until = (parse_timestamp(row["eta_at"]) - at).total_seconds()
            if until > 0:
                waits.append(until)
                continue
        estimate = row["estimated_time"] or 30
        waits.append(min(30.0, max(1.0, estimate * 0.1)))
    return min(min(waits), MAX_SLEEP) if waits else None


def wait_for(
    ledger: Ledger,
    api: Provider,
    job: str,
    *,
    limiter: RateLimiter,
    on_progress: Callable[[dict[str, int]], None] = lambda counts: None,
    stop: threading.Event | None = None,
    clock: Clock = REAL_CLOCK,
    backoff: Backoff = POLL_BACKOFF,
) -> PollReport:
    """Poll the job's tasks until every one has ended (or is unknown to the API)."""
    stop = stop or threading.Event()
    total = PollReport()
    unknown: set[str] = set()
    unreachable = 0  # rounds in a row where the API could not be reached
    while not stop.is_set():
        open_tasks = [
            r for r in pending(ledger, job, due_only=False) if r["task_id"] not in unknown
        ]
        on_progress(ledger.tasks.generation_counts(job))
        if not open_tasks:
            break
        at = now()
        due = [r for r in open_tasks if is_due(r, at)]
        if due:
            report = poll(ledger, api, due, limiter=limiter, stop=stop, backoff=backoff)
            unknown.update(report.unknown)
            total.checked += report.checked
            total.errors += report.errors
            if report.aborted:
                total.aborted = report.aborted
                break
            unreachable = (
                unreachable + 1
                if report.unreachable or (report.errors and not report.checked)
                else 0
            )
            if unreachable >= UNREACHABLE_ROUNDS:
                total.gave_up = f"the API could not be reached in {unreachable} rounds of polling; batchgen poll --wait resumes"
                break
            if unreachable:
                if clock.sleep(backoff.delay(unreachable + 1), stop):
                    break
                continue
            open_tasks = [
                r for r in pending(ledger, job, due_only=False) if r["task_id"] not in unknown
            ]
        delay = next_check(open_tasks, unknown)
        if delay is None:
            break
        if clock.sleep(delay, stop):
            break
    total.unknown = sorted(unknown)
    counts = ledger.tasks.generation_counts(job)
    total.completed, total.failed, total.processing = (
        counts["completed"],
        counts["failed"],
        counts["processing"],
    )
    return total
