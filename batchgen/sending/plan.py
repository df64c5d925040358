"""Plan: what a run of a job would do with each request, given what the ledger already knows."""

from __future__ import annotations

import dataclasses
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import JobError, PlanChanged, PriceTie
from ..jobs.expand import Request, expand
from ..jobs.origins import describe_origin
from ..jobs.prices import PriceBook, class_key_of, no_prices, tie_problem
from ..jobs.spec import load_job
from ..jobs.validate import ValidatedJob, checked
from ..providers import Catalogue, model_label
from ..urls import canonical_base_url

# What a run does with a request, from the state the ledger holds for its key.
ACTIONS = ("new", "done", "failed", "rejected", "in_doubt", "sending", "generation_failed")

BATCH = 500  # keys looked up in the ledger at a time

# key → ledger state, for the keys the ledger knows; the others are new.
StateLookup = Callable[[Iterable[str]], dict[str, str]]


def no_ledger(keys: Iterable[str]) -> dict[str, str]:
    return {}


ACTION_OF_STATE = {
    "submitted": "done",
    "failed": "failed",
    "rejected": "rejected",
    "in_doubt": "in_doubt",
    "sending": "sending",
    "generation_failed": "generation_failed",
}


WOULD_SEND = {"new", "failed"}  # what a plain run sends (the other actions need a flag)


class PlannedRequest(NamedTuple):
    request: Request
    action: str
    credits: int | None = None  # its price, when one is known


@dataclass
class Plan:
    job: str
    api_base: str
    counts: Counter[str] = field(default_factory=Counter)
    by_model_key: Counter[tuple[str, str]] = field(
        default_factory=Counter
    )  # (the provider's model id, action)
    credits: int = 0  # the known cost of what the run would send
    credits_by_model: Counter[str] = field(default_factory=Counter)
    unknown: int = 0  # requests it would send whose price is not known
    # class (the catalogue's price_class, spelled as a key only in `unknown_classes`) → requests
    # it would send with no known price; None when no price is known at all (then every class
    # lacks one, and they are not counted)
    unknown_by_class: Counter[Any] | None = field(default_factory=Counter)
    # class key → what contradicts its declared price (the balance taught another), per class
    # the run would send
    contradictions: dict[str, str | None] = field(default_factory=dict)
    catalogue: Catalogue | None = field(default=None, repr=False)  # the job's provider's

    def count(
        self, planned: PlannedRequest, *, sends: bool | None = None, book: PriceBook | None = None
    ) -> None:
        """Count a request; `sends`: whether the run sends it (default: a plain run would)."""
        model_key = str(planned.request.model)
        self.counts[planned.action] += 1
        self.by_model_key[(model_key, planned.action)] += 1
        if not (planned.action in WOULD_SEND if sends is None else sends):
            return
        if book is not None and book.may_contradict:  # a few classes: each asked once
            cls = book.class_key(planned.request.body)
            if cls not in self.contradictions:
                self.contradictions[cls] = book.contradiction(planned.request.body)
        if planned.credits is None:
            self.unknown += 1
            if self.unknown_by_class is not None and book is not None:
                try:
                    self.unknown_by_class[book.catalogue.price_class(planned.request.body)] += 1
                except TypeError:  # an option value that cannot be hashed: spelled at once
                    self.unknown_by_class[book.class_key(planned.request.body)] += 1
        else:
            self.credits += planned.credits
            self.credits_by_model[model_label(model_key)] += planned.credits

    @property
    def unknown_classes(self) -> Counter[str]:
        """class key (JSON) → requests the run would send with no known price."""
        found: Counter[str] = Counter()
        for cls, n in (self.unknown_by_class or {}).items():
            if isinstance(cls, str) or self.catalogue is None:
                found[str(cls)] += n
            else:
                found[class_key_of(cls, self.catalogue)] += n
        return found

    @property
    def by_model(self) -> dict[str, Counter[str]]:
        """model name → action → count."""
        out: dict[str, Counter[str]] = {}
        for (model_key, action), n in self.by_model_key.items():
            out.setdefault(model_label(str(model_key)), Counter())[action] += n
        return out

    @property
    def price_warnings(self) -> list[str]:
        return [sentence for sentence in self.contradictions.values() if sentence]

    def summary(self) -> dict[str, object]:
        return {
            "total": sum(self.counts.values()),
            **{action: self.counts.get(action, 0) for action in ACTIONS},
            "by_model": {m: dict(c) for m, c in sorted(self.by_model.items())},
            "credits": {
                "total": self.credits,
                "unknown": self.unknown,
                "by_model": dict(sorted(self.credits_by_model.items())),
                "unknown_classes": sorted(self.unknown_classes),
            },
        }


