"""Pacing and retrying: the rpm ceiling, the pause a 429/503 asks for, backoff between retries.

Time is one seam, `Clock`: every wait in batchgen goes through `Clock.sleep`, which a stop
event can cut short. Tests pass a fake clock and nothing really waits. `set_testing(True)`
(or `BATCHGEN_TESTING=1` in the environment, for tests that run batchgen as a process)
removes backoff sleeps, as stamina's testing mode does; pacing by rpm is kept.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# Calls are spaced a little wider than 60/rpm: the server counts arrivals, and network
# jitter can bring two calls sent exactly 60/rpm apart closer than that on its side.
SPACING_MARGIN = 1.01
# A call may start this late after its slot and the ceiling still holds: rpm slots span
# 60 s × SPACING_MARGIN = 60.6 s, so a 60 s window can hold them all only if the first call
# started more than 0.6 s late. (A create waits for its slot, then for its claim's commit.)
LATE = 0.5
# After a 429/503 the pace slows by this factor (compounding, up to MAX_SLOWDOWN) and
# recovers a little with every call that goes through.
SLOWDOWN = 1.5
MAX_SLOWDOWN = 16.0
RECOVERY = 0.95
# With no rpm ceiling, a slowdown needs a spacing to scale: this one.
UNLIMITED_SLOW_SPACING = 0.05

_testing = os.environ.get("BATCHGEN_TESTING", "") not in ("", "0")


def set_testing(on: bool) -> None:
    """Testing mode: retries happen without their backoff sleeps."""
    global _testing
    _testing = on


class Clock:
    """Real time: a monotonic `now()` and a `sleep()` that a stop event interrupts."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait `seconds`; True if `stop` was set (then it returns at once)."""
        seconds = max(0.0, seconds)
        if stop is None:
            time.sleep(seconds)
            return False
        return stop.wait(seconds)


REAL_CLOCK = Clock()


class RateLimiter:
    """At most `rpm` calls in any 60 s window, spread evenly; a shared pause after a 429/503.

    `wait()` blocks until the caller may start its call. Slots are handed out in order, one
    every 60/rpm seconds (a little more, see SPACING_MARGIN), so the ceiling holds for every
    window, not only on average. `rpm=None` means no ceiling.
    """

    def __init__(
        self,
        rpm: int | None,
        *,
        clock: Clock = REAL_CLOCK,
        shared: Callable[[float], float] | None = None,
    ):
        self.spacing = 60.0 / rpm * SPACING_MARGIN if rpm else 0.0
        self.clock = clock
        # A pace shared with every process on the same account (`shared(spacing)` gives the
        # start of the next slot of the account, as this clock reads it): see ledger's
        # `Store.shared_pace`. None: this process paces alone.
        self.shared = shared
        self.slowdown = 1.0
        self._next = 0.0
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; return the clock time at which it starts."""
        with self._lock:
            now = self.clock.now()
            spacing = self._current_spacing()
            if self.shared is not None and spacing:
                # The account's next slot, taken in its row, whatever other process shares it.
                return max(self.shared(spacing), self._paused_until)
            start = max(now, self._next, self._paused_until)
            self._next = start + spacing
            return start

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Block until a slot starts; False if `stop` was set meanwhile (the slot is wasted)."""
        return self.wait_until(self.reserve(), stop)

    def wait_until(self, start: float, stop: threading.Event | None = None) -> bool:
        """Block until `start` (a slot `reserve` gave); False if `stop` was set meanwhile."""
        while True:
            delay = start - self.clock.now()
            if delay <= 0:
                return not (stop is not None and stop.is_set())
            if self.clock.sleep(delay, stop):
                return False

    def on_time(self, start: float) -> bool:
        """Whether a call given the slot at `start` may still go out now (within LATE)."""
        return self.clock.now() - start <= LATE

    def throttled(self, retry_after: float | None) -> None:
        """The API said 429/503: pause every caller for `retry_after` seconds, then go slower."""
        with self._lock:
            if retry_after:
                self._paused_until = max(self._paused_until, self.clock.now() + retry_after)
            self.slowdown = min(self.slowdown * SLOWDOWN, MAX_SLOWDOWN)

    def succeeded(self) -> None:
        with self._lock:
            self.slowdown = max(1.0, self.slowdown * RECOVERY)

    def _current_spacing(self) -> float:
        if self.slowdown <= 1.0:
            return self.spacing
        return (self.spacing or UNLIMITED_SLOW_SPACING) * self.slowdown


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: a random wait in [0, min(cap, base * 2**attempt)]."""

    base: float = 0.5
    cap: float = 30.0
    max_attempts: int = 6  # calls in all, the first included

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before retry number `attempt` (1 for the first retry)."""
        if _testing:
            return 0.0
        ceiling = min(self.cap, self.base * (2 ** (attempt - 1)))
        return (rng or random).uniform(0, ceiling)


def attempts(
    backoff: Backoff, *, wait: Callable[[float], bool], rng: random.Random | None = None
) -> Iterator[int]:
    """The one retry loop: yields attempt numbers 1, 2, … up to `backoff.max_attempts`.

    The caller breaks (or returns) when an attempt needs no retry. Between attempts it waits
    the backoff delay through `wait(seconds)`, which returns True to stop (Ctrl-C, an abort):
    then no further attempt is made. There is no wait after the last attempt.

        for attempt in attempts(backoff, wait=stop.wait):
            outcome = call()
            if not outcome.retryable:
                break
    """
    for attempt in range(1, backoff.max_attempts + 1):
        yield attempt
        if attempt == backoff.max_attempts or wait(backoff.delay(attempt, rng)):
            return
