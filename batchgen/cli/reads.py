"""Reading the ledger and the account: `runs`, `status`, `tasks`, `credits`, `prices`."""

from __future__ import annotations

import contextlib
import json
import os
import sys

import click

from .. import providers
from ..app import spend as credits
from ..app.session import api_base_of, api_target, job_provider, resolve_job
from ..errors import BalanceUnknown
from ..ledger import STATES
from ..output.reports import runs_report, status_report, write_lines, write_tasks
from .common import project_of, read_only
from .options import all_option, api_base_option, prices_option, send_options


@click.command()
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run, a line each.")
@click.option(
    "--last",
    type=click.IntRange(1, 100_000),
    default=20,
    show_default=True,
    help="How many of the latest runs.",
)
def runs(job: str | None, as_json: bool, last: int) -> None:
    """The run history (of JOB): when, flags, counts, credits, exit code; newest first."""
    ledger = read_only(job)
    if ledger is not None:
        with ledger:
            for line in runs_report(
                ledger.runs.latest(resolve_job(ledger, job), last), as_json=as_json
            ):
                click.echo(line)


@click.command()
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@all_option
def status(job: str | None, as_json: bool, include_superseded: bool) -> None:
    """Counts per state and generation status, by model; when the last task is due."""
    ledger = read_only(job)
    current_only = not include_superseded
    if ledger is None:
        if as_json:
            click.echo(json.dumps({"job": None, "counts": [], "not_sent": 0, "last_due": None}))
        return
    with ledger:
        name = resolve_job(ledger, job)
        rows = ledger.tasks.status_counts(name, current_only=current_only)
        standing = (
            ledger.tasks.standing(name, current_only=current_only) if name else None
        )  # a job's last due and unsent, in one pass
        due = (
            standing.last_due
            if standing
            else ledger.tasks.last_due(None, current_only=current_only)
        )
        unsent = standing.unsent if standing else 0
    for line in status_report(name, rows, unsent, due, as_json=as_json):
        click.echo(line)


@click.command()
@click.argument("job", required=False)
@click.option("--state", type=click.Choice(STATES), help="Only tasks in this state.")
@click.option("--json", "fmt", flag_value="json", help="One JSON object per line (every column).")
@click.option("--csv", "fmt", flag_value="csv", help="CSV with a header (every column).")
@all_option
def tasks(job: str | None, state: str | None, fmt: str | None, include_superseded: bool) -> None:
    """The ledger's rows for JOB (or every job)."""
    ledger = read_only(job)
    current_only = not include_superseded
    if ledger is None:
        return
    with ledger:
        name = resolve_job(ledger, job)
        if fmt == "json":
            write_lines(
                sys.stdout, ledger.tasks.rows_as_json(name, state, current_only=current_only)
            )
            return
        columns = ledger.columns() + (
            ["label", "meta"] if name is not None else []
        )  # the job gives these
        write_tasks(
            sys.stdout,
            lambda: ledger.tasks.rows(name, state, current_only=current_only),
            columns,
            fmt or "text",
        )


@click.command("credits")
@click.option("--json", "as_json", is_flag=True, help='One JSON object: {"credits": N}.')
@send_options
@click.option(
    "--provider", "provider_name", help="Whose account (default: the project's provider)."
)
def credits_command(
    as_json: bool,
    sandbox: bool,
    api_key_file: str | None,
    base_url: str | None,
    provider_name: str | None,
) -> None:
    """The account's balance."""
    provider = (
        providers.named(provider_name) if provider_name else job_provider(None, project_of(None))
    )
    with api_target(
        sandbox=sandbox,
        base_url=base_url,
        api_key_file=api_key_file,
        need_key=True,
        provider=provider,
    ) as target:
        with target.connect() as client:
            balance, why = credits.read_balance(client)
    if balance is None:
        raise BalanceUnknown(f"the balance could not be read: {why}")
    click.echo(json.dumps({"credits": balance}) if as_json else f"{balance:,} credits")


@click.command()
@click.argument("job", required=False)
@prices_option
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object: declared, learned, by_class."
)
@api_base_option
def prices(job: str | None, prices_file: str | None, as_json: bool, base_url: str | None) -> None:
    """Every known price and where it came from: declared (JOB's prices:, --prices) or learned
    from a run's balance. With a job file: the price of each class of request it asks for."""
    ledger = read_only(job if job and os.path.isfile(job) else None)
    with contextlib.ExitStack() as stack:
        if ledger is not None:
            stack.enter_context(ledger)
        facts = credits.price_facts(
            job if job and os.path.isfile(job) else None,
            ledger,
            prices_file,
            api_base_of(job_provider(job, project_of(job)), base_url),
        )
    if as_json:
        click.echo(json.dumps(facts, ensure_ascii=False))
        return
    for line in credits.price_report(facts):
        click.echo(line)
