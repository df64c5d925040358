"""The provider's two calls over httpx, and what every possible outcome of a call means.

The one question that matters for money: could this call have created (and billed) a task?
- `RETRY`: certainly not (refused before processing: 429, 503, or the request never left:
  connect error, connect or pool timeout). Safe to send again.
- `IN_DOUBT`: maybe (read timeout, connection lost after sending, 500/502/504, an answer that
  is not the documented JSON). Never resent without the user saying so.
- `OK`, `REJECTED` (the API answered code ≠ 1), `AUTH` (key refused), `NO_CREDIT`.
"""

from __future__ import annotations

import dataclasses
import email.utils
import enum
import functools
import json
import math
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import httpx

from . import __version__
from .errors import UsageError
from .http_transport import OneConnectionEach

MAX_ANSWER_BYTES = 1 << 20  # an answer larger than this is not the documented JSON
# An `estimated_time` past this (or not a finite number) is recorded as unknown: no generation
# takes a month, and 1e308 seconds cannot even be added to a date.
MAX_ESTIMATED_TIME = 30 * 24 * 3600.0

# Timeouts are set on purpose. Connecting and waiting for a pooled connection happen before
# anything is sent, so they may be short and are retried. Reading is the answer to a call
# that may have created a task: a timeout there makes the request `in_doubt`, so it is long.
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=30.0, pool=60.0)


def timeout(read: float) -> httpx.Timeout:
    """The default timeouts with another read timeout (`--read-timeout`)."""
    return httpx.Timeout(
        connect=DEFAULT_TIMEOUT.connect,
        read=read,
        write=DEFAULT_TIMEOUT.write,
        pool=DEFAULT_TIMEOUT.pool,
    )


class Kind(enum.Enum):
    OK = "ok"
    RETRY = "retry"
    IN_DOUBT = "in_doubt"
    REJECTED = "rejected"
    AUTH = "auth"
    NO_CREDIT = "no_credit"


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    message: str = ""
    task_id: str | None = None
    estimated_time: float | None = None
    retry_after: float | None = None  # seconds, from a Retry-After header
    data: dict[str, Any] | None = None  # get-task's `data`
    http_status: int | None = None  # None when no answer came

    @property
    def throttled(self) -> bool:
        """The API asked us to slow down (429 or 503): pause everyone, not only this call."""
        return self.http_status in (429, 503)


def check_api_key(key: str, source: str) -> str:
    """The key, if it can be sent as it is: printable ASCII, no whitespace.

    Checked before anything is sent. A stray newline or tab (a key pasted from a file) would
    otherwise make httpx refuse the header with an error that quotes the key in full. The
    message never contains the key, only where it came from and what is wrong.
    """
    if len(key) < MIN_KEY_LENGTH:
        raise UsageError(
            f"the API key from {source} is {len(key)} characters long; an API key has at least {MIN_KEY_LENGTH}"
        )
    for position, char in enumerate(key, start=1):
        if not 33 <= ord(char) <= 126:
            what = "whitespace" if char.isspace() else "a character that is not printable ASCII"
            raise UsageError(
                f"the API key from {source} has {what} at position {position} of {len(key)}; "
                "an API key is printable ASCII with no spaces or line breaks"
            )
    return key


MIN_KEY_LENGTH = 8  # the documented keys have 36; a shorter one is a mistake (and unredactable)
_SECRETS: set[str] = set()


def remember_secret(secret: str) -> None:
    """Note a key this process holds, so no error message it prints can show it."""
    if len(secret) >= MIN_KEY_LENGTH:
        _SECRETS.add(secret)


def redact_secrets(text: str) -> str:
    """`text` with every key this process has held redacted (see `redact`)."""
    for secret in _SECRETS:
        text = redact(text, secret)
    return text


def redact(text: str, secret: str) -> str:
    """`text` with `secret` replaced in every form it could appear in: as is, in a str or bytes
    repr (escapes), and URL-encoded."""
    if not secret:
        return text
    for form in _forms(secret):
        text = text.replace(form, "<api key>")
    return text


