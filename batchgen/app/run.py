"""The run, as a use case: settings in, an exit code out.

`cli/send.py` parses the command line into a `RunOptions` and a `Target` and calls `execute_run`;
everything between (which ledger, validation, planning, the confirmation, the run's record in
`runs`, its lock, sending, the summary, the wait → download → gallery chain and the exit code)
lives here. What people read goes through a `Console`, so this module prints nothing itself.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import EXIT_ABORTED, EXIT_INCOMPLETE, Interrupted, NotCovered, UsageError
from ..jobs import unchanged
from ..jobs.prices import PriceBook
from ..jobs.spec import load_job
from ..jobs.validate import ValidatedJob
from ..ledger import FAILURES as LEDGER_FAILURES
from ..ledger import Ledger, journal
from ..ledger.location import Project, is_url
from ..output.console import QUIET, VERBOSE, verbosity
from ..output.progress import ProgressDisplay, summary_lines
from ..output.reports import problem_lines
from ..output.words import count
from ..providers import Provider, model_label
from ..results.bounds import Bounds
from ..results.poll import pending, poll
from ..sending import http_transport, uploads
from ..sending.budget import Budget
from ..sending.limits import Backoff, RateLimiter
from ..sending.plan import Plan, ToSend, no_ledger, prepare_run
from ..sending.run_report import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_IDENTICAL_ERRORS,
    DEFAULT_RPM,
    RunReport,
    RunSettings,
)
from ..sending.submit import Submission
from . import spend as credits
from .follow import at_most_every, download_job, on_done, wait_until_done, write_gallery
from .session import (
    Console,
    Target,
    interrupted_exit,
    open_ledger,
    output_folder,
    signals_as_interrupts,
)

CONFIRM_ABOVE = 20  # on a terminal, ask before sending more requests than this


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
    read_timeout: float = http_transport.DEFAULT_TIMEOUT.read or 60.0
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


def execute_run(options: RunOptions, target: Target, project: Project, console: Console) -> int:
    """validate and plan (one pass), send, record; then wait, download, gallery if asked. The exit code."""
    if not options.dry_run:
        http_transport.prepare_tls()  # loads while the job is read; no call goes out before it is checked
    # Step 1 of validation (the file against the job schema) now; step 2 checks each request
    # as the plan meets it, so a big job is expanded once.
    validated = ValidatedJob(
        load_job(options.job_file, project.root),
        target.identity_base,
        allow_unverified=options.allow_unverified,
    )
    if validated.job.provider_name != target.provider.name:
        # The command connects before it loads the job, by the job's `provider:` line
        # (spec.provider_of); the parsed file may say otherwise (a flow-style mapping, an
        # alias). Nothing is sent to a provider the job does not name.
        raise UsageError(
            f"{options.job_file}: the job's provider is {validated.job.provider_name!r}, but this"
            f" command connected to {target.provider.name!r}; write the job's provider as a line"
            " of its own at the top of the file (`provider: NAME`)"
        )
    settings = options.settings(validated.job.limits)
    allow = settings.resendable()
    if not project.ledger_exists():
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
            inputs = unchanged.inputs(validated, unchanged.digest(validated, options.job_file))
            with ledger.claims.linking(plan.job, options.job_file, inputs) as stage:
                stage(to_send.links())  # no ledger yet: every request of the job is new, so planned
            return _run_planned(
                ledger, validated, plan, to_send, book, options, settings, target, console
            )
    # A server's ledger is made here if its database has none yet (a file's was made above).
    with open_ledger(project, console, create=is_url(project.ledger)) as ledger:
        if not options.dry_run:
            ledger.quick_check()
        book = credits.price_book(validated, ledger, options.prices_file)
        made_from = unchanged.digest(validated, options.job_file)
        settled = unchanged.settled_plan(
            ledger, validated, options.job_file, made_from, allow, book
        )
        if settled is not None:  # nothing changed and nothing to send: its requests not made
            plan, to_send = settled, ToSend(validated)
        elif options.dry_run:
            plan, to_send = prepare_run(validated, ledger.tasks.states, allow, book=book)
        else:
            inputs = unchanged.inputs(validated, made_from)
            with ledger.claims.linking(validated.job.name, options.job_file, inputs) as stage:
                plan, to_send = prepare_run(
                    validated, ledger.tasks.states, allow, book=book, stage=stage
                )
        _warn(validated, console)
        return _run_planned(
            ledger, validated, plan, to_send, book, options, settings, target, console
        )


def _warn(validated: ValidatedJob, console: Console) -> None:
    for line in problem_lines(validated.warnings):  # as `plan` says them: with their counts
        console.err(line)


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
        credits.require_prices(to_send, cap, book)
    if options.dry_run:
        return _dry_run(plan, to_send, settings, target, console)
    client = target.connect(
        timeout=http_transport.timeout(options.read_timeout),
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
                f"send {count(len(to_send), 'request')} ({_cost_and_balance(to_send, balance)}; each may be billed)?"
            ):
                console.err("nothing sent")
                return EXIT_INCOMPLETE
        budget = Budget(
            cap,
            book,
            balance_before=balance,
            read_balance=lambda: client.balance().credits,
            notice=console.err,
        )
        # One limiter for the whole run: get-task calls after the sends share its pace. On a
        # server's ledger, every machine's runs on the same key share it too (--rpm holds for
        # the account, not for each machine).
        limiter = RateLimiter(settings.rpm, shared=ledger.shared_pace(_account(target)))
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
            *LEDGER_FAILURES
        ):  # busy after a second Ctrl-C: the sending's code stays
            ledger.runs.set_exit_code(run_id, exit_code)
    on_done(options.on_done, ledger, validated.job.name, options.job_file, exit_code, console)
    return exit_code


def _account(target: Target) -> str:
    """The API account a run spends on, as the ledger may name it: a digest of the API and the
    key (never the key itself)."""
    return hashlib.sha256(f"{target.identity_base}\0{target.key}".encode()).hexdigest()[:32]


def _cost_and_balance(to_send: ToSend, balance: int | None) -> str:
    """`cost 400 credits at known prices, balance 2,000` for the confirmation."""
    prices = list(to_send.prices())
    known = sum(price or 0 for price in prices)
    unknown = sum(1 for price in prices if price is None)
    cost = f"cost {known:,} credits at known prices" + (
        f" + {unknown} of unknown price" if unknown else ""
    )
    return cost + (f", balance {balance:,}" if balance is not None else ", balance unknown")


def _with_images_uploaded(
    ledger: Ledger,
    client: Provider,
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
        frozenset(r for r in target.provider.images_shown(item.request.body) if r in by_ref)
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
    with_images = target.provider.with_images
    return to_send.resolved(lambda body: with_images(body, urls), left_out), left_out


def _dry_run(
    plan: Plan, to_send: ToSend, settings: RunSettings, target: Target, console: Console
) -> int:
    console.out(_plan_line(plan, len(to_send), settings, target))
    for item in to_send:
        request = item.request
        model = model_label(str(request.model))
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
    return f"{plan.job}: {count(sum(plan.counts.values()), 'request')} ({counts}); sending {sending} to {where} ({rpm}, concurrency {settings.concurrency})"


def _send(
    ledger: Ledger,
    client: Provider,
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
    # Held from the row's own transaction, before the first claim: see backend.py.
    run_id, lock = ledger.runs.begin(
        name,
        options.job_file,
        target.identity_base,
        options.flags() | {"rpm": settings.rpm, "concurrency": settings.concurrency},
    )
    ledger.runs.record_balance(run_id, before=budget.balance_before)
    unreserved = journal.reserve(ledger.path)
    if unreserved is not None:
        console.err(
            f"warning: no space set aside for the journal beside {ledger.path} ({unreserved}):"
            f" if the disk fills, a task id the ledger cannot record may be kept only on this"
            f" terminal. Free {journal.RESERVE // 1024} KiB or more there"
        )
    progress = ProgressDisplay(len(to_send)) if verbosity() > QUIET else None
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
                detail=console.detail if verbosity() >= VERBOSE else None,
                class_of=budget.book.class_key,
            )

            def on_interrupt(in_flight: int) -> None:
                console.err(
                    f"\nstopping: waiting for {count(in_flight, 'call')} in flight (a second Ctrl-C quits at once)"
                )

            try:
                report = submission.run(
                    (item.request for item in to_send), on_interrupt=on_interrupt
                )
                if progress is not None:
                    progress.finish()
            except Interrupted as e:
                exit_code = interrupted_exit(e)
                with contextlib.suppress(*LEDGER_FAILURES):  # busy: the run is left without its end
                    ledger.runs.end(run_id, {"interrupted": "twice"}, exit_code)
                console.err("quit: calls in flight are in_doubt")
                return exit_code, run_id
        try:
            exit_code = _record_end(
                ledger, client, options, name, target, report, budget, run_id, console
            )
            return exit_code, run_id
        except LEDGER_FAILURES as e:
            # The ledger failed under the run (a server gone, a disk full): what the run did is
            # said from its own report; the task ids it could not record are in the journal.
            for line in summary_lines(name, options.job_file, report, Counter(), None, 0)[:-1]:
                console.out(line)
            console.err(
                f"error: the ledger failed: {e}. The next batchgen command records what the journal"
                " keeps, and makes the calls that were in flight in_doubt"
            )
            return EXIT_ABORTED, run_id
    finally:
        journal.release_reserve(ledger.path)
        lock.release()


def _record_end(
    ledger: Ledger,
    client: Provider,
    options: RunOptions,
    name: str,
    target: Target,
    report: RunReport,
    budget: Budget,
    run_id: int,
    console: Console,
) -> int:
    """The run's end in the ledger and on the terminal: the balance after, the summary, a
    price learned, the exit code."""
    after = (
        client.balance().credits
        if budget.balance_before is not None and report.calls
        else budget.balance_before
    )
    ledger.runs.record_balance(run_id, after=after)
    standing = ledger.tasks.standing(name)
    states = Counter(standing.states)
    for line in summary_lines(
        name, options.job_file, report, states, standing.last_due, standing.unsent
    ):
        console.out(line)
    console.out(credits.spend_line(report, budget.balance_before, after))
    if report.capped:
        console.out(f"stopped at the spend cap: {report.capped}; the rest was not sent")
    learned = credits.learn_price(
        ledger, run_id, target.identity_base, report, budget.balance_before, after, budget.book
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
    ledger.runs.end(
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
    return exit_code


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
    folder = output_folder(name, api_base=target.identity_base)
    if options.download and exit_code in (0, EXIT_INCOMPLETE):
        if not options.wait:  # one look at the tasks, so that what is done now is downloaded now
            tasks = pending(ledger, name, due_only=False)
            if tasks:
                console.err(f"checking {count(len(tasks), 'task')} before downloading")
                show = at_most_every(
                    2.0,
                    lambda report: console.err(
                        f"checked {report.checked}/{len(tasks)}: {report.completed} completed"
                    ),
                )
                with target.connect() as client:
                    poll(ledger, client, tasks, limiter=limiter, on_progress=show)
        exit_code = max(
            exit_code,
            download_job(
                ledger,
                name,
                folder,
                target,
                console,
                bounds=options.bounds,
                api_base=target.identity_base,
            ),
        )
    if options.gallery and exit_code in (0, EXIT_INCOMPLETE):
        write_gallery(ledger, name, folder, console)
    return exit_code
