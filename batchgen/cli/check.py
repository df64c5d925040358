"""Commands on job files: `validate`, `plan` (what a run would send, and its cost), `schema`."""

from __future__ import annotations

import sys

import click

from .. import credits, schemas
from ..errors import (
    EXIT_USAGE,
    JobError,
)
from ..output.console import Terminal
from ..output.reports import (
    plan_lines,
    problem_lines,
    problems_json,
    write_plan_json,
)
from ..plan import Plan, no_ledger, plan_job
from ..runner import (
    open_ledger,
)
from ..urls import canonical_base_url
from ..validate import validate_job
from .common import echo_warnings, project_of
from .options import (
    api_base_option,
    unverified_option,
)


@click.command()
@click.argument("jobs", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@api_base_option
@unverified_option
def validate(jobs: tuple[str, ...], fmt: str, base_url: str, allow_unverified: bool) -> None:
    """Check job files (both steps: the file, then every request). Sends nothing.

    Exit 0 when every file is valid, 2 when any is not.
    """
    base_url = canonical_base_url(base_url)
    failed = False
    for job in jobs:
        try:
            expansion = validate_job(job, base_url, allow_unverified=allow_unverified)
            problems, valid = expansion.warnings, True
        except JobError as e:
            problems, valid = e.problems, False
        failed = failed or not valid
        if fmt == "json":
            click.echo(problems_json(job, problems, valid))
            continue
        for line in problem_lines(problems):
            click.echo(line, err=True)
        if valid:
            by_model = ", ".join(f"{n} {m}" for m, n in sorted(expansion.by_model.items()))
            click.echo(f"{job}: ok, {expansion.unique} requests ({by_model})")
    sys.exit(EXIT_USAGE if failed else 0)


@click.command()
@click.argument("job", type=click.Path(dir_okay=True))
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object: job, api_base, counts, requests."
)
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(dir_okay=False),
    help="Price rules (a YAML file with prices: [...]), beside the job's.",
)
@api_base_option
@unverified_option
def plan(
    job: str, as_json: bool, base_url: str, prices_file: str | None, allow_unverified: bool
) -> None:
    """Show what a run of JOB would send and what it would cost: counts by model and by action
    (new, done, failed, rejected, in_doubt) from what the ledger knows. Sends and writes nothing."""
    base_url = canonical_base_url(base_url)
    project = project_of(job)
    console = Terminal()
    ledger = open_ledger(project, console, create=False) if project.ledger.exists() else None
    if ledger is None:
        console.err(f"ledger: none yet at {project.ledger}: every request is new")
    try:
        states = ledger.states if ledger else no_ledger
        if as_json:
            expansion = validate_job(
                job, base_url, root=project.root, allow_unverified=allow_unverified
            )
            echo_warnings(expansion)
            book = credits.price_book(expansion, ledger, prices_file)
            write_plan_json(
                sys.stdout, expansion, Plan(expansion.job.name, expansion.api_base), states, book
            )
            return
        expansion, result = plan_job(
            job,
            base_url,
            states,
            root=project.root,
            allow_unverified=allow_unverified,
            prices=lambda v: credits.price_book(v, ledger, prices_file),
        )
    finally:
        if ledger:
            ledger.close()
    echo_warnings(expansion)
    for line in plan_lines(result):
        click.echo(line)


@click.command()
@click.argument("name", type=click.Choice(list(schemas.SCHEMA_NAMES)))
def schema(name: str) -> None:
    """Print the JSON Schema for a job file or a request body."""
    click.echo(schemas.schema_text(name), nl=False)
