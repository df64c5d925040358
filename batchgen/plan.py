"""Plan: what a run of a job would do with each request, given what the ledger already knows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, NamedTuple

from . import models
from .expand import Request
from .validate import ValidatedJob, validate_job

if TYPE_CHECKING:
    from .ledger import Ledger

# What a run does with a request, from the state the ledger holds for its key.
ACTIONS = ("new", "done", "failed", "rejected", "in_doubt", "sending")

BATCH = 500  # keys looked up in the ledger at a time

# key → ledger state, for the keys the ledger knows; the others are new.
StateLookup = Callable[[Iterable[str]], dict[str, str]]


def no_ledger(keys: Iterable[str]) -> dict[str, str]:
    return {}


_ACTION_OF_STATE = {
    "submitted": "done",
    "failed": "failed",
    "rejected": "rejected",
    "in_doubt": "in_doubt",
    "sending": "sending",
}


class PlannedRequest(NamedTuple):
    request: Request
    action: str


@dataclass
class Plan:
    job: str
    api_base: str
    counts: Counter[str] = field(default_factory=Counter)
    by_model_id: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model_id, action)

    def count(self, planned: PlannedRequest) -> None:
        self.counts[planned.action] += 1
        self.by_model_id[(str(planned.request.body.get("model_id")), planned.action)] += 1

    @property
    def by_model(self) -> dict[str, Counter[str]]:
        """model name → action → count."""
        out: dict[str, Counter[str]] = {}
        for (model_id, action), n in self.by_model_id.items():
            out.setdefault(models.label(str(model_id)), Counter())[action] += n
        return out

    def summary(self) -> dict[str, object]:
        return {
            "total": sum(self.counts.values()),
            **{action: self.counts.get(action, 0) for action in ACTIONS},
            "by_model": {m: dict(c) for m, c in sorted(self.by_model.items())},
        }


def plan_job(path: str, api_base: str, states: StateLookup = no_ledger, *, root: Path | None = None) -> tuple[ValidatedJob, Plan]:
    """Validate the job at `path` and count what a run would do with each of its requests."""
    validated = validate_job(path, api_base, root=root)
    result = Plan(validated.job.name, validated.api_base)
    for item in planned(validated, states):
        result.count(item)
    return validated, result


def planned(expansion: ValidatedJob, states: StateLookup = no_ledger) -> Iterator[PlannedRequest]:
    """Each distinct request of the job with its action, looked up in batches of keys."""
    for chunk in _in_batches(expansion.requests()):
        yield from _decide(chunk, states)


def _in_batches(requests: Iterable[Request], size: int = BATCH) -> Iterator[list[Request]]:
    chunk: list[Request] = []
    for request in requests:
        chunk.append(request)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _decide(requests: list[Request], states: StateLookup) -> Iterator[PlannedRequest]:
    known = states([r.key for r in requests]) if requests else {}
    for request in requests:
        state = known.get(request.key)
        yield PlannedRequest(request, _ACTION_OF_STATE.get(state, "new") if state else "new")


def prepare_run(
    expansion: ValidatedJob, ledger: "Ledger | None", allow: set[str], job_file: str, *, link: bool = True
) -> tuple[Plan, list[Request]]:
    """The run's plan and the requests it will try to send, in file order.

    Every request of the job is linked to it in `job_tasks` (so a request another job got
    done counts for this one too); those whose ledger state is new or in `allow` are to send.
    """
    result = Plan(expansion.job.name, expansion.api_base)
    to_send: list[Request] = []
    for chunk in _in_batches(expansion.requests()):
        if link and ledger is not None:
            ledger.link(result.job, job_file, (r.key for r in chunk))
        for item in _decide(chunk, ledger.states if ledger is not None else no_ledger):
            result.count(item)
            if item.action == "new" or _STATE_OF_ACTION.get(item.action) in allow:
                to_send.append(item.request)
    return result, to_send


_STATE_OF_ACTION = {action: state for state, action in _ACTION_OF_STATE.items()}
