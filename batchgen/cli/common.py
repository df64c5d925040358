"""What the command modules share: the project a command works in, and a ledger opened only
to read."""

from __future__ import annotations

from typing import Any

import click

from ..app.session import open_ledger
from ..errors import NoLedger
from ..ledger import Ledger
from ..ledger.location import locate
from ..output.console import Terminal


def project_of(job: str | None) -> Any:
    """The project of `job` (a path or a name), with the --ledger the group was given."""
    return locate(job, click.get_current_context().obj["ledger"])


def read_only(job: str | None) -> Ledger | None:
    """The project's ledger, or None (said so) when there is none: reading never creates one."""
    try:
        ledger = open_ledger(project_of(job), Terminal(), create=False)
    except NoLedger as e:
        click.echo(f"{e}", err=True)
        return None
    return ledger