def plan_job(
    path: str,
    api_base: str,
    states: StateLookup = no_ledger,
    *,
    root: Path | None = None,
    prices: Callable[[ValidatedJob], PriceBook] | None = None,
    allow_unverified: bool = False,
) -> tuple[ValidatedJob, Plan]:
    """Validate the job at `path` and count what a run would do with each of its requests;
    `prices` makes the price book for the validated job (none: no price is known)."""
    validated = ValidatedJob(
        load_job(path, root), canonical_base_url(api_base), allow_unverified=allow_unverified
    )
    book = prices(validated) if prices else no_prices(validated.job.catalogue)
    result = empty_plan(validated, book)
    if (
        book.empty and states is no_ledger
    ):  # every request is new and unpriced: validation's counts are the plan
        for _ in checked(validated):
            pass
        for model_key, n in validated.by_model_key.items():
            result.counts["new"] += n
            result.by_model_key[(model_key, "new")] += n
        result.unknown = validated.unique
        return validated, result
    # One pass: requests are counted as validation checks them; a problem found later raises
    # (and these counts are dropped with it).
    for chunk in _in_batches(checked(validated)):
        for item in _decide(chunk, states, book, validated):
            result.count(item, book=book)
    return validated, result


def empty_plan(validated: ValidatedJob, book: PriceBook | None = None) -> Plan:
    """A plan of the job that counts nothing yet."""
    result = Plan(validated.job.name, validated.api_base, catalogue=validated.job.catalogue)
    if (
        book is None or book.empty
    ):  # no price known at all: which classes lack one is every class; not counted
        result.unknown_by_class = None
    return result


def planned(
    validated: ValidatedJob, states: StateLookup = no_ledger, book: PriceBook | None = None
) -> Iterator[PlannedRequest]:
    """Each distinct request of the job with its action and price, keys looked up in batches."""
    book = book or no_prices(validated.job.catalogue)
    for chunk in _in_batches(validated.requests()):
        yield from _decide(chunk, states, book, validated)


def _in_batches(requests: Iterable[Request], size: int = BATCH) -> Iterator[list[Request]]:
    chunk: list[Request] = []
    for request in requests:
        chunk.append(request)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _decide(
    requests: list[Request], states: StateLookup, book: PriceBook, validated: ValidatedJob
) -> Iterator[PlannedRequest]:
    known = states([r.key for r in requests]) if requests else {}
    for request in requests:
        state = known.get(request.key)
        try:
            credits = book.credits(request.body)
        except PriceTie as tie:
            raise JobError(
                [tie_problem(tie, describe_origin(validated.job, request.origin))]
            ) from None
        yield PlannedRequest(
            request, ACTION_OF_STATE.get(state, "new") if state else "new", credits
        )


def prepare_run(
    expansion: ValidatedJob,
    states: StateLookup,
    allow: set[str],
    *,
    book: PriceBook | None = None,
    stage: Callable[[list[Request]], None] | None = None,
) -> tuple[Plan, ToSend]:
    """Step 2 of validation and the run's plan, in one pass over the job: the plan, and the
    requests to send in file order (those whose ledger state is new or in `allow`).

    `stage` is given every request of the job, in batches (the run links them to the job, so
    that a request another job got done counts for this one too). A problem found raises
    `JobError` once the whole job was checked: then the plan and what was staged are void.
    """
    book = book or no_prices(expansion.job.catalogue)
    result = empty_plan(expansion, book)
    to_send = ToSend(expansion)
    for chunk in _in_batches(checked(expansion)):
        if stage is not None:
            stage(chunk)
        for item in _decide(chunk, states, book, expansion):
            sends = item.action == "new" or STATE_OF_ACTION.get(item.action) in allow
            result.count(item, sends=sends, book=book)
            if sends:
                to_send.add(item)
    return result, to_send


