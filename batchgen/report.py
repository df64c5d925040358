"""How results are printed, one reporter per format: problems as `text` (file:line:col: path:
message) or `json`; a plan as text lines or one streamed JSON object."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterable, TextIO

from .errors import Problem
from .plan import Plan, StateLookup, planned

if TYPE_CHECKING:
    from .validate import ValidatedJob


def problem_lines(problems: Iterable[Problem]) -> list[str]:
    lines = []
    for problem in problems:
        line = str(problem)
        if problem.count > 1:
            line += f" [{problem.count} requests]"
        lines.append(line)
    return lines


def problems_json(file: str, problems: list[Problem], valid: bool) -> str:
    return json.dumps(
        {"file": file, "valid": valid, "problems": [p.to_dict() for p in problems]}, ensure_ascii=False
    )


def plan_lines(result: Plan) -> list[str]:
    lines = [f"job {result.job} against {result.api_base}: {sum(result.counts.values())} requests"]
    for model, counts in sorted(result.by_model.items()):
        lines.append(f"  {model:<14} " + "  ".join(f"{action} {n}" for action, n in sorted(counts.items())))
    lines.append("a run would send " + str(result.counts.get("new", 0) + result.counts.get("failed", 0)))
    return lines


def write_plan_json(out: TextIO, validated: "ValidatedJob", result: Plan, states: StateLookup) -> None:
    # Streamed: the requests are written as they are planned; counts come last in the text.
    out.write('{"job":%s,"api_base":%s,"requests":[' % (json.dumps(result.job), json.dumps(result.api_base)))
    for i, item in enumerate(planned(validated, states)):
        result.count(item)
        row = {"key": item.request.key, "variant": item.request.variant, "body": item.request.body, "action": item.action}
        out.write(("," if i else "") + json.dumps(row, ensure_ascii=False))
    out.write('],"counts":%s}\n' % json.dumps(result.summary()))
