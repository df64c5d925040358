"""`batchgen run`: its options; the run itself is runner.py's."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

import click

from ..app.run import RunOptions, execute_run
from ..app.session import api_target, job_provider
from ..errors import BatchgenError
from ..jobs.spec import load_job
from ..ledger import FAILURES as LEDGER_FAILURES
from ..ledger import Ledger
from ..ledger.location import Project
from ..output.console import Terminal
from ..output.reports import runs_report
from ..sending.limits import Backoff
from ..sending.run_report import DEFAULT_CONCURRENCY, DEFAULT_MAX_IDENTICAL_ERRORS, DEFAULT_RPM
from .common import project_of
from .options import (
    Finite,
    bounds_of,
    download_options,
    prices_option,
    send_options,
    unverified_option,
)


@click.command()
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
    help="Then download the completed videos to outputs/<job>/ (outputs/sandbox/<job>/ with"
    " --sandbox): with --wait, once every task has ended; without, what is done by then.",
)
@click.option(
    "--gallery",
    is_flag=True,
    help="Then write index.html beside the downloaded videos, side by side.",
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
    default=RunOptions.read_timeout,
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
@prices_option
@click.option(
    "--on-done",
    help="A shell command to run once at the end (BATCHGEN_JOB, BATCHGEN_EXIT, ... in its environment).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="At the end, one JSON object on stdout: the run's row of `runs` (as `runs --json`), everything else on stderr.",
)
@download_options
@send_options
@unverified_option
def run(
    job: str,
    as_json: bool,
    sandbox: bool,
    api_key_file: str | None,
    base_url: str | None,
    **flags: Any,
) -> None:
    """Validate JOB, then send every request not done yet, recording each in the ledger."""
    options = RunOptions(job_file=job, bounds=bounds_of(flags), **flags)
    console = Terminal(results_to_stderr=as_json)
    project = project_of(job)
    with api_target(
        sandbox=sandbox,
        base_url=base_url,
        api_key_file=api_key_file,
        need_key=not options.dry_run,
        provider=job_provider(job, project),
    ) as target:
        code = execute_run(options, target, project, console)
    if as_json:
        console.json(json.dumps(run_result(project, job, code), ensure_ascii=False))
    sys.exit(code)


def run_result(project: Project, job_file: str, exit_code: int) -> dict[str, Any]:
    """What `run --json` prints: this process's run of the job as `runs` holds it (none for a
    dry run, or a run refused before it began), and the command's exit code."""
    name = load_job(job_file, project.root).name
    row = None
    if project.ledger_exists():
        with contextlib.suppress(BatchgenError, *LEDGER_FAILURES):
            with Ledger(project.ledger, create=False) as ledger:
                row = ledger.runs.of_this_process(name)
    shown = runs_report([row], as_json=True)[0] if row else None
    return {"job": name, "exit_code": exit_code, "run": json.loads(shown) if shown else None}
