"""How batchgen speaks HTTP to a provider: its timeouts, what a Retry-After header asks, and an
httpx transport that gives each call a connection of its own (API calls and result-file
downloads both go through it)."""

from __future__ import annotations

import email.utils
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import httpx

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


def proxy_in_environment() -> bool:
    """Whether HTTP_PROXY, HTTPS_PROXY or ALL_PROXY is set (httpx.Client decides, with
    NO_PROXY, whether it applies to the API)."""
    return any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies())


class OneConnectionEach(httpx.BaseTransport):
    """An httpx transport that lends each call a connection of its own, for as long as its
    answer is open, and takes it back when the answer is closed.

    httpcore's connection pool, shared by every thread, checks each connection it holds (a
    poll() per connection) on every request and every answer, under one lock: at 64 calls in
    flight that was most of a run's CPU, and at 8 downloads it still cost a twentieth of their
    time (BENCHMARKS.md, Scale). Here each connection is a pool of its own, kept on a stack: a
    call takes the one last given back (the one most likely still open), or opens one if fewer
    than `max_connections` are, or waits for one up to the pool timeout. Every connection uses
    the process's one TLS context (`tls_context`).

    A connection is not tied to a host: one taken for another host than it last served
    closes and connects anew (result files may come from more than one host)."""

    def __init__(self, max_connections: int):
        self._max = max(1, max_connections)
        self._free: list[httpx.HTTPTransport] = []
        self._opened = 0
        self._closed = False
        self._available = threading.Condition(threading.Lock())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        connection = self._take(request.extensions.get("timeout", {}).get("pool"))
        try:
            response = connection.handle_request(request)
        except BaseException:
            self._give_back(connection)
            raise
        response.stream = _Lent(response.stream, lambda: self._give_back(connection))  # type: ignore[arg-type]
        return response

    def _take(self, timeout: float | None) -> httpx.HTTPTransport:
        with self._available:
            if not self._available.wait_for(
                lambda: self._free or self._opened < self._max, timeout
            ):
                raise httpx.PoolTimeout("no connection came free in time")
            if self._free:
                return self._free.pop()
            self._opened += 1
        return httpx.HTTPTransport(verify=tls_context(), limits=_ONE_CONNECTION)

    def _give_back(self, connection: httpx.HTTPTransport) -> None:
        with self._available:
            if not self._closed:
                self._free.append(connection)
                self._available.notify()
                return
        connection.close()

    def close(self) -> None:
        with self._available:
            self._closed = True
            free, self._free = self._free, []
        for connection in free:
            connection.close()


_ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1)

_tls: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


def tls_context() -> ssl.SSLContext:
    """The TLS context (httpx's default: certificates checked against its CA bundle) that
    every connection of this process uses: loading the bundle takes ~20 ms, so it is made
    once, by the first caller (the others wait for it)."""
    global _tls
    with _tls_lock:
        if _tls is None:
            _tls = httpx.create_ssl_context()
        return _tls


def prepare_tls() -> None:
    """Start making the TLS context in the background, for a command that will call out
    after other work: the bundle is loaded with Python's lock released, on another core
    while the command reads its job (a run's first call then finds it made)."""
    threading.Thread(target=tls_context, name="batchgen-tls", daemon=True).start()


class _Lent(httpx.SyncByteStream):
    """An answer's body; closing it gives its connection back (once)."""

    def __init__(self, stream: httpx.SyncByteStream, give_back: Callable[[], None]):
        self._stream = stream
        self._give_back: Callable[[], None] | None = give_back

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            give_back, self._give_back = self._give_back, None
            if give_back is not None:
                give_back()
