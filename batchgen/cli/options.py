"""The options several commands share, in one place, and the parameter types click lacks.

`Finite` is a click parameter type that refuses `nan` and `inf`, which click.FloatRange lets
through.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import click

from ..app.session import api_base_of
from ..providers import Description
from ..results.bounds import DEFAULT_DEADLINE, DEFAULT_MAX_FILE_SIZE, DEFAULT_STALL_TIMEOUT, Bounds


# click >= 8.2 makes ParamType generic; subscripting it would break click 8.1 at import.
class Finite(click.ParamType):  # type: ignore[type-arg]
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
        if (self.low is not None and number < self.low) or (
            self.high is not None and number > self.high
        ):
            self.fail(f"{value} is not in the range {self.low}–{self.high}", param, ctx)
        return number


# -- options several commands share -----------------------------------------------------


def api_base_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--base-url",
        help="The API's base URL (default: the provider's own, or the base-URL variable the"
        " provider names). Part of each request's identity.",
    )(command)


def prices_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`--prices FILE`: price rules beside the job's (plan, run, prices)."""
    return click.option(
        "--prices",
        "prices_file",
        type=click.Path(dir_okay=False),
        help="Price rules (a YAML file with prices: [...]), beside the job's.",
    )(command)


def unverified_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--allow-unverified-models",
        "allow_unverified",
        is_flag=True,
        help="Accept models whose pages contradict themselves (`batchgen models` says why); their rules may be wrong.",
    )(command)


def send_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Where to send, with what key: shared by run, poll and download."""
    command = click.option(
        "--api-key-file",
        type=click.Path(dir_okay=False),
        help="Read the API key from this file (else the provider's key variable, else the"
        " stored key).",
    )(command)
    command = click.option(
        "--sandbox", is_flag=True, help="Start the built-in sandbox and use it with the test key."
    )(command)
    return api_base_option(command)


def download_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in (
        click.option(
            "--max-file-size",
            type=click.IntRange(1),
            default=DEFAULT_MAX_FILE_SIZE,
            show_default=True,
            help="Bytes per file, at most.",
        ),
        click.option(
            "--file-deadline",
            type=Finite(0.1),
            default=DEFAULT_DEADLINE,
            show_default=True,
            help="Seconds per file, at most.",
        ),
        click.option(
            "--stall-timeout",
            type=Finite(0.1),
            default=DEFAULT_STALL_TIMEOUT,
            show_default=True,
            help="Seconds without a byte before a download is abandoned.",
        ),
    ):
        command = option(command)
    return command


def bounds_of(flags: dict[str, Any]) -> Bounds:
    return Bounds(
        max_file_size=flags.pop("max_file_size"),
        deadline=flags.pop("file_deadline"),
        stall_timeout=flags.pop("stall_timeout"),
    )


def all_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--all",
        "include_superseded",
        is_flag=True,
        help="Also the requests the job file no longer asks for (superseded by an edit).",
    )(command)


def page_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The folder and layout of a job's page: shared by gallery and review."""
    command = click.option(
        "--cols", help="Comma-separated fields for columns (default: the other fields that vary)."
    )(command)
    command = click.option("--rows", help="Comma-separated fields for rows (default: prompt).")(
        command
    )
    command = click.option(
        "--sandbox",
        is_flag=True,
        help="The rehearsal on the built-in sandbox: its folder, outputs/sandbox/<job>/.",
    )(command)
    command = api_base_option(command)
    return click.option(
        "--out",
        type=click.Path(file_okay=False),
        help="The job's download folder (default outputs/<job>/ for the API it is paid on).",
    )(command)


def chosen_api(sandbox: bool, base_url: str | None, provider: Description) -> str:
    """The API whose results a command shows (`--sandbox`, else `--base-url`, else the
    provider's own), as the ledger records it: each has its own output folder
    (`session.output_folder`)."""
    return provider.sandbox_identity if sandbox else api_base_of(provider, base_url)


def field_list(text: str | None) -> list[str] | None:
    """`--rows prompt,model` → ["prompt", "model"]; None when not given."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else None
