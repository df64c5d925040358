"""A run's spend cap (`--max-credits N`, `limits.max_credits`): what one run may commit.

Requests submitted, in flight and in doubt all count: a request's price is reserved before it
is claimed and given back only when the request certainly created nothing (failed, rejected,
released, skipped). Reservations are taken under one lock, so four workers at a cap of three
requests' worth send exactly three. Each run has its own cap: two runs at once commit at most
the sum of theirs. The balance is re-read every `CHECK_EVERY` seconds or `CHECK_AFTER` creates;
if it fell by the cap or more (another run, another client on the account), the run stops.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from .limits import REAL_CLOCK, Clock
from .prices import PriceBook

CHECK_EVERY = 30.0  # seconds
CHECK_AFTER = 50  # creates


class Budget:
    def __init__(
        self,
        cap: int | None,
        book: PriceBook,
        *,
        balance_before: int | None = None,
        read_balance: Callable[[], int | None] = lambda: None,
        clock: Clock = REAL_CLOCK,
    ):
        self.cap = cap
        self.book = book
        self.balance_before = balance_before
        self.read_balance = read_balance
        self.clock = clock
        self.committed = 0
        self.stopped: str | None = None  # why sending must stop
        self._creates = 0
        self._checked_at = clock.now()
        self._lock = threading.Lock()

    def price(self, body: dict[str, Any]) -> int:
        # A run with a cap refused to start unless every class it sends has a price.
        return self.book.credits(body) or 0

    def reserve(self, body: dict[str, Any]) -> bool:
        """Take the request's price out of the cap before it is claimed; False: it does not fit."""
        if self.cap is None:
            return True
        price = self.price(body)
        with self._lock:
            if self.stopped:
                return False
            if self.committed + price > self.cap:
                self.stopped = f"the cap of {self.cap:,} credits is reached ({self.committed:,} committed)"
                return False
            self.committed += price
            return True

    def refund(self, body: dict[str, Any]) -> None:
        """The request created nothing: its price goes back."""
        if self.cap is None:
            return
        with self._lock:
            self.committed -= self.price(body)

    def created(self) -> bool:
        """Count a create call that created a task; True when the balance is due to be re-read
        (`balance_holds`)."""
        if self.cap is None or self.balance_before is None:
            return False
        with self._lock:
            self._creates += 1
            due = self._creates % CHECK_AFTER == 0 or self.clock.now() - self._checked_at >= CHECK_EVERY
            if due:
                self._checked_at = self.clock.now()
        return due

    def balance_holds(self) -> bool:
        """Re-read the balance (an API call); False when it fell by the cap or more since the
        run started (then `stopped` says why)."""
        if self.cap is None or self.balance_before is None:
            return True
        balance = self.read_balance()
        if balance is not None and self.balance_before - balance >= self.cap:
            with self._lock:
                self.stopped = (
                    f"the balance fell by {self.balance_before - balance:,} credits since the run started "
                    f"({self.balance_before:,} → {balance:,}), the cap of {self.cap:,}"
                )
            return False
        return True
