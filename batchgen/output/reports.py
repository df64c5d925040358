"""How results are printed, one reporter per format: problems as `text` (file:line:col: path:
message) or `json`; a plan as text lines or one streamed JSON object."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from .. import providers
from ..errors import Problem
from ..jobs.prices import PriceBook, describe_class
from .progress import streamed_table, table, when_due
from .words import count

if TYPE_CHECKING:
    from ..jobs.validate import ValidatedJob
    from ..sending.plan import Plan, StateLookup


def problem_lines(problems: Iterable[Problem]) -> list[str]:
    lines = []
    for problem in problems:
        line = str(problem)
        if problem.count > 1:
            line += f" [{count(problem.count, 'request')}]"
        lines.append(line)
    return lines


def problems_json(file: str, problems: list[Problem], valid: bool) -> str:
    return json.dumps(
        {"file": file, "valid": valid, "problems": [p.to_dict() for p in problems]},
        ensure_ascii=False,
    )


def plan_lines(result: Plan) -> list[str]:
    lines = [
        f"job {result.job} against {result.api_base}: {count(sum(result.counts.values()), 'request')}"
    ]
    width = max([14, *map(len, result.by_model)])  # model names line up, however long
    for model, counts in sorted(result.by_model.items()):
        lines.append(
            f"  {model:<{width}} "
            + "  ".join(f"{action} {n}" for action, n in sorted(counts.items()))
        )
    lines.append(
        "a run would send " + str(result.counts.get("new", 0) + result.counts.get("failed", 0))
    )
    if result.credits or not result.unknown:
        by_model = ", ".join(f"{m} {n:,}" for m, n in sorted(result.credits_by_model.items()))
        lines.append(
            f"cost: {result.credits:,} credits at known prices"
            + (f" ({by_model})" if by_model else "")
        )
    if result.unknown and result.unknown_by_class is None:
        lines.append(
            "no price is known for any of them: declare prices (prices: in the job, --prices FILE) or let a run learn them"
        )
    elif result.unknown:
        classes = "; ".join(
            f"{describe_class(k, result.catalogue)} ({n})"
            for k, n in result.unknown_classes.most_common()
        )
        lines.append(f"no known price for {result.unknown} of them: {classes}")
    lines += [f"warning: {sentence}" for sentence in result.price_warnings]
    return lines


def write_plan_json(
    out: TextIO,
    validated: ValidatedJob,
    result: Plan,
    states: StateLookup,
    book: PriceBook | None = None,
) -> None:
    from ..sending.plan import planned

    # Streamed: the requests are written as they are planned; counts come last in the text.
    out.write(
        f'{{"job":{json.dumps(result.job)},"api_base":{json.dumps(result.api_base)},"requests":['
    )
    for i, item in enumerate(planned(validated, states, book)):
        result.count(item)
        row = {
            "key": item.request.key,
            "variant": item.request.variant,
            "body": item.request.body,
            "action": item.action,
            "credits": item.credits,
        }
        out.write(("," if i else "") + json.dumps(row, ensure_ascii=False))
    out.write(f'],"counts":{json.dumps(result.summary())}}}\n')


def status_report(
    name: str | None, rows: list[dict[str, Any]], unsent: int, due: str | None, *, as_json: bool
) -> list[str]:
    """`status`: counts per model, state and status; as a table, or one JSON object."""
    if as_json:
        counts = [
            dict(row, model=providers.model_label(row["model"] or ""), api_model=row["model"])
            for row in rows
        ]
        return [json.dumps({"job": name, "counts": counts, "not_sent": unsent, "last_due": due})]
    if not rows:
        return [f"nothing in the ledger{' for ' + name if name else ''} yet"]
    lines = table(
        ((providers.model_label(r["model"] or ""), r["state"], r["status"], r["n"]) for r in rows),
        ("model", "state", "status", "count"),
    )
    if unsent:
        lines.append(f"{count(unsent, 'request')} of {name} not sent yet")
    if due:
        lines.append(f"last task due: {when_due(due)}")
    return lines


def write_lines(out: TextIO, lines: Iterable[str]) -> None:
    """`tasks --json`: the rows, each already one JSON object (`Queries.rows_as_json`), one a
    line, streamed."""
    out.writelines(line + "\n" for line in lines)


def write_tasks(
    out: TextIO, rows: Callable[[], Iterable[dict[str, Any]]], columns: list[str], fmt: str
) -> None:
    """`tasks`: the ledger's rows as `csv` (every column, a header even with no rows) or `text`
    (a short table), streamed: `rows()` gives them afresh each time it is called (the table
    reads them twice, once for its widths), so memory stays one row's at any ledger size."""
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows())
        return

    def shown() -> Iterator[tuple[Any, ...]]:
        for r in rows():
            yield (
                r.get("label") or r["key"][:12],
                providers.model_label(r["model"] or ""),
                r["variant"],
                r["state"],
                r["status"],
                r["task_id"],
                (r["error"] or r["prompt"] or "")[:50],
            )

    header = ("id / key", "model", "v", "state", "status", "task_id", "prompt / error")
    for line in streamed_table(shown, header):
        out.write(line + "\n")


def runs_report(rows: list[dict[str, Any]], *, as_json: bool) -> list[str]:
    """`runs`: the run history, newest first; as a table, or one JSON object a line (every
    column of `runs`, with `flags` and `counts` as objects)."""
    if as_json:
        return [
            json.dumps(
                {
                    **row,
                    "flags": _json_or_text(row.get("flags")),
                    "counts": _json_or_text(row.get("counts")),
                }
            )
            for row in rows
        ]
    if not rows:
        return ["no runs yet"]
    shown = []
    for row in rows:
        counts = _json_or_text(row.get("counts")) or {}
        counts = counts if isinstance(counts, dict) else {}
        did = ", ".join(
            f"{n} {k}"
            for k, n in sorted(counts.items())
            if isinstance(n, int) and k not in _CREDIT_COUNTS and n
        )
        before, after = row.get("credits_before"), row.get("credits_after")
        credits = f"{before:,} → {after:,}" if before is not None and after is not None else ""
        # What the balance says the run spent (the true figure), and what the prices said
        # when they differ: a price is wrong (or another client spent meanwhile).
        priced = counts.get("spent") if isinstance(counts.get("spent"), int) else None
        if before is not None and after is not None:
            spent = f"{before - after:,}" + (
                f" (prices: {priced:,})" if priced is not None and priced != before - after else ""
            )
        else:
            spent = f"{priced:,} at prices" if priced is not None else ""
        shown.append(
            (
                row["id"],
                (row["started_at"] or "")[:19].replace("T", " "),
                row["job"],
                api_name(row.get("api_base")),
                did or "-",
                spent,
                credits,
                "running"
                if row["ended_at"] is None
                else "gone"
                if row["exit_code"] is None
                else row["exit_code"],
            )
        )
    return table(
        shown,
        (
            "run",
            "started (UTC)",
            "job",
            "api",
            "did",
            "spent",
            "balance",
            "exit",
        ),
    )


def api_name(api_base: str | None) -> str:
    """The API a run sent to, as a person names it: `sandbox` for the built-in one."""
    if not api_base:
        return "?"
    if api_base == providers.for_api(api_base).sandbox_identity:
        return "sandbox"
    return api_base.split("://", 1)[-1]


_CREDIT_COUNTS = ("spent", "spent_by_balance")


def _json_or_text(value: Any) -> Any:
    try:
        return json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return value
