"""Where a command's words go: results to stdout, everything else to stderr.

`Terminal` is the `Console` (see runner.py) of a real command."""

from __future__ import annotations

import os
import sys

import click

QUIET, NORMAL, VERBOSE = -1, 0, 1
_verbosity = NORMAL  # batchgen --quiet / --verbose (set_verbosity), for every Terminal made


def set_verbosity(level: int) -> None:
    global _verbosity
    _verbosity = level


def verbosity() -> int:
    return _verbosity


class Terminal:
    """The `Console` of a real command: results to stdout, the rest to stderr.

    `--quiet` keeps, of the rest, only errors and warnings (the results still go to stdout);
    `--verbose` adds the details (`detail`: a line per request as it ends).

    A stdout closed early (`batchgen run … | head -1`) stops the output, never the command:
    the run goes on, records everything, and exits as it would have."""

    def __init__(self, *, results_to_stderr: bool = False) -> None:
        self.interactive = sys.stdin.isatty() and sys.stdout.isatty()
        self.verbose = _verbosity >= VERBOSE
        self.quiet = _verbosity <= QUIET
        # A command printing JSON on stdout (`--json`) says everything else on stderr.
        self._results_to_stderr = results_to_stderr
        self._stdout_closed = False

    def out(self, line: str) -> None:
        if self._results_to_stderr:
            self.err(line)
            return
        self.json(line)

    def json(self, line: str) -> None:
        """A line of the command's own output on stdout, whatever else goes to stderr."""
        if self._stdout_closed:
            return
        try:
            click.echo(line)
        except BrokenPipeError:
            self._stdout_closed = True
            _point_stdout_at_devnull()

    def err(self, line: str) -> None:
        if self.quiet and not line.lstrip().startswith(("error", "warning")):
            return
        try:
            click.echo(line, err=True)
        except BrokenPipeError:
            pass

    def detail(self, line: str) -> None:
        """A line for --verbose only."""
        if self.verbose:
            self.err(line)

    def confirm(self, question: str) -> bool:
        return click.confirm(question, default=False)


def _point_stdout_at_devnull() -> None:
    # So that the interpreter's last flush of stdout does not fail either.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
