"""A run's money: which prices apply, whether the balance covers what it would send, what it
spent, and what its balance drop teaches.

The balance comes from the provider's balance read. When the API does not answer it (or answers nonsense),
a run without a cap goes on and says so; a run with a cap sends nothing (exit 3), since it
could not keep its promise.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from .. import providers
from ..errors import NotCovered, UsageError
from ..jobs.prices import PriceBook, describe_class, job_rules, load_rules
from ..jobs.validate import ValidatedJob, validate_job
from ..output.progress import table
from ..output.words import count
from ..providers import Kind, Provider
from ..sending.plan import ToSend
from ..sending.run_report import RunReport

if TYPE_CHECKING:
    from ..ledger import Ledger


def price_book(
    validated: ValidatedJob, ledger: Ledger | None, prices_file: str | None
) -> PriceBook:
    """The job's rules and the `--prices` file's (declared), then what the ledger learned."""
    job = validated.job
    rules = job_rules(job) + (
        load_rules(prices_file, dict(job.provider.field_aliases), job.catalogue)
        if prices_file
        else []
    )
    learned = ledger.prices.learned(validated.api_base) if ledger is not None else {}
    return PriceBook(rules, learned, job.catalogue)


def require_prices(to_send: ToSend, cap: int, book: PriceBook) -> None:
    """A cap needs a known price for every class the run would send (exit 2 naming them)."""
    if all(price is not None for price in to_send.prices()):
        return
    unknown = Counter(book.class_key(item.request.body) for item in to_send if item.credits is None)
    if unknown:
        classes = "; ".join(
            f"{book.describe_class(k)} ({n} requests)" for k, n in unknown.most_common()
        )
        raise UsageError(
            f"--max-credits {cap:,} needs a price for every class it would send; none is known for: {classes}. "
            "Declare them (prices: in the job, or --prices FILE), or run once without a cap to learn them"
        )


def read_balance(client: Provider) -> tuple[int | None, str]:
    """(balance, why not) — a refused key stops everything at once (exit 3)."""
    balance = client.balance()
    if balance.kind is Kind.AUTH:
        raise NotCovered(f"the API refused the key ({balance.problem})")
    return balance.credits, balance.problem


def covered(to_send: ToSend, balance: int, *, allow_partial: bool) -> ToSend:
    """What the balance covers: everything, or (allow_partial) the longest prefix in job order
    whose known cost fits; otherwise NotCovered, and nothing is sent."""
    cost = sum(price or 0 for price in to_send.prices())
    if cost <= balance:
        return to_send
    if not allow_partial:
        raise NotCovered(
            f"the known cost of this run is {cost:,} credits and the balance is {balance:,}: nothing was sent "
            "(--allow-partial sends, in job order, what the balance covers)"
        )
    fits, total = 0, 0
    for price in to_send.prices():
        if total + (price or 0) > balance:
            break
        total += price or 0
        fits += 1
    return to_send.head(fits)


def learn_price(
    ledger: Ledger,
    run_id: int,
    api_base: str,
    report: RunReport,
    before: int | None,
    after: int | None,
    book: PriceBook,
) -> str | None:
    """Learn a price from the run's balance drop (`book`: the run's, which says its classes),
    when it can only mean one thing: the run
    submitted requests of one class only, none is in doubt, no other run on this ledger
    overlapped it, and the drop divides exactly. Returns what it learned, or why not (None when
    there was nothing to learn from)."""
    submitted = sum(report.submitted_classes.values())
    if before is None or after is None or not submitted:
        return None
    drop = before - after
    if len(report.submitted_classes) > 1:
        return (
            f"no price learned: the run sent {len(report.submitted_classes)} kinds of request, and one balance"
            " drop cannot tell their prices apart; declare them (prices: in the job), or run one kind alone to learn its price"
        )
    if report.outcomes["in_doubt"]:
        return "no price learned: some requests are in doubt (created or not, unknown), so the drop may not be theirs alone"
    if ledger.runs.overlapping(run_id):
        return "no price learned: another run on this ledger was sending at the same time, so the drop may not be this run's alone"
    if drop <= 0 or drop % submitted:
        return f"no price learned: the balance fell by {drop:,} for {submitted} requests, which is not a whole price each"
    (cls,) = report.submitted_classes
    ledger.prices.record(api_base, cls, drop // submitted, run_id, submitted)
    return f"learned: {book.describe_class(cls)} costs {drop // submitted:,} credits (run {run_id}: {submitted} requests, balance {before:,} → {after:,})"


def spend_line(report: RunReport, before: int | None, after: int | None) -> str:
    """What the run spent, as a person says it: by the balance when it was read (the only
    true figure), then what the prices known for what it sent say, and what has no price."""
    if before is not None and after is not None:
        spent = before - after
        line = f"spent: {spent:,} credits, by the balance ({before:,} → {after:,})"
        if report.unpriced:
            line += f"; {report.unpriced} of the requests sent have no known price" + (
                f" (the others cost {report.spent:,} at their prices)" if report.spent else ""
            )
            line += ": declare them (prices: in the job), or see what batchgen learned (batchgen prices)"
        elif report.spent == spent:
            line += ", as the prices say"
        elif spent > report.spent:
            line += f"; the prices say {report.spent:,}: check them (batchgen prices)"
        else:
            line += f"; the prices say {report.spent:,}"
        return line
    line = f"spent: {report.spent:,} credits at known prices (the balance could not be read)"
    if report.unpriced:
        line += f", and {report.unpriced} requests of unknown price"
    return line


def price_facts(
    job_file: str | None, ledger: Ledger | None, prices_file: str | None, api_base: str
) -> dict[str, Any]:
    """`batchgen prices` as data (`--json`): the declared rules, the learned prices, and with a
    job file the price of each class of request it asks for, each with where it came from."""
    validated = (
        validate_job(job_file, api_base, allow_unverified=True) if job_file else None
    )  # listing prices sends nothing
    provider = validated.job.provider if validated else providers.for_api(api_base)
    rules = (job_rules(validated.job) if validated else []) + (
        load_rules(prices_file, dict(provider.field_aliases), providers.catalogue_of(provider.name))
        if prices_file
        else []
    )
    facts: dict[str, Any] = {
        "declared": [
            {
                "matches": r.describe(providers.catalogue_of(provider.name)),
                "credits": r.credits,
                "where": f"{r.where()} ({r.path})",
            }
            for r in rules
        ],
        "learned": [
            {
                "class": describe_class(p["class"], providers.for_api(p["api_base"]).catalogue()),
                "credits": p["credits"],
                "run_id": p["run_id"],
                "requests": p["requests"],
                "learned_at": p["learned_at"],
                "api_base": p["api_base"],
            }
            for p in (ledger.prices.all() if ledger is not None else [])
        ],
    }
    if validated is not None:
        book = price_book(validated, ledger, prices_file)
        classes: dict[str, dict[str, object]] = {}
        for request in validated.requests():
            classes.setdefault(book.class_key(request.body), request.body)
        by_class = []
        for key, body in classes.items():
            price = book.price(body)
            by_class.append(
                {
                    "class": book.describe_class(key),
                    "credits": price.credits if price else None,
                    "source": price.source if price else "no rule matches, nothing learned",
                }
            )
        facts["job"] = validated.job.name
        facts["by_class"] = by_class
        facts["warnings"] = [
            sentence for sentence in map(book.contradiction, classes.values()) if sentence
        ]
    return facts


def price_report(facts: dict[str, Any]) -> list[str]:
    """`batchgen prices` for a person, from `price_facts`."""
    declared, learned = facts["declared"], facts["learned"]
    lines = ["declared:"] + (
        [
            "  " + line
            for line in table(
                ((r["matches"], f"{r['credits']:,}", r["where"]) for r in declared),
                ("matches", "credits", "where"),
            )
        ]
        if declared
        else ["  none (prices: in a job file, or --prices FILE)"]
    )
    lines.append("learned from the balance:")
    lines += (
        [
            "  " + line
            for line in table(
                (
                    (
                        p["class"],
                        f"{p['credits']:,}",
                        f"run {p['run_id']} ({count(p['requests'], 'request')}, {p['learned_at']})",
                        p["api_base"],
                    )
                    for p in learned
                ),
                ("class", "credits", "evidence", "api"),
            )
        ]
        if learned
        else ["  none yet"]
    )
    if "by_class" in facts:
        rows = [
            (
                c["class"],
                f"{c['credits']:,}" if c["credits"] is not None else "unknown",
                c["source"],
            )
            for c in facts["by_class"]
        ]
        lines.append(f"{facts['job']}, by class:")
        lines += ["  " + line for line in table(rows, ("class", "credits", "source"))]
        lines += [f"warning: {sentence}" for sentence in facts["warnings"]]
    return lines
