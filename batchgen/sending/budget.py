"""A run's spend cap (`--max-credits N`, `limits.max_credits`): what one run may commit.

Requests submitted, in flight and in doubt all count: a request's price is reserved before it
is claimed and given back only when the request certainly created nothing (failed, rejected,
released, skipped). Reservations are taken under one lock, so four workers at a cap of three
requests' worth send exactly three. Each run has its own cap: two runs at once commit at most
the sum of theirs.

Prices are typed in by people, so the cap does not trust them: it holds against the balance.

- The first request of each class goes out alone, and the balance is read once it is created,
  before any other of that class is claimed: a price wrong by 8x costs one request, not a
  run's worth.
- Each reading compares the drop with what the declared prices say was created. If the drop is
  more than even the calls in flight could explain, every price is scaled up by the ratio for
  the rest of the run, the user is told, and the balance is read again after the next create.
  A price that cannot be scaled (0) is held to a floor instead: each request counts at least
  what the balance showed one costs on average.
- Otherwise it is re-read every `CHECK_EVERY` seconds or `CHECK_AFTER` creates (another run or
  another client may be spending on the account).
- A request is claimed only if what the balance shows spent, plus what was created since that
  reading and what is in flight (at the scaled prices), plus its own price fit in the cap.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..jobs.prices import PriceBook
from .limits import REAL_CLOCK, Clock

CHECK_EVERY = 30.0  # seconds
CHECK_AFTER = 50  # creates
_WAKE = 0.05  # seconds between looks at `stopping` while a class's first request is out


@dataclass(frozen=True)
class Reservation:
    """What the cap took for one request: given back (`refund`) or settled (`created`, `unsure`)."""

    credits: int  # at the prices the cap counts then
    declared: int  # at the declared (or learned) price
    cls: str  # its class key ("" when the balance is not checked)


FREE = Reservation(0, 0, "")  # a run without a cap reserves nothing


class Budget:
    def __init__(
        self,
        cap: int | None,
        book: PriceBook,
        *,
        balance_before: int | None = None,
        read_balance: Callable[[], int | None] = lambda: None,
        clock: Clock = REAL_CLOCK,
        notice: Callable[[str], None] = lambda message: None,
    ):
        self.cap = cap
        self.book = book
        self.balance_before = balance_before
        self.read_balance = read_balance
        self.clock = clock
        self.notice = notice
        self.committed = (
            0  # credits reserved (created, in doubt, in flight), at the prices the cap counts
        )
        self.stopped: str | None = None  # why sending must stop
        self.scale = 1.0  # the balance's drop over the declared cost, once it showed more
        # What the balance showed a request costs on average, once the declared prices could
        # not explain its drop: the least any request is counted at. A price of 0 cannot be
        # scaled up; without this floor it would let every request through the cap.
        self.floor = 0
        self.balance_spent: int | None = None  # the drop at the last reading
        self._settled = 0  # of `committed`: created or in doubt (the rest is in flight)
        self._declared_committed = 0  # `committed` and `_settled` at the declared prices
        self._declared_settled = 0
        self._settled_at_reading = 0
        self._recheck = False  # the last reading disagreed with the declared prices
        self._creates = 0
        self._checked_at = clock.now()
        self._confirmed: set[str] = set()  # classes whose first create the balance has shown
        self._probing: set[str] = set()  # classes whose first request is out, alone
        self._created_classes: set[str] = set()
        self._changed = threading.Condition(threading.Lock())

    @property
    def checks_balance(self) -> bool:
        return self.cap is not None and self.balance_before is not None

    def reserve(
        self, body: dict[str, Any], stopping: Callable[[], bool] = lambda: False
    ) -> Reservation | None:
        """Take the request's price out of the cap before it is claimed. None: it does not fit,
        or the run is stopping (`stopping()`) while it waited for its class's first request."""
        if self.cap is None:
            return FREE
        # A run with a cap refused to start unless every class it sends has a price; the cap
        # counts the higher of the declared and the learned one (prices.py).
        declared = self.book.credits_for_cap(body) or 0
        cls = self.book.class_key(body) if self.checks_balance else ""
        with self._changed:
            while self.checks_balance and cls not in self._confirmed and cls in self._probing:
                if self.stopped or stopping():
                    return None
                self._changed.wait(_WAKE)
            if self.stopped:
                return None
            credits = max(math.ceil(declared * self.scale), self.floor)
            if self._spent_estimate() + self._in_flight() + credits > self.cap:
                self.stopped = (
                    f"the cap of {self.cap:,} credits is reached ({self._describe_spent()})"
                )
                self._changed.notify_all()
                return None
            self.committed += credits
            self._declared_committed += declared
            if self.checks_balance and cls not in self._confirmed:
                self._probing.add(cls)
            return Reservation(credits, declared, cls)

    def refund(self, reservation: Reservation) -> None:
        """The request created nothing: its price goes back."""
        if self.cap is None:
            return
        with self._changed:
            self.committed -= reservation.credits
            self._declared_committed -= reservation.declared
            self._end_probe(reservation)

    def unsure(self, reservation: Reservation) -> None:
        """The request is in doubt: it may have been paid for, so its price stays committed."""
        if self.cap is None:
            return
        with self._changed:
            self._settle(reservation)
            self._end_probe(reservation)

    def created(self, reservation: Reservation) -> bool:
        """Count a create call that created a task; True when the balance is due to be re-read
        (`balance_holds`): after a class's first create, after a reading that disagreed with
        the prices, and every CHECK_AFTER creates or CHECK_EVERY seconds."""
        if self.cap is None:
            return False
        with self._changed:
            self._settle(reservation)
            if not self.checks_balance:
                return False
            self._created_classes.add(reservation.cls)
            self._creates += 1
            due = (
                reservation.cls not in self._confirmed
                or self._recheck
                or self._creates % CHECK_AFTER == 0
                or self.clock.now() - self._checked_at >= CHECK_EVERY
            )
            if due:
                self._checked_at = self.clock.now()
        return due

    def balance_holds(self) -> bool:
        """Re-read the balance (an API call); False when sending must stop (then `stopped`
        says why): what it shows spent and what is in flight could pass the cap, or it could
        not be read."""
        if self.cap is None or self.balance_before is None:
            return True
        with self._changed:
            shown = set(self._created_classes)  # created before the reading: the balance shows them
            settled, declared_settled = self._settled, self._declared_settled
            declared_in_flight = self._declared_committed - declared_settled
            creates = self._creates
        balance = self.read_balance()
        with self._changed:
            try:
                if balance is None:
                    self.stopped = (
                        self.stopped or "the balance could not be re-read, and the cap needs it"
                    )
                    return False
                drop = self.balance_before - balance
                # More than the created and in-flight requests could cost at the declared
                # prices: the prices are wrong, or someone else spends on the account.
                if creates and drop > math.ceil(
                    (declared_settled + declared_in_flight) * self.scale
                ):
                    if declared_settled:
                        scale = drop / declared_settled
                        if scale > self.scale:
                            self.notice(
                                f"the balance fell by {drop:,} credits for requests whose prices add up to {declared_settled:,}: "
                                f"the cap now counts each price x{scale:.2f} (are the declared prices too low? see batchgen prices)"
                            )
                            self.scale = scale
                    floor = math.ceil(drop / creates)
                    if floor > self.floor:
                        if not declared_settled:
                            self.notice(
                                f"the balance fell by {drop:,} credits for {creates} requests declared free: the cap now counts"
                                f" each request at least {floor:,} credits (is a declared price 0? see batchgen prices)"
                            )
                        self.floor = floor
                    self._recheck = True
                else:
                    self._recheck = False
                self.balance_spent = drop
                self._settled_at_reading = settled
                self._confirmed |= shown
                in_flight = self._in_flight()
                if self._spent_estimate() + in_flight >= self.cap and self.stopped is None:
                    self.stopped = (
                        f"the balance fell by {drop:,} credits since the run started ({self.balance_before:,} → {balance:,});"
                        f" with {in_flight:,} in flight, the cap of {self.cap:,} could be passed"
                    )
                return self.stopped is None
            finally:
                self._probing -= self._confirmed
                self._changed.notify_all()

    # -- under the lock ---------------------------------------------------------------------

    def _settle(self, reservation: Reservation) -> None:
        self._settled += reservation.credits
        self._declared_settled += reservation.declared

    def _in_flight(self) -> int:
        return self.committed - self._settled

    def _spent_estimate(self) -> int:
        """Credits spent so far: what the last reading showed plus what was created since, or
        what the prices say was created, whichever is more."""
        if self.balance_spent is None:
            return self._settled
        return max(self._settled, self.balance_spent + self._settled - self._settled_at_reading)

    def _describe_spent(self) -> str:
        by = (
            "by the balance and the creates since"
            if self.balance_spent is not None
            else "at the prices"
        )
        return f"{self._spent_estimate():,} spent {by}, {self._in_flight():,} in flight"

    def _end_probe(self, reservation: Reservation) -> None:
        if reservation.cls not in self._confirmed and reservation.cls in self._probing:
            self._probing.discard(
                reservation.cls
            )  # the next request of its class goes out alone instead
            self._changed.notify_all()
