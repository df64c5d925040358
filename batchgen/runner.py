"""The run, as a use case: settings in, an exit code out.

`cli/send.py` parses the command line into a `RunOptions` and a `Target` and calls `execute_run`;
everything between (which ledger, validation, planning, the confirmation, the run's record in
`runs`, its lock, sending, the summary, the wait → download → gallery chain and the exit code)
lives here. What people read goes through a `Console`, so this module prints nothing itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from . import api, connections, credits, journal, models, uploads
from . import sandbox as sandbox_mod
from .budget import Budget
from .download import Bounds, download
from .errors import EXIT_ABORTED, EXIT_INCOMPLETE, EXIT_INTERRUPTED, NotCovered, UsageError
from .inputs import InputRefused, read_regular
from .ledger import Ledger
from .limits import Backoff, RateLimiter
from .liveness import RunLock
from .output.progress import ProgressDisplay, summary_lines
from .plan import Plan, ToSend, no_ledger, prepare_run
from .prices import PriceBook
from .project import Project
from .results import pending, poll, wait_for
from .spec import load_job
from .submit import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_IDENTICAL_ERRORS,
    DEFAULT_RPM,
    Interrupted,
    RunSettings,
    StopSignal,
    Submission,
)
from .urls import check_api_base
from .validate import ValidatedJob
from .web import pages as gallery_pages

CONFIRM_ABOVE = 20  # on a terminal, ask before sending more requests than this
SANDBOX_TIME_SCALE = 0.02  # `--sandbox`: a 240 s generation takes about 5 s
# `--sandbox` requests are known by this base URL whatever port the run's own sandbox has, so
# their identities stay the same from run to run (and match ledgers made before).
SANDBOX_IDENTITY = f"http://127.0.0.1:{sandbox_mod.DEFAULT_PORT}"
MAX_KEY_FILE = 4096


class Console(Protocol):
    """Where a command's words go: `out` for results (stdout), `err` for everything else."""

    interactive: bool

    def out(self, line: str) -> None: ...

    def err(self, line: str) -> None: ...

    def confirm(self, question: str) -> bool: ...


# -- where to send, with what key ---------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The API a command talks to: the base URL that is part of each request's identity (and
    recorded in the ledger), the one calls go to (they differ only for the sandbox), the key."""

    identity_base: str
    base_url: str
    key: str
    sandbox_files: str | None = None  # `--sandbox`: the running sandbox's file URL prefix

    def rebase(self, url: str) -> str:
        """A recorded result URL, pointed at the sandbox serving now (for `--sandbox`)."""
        if (
            self.sandbox_files
            and "/_sandbox/files/" in url
            and urlsplit(url).hostname == "127.0.0.1"
        ):
            return self.sandbox_files + url.split("/_sandbox/files/", 1)[1]
        return url


def read_api_key(api_key_file: str | None) -> str | None:
    """The key from --api-key-file, else PIXWITH_API_KEY, checked; never echoed anywhere."""
    if api_key_file:
        source = f"--api-key-file {api_key_file}"
        try:
            raw = read_regular(api_key_file, limit=MAX_KEY_FILE)
        except InputRefused as e:
            raise UsageError(f"{source}: {e}") from None
        try:
            from_file = raw.decode(
                "ascii"
            ).strip()  # the file's own line break is not part of the key
        except UnicodeDecodeError:
            raise UsageError(
                f"{source}: not a text file holding an API key (it has non-ASCII bytes)"
            ) from None
        if not from_file:
            raise UsageError(f"{source}: the file is empty")
        api.remember_secret(from_file)
        return api.check_api_key(from_file, source)
    from_env = os.environ.get("PIXWITH_API_KEY") or None
    if from_env is not None:
        api.remember_secret(from_env)
        api.check_api_key(from_env, "PIXWITH_API_KEY")
    return from_env


@contextlib.contextmanager
def api_target(
    *, sandbox: bool, base_url: str, api_key_file: str | None, need_key: bool
) -> Iterator[Target]:
    """The configured API, or a sandbox of this command's own (on a free port)."""
    if not sandbox:
        base = check_api_base(base_url)
        key = read_api_key(api_key_file)
        if need_key and not key:
            raise UsageError(
                "no API key: set PIXWITH_API_KEY or pass --api-key-file (or try --sandbox)"
            )
        yield Target(base, base, key or "")
        return
    config = sandbox_mod.SandboxConfig(time_scale=SANDBOX_TIME_SCALE)
    with sandbox_mod.running(config) as served:
        yield Target(
            SANDBOX_IDENTITY,
            served.base_url,
            sandbox_mod.TEST_KEY,
            f"{served.base_url}/_sandbox/files/",
        )


