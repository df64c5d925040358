"""Time as the ledger writes it: ISO 8601 UTC text with milliseconds, which sorts as it reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def now() -> datetime:
    return datetime.now(UTC)


def timestamp(when: datetime | None = None) -> str:
    """`2026-11-23T22:55:37.154Z`."""
    return (when or now()).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def later(when: datetime, seconds: float | None) -> datetime | None:
    """`when` plus `seconds`, or None when that is unknown or past any representable date."""
    if seconds is None:
        return None
    try:
        return when + timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        return None
