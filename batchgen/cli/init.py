"""`batchgen init`: make a folder ready for jobs (parsing and printing only; see starter.py)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..app.init import STARTER_JOB, init
from ..ledger.location import shown as url_shown


@click.command("init")
@click.argument("folder", type=click.Path(file_okay=False), default=".")
@click.option(
    "--ledger",
    "ledger_url",
    metavar="URL",
    help="A team's ledger on PostgreSQL: write batchgen.yaml naming it (commit it), and make its tables.",
)
def init_command(folder: str, ledger_url: str | None) -> None:
    """Make FOLDER (default: here) ready for batchgen jobs.

    Adds what batchgen writes (the ledger, its side files, outputs/) to .gitignore, writes a
    starter job at jobs/first.yaml and an empty ledger that makes FOLDER the project's root.
    Nothing that exists is changed: a job file stays as it is, and if a ledger is found at or
    above FOLDER its jobs go on using it."""
    done = init(Path(folder), ledger_url)
    here = done.folder

    def shown(path: Path) -> str:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)

    if done.ignored:
        click.echo(f"{shown(here / '.gitignore')}: ignores {', '.join(done.ignored)}")
    else:
        click.echo(f"{shown(here / '.gitignore')}: already ignores what batchgen writes")
    job = here / STARTER_JOB
    click.echo(
        f"{shown(job)}: " + ("a starter job" if done.job_written else "exists, left as it is")
    )
    assert done.ledger is not None
    if isinstance(done.ledger, str):  # a server's
        click.echo(
            f"{shown(here / 'batchgen.yaml')}: "
            + ("names" if done.config_written else "already names")
            + f" the project's ledger, {url_shown(done.ledger)}: commit it, and every clone uses it"
        )
    else:
        click.echo(
            f"{shown(done.ledger)}: "
            + (
                "a new, empty ledger: this folder is the project"
                if done.ledger_is_new
                else "the project's ledger, found here or above: jobs here use it"
            )
        )
    click.echo("next:")
    click.echo(f"  batchgen plan {shown(job)}")
    click.echo(
        f"  batchgen run {shown(job)} --sandbox --yes --wait   # a rehearsal: no key, no credits"
    )
