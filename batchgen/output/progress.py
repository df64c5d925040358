"""What people read: progress while sending, the summary after, status tables."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from ..sending.run_report import RunReport
from ..times import now, parse_timestamp
from .words import count


class ProgressDisplay:
    """A one-line bar on a terminal (done/total, rate, errors, time left); otherwise a plain
    line every few seconds, so logs stay readable."""

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO = sys.stderr,
        tty: bool | None = None,
        every: float = 5.0,
        columns: int | None = None,
    ):
        self.total = total
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.every = every
        self.columns = columns  # None: the terminal's width, read at each draw (it may change)
        self.started = time.monotonic()
        self._first: tuple[float, int] | None = None  # (when, how many) at the first completion
        self._last = 0.0
        self._open = False
        self._lock = threading.Lock()

    def __call__(self, report: RunReport) -> None:
        with self._lock:
            now_ = time.monotonic()
            finished = report.done >= self.total
            if not finished and now_ - self._last < (0.1 if self.tty else self.every):
                return
            self._last = now_
            line = self.line(report, now_ - self.started, self.rate(report.done, now_))
            if self.tty:
                # One line that fits: a line longer than the terminal wraps, and every update
                # would scroll a new one.
                width = max(20, (self.columns or shutil.get_terminal_size((100, 24)).columns) - 1)
                self.stream.write("\r" + line.ljust(width)[:width] + ("\n" if finished else ""))
                self._open = not finished
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def rate(self, done: int, now: float) -> float:
        """Requests a second, measured from the first completion: counting from the start
        would add the first calls (sent at once) to a window they do not span, and read more
        than the ceiling (306/min at --rpm 300)."""
        if self._first is None:
            if done:
                self._first = (now, done)
            return 0.0
        since, first_done = self._first
        return (done - first_done) / (now - since) if now > since and done > first_done else 0.0

    def line(self, report: RunReport, elapsed: float, rate: float | None = None) -> str:
        done, total = report.done, self.total
        if rate is None:
            rate = done / elapsed if elapsed > 0 else 0.0
        errors = sum(report.outcomes[s] for s in ("rejected", "failed", "in_doubt"))
        left = f"{_duration((total - done) / rate)} left" if rate > 0 and done < total else ""
        width = 24
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        text = f"[{bar}] {done}/{total} sent, {rate * 60:.0f}/min, {errors} errors"
        if self.tty:
            return f"{text} {left}".rstrip()
        return f"progress: {done}/{total} done, {report.outcomes['submitted']} submitted, {errors} errors {left}".rstrip()

    def finish(self) -> None:
        """End the bar's line if a stopped run left it open, so the summary starts clean."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def when_due(eta_at: str | None) -> str:
    if not eta_at:
        return "unknown"
    due = parse_timestamp(eta_at)
    delta = (due - now()).total_seconds()
    local = due.astimezone().strftime("%H:%M:%S")
    return f"{local} (in {_duration(delta)})" if delta > 0 else f"{local} (past)"


def summary_lines(
    job: str,
    job_file: str,
    report: RunReport,
    job_states: Counter[str],
    last_due: str | None,
    unsent: int,
) -> list[str]:
    """The run's summary: what it did, what the job now stands at, and what to do next."""
    lines = []
    verb = "stopped" if report.interrupted else "aborted" if report.aborted else "done"
    did = (
        ", ".join(_outcome(state, n) for state, n in sorted(report.outcomes.items()))
        or "nothing sent"
    )
    lines.append(f"run {verb}: {count(report.calls, 'create call')}; {did}")
    width = max([14, *map(len, report.by_model)])  # model names line up, however long
    for model, counts in sorted(report.by_model.items()):
        lines.append(
            f"  {model:<{width}} " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        )
    if report.aborted:
        lines.append(f"stopped early: {report.aborted}; the rest was not sent")
    standing = ", ".join(f"{n} {state}" for state, n in sorted(job_states.items()))
    lines.append(
        f"job {job}: {standing or 'nothing in the ledger yet'}"
        + (f"; {unsent} not sent yet" if unsent else "")
    )
    if job_states.get("submitted") and last_due:
        lines.append(f"last task due: {when_due(last_due)}")
    if job_states.get("in_doubt"):
        lines.append(
            f"{job_states['in_doubt']} in doubt: sent but no answer, they may have been created (and billed). "
            f"See them: batchgen tasks {job} --state in_doubt; resend: batchgen run {job_file} --resubmit-in-doubt (may duplicate)"
        )
    if job_states.get("failed"):
        lines.append(
            f"{job_states['failed']} failed (never created): the next batchgen run {job_file} sends them again"
        )
    if job_states.get("rejected"):
        lines.append(
            f"{job_states['rejected']} rejected by the API: batchgen tasks {job} --state rejected shows why;"
            " --retry-rejected sends them again"
        )
    if job_states.get("generation_failed"):
        lines.append(
            f"{job_states['generation_failed']} generations failed: batchgen run {job_file} --regenerate-failed"
            " sends them again (each is billed again)"
        )
    if job_states.get("sending"):
        lines.append(f"{job_states['sending']} being sent by another run right now")
    for message, n in report.errors.most_common(3):
        lines.append(f"  {n} x {message}")
    return lines


def _outcome(state: str, n: int) -> str:
    if state == "skipped":
        # Planned as this run's to send, then found claimed when its turn came: another run
        # (on this machine or another sharing the ledger) sent it, or is sending it.
        return (
            f"{n} skipped (another run on this ledger claimed {'it' if n == 1 else 'them'} first)"
        )
    return f"{n} {state}"


def table(rows: Iterable[Iterable[Any]], header: Iterable[str]) -> list[str]:
    held = list(rows)
    return list(streamed_table(lambda: held, header))


def streamed_table(
    rows: Callable[[], Iterable[Iterable[Any]]], header: Iterable[str]
) -> Iterator[str]:
    """The lines of a table whose rows `rows()` gives each time it is called: once to measure
    the columns, once to write them, so a table of a million rows holds one at a time."""
    names = list(header)
    widths = [len(h) for h in names]
    for row in rows():
        widths = [max(w, len(v)) for w, v in zip(widths, _cells(row))]
    yield "  ".join(h.ljust(w) for h, w in zip(names, widths)).rstrip()
    for row in rows():
        yield "  ".join(v.ljust(w) for v, w in zip(_cells(row), widths)).rstrip()


def _cells(row: Iterable[Any]) -> list[str]:
    return ["" if v is None else str(v) for v in row]
