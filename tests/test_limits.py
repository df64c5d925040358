"""The rate limiter and backoff, on a fake clock."""

from __future__ import annotations

import random
import threading

from helpers import FakeClock

from batchgen.sending import limits
from batchgen.sending.limits import Backoff, RateLimiter, attempts


def slots(limiter, clock, n):
    times = []
    for _ in range(n):
        limiter.wait()
        times.append(clock.at)
    return times


def test_never_more_than_rpm_in_any_60_second_window():
    clock = FakeClock()
    limiter = RateLimiter(600, clock=clock)
    times = slots(limiter, clock, 2000)
    for i, start in enumerate(times):
        assert sum(1 for t in times[i : i + 700] if t - start < 60) <= 600


def test_calls_are_spread_evenly_and_close_to_the_ceiling():
    clock = FakeClock()
    times = slots(RateLimiter(120, clock=clock), clock, 121)
    gaps = {round(b - a, 6) for a, b in zip(times, times[1:])}
    assert gaps == {round(0.5 * 1.01, 6)}
    assert 120 / (times[-1] - times[0]) * 60 >= 0.97 * 120


def test_retry_after_pauses_everyone_then_the_pace_slows_and_recovers():
    clock = FakeClock()
    limiter = RateLimiter(60, clock=clock)
    limiter.wait()
    limiter.throttled(10)
    limiter.wait()
    assert clock.at >= 10
    assert limiter.slowdown > 1
    for _ in range(200):
        limiter.succeeded()
    assert limiter.slowdown == 1


def test_no_ceiling_means_no_waiting_until_throttled():
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock)
    slots(limiter, clock, 100)
    assert clock.at == 0
    limiter.throttled(None)
    slots(limiter, clock, 3)
    assert clock.at > 0


def test_backoff_is_full_jitter_under_a_capped_exponential(monkeypatch):
    monkeypatch.setattr(limits, "_testing", False)
    backoff = Backoff(base=0.5, cap=4)
    rng = random.Random(0)
    for attempt, ceiling in [(1, 0.5), (2, 1), (3, 2), (4, 4), (9, 4)]:
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # the whole range is used


def test_a_wait_with_a_stop_event_goes_through_the_fake_clock_and_finishes_at_once():
    class NeverWaited(threading.Event):  # the real clock's sleep is a wait on the stop event
        def wait(self, timeout=None):
            raise AssertionError(f"waited {timeout} s of real time")

    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock)  # one call a minute
    stop = NeverWaited()
    for _ in range(50):  # 50 minutes of pacing, on the fake clock
        assert limiter.wait(stop)
    assert clock.at >= 49 * 60
    stop.set()
    assert limiter.wait(stop) is False  # stopped: the slot is not taken


def test_the_retry_loop_makes_at_most_max_attempts_and_does_not_wait_after_the_last():
    waits = []
    made = list(
        attempts(
            Backoff(base=1, max_attempts=4),
            wait=lambda s: waits.append(s) or False,
            rng=random.Random(1),
        )
    )
    assert made == [1, 2, 3, 4] and len(waits) == 3


def test_the_retry_loop_stops_when_its_wait_is_interrupted():
    made = list(attempts(Backoff(base=1, max_attempts=6), wait=lambda s: True))
    assert made == [1]


def test_testing_mode_removes_backoff_sleeps_only(monkeypatch):
    monkeypatch.setattr(limits, "_testing", False)
    assert Backoff(base=10).delay(5) > 0 or Backoff(base=10).delay(5) > 0
    limits.set_testing(True)
    assert Backoff(base=10).delay(5) == 0
    clock = FakeClock()
    slots(RateLimiter(60, clock=clock), clock, 3)
    assert clock.at > 0  # pacing is kept


def test_a_call_late_by_up_to_LATE_keeps_every_60_second_window_under_the_ceiling():
    # rpm + 1 calls span rpm slots: 60 s × SPACING_MARGIN. The first late by LATE, all of them
    # in one 60 s window would need that span less LATE below 60 s.
    assert 60 * limits.SPACING_MARGIN - limits.LATE > 60
    clock = FakeClock()
    limiter = RateLimiter(600, clock=clock)
    starts = [limiter.reserve() for _ in range(1200)]
    sent = [
        start + (limits.LATE if i % 7 == 0 else 0) for i, start in enumerate(starts)
    ]  # some late
    sent.sort()
    assert all(
        sum(1 for t in sent[i : i + 700] if t - first < 60) <= 600 for i, first in enumerate(sent)
    )
