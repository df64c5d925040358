"""The command line: parse, call the stage that does the work, print. Nothing else lives here.

Errors become a message and an exit code in one place, `BatchgenGroup.invoke`; the run's use
case lives in runner.py; which ledger a command uses is decided by project.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__, api, credits, schemas
from .errors import (
    EXIT_ABORTED,
    EXIT_INCOMPLETE,
    EXIT_USAGE,
    BalanceUnknown,
    BatchgenError,
    JobError,
    NoLedger,
    UsageError,
)
from .expand import DEFAULT_API_BASE
from .init_cli import init_command
from .ledger import FAILURES as ledger_failures
from .ledger import STATES, Ledger
from .limits import Backoff, RateLimiter
from .models_cli import models_command
from .plan import Plan, no_ledger, plan_job
from .project import locate
from .report import (
    plan_lines,
    problem_lines,
    problems_json,
    runs_report,
    status_report,
    write_plan_json,
    write_tasks,
)
from .results import pending
from .results import poll as poll_tasks
from .review_cli import promote as promote_command
from .review_cli import review as review_command
from .runner import (
    RunOptions,
    api_target,
    download_job,
    execute_run,
    interrupted_exit,
    named_job,
    open_ledger,
    resolve_job,
    wait_until_done,
    write_gallery,
)
from .runner import (
    on_done as run_on_done,
)
from .sandbox_cli import sandbox_command
from .submit import DEFAULT_CONCURRENCY, DEFAULT_MAX_IDENTICAL_ERRORS, DEFAULT_RPM
from .terminal import (
    Finite,
    Terminal,
    all_option,
    api_base_option,
    bounds_of,
    download_options,
    field_list,
    send_options,
    unverified_option,
)
from .urls import canonical_base_url
from .validate import ValidatedJob, validate_job


class BatchgenGroup(click.Group):
    """Turns every error a user can cause into a message and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        console = Terminal()
        try:
            return super().invoke(ctx)
        except JobError as e:
            for line in problem_lines(e.problems):
                console.err(api.redact_secrets(line))
            sys.exit(e.exit_code)
        except BatchgenError as e:
            console.err(api.redact_secrets(f"error: {e}"))
            sys.exit(e.exit_code)
        except KeyboardInterrupt as e:  # outside a run's own handling: nothing was being sent
            console.err("\ninterrupted")
            sys.exit(interrupted_exit(e))
        except ledger_failures as e:
            # The ledger failed under us (disk full, locked past the timeout). Rows that were
            # being sent stay `sending` and become in_doubt at the next command; task ids
            # received meanwhile are in the journal.
            console.err(f"error: the ledger failed: {e}")
            sys.exit(EXIT_ABORTED)


