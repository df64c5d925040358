"""Following what was sent: `poll`, `download`, `gallery`."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..app.follow import download_job, poll_job, write_gallery
from ..app.session import (
    api_target,
    job_provider,
    named_job,
    open_ledger,
    output_folder,
    resolve_job,
)
from ..output.console import Terminal
from ..sending.run_report import DEFAULT_RPM
from .common import project_of
from .options import (
    all_option,
    api_base_option,
    bounds_of,
    chosen_api,
    download_options,
    field_list,
    page_options,
    send_options,
)


@click.command()
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
    base_url: str | None,
) -> None:
    """Check submitted tasks that have not ended; record status and result URLs."""
    project = project_of(job)
    with api_target(
        sandbox=sandbox,
        base_url=base_url,
        api_key_file=api_key_file,
        need_key=True,
        provider=job_provider(job, project),
    ) as target:
        code = poll_job(
            project,
            job,
            target,
            Terminal(),
            all_tasks=all_tasks,
            wait=wait,
            rpm=rpm,
            concurrency=concurrency,
            on_done_command=on_done,
        )
    sys.exit(code)


@click.command()
@click.argument("job")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Folder for the videos (default outputs/<job>/; a rehearsal's: outputs/sandbox/<job>/).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Files downloaded at once, at most.",
)
@click.option(
    "--sandbox",
    is_flag=True,
    help="The videos of the rehearsal on the built-in sandbox (served while downloading).",
)
@api_base_option
@download_options
@all_option
def download(
    job: str,
    out: str | None,
    concurrency: int,
    sandbox: bool,
    base_url: str | None,
    include_superseded: bool,
    **flags: Any,
) -> None:
    """Save every completed task's videos, atomically; skip those already on disk. Only the
    tasks sent to one API: the one --base-url names (the real one by default), or the
    sandbox's with --sandbox, each into a folder of its own."""
    console = Terminal()
    bounds = bounds_of(flags)
    project = project_of(job)
    with api_target(
        sandbox=sandbox,
        base_url=base_url,
        api_key_file=None,
        need_key=False,
        provider=job_provider(job, project),
    ) as target:
        with open_ledger(project, console, create=False) as ledger:
            name = named_job(resolve_job(ledger, job))
            folder = output_folder(name, out, target.identity_base)
            sys.exit(
                download_job(
                    ledger,
                    name,
                    folder,
                    target if sandbox else None,
                    console,
                    concurrency=concurrency,
                    bounds=bounds,
                    current_only=not include_superseded,
                    api_base=target.identity_base,
                )
            )


@click.command()
@click.argument("job")
@page_options
@click.option("--open", "open_it", is_flag=True, help="Open the page in a browser.")
@all_option
def gallery(
    job: str,
    out: str | None,
    rows: str | None,
    cols: str | None,
    open_it: bool,
    sandbox: bool,
    base_url: str | None,
    include_superseded: bool,
) -> None:
    """Write a page showing the job's videos side by side: index.html beside them."""
    console = Terminal()
    project = project_of(job)
    api = chosen_api(sandbox, base_url, job_provider(job, project))
    with open_ledger(project, console, create=False) as ledger:
        name = named_job(resolve_job(ledger, job))
        path = write_gallery(
            ledger,
            name,
            output_folder(name, out, api),
            console,
            field_list(rows),
            field_list(cols),
            current_only=not include_superseded,
        )
    if open_it:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            console.err(f"no browser could be opened here: open {path.resolve().as_uri()} yourself")
