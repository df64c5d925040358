"""What pixwith's answers mean: its envelope `{"code", "message", "data"}` read into an
`Outcome` (see providers/base.py for what each kind allows).

- `RETRY`: 429 and 503 (refused before processing), with their Retry-After.
- `IN_DOUBT` for a create (RETRY for a call that creates nothing): 500/502/504, an answer
  that is not the documented JSON, code 1 without a task id.
- `AUTH`: HTTP 401/403, code 2, or the documented "Invalid API key" message.
- `NO_CREDIT`: the documented "Credits not enough" message.
- `REJECTED`: any other code 0, whatever its words say (moderation, bad parameters).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ...sending.http_transport import parse_retry_after
from ..base import Balance, Kind, Outcome, TaskState

# An `estimated_time` past this (or not a finite number) is recorded as unknown: no generation
# takes a month, and 1e308 seconds cannot even be added to a date.
MAX_ESTIMATED_TIME = 30 * 24 * 3600.0

# The messages the provider documents for these two cases, compared case-insensitively by prefix.
KEY_REFUSED_MESSAGE = "invalid api key"
NO_CREDIT_MESSAGE = "credits not enough"


def classify(status: int, retry_after: str | None, raw: bytes, *, creating: bool) -> Outcome:
    """What an HTTP answer means for the request (see the module docstring)."""
    doubt = Kind.IN_DOUBT if creating else Kind.RETRY
    if status in (429, 503):
        return Outcome(
            Kind.RETRY,
            f"HTTP {status}",
            retry_after=parse_retry_after(retry_after),
            http_status=status,
        )
    if status in (401, 403):
        return Outcome(Kind.AUTH, f"HTTP {status}: the API refused the key")
    if status >= 500:
        return Outcome(doubt, f"HTTP {status}")
    answer = _json(raw)
    if not isinstance(answer, dict) or "code" not in answer:
        if 400 <= status < 500:
            return Outcome(Kind.REJECTED, f"HTTP {status}")
        return Outcome(doubt, f"HTTP {status}: the answer is not the documented JSON")
    message = str(answer.get("message") or "")[:500]
    code = answer.get("code")
    if code == 1 and status < 300:
        data = answer.get("data")
        if not isinstance(data, dict):
            return Outcome(doubt, "answer code 1 without data")
        if not creating:
            return Outcome(Kind.OK, message, data=data)
        task_id = data.get("task_id")
        if not isinstance(task_id, str) or not task_id.strip():
            return Outcome(doubt, "answer code 1 without a task id")
        return Outcome(
            Kind.OK,
            message,
            task_id=task_id,
            estimated_time=estimated_time(data.get("estimated_time")),
        )
    # Only what the API documents decides that the whole run must stop: the key refused
    # (code 2, or its message) or the credit exhausted (its message). Any other code 0 is this
    # request's own rejection (moderation, bad parameters), whatever its words say.
    if code == 2 or message.lower().startswith(KEY_REFUSED_MESSAGE):
        return Outcome(Kind.AUTH, f"code {code}: {message}")
    if message.lower().startswith(NO_CREDIT_MESSAGE):
        return Outcome(Kind.NO_CREDIT, f"code {code}: {message}")
    return Outcome(Kind.REJECTED, f"code {code}: {message}" if message else f"code {code}")


def balance(outcome: Outcome) -> Balance:
    """get_credits's answer as a balance: a whole, finite, non-negative number of credits."""
    if outcome.kind is not Kind.OK:
        return Balance(None, outcome.message or outcome.kind.value, outcome.kind)
    credits = (outcome.data or {}).get("credits")
    if (
        isinstance(credits, bool)
        or not isinstance(credits, (int, float))
        or not math.isfinite(credits)
        or credits < 0
    ):
        return Balance(
            None, f"the answer holds no balance (credits: {str(credits)[:40]!r})", Kind.IN_DOUBT
        )
    if credits != int(credits) or credits > 10**15:
        return Balance(
            None, f"the balance {credits!r} is not a whole number of credits", Kind.IN_DOUBT
        )
    return Balance(int(credits), "", Kind.OK)


STATUS = {1: "processing", 2: "completed", 3: "failed"}  # get-task's `status`


def task_state(data: dict[str, Any]) -> TaskState:
    """get-task's `data` in batchgen's words: an unknown status is still processing."""
    status = STATUS.get(data.get("status"), "processing")  # type: ignore[arg-type]
    urls = data.get("result_urls")
    error = data.get("error")
    return TaskState(
        status,
        tuple(u for u in urls if isinstance(u, str)) if isinstance(urls, list) else (),
        error if status == "failed" and isinstance(error, str) else None,
    )


def upload_form(data: dict[str, Any]) -> tuple[str, dict[str, str], str] | None:
    """pre_url's answer: (form URL, its fields, the image's URL to be), or None if it lacks one."""
    upload = data.get("upload_url")
    image_url = data.get("image_url")
    if not isinstance(upload, dict) or not isinstance(image_url, str) or not image_url:
        return None
    url, fields = upload.get("url"), upload.get("fields")
    if not isinstance(url, str) or not isinstance(fields, dict):
        return None
    return url, {str(k): str(v) for k, v in fields.items()}, image_url


def estimated_time(value: Any) -> float | None:
    """Seconds, or None (unknown) for anything that is not a sane, finite, non-negative number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an integer with hundreds of digits
        return None
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_ESTIMATED_TIME:
        return None
    return seconds


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
