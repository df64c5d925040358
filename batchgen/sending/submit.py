"""The run: claim each request in the ledger, send it under the limits, record what happened.

Threads, not asyncio: every call is bracketed by short, blocking SQLite commits (the
`sending` claim before; the outcome after, which for a task id is the commit of the worker's
next claim), and sqlite3 is blocking. With a thread per in-flight call (`concurrency` of
them), each with a connection of its own while its call is out (the provider's client), the ledger is used
directly, and Ctrl-C is handled in the main thread while workers finish their calls.
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, NoReturn

from ..errors import BatchgenError, Interrupted, LedgerUnsound
from ..jobs.expand import Request
from ..ledger import FAILURES as LEDGER_FAILURES
from ..ledger import Answered, Ledger, journal
from ..providers import Kind, Outcome, Provider
from ..times import timestamp
from .budget import FREE, Budget, Reservation
from .limits import RateLimiter, attempts
from .run_report import Progress, RunReport, RunSettings

# Why an answer could not be recorded, and goes to the journal instead.
_UNRECORDED: tuple[type[Exception], ...] = (*LEDGER_FAILURES, OSError)


Notice = Callable[[str], None]


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


FEED_BATCH = 32  # requests taken from the stream at a time (in job order; unsent ones stay unsent)


class Submission:
    """One run's sending: `concurrency` workers take requests, in turn, from the ones given
    until none is left, the run is aborted, or the user stops it."""

    def __init__(
        self,
        ledger: Ledger,
        api: Provider,
        settings: RunSettings,
        *,
        job: str,
        api_base: str,
        run_id: int,
        progress: Progress | None = None,
        limiter: RateLimiter | None = None,
        rng: random.Random | None = None,
        notice: Notice = _to_stderr,
        budget: Budget | None = None,
        detail: Notice | None = None,
        class_of: Callable[[dict[str, Any]], str] | None = None,
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
        self.notice = notice
        self.detail = detail  # a line per request as it ends (--verbose)
        self.budget = budget
        self.allow = settings.resendable()
        self.stop = threading.Event()
        self.report = RunReport(class_of=class_of)  # class_of: the price book's class_key
        self._lock = threading.Lock()
        self._streak: tuple[str, int] = ("", 0)
        self._feed: Iterator[Request] = iter(())
        self._ready: deque[Request] = deque()  # taken from the feed a few at a time
        self._feed_lock = threading.Lock()  # a generator is advanced by one thread at a time
        self._feed_failed: str | None = None  # why the stream stopped early
        self._running = 0
        self._all_done = threading.Event()
        self._lost = False
        self._no_more = threading.Event()  # stop claiming (the cap): what is claimed still goes
        # Task ids received and not yet committed, by key: a second signal journals them.
        self._unwritten: dict[str, tuple[Request, Answered]] = {}

    # -- the run ----------------------------------------------------------------------------

    def run(
        self, requests: Iterable[Request], on_interrupt: Callable[[int], None] | None = None
    ) -> RunReport:
        """Send `requests` (a list, or a stream made as it is read: plan.ToSend); returns the
        report. Ctrl-C once: finish the calls in flight and stop; twice: mark them in_doubt and
        raise `Interrupted`."""
        self._feed = iter(requests)
        many = len(requests) if isinstance(requests, Sized) else self.settings.concurrency
        workers = [
            threading.Thread(target=self._worker, name=f"batchgen-send-{i}", daemon=True)
            for i in range(max(1, min(self.settings.concurrency, many)))
        ]
        self._running = len(workers)
        for worker in workers:
            worker.start()
        interrupted = False
        # Workers say when they end (an Event, not Thread.join/is_alive: a KeyboardInterrupt
        # inside join() can leave is_alive() wrong, and the run would exit with calls in flight).
        while True:
            try:
                if self._all_done.wait(0.1):
                    break
            except KeyboardInterrupt as e:
                signal = getattr(e, "signal", None)
                if interrupted:
                    self._quit_at_once(signal)
                interrupted = True
                self.report.interrupted = True
                self.report.signal = signal
                self.stop.set()
                if on_interrupt:
                    with self._lock:
                        running = self._running
                    try:
                        on_interrupt(running)
                    except KeyboardInterrupt as again:  # the second, while the first is told
                        self._quit_at_once(getattr(again, "signal", None))
        self._journal_left_over()
        if self._lost:
            try:
                rescued = self.ledger.recovery.rescue_to_journal()
                self.notice(
                    f"copied {rescued} rows that hold money from the lost ledger into {self.ledger.path}.journal;"
                    " the next batchgen command records them"
                )
            except OSError as e:
                self.notice(f"could not copy the lost ledger's rows to the journal ({e.strerror})")
        return self.report

    def _quit_at_once(self, signal: int | None) -> NoReturn:
        """A second signal: exit now, the calls in flight marked in_doubt (their answers,
        should they come, are not waited for)."""
        self._journal_unwritten()
        self.ledger.quitting()
        try:
            self.ledger.recovery.abandon_in_flight(
                self.run_id, "the run was stopped (a second signal) before the answer came"
            )
        except LEDGER_FAILURES as error:
            self.notice(
                f"the ledger is busy ({error}): the calls in flight stay 'sending', and the next command marks them in_doubt"
            )
        raise Interrupted(signal or self.report.signal) from None

    def _worker(self) -> None:
        try:
            self._work()
        except Exception as e:  # a bug, or a failure no one foresaw: the run stops, saying why
            self._abort(f"batchgen error while sending: {type(e).__name__}: {e}")
        finally:
            with self._lock:
                self._running -= 1
                if self._running <= 0:
                    self._all_done.set()

    def _work(self) -> None:
        # A task id is not written at once: it rides with this worker's next claim, one commit
        # for both (Claims.claim), and is counted once that commit is made. The worker's last
        # one (none is left, the run stopped) is written alone.
        carried: tuple[Request, Answered] | None = None
        failed: str | None = (
            None  # why a claim failed: the run stops, once the carried id is written
        )
        try:
            while not self.stop.is_set() and not self._no_more.is_set():
                request = self._take()
                if request is None:
                    return
                reservation = (
                    self.budget.reserve(request.body, self._stopping)
                    if self.budget is not None
                    else FREE
                )
                if reservation is None:
                    assert self.budget is not None
                    if not self._stopping():
                        self._cap(self.budget.stopped or "the spend cap is reached")
                    return
                # The first call's slot is waited for before the claim, so that a request is
                # `sending` only while it goes out: claimed, then killed while it waited for its
                # slot (seconds, under an rpm ceiling), it would come back in_doubt though it was
                # never sent. A task id is not held through that wait: it is written first.
                slot = self.limiter.reserve()
                if carried is not None and slot > self.limiter.clock.now():
                    self._write_alone(carried)
                    carried = None
                if not self.limiter.wait_until(slot, self.stop):
                    self._refund(reservation)  # stopped: nothing claimed, nothing sent
                    return
                try:
                    previous = self.ledger.claims.claim(
                        request,
                        self.job,
                        self.api_base,
                        self.run_id,
                        self.allow,
                        answered=carried and carried[1],
                    )
                except LedgerUnsound as e:
                    self._refund(reservation)
                    self._ledger_lost(str(e))
                    return
                except LEDGER_FAILURES as e:  # nothing sent: stop rather than guess
                    self._refund(reservation)
                    failed = f"the ledger failed: {e}"
                    return
                if carried is not None:
                    self._written(carried)
                    carried = None
                outcome = self._attempt(request, previous, slot)
                if isinstance(outcome, Answered):
                    carried = (request, outcome)
                    if self.budget is not None and self.budget.created(reservation):
                        # The balance is re-read, a round trip: the task id is written first,
                        # not held through it.
                        self._write_alone(carried)
                        carried = None
                        if not self.budget.balance_holds():
                            self._cap(self.budget.stopped or "the spend cap is reached")
                    continue
                if outcome in (None, "failed", "rejected", "skipped"):
                    self._refund(reservation)  # nothing was created
                elif self.budget is not None:  # in doubt: maybe paid for
                    self.budget.unsure(reservation)
                if outcome is not None:
                    self._count(request, outcome)
        finally:
            if carried is not None:
                self._write_alone(carried)
            if (
                failed
            ):  # after the task id: if it could not be written either, that is the reason given
                self._abort(failed)

    def _take(self) -> Request | None:
        """The next request to send; None when there is none left (or they could not be made:
        then the run is aborted, saying why)."""
        with self._feed_lock:
            if not self._ready and self._feed_failed is None:
                # Several at a time: a stream (plan.ToSend) makes each request as it is read,
                # and making them one per lock taken kept the other workers waiting on it.
                try:
                    self._ready.extend(itertools.islice(self._feed, FEED_BATCH))
                except BatchgenError as e:  # those made before it are good: they go first
                    self._feed_failed = str(e)
            if self._ready:
                return self._ready.popleft()
        if self._feed_failed is not None:
            self._abort(self._feed_failed)
        return None

    def _attempt(
        self, request: Request, previous: str | None, slot: float
    ) -> str | Answered | None:
        """Send a request the ledger gave this run (`previous`: the state it had, None: not
        this run's to send) in its rpm `slot`; see `_send`."""
        if previous is None:
            return "skipped"  # done, in doubt, or being sent by another run
        try:
            return self._send(request, previous, slot)
        except Exception as e:  # a bug or the ledger failing: never leave the row `sending`
            self._safe_in_doubt(request, f"batchgen error while sending: {type(e).__name__}: {e}")
            return "in_doubt"

    def _count(self, request: Request, outcome: str) -> None:
        price = self.budget.book.credits(request.body) if self.budget is not None else None
        with self._lock:
            self.report.count(request, outcome, price)
        self.progress(self.report)
        if self.detail is not None:
            prompt = str(request.body.get("prompt", ""))
            self.detail(
                f"  {outcome}: {request.key[:12]} v{request.variant} {request.model}"
                f" {prompt[:50]!r}" + ("…" if len(prompt) > 50 else "")
            )

    def _send(self, request: Request, previous: str, slot: float) -> str | Answered | None:
        """Send a claimed request in its rpm `slot`, taken before the claim (retrying what is
        safe to retry, each retry in a slot of its own) and record the outcome.

        Returns the outcome's name; or the task id to write (with the next claim); or None
        if the run stopped before it was sent."""
        backoff = self.settings.backoff
        outcome: Outcome | None = None
        tries = 0
        wait = lambda seconds: self.limiter.clock.sleep(seconds, self.stop)  # noqa: E731
        for tries in attempts(backoff, wait=wait, rng=self.rng):
            # The first call's slot was waited for before the claim (`_work`), unless that
            # claim took long (another process holding the ledger's lock): a call sent late
            # could bunch with the next, so it takes a new slot, as a retry does.
            on_time = tries == 1 and self.limiter.on_time(slot)
            ready = not self.stop.is_set() if on_time else self.limiter.wait(self.stop)
            if not ready:
                break
            with self._lock:
                self.report.calls += 1
            outcome = self.api.create(request.body)
            if outcome.kind is not Kind.RETRY:
                return self._record(request, outcome)
            if outcome.throttled:
                self.limiter.throttled(outcome.retry_after)
        if outcome is None:  # stopped before the first call: it never went out
            self.ledger.claims.release(request.key, previous)
            return None
        # Refused before processing every time (or stopped between tries): never created.
        self.ledger.claims.record_outcome(
            request.key, "failed", f"{outcome.message} (after {tries} attempts)"
        )
        self._note_error(outcome.message)
        return "failed"

    def _record(self, request: Request, outcome: Outcome) -> str | Answered:
        key = request.key
        if outcome.kind is Kind.OK and outcome.task_id:  # classify() never says OK without one
            self.limiter.succeeded()
            with self._lock:
                self._streak = ("", 0)
            answered = Answered(
                key, outcome.task_id, outcome.estimated_time, timestamp(), outcome.handle
            )
            with self._lock:
                self._unwritten[key] = (request, answered)
            return answered
        if outcome.kind in (Kind.AUTH, Kind.NO_CREDIT):
            # Nothing was created: `failed`, so the next run (with a good key) sends it.
            self.ledger.claims.record_outcome(key, "failed", outcome.message)
            reason = (
                "the API refused the key"
                if outcome.kind is Kind.AUTH
                else "the account is out of credit"
            )
            self._abort(f"{reason} ({outcome.message})")
            return "failed"
        state = "in_doubt" if outcome.kind is Kind.IN_DOUBT else "rejected"
        self.ledger.claims.record_outcome(key, state, outcome.message)
        self._note_error(outcome.message)
        return state

    def _write_alone(self, carried: tuple[Request, Answered]) -> None:
        """Write a carried task id in a commit of its own (not with a next claim), and count it."""
        self._written(
            carried, counted=self._record_submitted(*carried)
        )  # if not written, journaled

    def _written(self, carried: tuple[Request, Answered], *, counted: bool = True) -> None:
        """A task id the run held is recorded: counted once committed, not if journaled."""
        with self._lock:
            self._unwritten.pop(carried[1].key, None)
        if counted:
            self._count(carried[0], "submitted")

    def _journal_left_over(self) -> None:
        """Every worker has ended: a task id received and still neither recorded nor journaled
        (an error no handler foresaw cut its worker short) goes to the journal now. A created
        task is paid for; its id is never dropped on the floor."""
        journaled = self._journal_unwritten(forget=True)
        if journaled:
            with self._lock:
                self.report.unrecorded.extend(journaled)
            self._abort("the ledger could not record every task id")

    def _journal_unwritten(self, *, forget: bool = False) -> list[str]:
        """The task ids received and not yet committed go to the journal, which the next
        command records, and are printed; returns them. On a second signal the run exits
        without waiting for its workers (replaying is idempotent, should a worker commit one
        meanwhile); at the run's end (`forget`) no worker is left to."""
        with self._lock:
            held = list(self._unwritten.values())
            if forget:
                self._unwritten.clear()
        if not held:
            return []
        where = self._keep_in_journal(held)
        ids = [answered.task_id for _, answered in held]
        self.notice(
            f"{len(ids)} task ids received but not yet recorded ({', '.join(ids)}); {where}"
        )
        return ids

    def _record_submitted(self, request: Request, answered: Answered) -> bool:
        """Write a task id alone; if the ledger cannot take it, journal it and print it: a task
        that was created is paid for, and its id must never be lost. True if it was written."""
        try:  # raises LedgerUnsound if the ledger was deleted or replaced
            self.ledger.claims.record_submitted(
                answered.key,
                answered.task_id,
                answered.estimated_time,
                answered.received_at,
                answered.handle,
            )
            return True
        except LedgerUnsound as e:
            self._ledger_lost(str(e))
            problem = str(e)
        except _UNRECORDED as e:
            problem = str(e)
        except Exception as e:  # whatever it was, the id is kept: see the journal below
            problem = f"{type(e).__name__}: {e}"
        where = self._keep_in_journal([(request, answered)])
        self.notice(
            f"task {answered.task_id} (request {request.key}) was created but the ledger could not record it ({problem}); {where}"
        )
        with self._lock:
            self.report.unrecorded.append(answered.task_id)
        self._abort(f"the ledger could not record a task id ({problem})")
        return False

    def _keep_in_journal(self, held: list[tuple[Request, Answered]]) -> str:
        """Append received task ids to the journal (journal.py), each with enough to rebuild its
        row; say where they are, for the line that tells the user."""
        entries = [
            {
                "key": request.key,
                "task_id": answered.task_id,
                "handle": answered.handle,
                "estimated_time": answered.estimated_time,
                "received_at": answered.received_at,
                "job": self.job,
                "api_base": self.api_base,
                "variant": request.variant,
                "body": request.body,
                "model": request.model,
                "provider": request.provider,
                "run_id": self.run_id,
            }
            for request, answered in held
        ]
        try:
            return f"kept in {journal.append(self.ledger.path, *entries)}; the next batchgen command records it"
        except OSError as e:
            return f"and the journal failed too ({e.strerror}): keep this line"

    def _ledger_lost(self, reason: str) -> None:
        """The ledger was deleted or replaced: stop claiming; at the end of the run, everything
        the open (lost) file holds goes to the journal (see `run`)."""
        with self._lock:
            self._lost = True
        self._abort(reason)

    def _note_error(self, message: str) -> None:
        with self._lock:
            self.report.errors[message] += 1
            last, count = self._streak
            count = count + 1 if message == last else 1
            self._streak = (message, count)
        if count >= self.settings.max_identical_errors:
            self._abort(f"{count} requests in a row ended with the same error: {message}")

    def _refund(self, reservation: Reservation) -> None:
        if self.budget is not None:
            self.budget.refund(reservation)

    def _stopping(self) -> bool:
        return self.stop.is_set() or self._no_more.is_set()

    def _cap(self, reason: str) -> None:
        """Stop claiming at the spend cap: not an abort; what is already claimed is sent, the
        rest simply is not."""
        with self._lock:
            if self.report.capped is None:
                self.report.capped = reason
        self._no_more.set()

    def _abort(self, reason: str) -> None:
        with self._lock:
            if self.report.aborted is None:
                self.report.aborted = reason
        self.stop.set()

    def _safe_in_doubt(self, request: Request, message: str) -> None:
        try:
            self.ledger.recovery.abandon_one(request.key, self.run_id, message)
        except LEDGER_FAILURES:  # the ledger itself is failing: the row stays `sending`, which
            pass  # the next run turns into in_doubt (never resent silently either way)
