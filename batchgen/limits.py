"""Pacing: the rpm ceiling, the pause a 429/503 asks for, and backoff between retries.

Time is a seam: the limiter takes a clock and a sleep function, so tests drive it with a
fake clock and no real waiting.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], None]

# Calls are spaced a little wider than 60/rpm: the server counts arrivals, and network
# jitter can bring two calls sent exactly 60/rpm apart closer than that on its side.
SPACING_MARGIN = 1.01
# After a 429/503 the pace slows by this factor (compounding, up to MAX_SLOWDOWN) and
# recovers a little with every call that goes through.
SLOWDOWN = 1.5
MAX_SLOWDOWN = 16.0
RECOVERY = 0.95
# With no rpm ceiling, a slowdown needs a spacing to scale: this one.
UNLIMITED_SLOW_SPACING = 0.05


class RateLimiter:
    """At most `rpm` calls in any 60 s window, spread evenly; a shared pause after a 429/503.

    `wait()` blocks until the caller may start its call. Slots are handed out in order, one
    every 60/rpm seconds (a little more, see SPACING_MARGIN), so the ceiling holds for every
    window, not only on average. `rpm=None` means no ceiling.
    """

    def __init__(self, rpm: int | None, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep):
        self.spacing = 60.0 / rpm * SPACING_MARGIN if rpm else 0.0
        self.clock = clock
        self.sleep = sleep
        self.slowdown = 1.0
        self._next = 0.0
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; return the clock time at which it starts."""
        with self._lock:
            now = self.clock()
            spacing = self._current_spacing()
            start = max(now, self._next, self._paused_until)
            self._next = start + spacing
            return start

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Block until a slot starts; False if `stop` was set meanwhile (the slot is wasted)."""
        start = self.reserve()
        while True:
            delay = start - self.clock()
            if delay <= 0:
                return True
            if stop is not None:
                if stop.wait(min(delay, 0.25)):
                    return False
            else:
                self.sleep(delay)

    def throttled(self, retry_after: float | None) -> None:
        """The API said 429/503: pause every caller for `retry_after` seconds, then go slower."""
        with self._lock:
            if retry_after:
                self._paused_until = max(self._paused_until, self.clock() + retry_after)
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
        ceiling = min(self.cap, self.base * (2 ** (attempt - 1)))
        return (rng or random).uniform(0, ceiling)