@click.group(cls=BatchgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchgen")
@click.option(
    "--ledger",
    envvar="BATCHGEN_LEDGER",
    type=click.Path(dir_okay=False),
    help="The SQLite ledger (or BATCHGEN_LEDGER). Default: batchgen.db of the job's project.",
)
@click.pass_context
def main(ctx: click.Context, ledger: str | None) -> None:
    """Batch runner for AI video generation: job files in, videos and a ledger out."""
    ctx.obj = {"ledger": ledger}


def _project(job: str | None) -> Any:
    return locate(job, click.get_current_context().obj["ledger"])


# -- job files ------------------------------------------------------------------------------


@main.command()
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


@main.command()
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
    project = _project(job)
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
            _echo_warnings(expansion)
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
    _echo_warnings(expansion)
    for line in plan_lines(result):
        click.echo(line)


def _echo_warnings(expansion: ValidatedJob) -> None:
    for line in problem_lines(expansion.warnings):
        click.echo(line, err=True)


# -- sending ----------------------------------------------------------------------------------


@main.command()
@click.argument("job", type=click.Path(dir_okay=True))
@click.option(
    "--rpm",
    type=click.IntRange(0, 100_000),
    help=f"Create calls per minute, at most (job's limits.rpm, else {DEFAULT_RPM}); 0: no ceiling.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    help=f"Calls in flight, at most (job's limits.concurrency, else {DEFAULT_CONCURRENCY}).",
)
@click.option("--limit", type=click.IntRange(0), help="Send at most N requests this run.")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send and write nothing.")
@click.option("--yes", "-y", is_flag=True, help="Don't ask for confirmation.")
@click.option("--retry-rejected", is_flag=True, help="Send again the requests the API rejected.")
@click.option(
    "--resubmit-in-doubt",
    is_flag=True,
    help="Send again the requests whose outcome is unknown (may duplicate).",
)
@click.option("--wait", is_flag=True, help="Then poll until every task of the job has ended.")
@click.option(
    "--download",
    is_flag=True,
    help="Then download the completed videos to outputs/<job>/ (with --wait).",
)
@click.option(
    "--gallery", is_flag=True, help="Then write outputs/<job>/index.html, the videos side by side."
)
@click.option(
    "--max-identical-errors",
    type=click.IntRange(1),
    default=DEFAULT_MAX_IDENTICAL_ERRORS,
    show_default=True,
    help="Stop after this many requests in a row end with the same error.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 100),
    default=Backoff.max_attempts,
    show_default=True,
    help="Calls per request when the API refuses before processing (429, 503, connect errors).",
)
@click.option(
    "--read-timeout",
    type=Finite(0.1, 86_400),
    default=api.DEFAULT_TIMEOUT.read,
    show_default=True,
    help="Seconds to wait for an answer; past it the request is in doubt.",
)
@click.option(
    "--max-credits",
    type=click.IntRange(1, 10**12),
    help="Credits this run may commit at most (job's limits.max_credits); needs known prices.",
)
@click.option(
    "--allow-partial",
    is_flag=True,
    help="If the balance does not cover the run, send in job order what it covers.",
)
@click.option(
    "--regenerate-failed",
    is_flag=True,
    help="Send again the requests whose generation failed (earlier task ids are kept).",
)
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(dir_okay=False),
    help="Price rules (a YAML file with prices: [...]), beside the job's.",
)
@click.option(
    "--on-done",
    help="A shell command to run once at the end (BATCHGEN_JOB, BATCHGEN_EXIT, ... in its environment).",
)
@download_options
@send_options
@unverified_option
def run(job: str, sandbox: bool, api_key_file: str | None, base_url: str, **flags: Any) -> None:
    """Validate JOB, then send every request not done yet, recording each in the ledger."""
    options = RunOptions(job_file=job, bounds=bounds_of(flags), **flags)
    with api_target(
        sandbox=sandbox, base_url=base_url, api_key_file=api_key_file, need_key=not options.dry_run
    ) as target:
        sys.exit(execute_run(options, target, _project(job), Terminal()))


@main.command()
@click.argument("job", required=False)
@click.option(
    "--all", "all_tasks", is_flag=True, help="Check every unfinished task, not only those due."
)
@click.option("--wait", is_flag=True, help="Keep polling until every task has ended.")
@click.option(
    "--rpm",
    type=click.IntRange(0, 100_000),
    default=DEFAULT_RPM,
    show_default=True,
    help="Get-task calls per minute, at most; 0: no ceiling.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Get-task calls in flight, at most.",
)
@click.option(
    "--on-done",
    help="With --wait: a shell command to run once at the end (BATCHGEN_JOB, BATCHGEN_EXIT, ...).",
)
@send_options
def poll(
    job: str | None,
    all_tasks: bool,
    wait: bool,
    rpm: int,
    concurrency: int,
    on_done: str | None,
    sandbox: bool,
    api_key_file: str | None,
    base_url: str,
) -> None:
    """Check submitted tasks that have not ended; record status and result URLs."""
    console = Terminal()
    with api_target(
        sandbox=sandbox, base_url=base_url, api_key_file=api_key_file, need_key=True
    ) as target:
        with open_ledger(_project(job), console, create=False) as ledger:
            name = resolve_job(ledger, job)
            if wait:
                if name is None:
                    raise UsageError("poll --wait needs a job")
                code = wait_until_done(ledger, target, name, RateLimiter(rpm or None), console)
                run_on_done(on_done, ledger, name, None, code, console)
                sys.exit(code)
            due = pending(ledger, name, due_only=not all_tasks)
            with api.Api(target.base_url, target.key) as client:
                report = poll_tasks(
                    ledger, client, due, limiter=RateLimiter(rpm or None), concurrency=concurrency
                )
    console.out(
        f"checked {report.checked}: {report.completed} completed, {report.failed} failed, {report.processing} processing"
    )
    if report.unknown:
        console.err(
            f"{len(report.unknown)} task ids unknown to the API: {', '.join(report.unknown[:5])}"
        )
    if report.errors:
        console.err(f"{report.errors} could not be checked (network); poll again later")
    if report.aborted:
        console.err(f"stopped: {report.aborted}")
        sys.exit(EXIT_ABORTED)
    sys.exit(EXIT_INCOMPLETE if report.unknown or report.errors else 0)


@main.command()
@click.argument("job")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Folder for the videos (default outputs/<job>/).",
)
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--sandbox", is_flag=True, help="Serve the built-in sandbox's result files while downloading."
)
@download_options
@all_option
def download(
    job: str,
    out: str | None,
    concurrency: int,
    sandbox: bool,
    include_superseded: bool,
    **flags: Any,
) -> None:
    """Save every completed task's videos, atomically; skip those already on disk."""
    console = Terminal()
    bounds = bounds_of(flags)
    with api_target(
        sandbox=sandbox, base_url=DEFAULT_API_BASE, api_key_file=None, need_key=False
    ) as target:
        with open_ledger(_project(job), console, create=False) as ledger:
            ledger.include_superseded = include_superseded
            name = named_job(resolve_job(ledger, job))
            folder = Path(out) if out else Path("outputs") / name
            sys.exit(
                download_job(
                    ledger,
                    name,
                    folder,
                    target if sandbox else None,
                    console,
                    concurrency=concurrency,
                    bounds=bounds,
                )
            )


