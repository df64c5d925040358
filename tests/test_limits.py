"""The rate limiter and backoff, on a fake clock."""

from __future__ import annotations

import random

from batchgen.limits import Backoff, RateLimiter


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def slots(limiter, clock, n):
    times = []
    for _ in range(n):
        limiter.wait()
        times.append(clock.now)
    return times


def test_never_more_than_rpm_in_any_60_second_window():
    clock = FakeClock()
    limiter = RateLimiter(600, clock=clock, sleep=clock.sleep)
    times = slots(limiter, clock, 2000)
    for i, start in enumerate(times):
        assert sum(1 for t in times[i : i + 700] if t - start < 60) <= 600


def test_calls_are_spread_evenly_and_close_to_the_ceiling():
    clock = FakeClock()
    times = slots(RateLimiter(120, clock=clock, sleep=clock.sleep), clock, 121)
    gaps = {round(b - a, 6) for a, b in zip(times, times[1:])}
    assert gaps == {round(0.5 * 1.01, 6)}
    assert 120 / (times[-1] - times[0]) * 60 >= 0.97 * 120


def test_retry_after_pauses_everyone_then_the_pace_slows_and_recovers():
    clock = FakeClock()
    limiter = RateLimiter(60, clock=clock, sleep=clock.sleep)
    limiter.wait()
    limiter.throttled(10)
    limiter.wait()
    assert clock.now >= 10
    assert limiter.slowdown > 1
    for _ in range(200):
        limiter.succeeded()
    assert limiter.slowdown == 1


def test_no_ceiling_means_no_waiting_until_throttled():
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    slots(limiter, clock, 100)
    assert clock.now == 0
    limiter.throttled(None)
    slots(limiter, clock, 3)
    assert clock.now > 0


def test_backoff_is_full_jitter_under_a_capped_exponential():
    backoff = Backoff(base=0.5, cap=4)
    rng = random.Random(0)
    for attempt, ceiling in [(1, 0.5), (2, 1), (3, 2), (4, 4), (9, 4)]:
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # the whole range is used