# -- signals and interruption --------------------------------------------------------------------


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP act like Ctrl-C for the block: the first stops claiming and waits for
    the calls in flight, a second quits at once. (Only the main thread may install handlers;
    elsewhere, as in some test runners, the defaults stay.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise StopSignal(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def interrupted_exit(error: BaseException) -> int:
    """130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    number = getattr(error, "signal", None)
    return 128 + number if number else EXIT_INTERRUPTED


# -- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    job_file: str
    rpm: int | None = None  # None: the job's limits.rpm, else the default; 0: no ceiling
    concurrency: int | None = None
    limit: int | None = None
    dry_run: bool = False
    yes: bool = False
    retry_rejected: bool = False
    resubmit_in_doubt: bool = False
    wait: bool = False
    download: bool = False
    gallery: bool = False
    max_identical_errors: int = DEFAULT_MAX_IDENTICAL_ERRORS
    max_attempts: int = Backoff.max_attempts
    read_timeout: float = api.DEFAULT_TIMEOUT.read or 60.0
    bounds: Bounds = field(default_factory=Bounds)
    max_credits: int | None = None  # None: the job's limits.max_credits, else no cap
    allow_partial: bool = False
    regenerate_failed: bool = False
    prices_file: str | None = None
    on_done: str | None = None  # a shell command run once at the end (see `on_done`)
    allow_unverified: bool = False  # send to models the catalogue marks unverified

    def settings(self, limits: dict[str, int]) -> RunSettings:
        """The run's settings: flags first, then the job's `limits`, then the defaults."""
        rpm = self.rpm if self.rpm is not None else limits.get("rpm") or DEFAULT_RPM
        return RunSettings(
            rpm=rpm or None,
            concurrency=self.concurrency or limits.get("concurrency") or DEFAULT_CONCURRENCY,
            retry_rejected=self.retry_rejected,
            regenerate_failed=self.regenerate_failed,
            resubmit_in_doubt=self.resubmit_in_doubt,
            backoff=Backoff(max_attempts=self.max_attempts),
            max_identical_errors=self.max_identical_errors,
        )

    def flags(self) -> dict[str, Any]:
        """What the run was asked, for `runs.flags`."""
        flags = asdict(self)
        flags.pop("job_file")
        flags["bounds"] = {k: v for k, v in flags["bounds"].items() if k != "backoff"}
        return flags


def open_ledger(project: Project, console: Console, *, create: bool) -> Ledger:
    """Open the project's ledger and say which one it is, and what opening it repaired."""
    ledger = Ledger(project.ledger, create=create)
    console.err(project.describe())
    if ledger.replayed:
        console.err(f"recorded {ledger.replayed} task ids kept in the journal by an earlier run")
    if ledger.recovered:
        console.err(
            f"{ledger.recovered} requests left 'sending' by an earlier run that ended are now in_doubt"
        )
    return ledger


def execute_run(options: RunOptions, target: Target, project: Project, console: Console) -> int:
    """validate and plan (one pass), send, record; then wait, download, gallery if asked. The exit code."""
    if not options.dry_run:
        connections.prepare_tls()  # loads while the job is read; no call goes out before it is checked
    # Step 1 of validation (the file against the job schema) now; step 2 checks each request
    # as the plan meets it, so a big job is expanded once.
    validated = ValidatedJob(
        load_job(options.job_file, project.root),
        target.identity_base,
        allow_unverified=options.allow_unverified,
    )
    settings = options.settings(validated.job.limits)
    allow = settings.resendable()
    if not project.ledger.exists():
        # Every request is new. Planned before the ledger is made, so that a job that fails
        # validation leaves none behind; linked once it exists.
        book = credits.price_book(validated, None, options.prices_file)
        plan, to_send = prepare_run(validated, no_ledger, allow, book=book)
        _warn(validated, console)
        if options.dry_run:
            return _dry_run(
                plan,
                to_send.head(options.limit) if options.limit is not None else to_send,
                settings,
                target,
                console,
            )
        with open_ledger(project, console, create=True) as ledger:
            ledger.quick_check()  # another run may have made it meanwhile: checked as any other
            with ledger.linking(plan.job, options.job_file) as stage:
                stage(to_send.links())  # no ledger yet: every request of the job is new, so planned
            return _run_planned(
                ledger, validated, plan, to_send, book, options, settings, target, console
            )
    with open_ledger(project, console, create=False) as ledger:
        if not options.dry_run:
            ledger.quick_check()
        book = credits.price_book(validated, ledger, options.prices_file)
        if options.dry_run:
            plan, to_send = prepare_run(validated, ledger.states, allow, book=book)
        else:
            with ledger.linking(validated.job.name, options.job_file) as stage:
                plan, to_send = prepare_run(validated, ledger.states, allow, book=book, stage=stage)
        _warn(validated, console)
        return _run_planned(
            ledger, validated, plan, to_send, book, options, settings, target, console
        )


def _warn(validated: ValidatedJob, console: Console) -> None:
    for problem in validated.warnings:
        console.err(str(problem))


def _run_planned(
    ledger: Ledger,
    validated: ValidatedJob,
    plan: Plan,
    to_send: ToSend,
    book: PriceBook,
    options: RunOptions,
    settings: RunSettings,
    target: Target,
    console: Console,
) -> int:
    """The planned run: the cap and balance checks, uploads, the confirmation, sending, and
    the wait → download → gallery chain."""
    cap = options.max_credits or validated.job.limits.get("max_credits")
    if options.limit is not None:
        to_send = to_send.head(options.limit)
    if cap:
        credits.require_prices(to_send, cap)
    if options.dry_run:
        return _dry_run(plan, to_send, settings, target, console)
    client = api.Api(
        target.base_url,
        target.key,
        timeout=api.timeout(options.read_timeout),
        max_connections=settings.concurrency,
    )
    with client:
        balance, why = credits.read_balance(client)
        if balance is None:
            if cap:
                raise NotCovered(
                    f"the balance could not be read ({why}); with a cap nothing is sent"
                )
            console.err(f"balance unknown ({why}): sending without a balance check")
        else:
            to_send = credits.covered(to_send, balance, allow_partial=options.allow_partial)
        to_send, not_uploaded = _with_images_uploaded(
            ledger, client, validated, to_send, target, console
        )
        console.out(_plan_line(plan, len(to_send), settings, target))
        for warning in plan.price_warnings:
            console.err(f"warning: {warning}")
        if to_send and len(to_send) > CONFIRM_ABOVE and not options.yes and console.interactive:
            if not console.confirm(
                f"send {len(to_send)} requests ({_cost_and_balance(to_send, balance)}; each may be billed)?"
            ):
                console.err("nothing sent")
                return EXIT_INCOMPLETE
        budget = Budget(
            cap,
            book,
            balance_before=balance,
            read_balance=lambda: client.get_credits().credits,
            notice=console.err,
        )
        # One limiter for the whole run: get-task calls after the sends share its pace.
        limiter = RateLimiter(settings.rpm)
        exit_code, run_id = _send(
            ledger,
            client,
            options,
            validated.job.name,
            target,
            settings,
            to_send,
            limiter,
            budget,
            console,
        )
        recorded = exit_code
        if not_uploaded and exit_code == 0:
            exit_code = EXIT_INCOMPLETE
    exit_code = _after_sending(
        ledger, options, validated.job.name, target, limiter, console, exit_code
    )
    if exit_code != recorded:  # the run's record says how the command ended, not only its sending
        with contextlib.suppress(
            sqlite3.Error
        ):  # busy after a second Ctrl-C: the sending's code stays
            ledger.set_exit_code(run_id, exit_code)
    on_done(options.on_done, ledger, validated.job.name, options.job_file, exit_code, console)
    return exit_code


def _cost_and_balance(to_send: ToSend, balance: int | None) -> str:
    """`cost 400 credits at known prices, balance 2,000` for the confirmation."""
    prices = list(to_send.prices())
    known = sum(price or 0 for price in prices)
    unknown = sum(1 for price in prices if price is None)
    cost = f"cost {known:,} credits at known prices" + (
        f" + {unknown} of unknown price" if unknown else ""
    )
    return cost + (f", balance {balance:,}" if balance is not None else ", balance unknown")


def on_done(
    command: str | None,
    ledger: Ledger,
    job: str,
    job_file: str | None,
    exit_code: int,
    console: Console,
) -> None:
    """Run `command` (a shell command) once, with what became of the job in its environment:
    BATCHGEN_JOB, BATCHGEN_JOB_FILE, BATCHGEN_EXIT, BATCHGEN_LEDGER, BATCHGEN_COUNTS (JSON) and
    BATCHGEN_SUBMITTED / _COMPLETED / _FAILED / _PROCESSING. The API key is not passed on."""
    if not command:
        return
    try:
        states = ledger.job_states(job)
        generation = ledger.generation_counts(job)
    except sqlite3.Error as e:  # busy after a second Ctrl-C (`Ledger.quitting`), or failing
        console.err(f"--on-done not run: the ledger could not be read ({e})")
        return
    env = {k: v for k, v in os.environ.items() if k != "PIXWITH_API_KEY"}
    env.update(
        BATCHGEN_JOB=job,
        BATCHGEN_JOB_FILE=job_file or "",
        BATCHGEN_EXIT=str(exit_code),
        BATCHGEN_LEDGER=str(ledger.path),
        BATCHGEN_COUNTS=json.dumps({"states": states, "generation": generation}, sort_keys=True),
        BATCHGEN_SUBMITTED=str(states.get("submitted", 0) + states.get("generation_failed", 0)),
        BATCHGEN_COMPLETED=str(generation["completed"]),
        BATCHGEN_FAILED=str(generation["failed"]),
        BATCHGEN_PROCESSING=str(generation["processing"]),
    )
    try:
        finished = subprocess.run(command, shell=True, env=env)
    except OSError as e:
        console.err(f"--on-done could not run: {e.strerror}")
        return
    if finished.returncode:
        console.err(f"--on-done exited {finished.returncode}")


def _with_images_uploaded(
    ledger: Ledger,
    client: api.Api,
    validated: ValidatedJob,
    to_send: ToSend,
    target: Target,
    console: Console,
) -> tuple[ToSend, int]:
    """Upload the local images the requests to send show (each distinct one once, ever), and
    put their URLs in the bodies; a request whose image did not upload is left out."""
    by_ref = {image.ref: image for image in validated.job.images.values()}
    if not by_ref:
        return to_send, 0
    # The images each request shows, counted by their set (one pass, only for such jobs).
    shown = Counter(
        frozenset(r for r in item.request.body.get("image_urls") or [] if r in by_ref)
        for item in to_send
    )
    needed = {ref: by_ref[ref] for refs in shown for ref in refs}
    if not needed:
        return to_send, 0
    urls, report = uploads.upload_all(
        ledger, client, list(needed.values()), upload_base=target.base_url
    )
    console.err(
        f"images: {report.uploaded} uploaded, {report.reused} uploaded before"
        + (f", {len(report.failed)} failed" if report.failed else "")
    )
    for reason in report.failed.values():
        console.err(f"  image not uploaded: {reason}")
    left_out = sum(n for refs, n in shown.items() if not refs <= urls.keys())
    if left_out:
        console.err(
            f"{left_out} requests not sent: their image did not upload (nothing was created for them)"
        )
    return to_send.resolved(lambda body: uploads.resolve(body, urls), left_out), left_out


def _dry_run(
    plan: Plan, to_send: ToSend, settings: RunSettings, target: Target, console: Console
) -> int:
    console.out(_plan_line(plan, len(to_send), settings, target))
    for item in to_send:
        request = item.request
        model = models.label(request.body["model_id"])
        cost = f" ({item.credits} credits)" if item.credits is not None else ""
        console.out(
            f"  would send {request.key[:12]} v{request.variant} {model}{cost}: {request.body.get('prompt', '')[:60]}"
        )
    known = sum(price or 0 for price in to_send.prices())
    unknown = sum(1 for price in to_send.prices() if price is None)
    console.out(
        f"cost: {known:,} credits at known prices"
        + (f"; {unknown} requests of unknown price" if unknown else "")
    )
    return 0


def _plan_line(plan: Plan, sending: int, settings: RunSettings, target: Target) -> str:
    counts = ", ".join(f"{n} {a}" for a, n in sorted(plan.counts.items()))
    rpm = f"rpm {settings.rpm}" if settings.rpm else "no rpm ceiling"
    where = target.identity_base + (
        f" (the sandbox, serving at {target.base_url})" if target.sandbox_files else ""
    )
    return f"{plan.job}: {sum(plan.counts.values())} requests ({counts}); sending {sending} to {where} ({rpm}, concurrency {settings.concurrency})"


def _send(
    ledger: Ledger,
    client: api.Api,
    options: RunOptions,
    name: str,
    target: Target,
    settings: RunSettings,
    to_send: ToSend,
    limiter: RateLimiter,
    budget: Budget,
    console: Console,
) -> tuple[int, int]:
    """Send, with the run recorded in `runs`: (exit code, run id)."""
    run_id = ledger.start_run(
        name,
        options.job_file,
        target.identity_base,
        options.flags() | {"rpm": settings.rpm, "concurrency": settings.concurrency},
    )
    ledger.record_balance(run_id, before=budget.balance_before)
    lock = RunLock(ledger.path, run_id)  # before the first claim: see liveness.py
    journal.reserve(ledger.path)
    progress = ProgressDisplay(len(to_send))
    try:
        with signals_as_interrupts():
            submission = Submission(
                ledger,
                client,
                settings,
                job=name,
                api_base=target.identity_base,
                run_id=run_id,
                progress=progress,
                limiter=limiter,
                notice=console.err,
                budget=budget,
            )

            def on_interrupt(in_flight: int) -> None:
                console.err(
                    f"\nstopping: waiting for {in_flight} calls in flight (a second Ctrl-C quits at once)"
                )

            try:
                report = submission.run(
                    (item.request for item in to_send), on_interrupt=on_interrupt
                )
                progress.finish()
            except Interrupted as e:
                exit_code = interrupted_exit(e)
                with contextlib.suppress(sqlite3.Error):  # busy: the run is left without its end
                    ledger.end_run(run_id, {"interrupted": "twice"}, exit_code)
                console.err("quit: calls in flight are in_doubt")
                return exit_code, run_id
        after = (
            client.get_credits().credits
            if budget.balance_before is not None and report.calls
            else budget.balance_before
        )
        ledger.record_balance(run_id, after=after)
        standing = ledger.standing(name)
        states = Counter(standing.states)
        for line in summary_lines(
            name, options.job_file, report, states, standing.last_due, standing.unsent
        ):
            console.out(line)
        console.out(credits.spend_line(report, budget.balance_before, after))
        if report.capped:
            console.out(f"stopped at the spend cap: {report.capped}; the rest was not sent")
        learned = credits.learn_price(
            ledger, run_id, target.identity_base, report, budget.balance_before, after
        )
        if learned:
            console.err(learned)
        unresolved = sum(
            states.get(s, 0) for s in ("rejected", "failed", "in_doubt", "generation_failed")
        )
        exit_code = report.exit_code(unresolved)
        if report.unrecorded:
            exit_code = EXIT_ABORTED
        by_balance = (
            budget.balance_before - after
            if budget.balance_before is not None and after is not None
            else None
        )
        ledger.end_run(
            run_id,
            dict(report.outcomes)
            | {
                "calls": report.calls,
                "aborted": report.aborted,
                "capped": report.capped,
                "spent": report.spent,
                "spent_by_balance": by_balance,
            },
            exit_code,
        )
        return exit_code, run_id
    finally:
        journal.release_reserve(ledger.path)
        lock.release()


def _after_sending(
    ledger: Ledger,
    options: RunOptions,
    name: str,
    target: Target,
    limiter: RateLimiter,
    console: Console,
    exit_code: int,
) -> int:
    """The wait → download → gallery chain, each step only if the one before went well."""
    if options.wait and exit_code in (0, EXIT_INCOMPLETE):
        waited = wait_until_done(ledger, target, name, limiter, console)
        exit_code = waited if waited >= 128 else max(exit_code, waited)
    folder = Path("outputs") / name
    if options.download and exit_code in (0, EXIT_INCOMPLETE):
        if not options.wait:  # one look at the tasks, so that what is done now is downloaded now
            tasks = pending(ledger, name, due_only=False)
            if tasks:
                console.err(f"checking {len(tasks)} tasks before downloading")
                show = _at_most_every(
                    2.0,
                    lambda report: console.err(
                        f"checked {report.checked}/{len(tasks)}: {report.completed} completed"
                    ),
                )
                with api.Api(target.base_url, target.key) as client:
                    poll(ledger, client, tasks, limiter=limiter, on_progress=show)
        exit_code = max(
            exit_code, download_job(ledger, name, folder, target, console, bounds=options.bounds)
        )
    if options.gallery and exit_code in (0, EXIT_INCOMPLETE):
        write_gallery(ledger, name, folder, console)
    return exit_code


def wait_until_done(
    ledger: Ledger, target: Target, job: str, limiter: RateLimiter, console: Console
) -> int:
    """Poll until every task of `job` has ended; the exit code it deserves."""
    last = [""]

    def show(counts: dict[str, int]) -> None:
        line = f"waiting: {counts['processing']} processing, {counts['completed']} completed, {counts['failed']} failed"
        if line != last[0]:
            console.err(line)
            last[0] = line

    stop = threading.Event()
    with api.Api(target.base_url, target.key) as client, signals_as_interrupts():
        try:
            report = wait_for(ledger, client, job, limiter=limiter, on_progress=show, stop=stop)
        except KeyboardInterrupt as e:
            stop.set()
            console.err(
                "\nstopped waiting; batchgen poll --wait or run --wait picks up where this left"
            )
            return interrupted_exit(e)
    ended = f"tasks ended: {report.completed} completed, {report.failed} failed"
    console.out(ended + (f", {report.processing} still processing" if report.processing else ""))
    if report.unknown:
        console.out(
            f"{len(report.unknown)} task ids unknown to the API: {', '.join(report.unknown[:5])}"
        )
    if report.aborted:
        console.err(f"stopped: {report.aborted}")
        return EXIT_ABORTED
    if report.gave_up:
        console.err(f"stopped waiting: {report.gave_up}")
    return EXIT_INCOMPLETE if report.failed or report.unknown or report.processing else 0


def download_job(
    ledger: Ledger,
    name: str,
    folder: Path,
    target: Target | None,
    console: Console,
    *,
    concurrency: int = 4,
    bounds: Bounds = Bounds(),
) -> int:
    prepare_folder(folder)
    rebase: Callable[[str], str] = target.rebase if target else (lambda url: url)
    report = download(ledger, name, folder, concurrency=concurrency, bounds=bounds, rebase=rebase)
    console.out(
        f"{folder}: {report.downloaded} downloaded ({report.bytes:,} bytes), {report.skipped} already there; manifest.csv"
    )
    for failure in report.failed:
        console.err(f"  failed: {failure}")
    # Only what a poll saw completed is downloaded: a task never polled since it was sent may
    # be done already. Said, so that "0 downloaded" is not taken for "nothing to get".
    processing, unpolled = ledger.generation_counts(name)["processing"], ledger.unpolled_count(name)
    if processing:
        never = f" ({unpolled} never polled since they were sent)" if unpolled else ""
        console.out(
            f"{processing} still processing as last polled{never}: batchgen poll {name} --wait, then batchgen download {name}"
        )
    return EXIT_INCOMPLETE if report.failed or processing else 0


def _at_most_every(seconds: float, show: Callable[[Any], None]) -> Callable[[Any], None]:
    """`show`, called at most once every `seconds` (a progress line on a long poll)."""
    last = [time.monotonic()]

    def throttled(value: Any) -> None:
        if time.monotonic() - last[0] >= seconds:
            last[0] = time.monotonic()
            show(value)

    return throttled


def prepare_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot use {folder} as a folder: {e.strerror}") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UsageError(f"cannot use {folder} as a folder: not a writable directory")


def write_gallery(
    ledger: Ledger,
    name: str,
    folder: Path,
    console: Console,
    rows: list[str] | None = None,
    cols: list[str] | None = None,
) -> Path:
    prepare_folder(folder)
    path = gallery_pages.write(ledger, name, folder, rows, cols)
    console.out(f"gallery: {path}")
    return path


def resolve_job(ledger: Ledger, job: str | None) -> str | None:
    """A job's name in the ledger, from a job file or a name; None means every job."""
    if job is None:
        return None
    if os.path.isfile(job):
        return load_job(job).name
    if job in ledger.job_names():
        return job
    known = ", ".join(ledger.job_names()) or "none yet"
    raise UsageError(
        f"no job file or job named {job!r} in the ledger {ledger.path} (jobs: {known})"
    )


def named_job(name: str | None) -> str:
    if name is None:  # only when no job was given, which these commands' arguments forbid
        raise UsageError("a job is needed")
    return name
