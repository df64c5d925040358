"""A rerun of a job that changed nothing, planned from the ledger's counts, not its requests.

When a run has linked a job's requests, it records beside them (`job_inputs`) a digest of
everything those requests were made from: the bytes of the job file and of every file it
refers to (prompts files, CSV tables, local images), the API base that keys them, whether
unverified models were allowed, the project they were checked against, and the code that
expands and validates them (batchgen's version and the size and time of each of its files).

A later run whose digest is the same would make the very same requests, with the same
warnings, so they need not be made again: where each one stands is in the job's maintained
counts (`job_counts`). When none of them would be sent — every one done, or in a state only a
flag sends and that flag is not given — the run is planned from those counts: work in
proportion to the job file, not to its requests (a no-op rerun of 200,000 requests made and
looked up every one of them, ~6 s). Anything else takes the full plan: a file edited, a new
version, a request never sent, one a flag sends again, a link added or dropped.

This can only ever send less, never more: what it plans sends nothing. Prices are not
consulted (they price what is sent), so a tie between two declared prices for a request that
is not sent is not reported on this path.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import Problem
from ..ledger.tables import JobInput
from ..sending.plan import ACTION_OF_STATE, STATE_OF_ACTION, Plan, empty_plan
from . import schemas
from .prices import PriceBook
from .validate import ValidatedJob

if TYPE_CHECKING:
    from ..ledger import Ledger

FORMAT = 1  # what the digest covers; raised when that changes


def digest(validated: ValidatedJob, job_file: str) -> str | None:
    """The digest of what the job's requests are made from; None for a job with problems
    (validation raises for it, on the full path)."""
    job = validated.job
    if job.problems:
        return None
    made_from = {
        "format": FORMAT,
        "version": __version__,
        "code": code_identity(),
        "job_file": job_file,
        "name": job.name,
        "root": str(job.root),
        "api_base": validated.api_base,
        "allow_unverified": validated.allow_unverified,
        "read": job.read,
        "images": {written: image.sha256 for written, image in job.images.items()},
    }
    return hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()


@functools.cache
def code_identity() -> str:
    """The size and modification time of every file of the package and its schemas: a
    changed expansion or schema (an upgrade, an edit in a source checkout) is a new digest."""
    seen: list[tuple[str, int, int]] = []
    for top in (Path(__file__).resolve().parents[1], schemas.schema_dir()):
        for folder, folders, files in os.walk(top):
            folders[:] = sorted(f for f in folders if f != "__pycache__")
            for name in sorted(files):
                if name.endswith((".py", ".json", ".j2", ".html", ".css", ".js")):
                    info = os.stat(os.path.join(folder, name))
                    seen.append((os.path.join(folder, name), info.st_size, info.st_mtime_ns))
    return hashlib.sha256(json.dumps(seen).encode()).hexdigest()


def settled_plan(
    ledger: Ledger,
    validated: ValidatedJob,
    job_file: str,
    made_from: str | None,
    allow: set[str],
    book: PriceBook,
) -> Plan | None:
    """The run's plan from the job's counts, if its inputs are those its links were made from
    and the run would send none of its requests; else None (plan it in full). Fills in what
    validation would have learned (`unique`, `by_model_key`, `warnings`)."""
    job = validated.job.name
    recorded = ledger.job_inputs.recorded(job, job_file, made_from) if made_from else None
    if recorded is None:
        return None
    # Read after the digest: a run that links the job in between deletes the digest first, and
    # whatever the counts then say, this plan sends nothing.
    rows = ledger.tasks.counts(job)
    if sum(row["n"] for row in rows) != recorded.requests:
        return None  # a link added or dropped since (a journal replayed, a hand edit)
    plan = empty_plan(validated, book)
    for row in rows:
        if not row["state"]:
            return None  # never sent (a --limit run, a task forgotten): the full plan sends it
        state = (
            "generation_failed"
            if row["state"] == "submitted" and row["status"] == "failed"
            else row["state"]
        )
        action = ACTION_OF_STATE[state]
        if STATE_OF_ACTION.get(action) in allow:
            return None
        plan.counts[action] += row["n"]
        plan.by_model_key[(row["model"], action)] += row["n"]
    validated.unique = recorded.requests
    validated.by_model_key.clear()
    for (model_key, _), n in plan.by_model_key.items():
        validated.by_model_key[model_key] += n
    validated.warnings = [Problem(**fields) for fields in recorded.warnings]
    return plan


def inputs(validated: ValidatedJob, made_from: str | None) -> Callable[[], JobInput | None]:
    """What linking records beside the job's links, asked once they are all staged (validation
    has then counted them and gathered its warnings)."""

    def made() -> JobInput | None:
        if made_from is None:
            return None
        warnings = [dataclasses.asdict(problem) for problem in validated.warnings]
        return JobInput(made_from, validated.unique, warnings)

    return made
