"""`batchgen plan`: what a run of a job would send and what it would cost, worked out from the
ledger (read, never created) and shown; nothing is sent and nothing is written."""

from __future__ import annotations

import contextlib
from typing import TextIO

from ..errors import NoLedger
from ..jobs.validate import validate_job
from ..ledger.location import Project, shown
from ..output.reports import plan_lines, problem_lines, write_plan_json
from ..sending.plan import Plan, no_ledger, plan_job
from . import spend as credits
from .session import Console, open_ledger


def show_plan(
    job: str,
    base_url: str,
    project: Project,
    console: Console,
    out: TextIO,
    *,
    prices_file: str | None,
    allow_unverified: bool,
    as_json: bool,
) -> None:
    """`batchgen plan`: what a run of `job` would send and what it would cost, from what the
    ledger knows (every request is new without one): text lines through `console`, or one JSON
    object streamed to `out`. Sends nothing and writes nothing, not even a new ledger."""
    ledger = None
    if project.ledger_exists():
        with contextlib.suppress(NoLedger):  # a server without batchgen's tables yet
            ledger = open_ledger(project, console, create=False)
    if ledger is None:
        console.err(f"ledger: none yet at {shown(project.ledger)}: every request is new")
    with contextlib.ExitStack() as stack:
        if ledger is not None:
            stack.enter_context(ledger)
        states = ledger.tasks.states if ledger else no_ledger
        if as_json:
            validated = validate_job(
                job, base_url, root=project.root, allow_unverified=allow_unverified
            )
            for line in problem_lines(validated.warnings):
                console.err(line)
            book = credits.price_book(validated, ledger, prices_file)
            plan = Plan(validated.job.name, validated.api_base)
            write_plan_json(out, validated, plan, states, book)
            return
        validated, result = plan_job(
            job,
            base_url,
            states,
            root=project.root,
            allow_unverified=allow_unverified,
            prices=lambda v: credits.price_book(v, ledger, prices_file),
        )
    for line in problem_lines(validated.warnings):
        console.err(line)
    for line in plan_lines(result):
        console.out(line)