@main.command()
@click.argument("job")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="The job's download folder (default outputs/<job>/).",
)
@click.option("--rows", help="Comma-separated fields for rows (default: prompt).")
@click.option(
    "--cols", help="Comma-separated fields for columns (default: the other fields that vary)."
)
@click.option("--open", "open_it", is_flag=True, help="Open the page in a browser.")
@all_option
def gallery(
    job: str,
    out: str | None,
    rows: str | None,
    cols: str | None,
    open_it: bool,
    include_superseded: bool,
) -> None:
    """Write a page showing the job's videos side by side: index.html beside them."""
    console = Terminal()
    with open_ledger(_project(job), console, create=False) as ledger:
        ledger.include_superseded = include_superseded
        name = named_job(resolve_job(ledger, job))
        path = write_gallery(
            ledger,
            name,
            Path(out) if out else Path("outputs") / name,
            console,
            field_list(rows),
            field_list(cols),
        )
    if open_it:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


# -- reading the ledger -----------------------------------------------------------------------


def _read_only(job: str | None, include_superseded: bool = False) -> Ledger | None:
    """The project's ledger, or None (said so) when there is none: reading never creates one."""
    try:
        ledger = open_ledger(_project(job), Terminal(), create=False)
    except NoLedger as e:
        click.echo(f"{e}", err=True)
        return None
    ledger.include_superseded = include_superseded
    return ledger


@main.command()
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
    ledger = _read_only(job)
    if ledger is not None:
        with ledger:
            for line in runs_report(ledger.runs(resolve_job(ledger, job), last), as_json=as_json):
                click.echo(line)


@main.command()
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@all_option
def status(job: str | None, as_json: bool, include_superseded: bool) -> None:
    """Counts per state and generation status, by model; when the last task is due."""
    ledger = _read_only(job, include_superseded)
    if ledger is None:
        if as_json:
            click.echo(json.dumps({"job": None, "counts": [], "not_sent": 0, "last_due": None}))
        return
    with ledger:
        name = resolve_job(ledger, job)
        rows = ledger.status_counts(name)
        standing = (
            ledger.standing(name) if name else None
        )  # a job's last due and unsent, in one pass
        due = standing.last_due if standing else ledger.last_due(None)
        unsent = standing.unsent if standing else 0
    for line in status_report(name, rows, unsent, due, as_json=as_json):
        click.echo(line)


@main.command()
@click.argument("job", required=False)
@click.option("--state", type=click.Choice(STATES), help="Only tasks in this state.")
@click.option("--json", "fmt", flag_value="json", help="One JSON object per line (every column).")
@click.option("--csv", "fmt", flag_value="csv", help="CSV with a header (every column).")
@all_option
def tasks(job: str | None, state: str | None, fmt: str | None, include_superseded: bool) -> None:
    """The ledger's rows for JOB (or every job)."""
    ledger = _read_only(job, include_superseded)
    if ledger is None:
        return
    with ledger:
        name = resolve_job(ledger, job)
        columns = ledger.columns() + (
            ["label", "meta"] if name is not None else []
        )  # the job gives these
        write_tasks(sys.stdout, ledger.rows(name, state), columns, fmt or "text")


# -- the sandbox and the schemas ----------------------------------------------------------------


@main.command("credits")
@send_options
def credits_command(sandbox: bool, api_key_file: str | None, base_url: str) -> None:
    """The account's balance (get_credits)."""
    with api_target(
        sandbox=sandbox, base_url=base_url, api_key_file=api_key_file, need_key=True
    ) as target:
        with api.Api(target.base_url, target.key) as client:
            balance, why = credits.read_balance(client)
    if balance is None:
        raise BalanceUnknown(f"the balance could not be read: {why}")
    click.echo(f"{balance:,} credits")


@main.command()
@click.argument("job", required=False)
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(dir_okay=False),
    help="Price rules (a YAML file with prices: [...]).",
)
@api_base_option
def prices(job: str | None, prices_file: str | None, base_url: str) -> None:
    """Every known price and where it came from: declared (JOB's prices:, --prices) or learned
    from a run's balance. With a job file: the price of each class of request it asks for."""
    ledger = _read_only(job if job and os.path.isfile(job) else None)
    with contextlib.ExitStack() as stack:
        if ledger is not None:
            stack.enter_context(ledger)
        for line in credits.price_report(
            job if job and os.path.isfile(job) else None,
            ledger,
            prices_file,
            canonical_base_url(base_url),
        ):
            click.echo(line)


@main.command()
@click.argument("name", type=click.Choice(list(schemas.SCHEMA_NAMES)))
def schema(name: str) -> None:
    """Print the JSON Schema for a job file or a request body."""
    click.echo(schemas.schema_text(name), nl=False)


for command in (init_command, sandbox_command, review_command, promote_command, models_command):
    main.add_command(command)

if __name__ == "__main__":  # pragma: no cover
    main()
