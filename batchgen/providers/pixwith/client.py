"""pixwith.ai's calls over httpx: create, get, get_credits, and an image's upload (pre_url,
then the presigned form POST to the storage host). Each answer is read by answers.py.

The upload flow: `pre_url` (image name and content type) answers a presigned S3 form
(`upload_url.url` and `upload_url.fields`) and the CDN URL the image will have; then one
`multipart/form-data` POST to that form carrying every field exactly once, the file last, as
`file`, and no API key. The values are opaque and used exactly as given. Each attempt asks
pre_url afresh, so a target that expired (they last 10 minutes) is simply replaced.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import httpx

from ... import __version__
from ...jobs.images import LocalImage
from ...sending.http_transport import DEFAULT_TIMEOUT, OneConnectionEach, proxy_in_environment
from ..base import Balance, Kind, Outcome, Uploaded
from ..keys import redact, remember_secret
from . import answers

MAX_ANSWER_BYTES = 1 << 20  # an answer larger than this is not the documented JSON


class PixwithApi:
    """The pixwith.ai task API at `base_url`, authenticated with `api_key` (a `Provider`)."""

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
        self._storage: httpx.Client | None = None
        # Calls go straight to an httpx transport (its connection pool), not through
        # httpx.Client: a run makes thousands of calls to one host with fixed headers, and the
        # client's per-call work (merging URLs, headers and cookies, auth and redirect
        # machinery, reading cookies off every answer) was ~20% of a call's CPU, which at low
        # latency is the run's whole cost (BENCHMARKS.md, Scale). None of it applies here: no
        # redirects are followed, no cookies or auth flows are used. A proxy set in the
        # environment is honoured by httpx.Client's own rules, so then calls go through one.
        self._deliver: Callable[[httpx.Request], httpx.Response]
        self._pool: httpx.Client | httpx.BaseTransport
        if transport is None and proxy_in_environment():
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
        if self._storage is not None:
            self._storage.close()

    def __enter__(self) -> PixwithApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Provider calls --------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> Outcome:
        """POST /api/task/create, classified. Never raises for anything the network does."""
        return self._call("/api/task/create", body, creating=True)

    def get(self, task_id: str, handle: str | None = None) -> Outcome:
        """POST /api/task/get (the id is all it needs: `handle` is never set for pixwith).
        Safe to repeat, so every transport error is RETRY."""
        outcome = self._call("/api/task/get", {"task_id": task_id}, creating=False)
        if outcome.kind is not Kind.OK:
            return outcome
        return dataclasses.replace(outcome, task=answers.task_state(outcome.data or {}))

    def balance(self) -> Balance:
        """POST /api/task/get_credits: the account's balance, or why it is not known."""
        return answers.balance(self._call("/api/task/get_credits", None, creating=False))

    def upload(self, image: LocalImage, data: bytes) -> Uploaded:
        """One attempt: a fresh presigned form from pre_url, then the form POST."""
        target = self.pre_url(image.name, image.content_type)
        if target.kind is Kind.AUTH:
            return Uploaded(Kind.AUTH, reason=f"the API refused the key ({target.message})")
        if target.kind is not Kind.OK:
            # Refused (bad format, ...): another try changes nothing, unless it may.
            kind = Kind.RETRY if target.kind is Kind.RETRY else Kind.REJECTED
            return Uploaded(kind, reason=f"pre_url: {target.message}")
        form = answers.upload_form(target.data or {})
        if form is None:
            return Uploaded(
                Kind.RETRY, reason="pre_url answered without an upload form and an image URL"
            )
        url, fields, image_url = form
        try:
            answer = self._storage_client().post(
                url, data=fields, files={"file": (image.name, data, image.content_type)}
            )
        except httpx.HTTPError as e:
            return Uploaded(Kind.RETRY, reason=f"upload: {type(e).__name__}: {e}")
        if 200 <= answer.status_code < 300:
            return Uploaded(Kind.OK, url=image_url)
        reason = f"upload: HTTP {answer.status_code} {answer.text[:120]}"
        if answer.status_code < 500 and answer.status_code not in (403, 408, 429):
            return Uploaded(Kind.REJECTED, reason=reason)
        return Uploaded(Kind.RETRY, reason=reason)  # 403: expired or refused signature

    def pre_url(self, image_name: str, content_type: str) -> Outcome:
        """POST /api/task/pre_url: where to upload an image (`data.upload_url`) and the URL it
        will have (`data.image_url`). Safe to repeat: nothing is created or billed."""
        return self._call(
            "/api/task/pre_url",
            {"image_name": image_name, "content_type": content_type},
            creating=False,
        )

    # -- HTTP ----------------------------------------------------------------------------

    def _storage_client(self) -> httpx.Client:
        # No API key on the form POST: it goes to the storage host, not the API.
        if self._storage is None:
            self._storage = httpx.Client(
                timeout=httpx.Timeout(30.0, read=120.0), follow_redirects=False, trust_env=False
            )
        return self._storage

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
        return answers.classify(
            response.status_code, response.headers.get("Retry-After"), raw, creating=creating
        )


class _TooLarge(Exception):
    pass


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
