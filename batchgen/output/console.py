"""Where a command's words go: results to stdout, everything else to stderr.

`Terminal` is the `Console` (see runner.py) of a real command."""

from __future__ import annotations

import os
import sys

import click


class Terminal:
    """The `Console` of a real command: results to stdout, the rest to stderr.

    A stdout closed early (`batchgen run … | head -1`) stops the output, never the command:
    the run goes on, records everything, and exits as it would have."""

    def __init__(self) -> None:
        self.interactive = sys.stdin.isatty() and sys.stdout.isatty()
        self._stdout_closed = False

    def out(self, line: str) -> None:
        if self._stdout_closed:
            return
        try:
            click.echo(line)
        except BrokenPipeError:
            self._stdout_closed = True
            _point_stdout_at_devnull()

    def err(self, line: str) -> None:
        try:
            click.echo(line, err=True)
        except BrokenPipeError:
            pass

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
