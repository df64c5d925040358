"""What a run is given and what it gives back, the plain data either side of `submit.py`: its
settings (`RunSettings`: the rate, the concurrency, which states it may send again) and its
report (`RunReport`: what it did with each request, what it spent, why it stopped)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import EXIT_ABORTED, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK
from ..jobs.expand import Request
from ..ledger import RESENDABLE
from ..providers import model_label
from .limits import Backoff

DEFAULT_CONCURRENCY = 4
DEFAULT_RPM = 60
DEFAULT_MAX_IDENTICAL_ERRORS = 10


@dataclass(frozen=True)
class RunSettings:
    rpm: int | None = DEFAULT_RPM
    concurrency: int = DEFAULT_CONCURRENCY
    retry_rejected: bool = False
    regenerate_failed: bool = False
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
        if self.regenerate_failed:
            states.add("generation_failed")
        return states


@dataclass
class RunReport:
    """What one run did with the requests it was given."""

    outcomes: Counter[str] = field(
        default_factory=Counter
    )  # submitted, rejected, failed, in_doubt, ...
    by_model: dict[str, Counter[str]] = field(default_factory=dict)
    calls: int = 0  # create calls made, retries included
    aborted: str | None = None  # why the run stopped early (key refused, credit, identical errors)
    capped: str | None = None  # why it stopped at its spend cap (the rest not sent: exit 1)
    interrupted: bool = False
    signal: int | None = None  # the signal that interrupted it (SIGINT, SIGTERM, SIGHUP)
    unrecorded: list[str] = field(
        default_factory=list
    )  # task ids kept in the journal, not the ledger
    errors: Counter[str] = field(
        default_factory=Counter
    )  # message → how many requests ended with it
    spent: int = 0  # credits at known prices of the requests submitted or in doubt
    unpriced: int = 0  # those of them whose price is not known
    submitted_classes: Counter[str] = field(
        default_factory=Counter
    )  # class key → requests submitted
    # A body's price class as the run's price book spells it (PriceBook.class_key); None: not counted.
    class_of: Callable[[dict[str, Any]], str] | None = field(default=None, repr=False)

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    def count(self, request: Request, outcome: str, price: int | None = None) -> None:
        self.outcomes[outcome] += 1
        if outcome in ("submitted", "in_doubt"):  # maybe or certainly paid for
            if price is None:
                self.unpriced += 1
            else:
                self.spent += price
        if outcome == "submitted" and self.class_of is not None:
            self.submitted_classes[self.class_of(request.body)] += 1
        model = model_label(str(request.model))
        self.by_model.setdefault(model, Counter())[outcome] += 1

    def exit_code(self, unresolved_in_job: int = 0) -> int:
        if self.interrupted:
            return 128 + self.signal if self.signal else EXIT_INTERRUPTED
        if self.aborted:
            return EXIT_ABORTED
        if (
            self.capped
            or unresolved_in_job
            or any(self.outcomes[s] for s in ("rejected", "failed", "in_doubt"))
        ):
            return EXIT_INCOMPLETE
        return EXIT_OK


Progress = Callable[[RunReport], None]
