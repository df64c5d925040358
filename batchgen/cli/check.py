"""Commands on job files: `validate`, `plan` (what a run would send, and its cost), `schema`."""

from __future__ import annotations

import json
import os
import sys

import click

from .. import providers
from ..app.plan import show_plan
from ..app.session import api_base_of, job_provider
from ..errors import EXIT_USAGE, JobError, UsageError
from ..jobs import schemas
from ..jobs.validate import validate_job
from ..output.console import Terminal
from ..output.reports import problem_lines, problems_json
from ..output.words import count
from .common import project_of
from .options import api_base_option, chosen_api, prices_option, unverified_option


@click.command()
@click.argument("jobs", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per job file, as other commands' --json.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="The same as --json when json (kept for scripts that use it).",
)
@api_base_option
@unverified_option
def validate(
    jobs: tuple[str, ...], as_json: bool, fmt: str, base_url: str | None, allow_unverified: bool
) -> None:
    """Check job files (both steps: the file, then every request). Sends nothing.

    Exit 0 when every file is valid, 2 when any is not.
    """
    failed = False
    for job in jobs:
        try:
            api = api_base_of(job_provider(job), base_url) if os.path.isfile(job) else None
            expansion = validate_job(job, api, allow_unverified=allow_unverified)
            problems, valid = expansion.warnings, True
        except JobError as e:
            problems, valid = e.problems, False
        failed = failed or not valid
        if as_json or fmt == "json":
            click.echo(problems_json(job, problems, valid))
            continue
        for line in problem_lines(problems):
            click.echo(line, err=True)
        if valid:
            by_model = ", ".join(f"{n} {m}" for m, n in sorted(expansion.by_model.items()))
            click.echo(f"{job}: ok, {count(expansion.unique, 'request')} ({by_model})")
    sys.exit(EXIT_USAGE if failed else 0)


@click.command()
@click.argument("job", type=click.Path(dir_okay=True))
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object: job, api_base, counts, requests."
)
@prices_option
@click.option(
    "--sandbox",
    is_flag=True,
    help="Plan as a run with --sandbox would: a rehearsal's requests are not the real API's.",
)
@api_base_option
@unverified_option
def plan(
    job: str,
    as_json: bool,
    sandbox: bool,
    base_url: str | None,
    prices_file: str | None,
    allow_unverified: bool,
) -> None:
    """Show what a run of JOB would send and what it would cost: counts by model and by action
    (new, done, failed, rejected, in_doubt) from what the ledger knows. Sends and writes nothing."""
    project = project_of(job)
    show_plan(
        job,
        chosen_api(sandbox, base_url, job_provider(job, project)),
        project,
        Terminal(),
        sys.stdout,
        prices_file=prices_file,
        allow_unverified=allow_unverified,
        as_json=as_json,
    )


@click.command()
@click.argument("name", type=click.Choice(["job", "request"]))
@click.option(
    "--provider", "provider_name", help="Whose request body (default: the default provider's)."
)
def schema(name: str, provider_name: str | None) -> None:
    """Print the JSON Schema for a job file, or for a provider's request body."""
    if name == "job":
        click.echo(schemas.schema_text(name), nl=False)
        return
    found = providers.catalogue_of(provider_name).request_schema()
    if found is None:
        raise UsageError("this provider publishes no request schema")
    click.echo(json.dumps(found, indent=2, ensure_ascii=False))
