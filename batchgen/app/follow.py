"""After sending: waiting for the tasks to end, polling, downloading the videos, writing the
gallery. `run --wait --download --gallery` chains them; `poll`, `download` and `gallery` call
them on their own."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import providers
from ..errors import EXIT_ABORTED, EXIT_INCOMPLETE, UsageError
from ..ledger import FAILURES as LEDGER_FAILURES
from ..ledger import Ledger
from ..ledger.location import Project
from ..results.bounds import DEFAULT_BOUNDS, Bounds
from ..results.download import download
from ..results.poll import pending, poll, wait_for
from ..sending.limits import RateLimiter
from ..web import pages as gallery_pages
from .session import (
    Console,
    Target,
    interrupted_exit,
    open_ledger,
    resolve_job,
    signals_as_interrupts,
)


def wait_until_done(
    ledger: Ledger, target: Target, job: str, limiter: RateLimiter, console: Console
) -> int:
    """Poll until every task of `job` has ended; the exit code it deserves."""
    last = [""]

    def show(counts: dict[str, int]) -> None:
        line = f"waiting: {counts['processing']} processing, {counts['completed']} completed, {counts['failed']} failed"
        if line != last[0]:
            console.err(line)
            last[0] = line

    stop = threading.Event()
    with target.connect() as client, signals_as_interrupts():
        try:
            report = wait_for(ledger, client, job, limiter=limiter, on_progress=show, stop=stop)
        except KeyboardInterrupt as e:
            stop.set()
            console.err(
                "\nstopped waiting; batchgen poll --wait or run --wait picks up where this left"
            )
            return interrupted_exit(e)
    ended = f"tasks ended: {report.completed} completed, {report.failed} failed"
    console.out(ended + (f", {report.processing} still processing" if report.processing else ""))
    if report.unknown:
        console.out(
            f"{len(report.unknown)} task ids unknown to the API: {', '.join(report.unknown[:5])}"
        )
    if report.aborted:
        console.err(f"stopped: {report.aborted}")
        return EXIT_ABORTED
    if report.gave_up:
        console.err(f"stopped waiting: {report.gave_up}")
    return EXIT_INCOMPLETE if report.failed or report.unknown or report.processing else 0


def download_job(
    ledger: Ledger,
    name: str,
    folder: Path,
    target: Target | None,
    console: Console,
    *,
    concurrency: int = 4,
    bounds: Bounds = DEFAULT_BOUNDS,
    current_only: bool = True,
    api_base: str | None = None,
) -> int:
    """Download the completed videos of `name` (its current requests', unless not
    `current_only`; those sent to `api_base` only, when given) into `folder`; say what is
    still processing. The exit code."""
    prepare_folder(folder)
    rebase: Callable[[str], str] = target.rebase if target else (lambda url: url)
    report = download(
        ledger,
        name,
        folder,
        concurrency=concurrency,
        bounds=bounds,
        rebase=rebase,
        current_only=current_only,
        api_base=api_base,
    )
    console.out(
        f"{folder}: {report.downloaded} downloaded ({report.bytes:,} bytes), {report.skipped} already there; manifest.csv"
    )
    for failure in report.failed:
        console.err(f"  failed: {failure}")
    # Only what a poll saw completed is downloaded: a task never polled since it was sent may
    # be done already. Said, so that "0 downloaded" is not taken for "nothing to get".
    processing = ledger.tasks.generation_counts(name, current_only=current_only)["processing"]
    unpolled = ledger.tasks.unpolled_count(name, current_only=current_only)
    if processing:
        never = f" ({unpolled} never polled since they were sent)" if unpolled else ""
        console.out(
            f"{processing} still processing as last polled{never}: batchgen poll {name} --wait, then batchgen download {name}"
        )
    return EXIT_INCOMPLETE if report.failed or processing else 0


def at_most_every(seconds: float, show: Callable[[Any], None]) -> Callable[[Any], None]:
    """`show`, called at most once every `seconds` (a progress line on a long poll)."""
    last = [time.monotonic()]

    def throttled(value: Any) -> None:
        if time.monotonic() - last[0] >= seconds:
            last[0] = time.monotonic()
            show(value)

    return throttled


def prepare_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot use {folder} as a folder: {e.strerror}") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UsageError(f"cannot use {folder} as a folder: not a writable directory")


def write_gallery(
    ledger: Ledger,
    name: str,
    folder: Path,
    console: Console,
    rows: list[str] | None = None,
    cols: list[str] | None = None,
    *,
    current_only: bool = True,
) -> Path:
    prepare_folder(folder)
    path = gallery_pages.write(ledger, name, folder, rows, cols, current_only=current_only)
    console.out(f"gallery: {path}")
    return path


def on_done(
    command: str | None,
    ledger: Ledger,
    job: str,
    job_file: str | None,
    exit_code: int,
    console: Console,
) -> None:
    """Run `command` (a shell command) once, with what became of the job in its environment:
    BATCHGEN_JOB, BATCHGEN_JOB_FILE, BATCHGEN_EXIT, BATCHGEN_LEDGER, BATCHGEN_COUNTS (JSON) and
    BATCHGEN_SUBMITTED / _COMPLETED / _FAILED / _PROCESSING. The API key is not passed on, nor
    a password the ledger's URL holds."""
    if not command:
        return
    try:
        states = ledger.tasks.job_states(job)
        generation = ledger.tasks.generation_counts(job)
    except LEDGER_FAILURES as e:  # busy after a second Ctrl-C (`Ledger.quitting`), or failing
        console.err(f"--on-done not run: the ledger could not be read ({e})")
        return
    secret = providers.key_variables()
    env = {k: v for k, v in os.environ.items() if k not in secret}
    env.update(
        BATCHGEN_JOB=job,
        BATCHGEN_JOB_FILE=job_file or "",
        BATCHGEN_EXIT=str(exit_code),
        BATCHGEN_LEDGER=ledger.shown,  # never a password (the command is not ours)
        BATCHGEN_COUNTS=json.dumps({"states": states, "generation": generation}, sort_keys=True),
        BATCHGEN_SUBMITTED=str(states.get("submitted", 0) + states.get("generation_failed", 0)),
        BATCHGEN_COMPLETED=str(generation["completed"]),
        BATCHGEN_FAILED=str(generation["failed"]),
        BATCHGEN_PROCESSING=str(generation["processing"]),
    )
    try:
        finished = subprocess.run(command, shell=True, env=env)
    except OSError as e:
        console.err(f"--on-done could not run: {e.strerror}")
        return
    if finished.returncode:
        console.err(f"--on-done exited {finished.returncode}")


