"""What batchgen's two small HTTP servers share (the sandbox, the review page): a request
handler for keep-alive clients on loopback that answers in one write, and serving one in a
background thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextlib.contextmanager
def in_background(server: ThreadingHTTPServer, poll_interval: float) -> Iterator[None]:
    """Serve `server` in a daemon thread for the duration of the block, then shut it down."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


class LoopbackHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients pool connections
    # One write per answer and no Nagle: headers and body sent apart, with Nagle on, cost a
    # delayed ACK (~40 ms) per call on loopback.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    sys_version = ""

    def log_message(
        self, format: str, *args: Any
    ) -> None:  # quiet: what matters is recorded elsewhere
        pass

    def _send(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        """One answer: status, type, length, `headers`, body."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (
            BrokenPipeError,
            ConnectionResetError,
        ):  # the client gave up (a read timeout, a closed tab)
            self.close_connection = True