@functools.lru_cache(maxsize=16)
def _forms(secret: str) -> tuple[str, ...]:
    # Worked out once per key, not at every call's answer (a run redacts thousands).
    forms = {
        secret,
        repr(secret)[1:-1],
        repr(secret.encode("utf-8", "backslashreplace"))[2:-1],
        quote(secret, safe=""),
        quote_plus(secret),
    }
    return tuple(form for form in sorted(forms, key=len, reverse=True) if form)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also takes "²", which float() refuses
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Api:
    """The pixwith.ai task API at `base_url`, authenticated with `api_key`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_connections: int = 16,
    ):
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        remember_secret(api_key)
        self._headers = httpx.Headers(
            {
                "Api-Key": api_key,
                "Content-Type": "application/json",
                "User-Agent": f"batchgen/{__version__}",
            }
        )
        self._timeout = timeout.as_dict()
        self._urls: dict[str, httpx.URL] = {}
        # Calls go straight to an httpx transport (its connection pool), not through
        # httpx.Client: a run makes thousands of calls to one host with fixed headers, and the
        # client's per-call work (merging URLs, headers and cookies, auth and redirect
        # machinery, reading cookies off every answer) was ~20% of a call's CPU, which at low
        # latency is the run's whole cost (BENCHMARKS.md, Scale). None of it applies here: no
        # redirects are followed, no cookies or auth flows are used. A proxy set in the
        # environment is honoured by httpx.Client's own rules, so then calls go through one.
        self._deliver: Callable[[httpx.Request], httpx.Response]
        self._pool: httpx.Client | httpx.BaseTransport
        if transport is None and _proxy_in_environment():
            limits = httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            )
            client = httpx.Client(timeout=timeout, limits=limits, follow_redirects=False)
            self._deliver, self._pool = (lambda request: client.send(request, stream=True)), client
        else:
            self._pool = transport or OneConnectionEach(max_connections)
            self._deliver = self._pool.handle_request

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, body: dict[str, Any]) -> Outcome:
        """POST /api/task/create, classified. Never raises for anything the network does."""
        return self._call("/api/task/create", body, creating=True)

    def get(self, task_id: str) -> Outcome:
        """POST /api/task/get. Safe to repeat, so every transport error is RETRY."""
        return self._call("/api/task/get", {"task_id": task_id}, creating=False)

    def pre_url(self, image_name: str, content_type: str) -> Outcome:
        """POST /api/task/pre_url: where to upload an image (`data.upload_url`) and the URL it
        will have (`data.image_url`). Safe to repeat: nothing is created or billed."""
        return self._call(
            "/api/task/pre_url",
            {"image_name": image_name, "content_type": content_type},
            creating=False,
        )

    def get_credits(self) -> Balance:
        """POST /api/task/get_credits: the account's balance, or why it is not known."""
        outcome = self._call("/api/task/get_credits", None, creating=False)
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

    def _call(self, path: str, body: dict[str, Any] | None, *, creating: bool) -> Outcome:
        outcome = self._send(path, body, creating=creating)
        # The key is never written anywhere, even if an answer or an error were to echo it.
        message = redact(outcome.message, self._key)
        return (
            outcome if message == outcome.message else dataclasses.replace(outcome, message=message)
        )

    def _send(self, path: str, body: dict[str, Any] | None, *, creating: bool) -> Outcome:
        payload = b"" if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        url = self._urls.get(path) or self._urls.setdefault(path, httpx.URL(self.base_url + path))
        request = httpx.Request(
            "POST",
            url,
            headers=self._headers,
            content=payload,
            extensions={"timeout": self._timeout},
        )
        try:
            response = self._deliver(request)
            try:
                raw = _read_capped(response)
            finally:
                response.close()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
            return Outcome(Kind.RETRY, f"not sent: {_describe(e)}")
        except httpx.TransportError as e:
            # Read/write timeouts, connection lost after sending, protocol errors: the API
            # may have acted on it.
            return Outcome(Kind.IN_DOUBT if creating else Kind.RETRY, f"no answer: {_describe(e)}")
        except _TooLarge:
            return Outcome(
                Kind.IN_DOUBT if creating else Kind.RETRY,
                f"answer larger than {MAX_ANSWER_BYTES} bytes",
            )
        return classify(
            response.status_code, response.headers.get("Retry-After"), raw, creating=creating
        )


@dataclass(frozen=True)
class Balance:
    """What get_credits said: the balance, or None and why not (`kind` AUTH: the key)."""

    credits: int | None
    problem: str = ""
    kind: Kind = Kind.OK


class _TooLarge(Exception):
    pass


def _proxy_in_environment() -> bool:
    """Whether HTTP_PROXY, HTTPS_PROXY or ALL_PROXY is set (httpx.Client decides, with
    NO_PROXY, whether it applies to the API)."""
    return any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies())


def _read_capped(response: httpx.Response) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(error: httpx.HTTPError) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if text != type(error).__name__ else text


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


# The messages the provider documents for these two cases, compared case-insensitively by prefix.
KEY_REFUSED_MESSAGE = "invalid api key"
NO_CREDIT_MESSAGE = "credits not enough"


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
