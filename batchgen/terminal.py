"""The terminal side of the command line: where words go, and numbers click cannot check.

`Terminal` is the `Console` (see runner.py) of a real command; `Finite` is a click parameter
type that refuses `nan` and `inf`, which click.FloatRange lets through.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

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


class Finite(click.ParamType):
    """A finite number within a range: `nan` and `inf` are refused, unlike click.FloatRange."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None):
        self.low, self.high = low, high

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            self.fail(f"{value} is not in the range {self.low}–{self.high}", param, ctx)
        return number