class Priced(NamedTuple):
    """A request a run sends, and its price when one is known."""

    request: Request
    credits: int | None


class Linked(NamedTuple):
    """A planned request as linking records it (see ledger.Link)."""

    key: str
    label: str | None
    meta: dict[str, Any] | None


@dataclass(frozen=True)
class ToSend:
    """The requests a run sends, in job order, held as little as possible: each one's key (32
    bytes) and price (and its id and meta, when the job gives it them). The requests
    themselves are made again from the job already read, as they are sent, and only one whose
    key is the next planned one is given out: a first run of a million requests held them
    all, ~650 bytes each, for the whole run.

    `head(n)` is the first n (`--limit`, what the balance covers); `resolved(fn)` gives each
    body as `fn` makes it (local images → their URLs), leaving out those it makes None."""

    expansion: ValidatedJob
    _keys: bytearray = field(default_factory=bytearray)
    _prices: array[int] = field(default_factory=lambda: array("q"))  # -1: not known
    _labels: dict[int, tuple[str | None, dict[str, Any] | None]] = field(
        default_factory=dict
    )  # position → id, meta
    _stop: int | None = None
    _resolve: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None
    left_out: int = 0  # of the first `len(self)`, how many `resolved` leaves out

    def add(self, item: PlannedRequest) -> None:
        assert self._stop is None, "a view is not added to"
        request = item.request
        if request.label is not None or request.meta:
            self._labels[len(self._prices)] = (request.label, request.meta)
        self._keys.extend(bytes.fromhex(request.key))
        self._prices.append(-1 if item.credits is None else item.credits)

    def __len__(self) -> int:
        """How many it gives out."""
        return (len(self._prices) if self._stop is None else self._stop) - self.left_out

    def head(self, n: int) -> ToSend:
        assert self._resolve is None, "take the head before resolving"
        return dataclasses.replace(self, _stop=min(n, len(self)))

    def resolved(
        self, resolve: Callable[[dict[str, Any]], dict[str, Any] | None], left_out: int
    ) -> ToSend:
        return dataclasses.replace(self, _stop=len(self), _resolve=resolve, left_out=left_out)

    def prices(self) -> Iterator[int | None]:
        """The price of each of the first `len(self)` planned (before `resolved`), in order."""
        for price in self._prices[: len(self) + self.left_out]:
            yield None if price < 0 else price

    def links(self) -> Iterator[Linked]:
        """What linking needs of every request planned: on a first run, when every request of
        the job is new, that is the whole job, linked without making its requests again."""
        assert self._stop is None, "links are of every request planned"
        for position in range(len(self._prices)):
            label, meta = self._labels.get(position, (None, None))
            yield Linked(self._keys[position * 32 : position * 32 + 32].hex(), label, meta)

    def __iter__(self) -> Iterator[Priced]:
        planned = len(self) + self.left_out
        if not planned:
            return
        keys = memoryview(self._keys)
        position = 0
        # The raw expansion, duplicates and all: a later duplicate of a request given out is
        # never the next planned key, so no set of the keys seen is needed.
        for request in expand(self.expansion.job, self.expansion.api_base):
            if keys[position * 32 : position * 32 + 32] != bytes.fromhex(request.key):
                continue
            price = self._prices[position]
            position += 1
            body: dict[str, Any] | None = request.body
            if self._resolve is not None:
                body = self._resolve(request.body)
            if body is not None:
                yield Priced(request._replace(body=body), None if price < 0 else price)
            if position == planned:
                return
        raise PlanChanged(
            f"the job's requests, made again to be sent, were not the ones planned: {planned - position} of them were not sent"
        )


STATE_OF_ACTION = {action: state for state, action in ACTION_OF_STATE.items()}
