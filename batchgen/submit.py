"""The run: claim each request in the ledger, send it under the limits, record what happened.

Threads, not asyncio: every call is bracketed by two short, blocking SQLite commits (the
`sending` claim before, the outcome after), and sqlite3 is blocking. With a thread per
in-flight call (`concurrency` of them), httpx.Client's pool does the I/O, the ledger is used
directly, and Ctrl-C is handled in the main thread while workers finish their calls.
"""

from __future__ import annotations

import queue
import sqlite3
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from . import models
from .api import Api, Kind, Outcome
from .errors import EXIT_ABORTED, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK
from .expand import Request
from .ledger import RESENDABLE, Ledger
from .limits import Backoff, RateLimiter

DEFAULT_CONCURRENCY = 4
DEFAULT_RPM = 60
DEFAULT_MAX_IDENTICAL_ERRORS = 10


@dataclass(frozen=True)
class RunSettings:
    rpm: int | None = DEFAULT_RPM
    concurrency: int = DEFAULT_CONCURRENCY
    retry_rejected: bool = False
    resubmit_in_doubt: bool = False
    backoff: Backoff = Backoff()
    max_identical_errors: int = DEFAULT_MAX_IDENTICAL_ERRORS

    def resendable(self) -> set[str]:
        """Ledger states this run may send again."""
        states = set(RESENDABLE)
        if self.retry_rejected:
            states.add("rejected")
        if self.resubmit_in_doubt:
            states.add("in_doubt")
        return states


@dataclass
class RunReport:
    """What one run did with the requests it was given."""

    total: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # submitted, rejected, failed, in_doubt, ...
    by_model: dict[str, Counter[str]] = field(default_factory=dict)
    calls: int = 0  # create calls made, retries included
    aborted: str | None = None  # why the run stopped early (key refused, credit, identical errors)
    interrupted: bool = False
    errors: Counter[str] = field(default_factory=Counter)  # message → how many requests ended with it

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    def count(self, request: Request, outcome: str) -> None:
        self.outcomes[outcome] += 1
        model = models.label(str(request.body.get("model_id")))
        self.by_model.setdefault(model, Counter())[outcome] += 1

    def exit_code(self, unresolved_in_job: int = 0) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.aborted:
            return EXIT_ABORTED
        if unresolved_in_job or any(self.outcomes[s] for s in ("rejected", "failed", "in_doubt")):
            return EXIT_INCOMPLETE
        return EXIT_OK


Progress = Callable[[RunReport], None]


class Interrupted(Exception):
    """A second Ctrl-C: the run exits at once; its calls in flight were marked in_doubt."""


