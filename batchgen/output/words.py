"""Counts and values said as a person says them: "1 request", "2 requests", `16:9`."""

from __future__ import annotations

import json


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun, singular for one: count(1, "request") is "1 request"."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def value_text(value: object) -> str:
    """`16:9`, `5`, `true`: an option's value as a job file writes it (no JSON quotes)."""
    return json.dumps(value, ensure_ascii=False).strip('"')
