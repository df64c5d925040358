"""The command line: parse, call the stage that does the work, print. Nothing else lives here."""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import sqlite3
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from . import __version__, api, models, results, schemas
from . import gallery as gallery_mod
from . import sandbox as sandbox_mod
from .display import ProgressDisplay, summary_lines, table, when_due
from .ledger import STATES, Ledger
from .limits import Backoff, RateLimiter
from .spec import load_job
from .submit import DEFAULT_CONCURRENCY, DEFAULT_MAX_IDENTICAL_ERRORS, DEFAULT_RPM, Interrupted, RunSettings, Submission
from .errors import EXIT_ABORTED, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_USAGE, BatchgenError, JobError, UsageError
from .expand import DEFAULT_API_BASE
from .plan import Plan, StateLookup, no_ledger, plan_job, planned, prepare_run
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
        except KeyboardInterrupt:  # outside a run's own handling: nothing was being sent
            click.echo("\ninterrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except sqlite3.Error as e:
            # The ledger failed under us (disk full, locked past the timeout). Rows that were
            # being sent stay `sending` and become in_doubt at the next run: none is lost.
            click.echo(f"error: the ledger failed: {e}", err=True)
            sys.exit(EXIT_INCOMPLETE)

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
@click.pass_context
@fails_cleanly
def plan(ctx: click.Context, job: str, as_json: bool, base_url: str) -> None:
    """Show what a run of JOB would send: counts by model and by action (new, done,
    failed, rejected, in_doubt) from what the ledger knows. Sends and writes nothing."""
    with contextlib.ExitStack() as stack:
        # Read the ledger if there is one; planning never creates one.
        ledger = stack.enter_context(Ledger(ctx.obj["ledger"])) if os.path.exists(ctx.obj["ledger"]) else None
        states = ledger.states if ledger else no_ledger
        if as_json:
            expansion = validate_job(job, base_url)
            _echo_warnings(expansion)
            _plan_json(expansion, Plan(expansion.job.name, expansion.api_base), states)
            return
        expansion, result = plan_job(job, base_url, states)
    _echo_warnings(expansion)
    click.echo(f"job {result.job} against {result.api_base}: {sum(result.counts.values())} requests")
    for model, counts in sorted(result.by_model.items()):
        click.echo(f"  {model:<14} " + "  ".join(f"{action} {n}" for action, n in sorted(counts.items())))
    click.echo("a run would send " + str(result.counts.get("new", 0) + result.counts.get("failed", 0)))


def _echo_warnings(expansion: Expansion) -> None:
    for line in problem_lines(expansion.warnings):
        click.echo(line, err=True)


def _plan_json(expansion: Expansion, result: Plan, states: StateLookup) -> None:
    # Streamed: the requests are written as they are planned, and the counts come last in the
    # text but are a normal key of the one JSON object.
    out = sys.stdout
    out.write('{"job":%s,"api_base":%s,"requests":[' % (json.dumps(result.job), json.dumps(result.api_base)))
    for i, item in enumerate(planned(expansion, states)):
        result.count(item)
        row = {"key": item.request.key, "variant": item.request.variant, "body": item.request.body, "action": item.action}
        out.write(("," if i else "") + json.dumps(row, ensure_ascii=False))
    out.write('],"counts":%s}\n' % json.dumps(result.summary()))


# -- sending ----------------------------------------------------------------------------------

CONFIRM_ABOVE = 20  # on a terminal, ask before sending more requests than this
SANDBOX_TIME_SCALE = 0.02  # `--sandbox`: a 240 s generation takes about 5 s


def read_api_key(api_key_file: str | None) -> str | None:
    """The key from --api-key-file, else PIXWITH_API_KEY. Never echoed anywhere."""
    if api_key_file:
        try:
            key = open(api_key_file, encoding="utf-8").read().strip()
        except OSError as e:
            raise UsageError(f"cannot read the API key file {api_key_file}: {e.strerror}") from None
        if not key:
            raise UsageError(f"the API key file {api_key_file} is empty")
        return key
    return os.environ.get("PIXWITH_API_KEY") or None


@contextlib.contextmanager
def api_target(use_sandbox: bool, base_url: str, api_key_file: str | None, *, need_key: bool) -> Iterator[tuple[str, str]]:
    """(base URL, key) to send to: the built-in sandbox, or the configured API."""
    if not use_sandbox:
        base = api.check_base_url(base_url)
        key = read_api_key(api_key_file)
        if need_key and not key:
            raise UsageError("no API key: set PIXWITH_API_KEY or pass --api-key-file (or try --sandbox)")
        yield base, key or ""
        return
    port = sandbox_mod.DEFAULT_PORT
    base = f"http://127.0.0.1:{port}"
    if sandbox_mod.is_sandbox(base, timeout=0.5):  # `batchgen sandbox` is already serving there
        yield base, sandbox_mod.TEST_KEY
        return
    config = sandbox_mod.SandboxConfig(time_scale=SANDBOX_TIME_SCALE)
    try:
        with sandbox_mod.running(config, port) as served:
            yield served.base_url, sandbox_mod.TEST_KEY
    except sandbox_mod.SandboxPortBusy as e:
        raise UsageError(f"{e}: --sandbox needs that port (it is part of the sandbox requests' identity)") from None


def send_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Where to send, with what key: shared by run, poll and download."""
    for option in reversed(
        [
            click.option("--sandbox", is_flag=True, help="Start the built-in sandbox and use it with the test key."),
            click.option("--api-key-file", type=click.Path(dir_okay=False), help="Read the API key from this file (else PIXWITH_API_KEY)."),
        ]
    ):
        command = option(command)
    return api_base_option(command)


@main.command()
@click.argument("job", type=click.Path(dir_okay=True))
@click.option("--rpm", type=click.IntRange(0), help=f"Create calls per minute, at most (job's limits.rpm, else {DEFAULT_RPM}); 0: no ceiling.")
@click.option("--concurrency", type=click.IntRange(1, 256), help=f"Calls in flight, at most (job's limits.concurrency, else {DEFAULT_CONCURRENCY}).")
@click.option("--limit", type=click.IntRange(0), help="Send at most N requests this run.")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send and write nothing.")
@click.option("--yes", "-y", is_flag=True, help="Don't ask for confirmation.")
@click.option("--retry-rejected", is_flag=True, help="Send again the requests the API rejected.")
@click.option("--resubmit-in-doubt", is_flag=True, help="Send again the requests whose outcome is unknown (may duplicate).")
@click.option("--wait", is_flag=True, help="Then poll until every task of the job has ended.")
@click.option("--download", is_flag=True, help="Then download the completed videos to outputs/<job>/ (with --wait).")
@click.option("--gallery", is_flag=True, help="Then write outputs/<job>/index.html, the videos side by side.")
@click.option("--max-identical-errors", type=click.IntRange(1), default=DEFAULT_MAX_IDENTICAL_ERRORS, show_default=True, help="Stop after this many requests in a row end with the same error.")
@click.option("--max-attempts", type=click.IntRange(1), default=Backoff.max_attempts, show_default=True, help="Calls per request when the API refuses before processing (429, 503, connect errors).")
@click.option("--read-timeout", type=click.FloatRange(0.1), default=api.DEFAULT_TIMEOUT.read, show_default=True, help="Seconds to wait for an answer; past it the request is in doubt.")
@send_options
@click.pass_context
@fails_cleanly
def run(ctx: click.Context, job: str, sandbox: bool, api_key_file: str | None, base_url: str, **flags: Any) -> None:
    """Validate JOB, then send every request not done yet, recording each in the ledger."""
    with api_target(sandbox, base_url, api_key_file, need_key=not flags["dry_run"]) as (api_base, api_key):
        expansion = validate_job(job, api_base)
        _echo_warnings(expansion)
        limits = expansion.job.limits
        settings = RunSettings(
            rpm=(flags["rpm"] if flags["rpm"] is not None else limits.get("rpm") or DEFAULT_RPM) or None,
            concurrency=flags["concurrency"] or limits.get("concurrency") or DEFAULT_CONCURRENCY,
            retry_rejected=flags["retry_rejected"],
            resubmit_in_doubt=flags["resubmit_in_doubt"],
            backoff=Backoff(base=float(os.environ.get("BATCHGEN_BACKOFF_BASE", Backoff.base)), max_attempts=flags["max_attempts"]),
            max_identical_errors=flags["max_identical_errors"],
        )
        with Ledger(ctx.obj["ledger"]) as ledger:
            recovered = ledger.recover() if not flags["dry_run"] else 0
            if recovered:
                click.echo(f"{recovered} requests left 'sending' by an earlier run that ended are now in_doubt", err=True)
            plan, to_send = prepare_run(expansion, ledger, settings.resendable(), job, link=not flags["dry_run"])
            if flags["limit"] is not None:
                to_send = to_send[: flags["limit"]]
            click.echo(_plan_line(plan, len(to_send), settings, api_base))
            if flags["dry_run"]:
                for request in to_send:
                    click.echo(f"  would send {request.key[:12]} v{request.variant} {models.label(request.body['model_id'])}: {request.body.get('prompt', '')[:60]}")
                return
            if to_send and len(to_send) > CONFIRM_ABOVE and not flags["yes"] and _interactive():
                click.confirm(f"send {len(to_send)} requests (each may be billed)?", abort=True)
            # One limiter for the whole run: get-task calls after the sends share its pace.
            limiter = RateLimiter(settings.rpm)
            exit_code = _send(ctx, ledger, expansion, job, api_base, api_key, settings, to_send, flags, limiter)
            name = expansion.job.name
            if flags["wait"] and exit_code in (0, EXIT_INCOMPLETE):
                waited = _wait(ledger, api_base, api_key, name, limiter)
                exit_code = max(exit_code, waited) if waited != EXIT_INTERRUPTED else waited
            if flags["download"] and exit_code in (0, EXIT_INCOMPLETE):
                exit_code = max(exit_code, _download(ledger, name, Path("outputs") / name))
            if flags["gallery"] and exit_code in (0, EXIT_INCOMPLETE):
                _gallery(ledger, name, Path("outputs") / name)
    sys.exit(exit_code)


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _plan_line(plan: Plan, sending: int, settings: RunSettings, api_base: str) -> str:
    counts = ", ".join(f"{n} {a}" for a, n in sorted(plan.counts.items()))
    rpm = f"rpm {settings.rpm}" if settings.rpm else "no rpm ceiling"
    return f"{plan.job}: {sum(plan.counts.values())} requests ({counts}); sending {sending} to {api_base} ({rpm}, concurrency {settings.concurrency})"


def _send(
    ctx: click.Context,
    ledger: Ledger,
    expansion: Expansion,
    job_file: str,
    api_base: str,
    api_key: str,
    settings: RunSettings,
    to_send: list[Any],
    flags: dict[str, Any],
    limiter: RateLimiter,
) -> int:
    name = expansion.job.name
    run_id = ledger.start_run(name, job_file, api_base, {k: v for k, v in flags.items()} | {"rpm": settings.rpm, "concurrency": settings.concurrency})
    progress = ProgressDisplay(len(to_send))
    with api.Api(api_base, api_key, timeout=api.timeout(flags["read_timeout"]), max_connections=settings.concurrency) as client:
        submission = Submission(
            ledger, client, settings, job=name, api_base=api_base, run_id=run_id, progress=progress, limiter=limiter
        )

        def interrupted(in_flight: int) -> None:
            click.echo(f"\nstopping: waiting for {in_flight} calls in flight (Ctrl-C again to quit at once)", err=True)

        try:
            report = submission.run(to_send, on_interrupt=interrupted)
            progress.finish()
        except Interrupted:
            ledger.end_run(run_id, {"interrupted": "twice"}, EXIT_INTERRUPTED)
            click.echo("quit: calls in flight are now in_doubt", err=True)
            return EXIT_INTERRUPTED
    states = Counter(ledger.job_states(name))
    unsent = ledger.unsent_count(name)
    for line in summary_lines(name, job_file, report, states, ledger.last_due(name), unsent):
        click.echo(line)
    unresolved = sum(states.get(s, 0) for s in ("rejected", "failed", "in_doubt"))
    exit_code = report.exit_code(unresolved)
    ledger.end_run(run_id, dict(report.outcomes) | {"calls": report.calls, "aborted": report.aborted}, exit_code)
    return exit_code


# -- results -----------------------------------------------------------------------------------


def _wait(ledger: Ledger, api_base: str, api_key: str, job: str, limiter: RateLimiter) -> int:
    """Poll until every task of `job` has ended; the exit code it deserves."""
    tty = sys.stderr.isatty()
    last = [""]

    def show(counts: dict[str, int]) -> None:
        line = f"waiting: {counts['processing']} processing, {counts['completed']} completed, {counts['failed']} failed"
        if line != last[0]:
            click.echo(("\r" + line.ljust(70)) if tty else line, err=True, nl=not tty)
            last[0] = line

    stop = threading.Event()
    with api.Api(api_base, api_key) as client:
        try:
            report = results.wait_for(ledger, client, job, limiter=limiter, on_progress=show, stop=stop)
        except KeyboardInterrupt:
            stop.set()
            click.echo("\nstopped waiting; batchgen poll or run --wait picks up where this left", err=True)
            return EXIT_INTERRUPTED
    if tty:
        click.echo("", err=True)
    click.echo(f"tasks ended: {report.completed} completed, {report.failed} failed" + (f", {report.processing} still processing" if report.processing else ""))
    if report.unknown:
        click.echo(f"{len(report.unknown)} task ids unknown to the API: {', '.join(report.unknown[:5])}")
    if report.aborted:
        click.echo(f"stopped: {report.aborted}", err=True)
        return EXIT_ABORTED
    if report.gave_up:
        click.echo(f"stopped waiting: {report.gave_up}", err=True)
    return EXIT_INCOMPLETE if report.failed or report.unknown or report.processing else 0


@main.command()
@click.argument("job", required=False)
@click.option("--all", "all_tasks", is_flag=True, help="Check every unfinished task, not only those past their ETA.")
@click.option("--wait", is_flag=True, help="Keep polling until every task has ended.")
@click.option("--rpm", type=click.IntRange(0), default=DEFAULT_RPM, show_default=True, help="Get-task calls per minute, at most; 0: no ceiling.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True, help="Get-task calls in flight, at most.")
@send_options
@click.pass_context
@fails_cleanly
def poll(
    ctx: click.Context, job: str | None, all_tasks: bool, wait: bool, rpm: int, concurrency: int,
    sandbox: bool, api_key_file: str | None, base_url: str,
) -> None:
    """Check submitted tasks that have not ended; record status and result URLs."""
    with api_target(sandbox, base_url, api_key_file, need_key=True) as (api_base, api_key), Ledger(ctx.obj["ledger"]) as ledger:
        name = resolve_job(ledger, job)
        if wait:
            if name is None:
                raise UsageError("poll --wait needs a job")
            sys.exit(_wait(ledger, api_base, api_key, name, RateLimiter(rpm or None)))
        due = results.pending(ledger, name, due_only=not all_tasks)
        with api.Api(api_base, api_key) as client:
            report = results.poll(ledger, client, due, limiter=RateLimiter(rpm or None), concurrency=concurrency)
    click.echo(f"checked {report.checked}: {report.completed} completed, {report.failed} failed, {report.processing} processing")
    if report.unknown:
        click.echo(f"{len(report.unknown)} task ids unknown to the API: {', '.join(report.unknown[:5])}", err=True)
    if report.errors:
        click.echo(f"{report.errors} could not be checked (network); poll again later", err=True)
    if report.aborted:
        click.echo(f"stopped: {report.aborted}", err=True)
        sys.exit(EXIT_ABORTED)
    sys.exit(EXIT_INCOMPLETE if report.unknown or report.errors else 0)


@main.command()
@click.argument("job")
@click.option("--out", type=click.Path(file_okay=False), help="Folder for the videos (default outputs/<job>/).")
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--sandbox", is_flag=True, help="Serve the built-in sandbox's result files while downloading.")
@click.pass_context
@fails_cleanly
def download(ctx: click.Context, job: str, out: str | None, concurrency: int, sandbox: bool) -> None:
    """Save every completed task's videos, atomically; skip those already on disk."""
    with contextlib.ExitStack() as stack:
        if sandbox:
            stack.enter_context(api_target(True, "", None, need_key=False))
        ledger = stack.enter_context(Ledger(ctx.obj["ledger"]))
        name = resolve_job(ledger, job)
        assert name is not None
        exit_code = _download(ledger, name, Path(out) if out else Path("outputs") / name, concurrency)
    sys.exit(exit_code)


def _download(ledger: Ledger, name: str, folder: Path, concurrency: int = 4) -> int:
    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        if tty:
            click.echo(f"\rdownloading {done}/{total}", err=True, nl=done == total)

    report = results.download(ledger, name, folder, concurrency=concurrency, on_progress=show)
    click.echo(f"{folder}: {report.downloaded} downloaded ({report.bytes:,} bytes), {report.skipped} already there; manifest.csv")
    for failure in report.failed:
        click.echo(f"  failed: {failure}", err=True)
    return EXIT_INCOMPLETE if report.failed else 0


def _axes(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


@main.command()
@click.argument("job")
@click.option("--out", type=click.Path(file_okay=False), help="The job's download folder (default outputs/<job>/).")
@click.option("--rows", help="Comma-separated fields for rows (default: prompt).")
@click.option("--cols", help="Comma-separated fields for columns (default: the other fields that vary).")
@click.option("--open", "open_it", is_flag=True, help="Open the page in a browser.")
@click.pass_context
@fails_cleanly
def gallery(ctx: click.Context, job: str, out: str | None, rows: str | None, cols: str | None, open_it: bool) -> None:
    """Write a page showing the job's videos side by side: index.html beside them."""
    with Ledger(ctx.obj["ledger"]) as ledger:
        name = resolve_job(ledger, job)
        assert name is not None
        path = _gallery(ledger, name, Path(out) if out else Path("outputs") / name, _axes(rows), _axes(cols))
    if open_it:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


def _gallery(ledger: Ledger, name: str, folder: Path, rows: list[str] | None = None, cols: list[str] | None = None) -> Path:
    path = gallery_mod.write(ledger, name, folder, rows, cols)
    click.echo(f"gallery: {path}")
    return path


# -- reading the ledger -----------------------------------------------------------------------


def resolve_job(ledger: Ledger, job: str | None) -> str | None:
    """A job's name in the ledger, from a job file or a name; None means every job."""
    if job is None:
        return None
    if os.path.isfile(job):
        return load_job(job).name
    if job in ledger.job_names():
        return job
    known = ", ".join(ledger.job_names()) or "none yet"
    raise UsageError(f"no job file or job named {job!r} in the ledger {ledger.path} (jobs: {known})")


@main.command()
@click.argument("job", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
@fails_cleanly
def status(ctx: click.Context, job: str | None, as_json: bool) -> None:
    """Counts per state and generation status, by model; when the last task is due."""
    with Ledger(ctx.obj["ledger"]) as ledger:
        name = resolve_job(ledger, job)
        rows = ledger.status_counts(name)
        due = ledger.last_due(name)
        unsent = ledger.unsent_count(name) if name else 0
    if as_json:
        for row in rows:
            row["model"] = models.label(row["model_id"])
        click.echo(json.dumps({"job": name, "counts": rows, "not_sent": unsent, "last_due": due}))
        return
    if not rows:
        click.echo(f"nothing in the ledger{' for ' + name if name else ''} yet")
        return
    click.echo("\n".join(table(((models.label(r["model_id"]), r["state"], r["status"], r["n"]) for r in rows), ("model", "state", "status", "count"))))
    if unsent:
        click.echo(f"{unsent} requests of {name} not sent yet")
    if due:
        click.echo(f"last task due: {when_due(due)}")


TASK_COLUMNS = ("key", "job", "model_id", "variant", "state", "status", "task_id", "attempts", "submitted_at", "eta_at", "error", "prompt")


@main.command()
@click.argument("job", required=False)
@click.option("--state", type=click.Choice(STATES), help="Only tasks in this state.")
@click.option("--json", "fmt", flag_value="json", help="One JSON object per line (every column).")
@click.option("--csv", "fmt", flag_value="csv", help="CSV with a header (every column).")
@click.pass_context
@fails_cleanly
def tasks(ctx: click.Context, job: str | None, state: str | None, fmt: str | None) -> None:
    """The ledger's rows for JOB (or every job)."""
    with Ledger(ctx.obj["ledger"]) as ledger:
        name = resolve_job(ledger, job)
        rows = list(ledger.rows(name, state))
    if fmt == "json":
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
    elif fmt == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else list(TASK_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        shown = [(r["key"][:12], models.label(r["model_id"] or ""), r["variant"], r["state"], r["status"], r["task_id"], (r["error"] or r["prompt"] or "")[:50]) for r in rows]
        click.echo("\n".join(table(shown, ("key", "model", "v", "state", "status", "task_id", "prompt / error"))))


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
@click.option("--reject-rate", type=float, default=0.0, show_default=True, help="Refuse valid bodies with code 0 (like moderation).")
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
