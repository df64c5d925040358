"""Counts said as a person says them: "1 request", "2 requests", "1,000 create calls"."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun, singular for one: count(1, "request") is "1 request"."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