class Submission:
    """One run's sending: `concurrency` workers take requests from a queue until it is empty,
    the run is aborted, or the user stops it."""

    def __init__(
        self,
        ledger: Ledger,
        api: Api,
        settings: RunSettings,
        *,
        job: str,
        api_base: str,
        run_id: int,
        progress: Progress | None = None,
        limiter: RateLimiter | None = None,
        rng: random.Random | None = None,
    ):
        self.ledger = ledger
        self.api = api
        self.settings = settings
        self.job = job
        self.api_base = api_base
        self.run_id = run_id
        self.progress = progress or (lambda report: None)
        self.limiter = limiter or RateLimiter(settings.rpm)
        self.rng = rng or random.Random()
        self.allow = settings.resendable()
        self.stop = threading.Event()
        self.report = RunReport()
        self._lock = threading.Lock()
        self._streak: tuple[str, int] = ("", 0)
        self._queue: queue.Queue[Request] = queue.Queue()

    # -- the run ----------------------------------------------------------------------------

    def run(self, requests: list[Request], on_interrupt: Callable[[int], None] | None = None) -> RunReport:
        """Send `requests`; returns the report. Ctrl-C once: finish the calls in flight and
        stop; twice: mark them in_doubt and raise `Interrupted`."""
        self.report.total = len(requests)
        for request in requests:
            self._queue.put(request)
        workers = [
            threading.Thread(target=self._work, name=f"batchgen-send-{i}", daemon=True)
            for i in range(max(1, min(self.settings.concurrency, len(requests))))
        ]
        for worker in workers:
            worker.start()
        interrupted = False
        while any(w.is_alive() for w in workers):
            try:
                for worker in workers:
                    worker.join(timeout=0.1)
            except KeyboardInterrupt:
                if interrupted:
                    self.ledger.abandon_in_flight(self.run_id, "the run was stopped (second Ctrl-C) before the answer came")
                    raise Interrupted from None
                interrupted = True
                self.report.interrupted = True
                self.stop.set()
                if on_interrupt:
                    on_interrupt(sum(w.is_alive() for w in workers))
        return self.report

    def _work(self) -> None:
        while not self.stop.is_set():
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                previous = self.ledger.claim(request, self.job, self.api_base, self.run_id, self.allow)
            except sqlite3.Error as e:  # nothing sent: stop rather than guess
                self._abort(f"the ledger failed: {e}")
                return
            if previous is None:
                outcome: str | None = "skipped"  # done, in doubt, or being sent by another run
            else:
                try:
                    outcome = self._send(request, previous)
                except Exception as e:  # a bug or the ledger failing: never leave the row `sending`
                    self._safe_in_doubt(request, f"batchgen error while sending: {type(e).__name__}: {e}")
                    outcome = "in_doubt"
            if outcome is not None:
                with self._lock:
                    self.report.count(request, outcome)
                self.progress(self.report)

    def _send(self, request: Request, previous: str) -> str | None:
        """Send a claimed request (retrying what is safe to retry) and record the outcome.

        Returns the outcome's name, or None if the run stopped before it was sent."""
        attempt = 0
        while True:
            attempt += 1
            if not self.limiter.wait(self.stop):
                self.ledger.release(request.key, previous)
                return None
            with self._lock:
                self.report.calls += 1
            outcome = self.api.create(request.body)
            if outcome.kind is Kind.RETRY:
                if outcome.throttled:
                    self.limiter.throttled(outcome.retry_after)
                if attempt < self.settings.backoff.max_attempts and not self.stop.is_set():
                    if not self.stop.wait(self.settings.backoff.delay(attempt, self.rng)):
                        continue
                self.ledger.record_outcome(request.key, "failed", f"{outcome.message} (after {attempt} attempts)")
                self._note_error(outcome.message)
                return "failed"
            return self._record(request, outcome)

    def _record(self, request: Request, outcome: Outcome) -> str:
        key = request.key
        if outcome.kind is Kind.OK:
            assert outcome.task_id
            self.ledger.record_submitted(key, outcome.task_id, outcome.estimated_time)
            self.limiter.succeeded()
            with self._lock:
                self._streak = ("", 0)
            return "submitted"
        if outcome.kind in (Kind.AUTH, Kind.NO_CREDIT):
            # Nothing was created: `failed`, so the next run (with a good key) sends it.
            self.ledger.record_outcome(key, "failed", outcome.message)
            reason = "the API refused the key" if outcome.kind is Kind.AUTH else "the account is out of credit"
            self._abort(f"{reason} ({outcome.message})")
            return "failed"
        state = "in_doubt" if outcome.kind is Kind.IN_DOUBT else "rejected"
        self.ledger.record_outcome(key, state, outcome.message)
        self._note_error(outcome.message)
        return state

    def _note_error(self, message: str) -> None:
        with self._lock:
            self.report.errors[message] += 1
            last, count = self._streak
            count = count + 1 if message == last else 1
            self._streak = (message, count)
        if count >= self.settings.max_identical_errors:
            self._abort(f"{count} requests in a row ended with the same error: {message}")

    def _abort(self, reason: str) -> None:
        with self._lock:
            if self.report.aborted is None:
                self.report.aborted = reason
        self.stop.set()

    def _safe_in_doubt(self, request: Request, message: str) -> None:
        try:
            self.ledger.abandon_one(request.key, self.run_id, message)
        except sqlite3.Error:  # the ledger itself is failing: the row stays `sending`, which
            pass  # the next run turns into in_doubt (never resent silently either way)
