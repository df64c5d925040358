"""`batchgen ledger push` and `batchgen ledger pull`: a ledger moved between a SQLite file and
a PostgreSQL server (see ledger/copying.py). Parsing and printing only."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from ..ledger import Ledger
from ..ledger.copying import copy_ledger
from ..ledger.location import is_url, shown
from ..output.console import Terminal
from .common import project_of


@click.group("ledger")
def ledger_command() -> None:
    """Move a ledger between a SQLite file and a PostgreSQL server."""


def _server(given: str | None, option: str) -> str:
    """The server's URL: given, or the project's ledger when that is one."""
    location = given if given is not None else project_of(None).ledger
    if not is_url(location):
        raise UsageError(
            f"{option}: expected a postgresql:// URL (or a project whose ledger is one:"
            f" --ledger, BATCHGEN_LEDGER, batchgen.yaml), got {shown(location)}"
        )
    return str(location)


@ledger_command.command("push")
@click.argument("sqlite_file", type=click.Path(dir_okay=False))
@click.option("--to", "to", metavar="URL", help="The PostgreSQL ledger (default: the project's).")
def push(sqlite_file: str, to: str | None) -> None:
    """Copy the ledger SQLITE_FILE into an empty PostgreSQL ledger, keys, task ids and runs
    unchanged: a rerun from it sends nothing that was sent. SQLITE_FILE is left as it was."""
    console = Terminal()
    server = _server(to, "--to")
    with Ledger.open(Path(sqlite_file), create=False) as source, Ledger.open(server) as target:
        copied = copy_ledger(source, target)
    console.out(
        f"copied {copied.describe()} from {sqlite_file} to {shown(server)}; nothing was sent"
    )
    console.err(
        f"from now on name the server's ledger (ledger: in batchgen.yaml, --ledger or"
        f" BATCHGEN_LEDGER); runs from {sqlite_file} would not be seen by the others"
    )


@ledger_command.command("pull")
@click.argument("sqlite_file", type=click.Path(dir_okay=False))
@click.option(
    "--from", "source_url", metavar="URL", help="The PostgreSQL ledger (default: the project's)."
)
def pull(sqlite_file: str, source_url: str | None) -> None:
    """Copy a PostgreSQL ledger into SQLITE_FILE (new, or an empty ledger): a local copy to
    read, query or keep. The server's ledger is left as it was."""
    console = Terminal()
    server = _server(source_url, "--from")
    with Ledger.open(server, create=False) as source, Ledger.open(Path(sqlite_file)) as target:
        copied = copy_ledger(source, target)
    console.out(f"copied {copied.describe()} from {shown(server)} to {sqlite_file}")
