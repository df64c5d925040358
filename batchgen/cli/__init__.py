"""The command line: parse, call the stage that does the work, print. Nothing else lives here.

One module per family of commands (check, run, follow, reads, review, models, init, ledger,
keys), the options they share in options.py, one console (output.console.Terminal); `sandbox`
is the default provider's own command. Errors become a message and an exit code in one place,
`BatchgenGroup.invoke`; the use cases live in app/; which ledger a command uses is decided by
ledger/location.py.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from .. import __version__, providers
from ..app.session import interrupted_exit
from ..errors import EXIT_ABORTED, BatchgenError, JobError
from ..ledger import FAILURES as ledger_failures
from ..output.console import NORMAL, QUIET, VERBOSE, Terminal, set_verbosity
from ..output.reports import problem_lines
from ..providers.keys import redact_secrets

# Each command by name, as "module:attribute" under batchgen.cli, in the order help lists them.
# Imported when it is run (or its help shown): `status` or `--version` need not load what `run`
# does (the HTTP client, the expansion, Jinja2, the web pages), a quarter of a second that every
# command paid before it started. (click's documented pattern for lazily loaded subcommands.)
COMMANDS = {
    "validate": "check:validate",
    "plan": "check:plan",
    "run": "run:run",
    "poll": "follow:poll",
    "download": "follow:download",
    "gallery": "follow:gallery",
    "runs": "reads:runs",
    "status": "reads:status",
    "tasks": "reads:tasks",
    "credits": "reads:credits_command",
    "prices": "reads:prices",
    "schema": "check:schema",
    "init": "init:init_command",
    "sandbox": "",  # the default provider's own (Description.sandbox_command)
    "review": "review:review",
    "promote": "review:promote",
    "models": "models:models_command",
    "ledger": "ledger:ledger_command",
    "keys": "keys:keys_command",
}


class BatchgenGroup(click.Group):
    """Loads each command when it is asked for (`COMMANDS`), and turns every error a user can
    cause into a message and an exit code, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        if not where:  # a provider's: "package.module:attribute", anywhere
            where = providers.named().sandbox_command
            if not where:
                return None
            module, attribute = where.split(":")
        else:
            module, attribute = where.split(":")
            module = f"{__name__}.{module}"
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        console = Terminal()
        try:
            return super().invoke(ctx)
        except JobError as e:
            for line in problem_lines(e.problems):
                console.err(redact_secrets(line))
            sys.exit(e.exit_code)
        except ledger_failures as e:
            # The ledger failed under us (disk full, locked past the timeout). Rows that were
            # being sent stay `sending` and become in_doubt at the next command; task ids
            # received meanwhile are in the journal. (Before BatchgenError: LedgerFailed is one.)
            console.err(redact_secrets(f"error: the ledger failed: {e}"))
            sys.exit(EXIT_ABORTED)
        except BatchgenError as e:
            console.err(redact_secrets(f"error: {e}"))
            sys.exit(e.exit_code)
        except KeyboardInterrupt as e:  # outside a run's own handling: nothing was being sent
            console.err("\ninterrupted")
            sys.exit(interrupted_exit(e))


@click.group(cls=BatchgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchgen")
@click.option(
    "--quiet", "-q", is_flag=True, help="Say only errors and warnings (and the results asked for)."
)
@click.option("--verbose", "-v", is_flag=True, help="Say more: a line per request as it ends.")
@click.option(
    "--ledger",
    envvar="BATCHGEN_LEDGER",
    type=click.Path(dir_okay=False),
    help="The ledger: a SQLite file, or a postgresql:// URL (or BATCHGEN_LEDGER). Default: the"
    " one batchgen.yaml names, else batchgen.db of the job's project.",
)
@click.pass_context
def main(ctx: click.Context, quiet: bool, verbose: bool, ledger: str | None) -> None:
    """Batch runner for AI video generation: job files in, videos and a ledger out.

    Shell completion: eval "$(_BATCHGEN_COMPLETE=bash_source batchgen)" in ~/.bashrc
    (zsh_source in ~/.zshrc, fish_source for fish)."""
    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose say opposite things: give one")
    set_verbosity(QUIET if quiet else VERBOSE if verbose else NORMAL)
    ctx.obj = {"ledger": ledger}


if __name__ == "__main__":  # pragma: no cover
    main()
