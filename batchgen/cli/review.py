"""`batchgen review` and `batchgen promote`: the second half of the two-pass loop (drafts,
then the winners at full quality). Parsing and printing only; review.py and promote.py work."""

from __future__ import annotations

import time
import webbrowser
from pathlib import Path

import click

from ..app import promote as promote_mod
from ..app.session import job_provider, named_job, open_ledger, output_folder, resolve_job
from ..output import words
from ..output.console import Terminal
from ..web import review_server as review_mod
from .common import project_of
from .options import chosen_api, field_list, page_options


@click.command()
@click.argument("job")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port on 127.0.0.1; 0 picks a free one.",
)
@page_options
@click.option("--no-open", is_flag=True, help="Don't open the page in a browser.")
def review(
    job: str,
    port: int,
    out: str | None,
    sandbox: bool,
    base_url: str | None,
    rows: str | None,
    cols: str | None,
    no_open: bool,
) -> None:
    """Serve the job's videos live on 127.0.0.1 to pick, reject, rate and note each one."""
    console = Terminal()
    project = project_of(job)
    with open_ledger(project, console, create=False) as ledger:
        name = named_job(resolve_job(ledger, job))
    session = review_mod.open_session(
        project.ledger,
        name,
        output_folder(name, out, chosen_api(sandbox, base_url, job_provider(job, project))),
        field_list(rows),
        field_list(cols),
    )
    with session.ledger, review_mod.serving(session, port) as server:
        console.out(f"serving {server.url}")
        console.err("marks go to the ledger's reviews table; Ctrl-C to stop")
        if not no_open:
            if not webbrowser.open(server.url):
                console.err(f"no browser could be opened here: open {server.url} yourself")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.err("stopped")


@click.command()
@click.argument("job")
@click.option("--picked", is_flag=True, help="The requests picked in the review.")
@click.option(
    "--rating-at-least",
    type=click.IntRange(1, 5),
    help="The requests rated N or more (with --picked: both).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Change a field of every request (model=wan2.2-pro, options.duration=8); repeatable.",
)
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(dir_okay=False),
    help="The new job file.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace the output file if it exists (never the job file itself).",
)
def promote(
    job: str,
    picked: bool,
    rating_at_least: int | None,
    overrides: tuple[str, ...],
    output: str,
    force: bool,
) -> None:
    """Write a new job file of the reviewed winners of JOB, with overrides applied."""
    if not picked and rating_at_least is None:
        raise click.UsageError("say which requests: --picked, --rating-at-least N, or both")
    promote_mod.check_output(Path(output), Path(job) if Path(job).is_file() else None, force=force)
    parsed = [promote_mod.parse_override(text) for text in overrides]
    console = Terminal()
    project = project_of(job)
    with open_ledger(project, console, create=False) as ledger:
        name = named_job(resolve_job(ledger, job))
        job_file = job if Path(job).is_file() else None
        count = promote_mod.promote(
            ledger,
            name,
            job_file,
            Path(output),
            picked=picked,
            rating_at_least=rating_at_least,
            overrides=parsed,
            root=project.root,
        )
    console.out(
        f"wrote {output}: {words.count(count, 'request')} from job {name!r}; check it with: batchgen plan {output}"
    )