def poll_job(
    project: Project,
    job: str | None,
    target: Target,
    console: Console,
    *,
    all_tasks: bool,
    wait: bool,
    rpm: int,
    concurrency: int,
    on_done_command: str | None,
) -> int:
    """`batchgen poll`: check the tasks of `job` (every job's, for None) that are due (or all);
    with `wait`, until they end, then `on_done_command`. The exit code."""
    limiter = RateLimiter(rpm or None)
    with open_ledger(project, console, create=False) as ledger:
        name = resolve_job(ledger, job)
        if wait:
            if name is None:
                raise UsageError("poll --wait needs a job")
            code = wait_until_done(ledger, target, name, limiter, console)
            on_done(on_done_command, ledger, name, None, code, console)
            return code
        due = pending(ledger, name, due_only=not all_tasks)
        with target.connect() as client:
            report = poll(ledger, client, due, limiter=limiter, concurrency=concurrency)
    console.out(
        f"checked {report.checked}: {report.completed} completed, {report.failed} failed, {report.processing} processing"
    )
    if report.unknown:
        console.err(
            f"{len(report.unknown)} task ids unknown to the API: {', '.join(report.unknown[:5])}"
        )
    if report.errors:
        console.err(f"{report.errors} could not be checked (network); poll again later")
    if report.aborted:
        console.err(f"stopped: {report.aborted}")
        return EXIT_ABORTED
    return EXIT_INCOMPLETE if report.unknown or report.errors else 0
