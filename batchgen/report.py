"""How problems are printed: `text` (file:line:col: path: message) or `json`."""

from __future__ import annotations

import json
from typing import Iterable

from .errors import Problem


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
