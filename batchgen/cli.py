"""The command line: parse, call the stage that does the work, print. Nothing else lives here."""

from __future__ import annotations

import functools
import json
import sys
import time
from typing import Any, Callable

import click

from . import __version__, schemas
from . import sandbox as sandbox_mod
from .errors import EXIT_USAGE, BatchgenError, JobError, UsageError
from .expand import DEFAULT_API_BASE, canonical_json
from .plan import Plan, plan_job, planned
from .report import problem_lines, problems_json
from .validate import Expansion, validate_job


def fails_cleanly(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can cause into a message and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except JobError as e:
            for line in problem_lines(e.problems):
                click.echo(line, err=True)
            sys.exit(e.exit_code)
        except BatchgenError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(e.exit_code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="batchgen")
@click.option(
    "--ledger",
    envvar="BATCHGEN_LEDGER",
    default="batchgen.db",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The SQLite ledger (or BATCHGEN_LEDGER).",
)
@click.pass_context
def main(ctx: click.Context, ledger: str) -> None:
    """Batch runner for AI video generation: job files in, videos and a ledger out."""
    ctx.obj = {"ledger": ledger}


def api_base_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--base-url",
        envvar="PIXWITH_BASE_URL",
        default=DEFAULT_API_BASE,
        show_default=True,
        help="The API's base URL (or PIXWITH_BASE_URL). Part of each request's identity.",
    )(command)


@main.command()
@click.argument("jobs", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@api_base_option
def validate(jobs: tuple[str, ...], fmt: str, base_url: str) -> None:
    """Check job files (both steps: the file, then every request). Sends nothing.

    Exit 0 when every file is valid, 2 when any is not.
    """
    failed = False
    for job in jobs:
        try:
            expansion = validate_job(job, base_url)
            problems, valid = expansion.warnings, True
        except JobError as e:
            problems, valid = e.problems, False
        failed = failed or not valid
        if fmt == "json":
            click.echo(problems_json(job, problems, valid))
            continue
        for line in problem_lines(problems):
            click.echo(line, err=True)
        if valid:
            click.echo(f"{job}: ok, {_requests_phrase(expansion)}")
    sys.exit(EXIT_USAGE if failed else 0)


def _requests_phrase(expansion: Expansion) -> str:
    models = ", ".join(f"{n} {m}" for m, n in sorted(expansion.by_model.items()))
    return f"{expansion.unique} requests ({models})"


@main.command()
@click.argument("job", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON object: job, api_base, counts, requests.")
@api_base_option
@fails_cleanly
def plan(job: str, as_json: bool, base_url: str) -> None:
    """Show what a run of JOB would send: counts by model and by action."""
    if as_json:
        expansion = validate_job(job, base_url)
        _echo_warnings(expansion)
        _plan_json(expansion, Plan(expansion.job.name, expansion.api_base))
        return
    expansion, result = plan_job(job, base_url)
    _echo_warnings(expansion)
    click.echo(f"job {result.job} against {result.api_base}: {sum(result.counts.values())} requests")
    for model, counts in sorted(result.by_model.items()):
        click.echo(f"  {model:<14} " + "  ".join(f"{action} {n}" for action, n in sorted(counts.items())))
    click.echo("would send " + str(result.counts.get("new", 0) + result.counts.get("failed", 0)))


def _echo_warnings(expansion: Expansion) -> None:
    for line in problem_lines(expansion.warnings):
        click.echo(line, err=True)


def _plan_json(expansion: Expansion, result: Plan) -> None:
    # Streamed: the requests are written as they are planned, and the counts come last in the
    # text but are a normal key of the one JSON object.
    out = sys.stdout
    out.write('{"job":%s,"api_base":%s,"requests":[' % (json.dumps(result.job), json.dumps(result.api_base)))
    for i, item in enumerate(planned(expansion)):
        result.count(item)
        row = {"key": item.request.key, "variant": item.request.variant, "body": item.request.body, "action": item.action}
        out.write(("," if i else "") + json.dumps(row, ensure_ascii=False))
    out.write('],"counts":%s}\n' % json.dumps(result.summary()))


@main.command()
@click.option("--port", type=int, default=sandbox_mod.DEFAULT_PORT, show_default=True, help="0 picks a free port.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random decision.")
@click.option("--key", "keys", multiple=True, help="Accept this API key too (the test key is always accepted).")
@click.option("--time-scale", type=float, default=1.0, show_default=True, help="Multiply each model's ETA (0.01: minutes become seconds).")
@click.option("--fail-fraction", type=float, default=0.0, show_default=True, help="Tasks that end in status 3.")
@click.option("--credit", type=int, help="Tasks to create before answering 'insufficient credit'.")
@click.option("--latency-ms", type=float, default=0.0, show_default=True, help="Added to every API answer.")
@click.option("--rpm-limit", type=int, help="Create calls per 60 s before answering 429 with Retry-After.")
@click.option("--rate-429", type=float, default=0.0, show_default=True, help="Random 429 with Retry-After.")
@click.option("--rate-503", type=float, default=0.0, show_default=True, help="Random 503 with Retry-After.")
@click.option("--rate-500", type=float, default=0.0, show_default=True, help="Random 500 (nothing created).")
@click.option("--drop-rate", type=float, default=0.0, show_default=True, help="Close the connection before processing.")
@click.option("--lose-answer-rate", type=float, default=0.0, show_default=True, help="Create the task, then close without answering.")
@click.option("--slow-rate", type=float, default=0.0, show_default=True, help="Create the task, answer after --slow-seconds.")
@click.option("--slow-seconds", type=float, default=5.0, show_default=True)
@click.option("--cut-download-rate", type=float, default=0.0, show_default=True, help="Close result files half way.")
@fails_cleanly
def sandbox(port: int, keys: tuple[str, ...], **settings: Any) -> None:
    """Serve the built-in sandbox API on 127.0.0.1 until Ctrl-C.

    Same endpoints and rules as the real API; accepts the test key
    key_00000000000000000000000000000000. GET /_sandbox/stats shows what it received.
    """
    config = sandbox_mod.SandboxConfig(keys=(sandbox_mod.TEST_KEY, *keys), **settings)
    try:
        with sandbox_mod.running(config, port) as served:
            click.echo(f"sandbox listening on {served.base_url} (test key {sandbox_mod.TEST_KEY}); Ctrl-C stops it")
            while True:
                time.sleep(3600)
    except sandbox_mod.SandboxPortBusy as e:
        raise UsageError(f"{e}; pick another with --port") from None
    except KeyboardInterrupt:
        click.echo("sandbox stopped")


@main.command()
@click.argument("name", type=click.Choice(list(schemas.SCHEMA_NAMES)))
def schema(name: str) -> None:
    """Print the JSON Schema for a job file or a request body."""
    click.echo(schemas.schema_text(name), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
