"""The review page: a job's videos served live from the ledger, to pick, reject, rate and note.

A small HTTP server (the standard library's; one page, a JSON endpoint, the video files) on
127.0.0.1 only. The page is pages.py's, with controls; marks go to the `reviews` table.

Who may write: only the page this server handed out. Every /api/ call must carry the
session's token (a fresh random one per `batchgen review`, written into the page), in a
header another site's page cannot send without a CORS preflight this server never grants;
and the Host header must name this loopback address, so a DNS-rebound name cannot read the
page to learn the token. A page from an earlier session gets 403 and says to reload.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import LedgerBusy, PageRefused, PortBusy
from ..ledger import FAILURES as LEDGER_FAILURES
from ..ledger import Ledger
from . import pages, tiles
from .local_server import LoopbackHandler, in_background

MAX_NOTE = 2000  # characters
MAX_BODY = 16_384  # bytes of a review post
WRITE_TIMEOUT = 2.0  # seconds a mark waits for a run's write lock before the page is told to retry


@dataclass
class Session:
    """One `batchgen review`: the job, its ledger and download folder, and the token."""

    ledger: Ledger
    job: str
    out: Path
    token: str
    rows: list[str] | None = None
    cols: list[str] | None = None

    def media(self, row: dict[str, Any], files: list[str]) -> list[str]:
        """Links for a task's videos: the downloaded files through this server, else the
        result URLs as the API gave them (a video shows as soon as it is done)."""
        if files:
            return [f"/media/{row['key']}/{i}" for i in range(len(files))]
        if row["status"] != "completed":
            return []
        urls = json.loads(row["result_urls"] or "[]")
        return [
            url
            for url in urls
            if isinstance(url, str) and urlsplit(url).scheme in ("http", "https")
        ]

    def page(self, number: int = 1) -> str:
        try:
            return pages.page(
                self.ledger,
                self.job,
                self.out,
                self.rows,
                self.cols,
                live=pages.Live(self.token),
                media=self.media,
                number=number,
            )
        except pages.NoSuchPage as e:
            raise PageRefused(HTTPStatus.NOT_FOUND, str(e)) from None

    def tiles(self, number: int = 1) -> dict[str, Any]:
        """The tiles of page `number` as they stand now, for the page to follow."""
        keys = list(
            self.ledger.tasks.keys_in_order(
                self.job, start=(number - 1) * pages.PAGE_TILES, limit=pages.PAGE_TILES
            )
        )
        found = tiles.tiles(self.ledger, self.job, self.out, self.media, keys=keys)
        return {
            "job": self.job,
            "summary": tiles.job_summary(self.ledger, self.job),
            "tiles": [
                {
                    "key": t.key,
                    "outcome": t.outcome,
                    "media_html": pages.media_html(t),
                    "review": _review_fields(t.review),
                }
                for t in found
            ],
        }

    def file(self, key: str, index: int) -> Path | None:
        """A downloaded video of one of the job's tasks (nothing else is served)."""
        task = self.ledger.tasks.task(key)
        if task is None or not self.ledger.tasks.asks_for(self.job, key):
            return None
        found = tiles.files_on_disk(task, self.out)
        return Path(found[index]) if 0 <= index < len(found) else None

    def review(self, posted: Any) -> dict[str, Any]:
        """Record a mark from the page; raises `PageRefused` for anything but a valid one."""
        if not isinstance(posted, dict) or not isinstance(posted.get("key"), str):
            raise PageRefused(
                HTTPStatus.BAD_REQUEST, "a review is a JSON object with the request's key"
            )
        fields = {name: posted[name] for name in ("pick", "rating", "note") if name in posted}
        unknown = set(posted) - {"key", "pick", "rating", "note"}
        if unknown or not fields:
            raise PageRefused(
                HTTPStatus.BAD_REQUEST,
                f"a review sets pick, rating or note (got {', '.join(sorted(unknown)) or 'none'})",
            )
        if "pick" in fields and (
            isinstance(fields["pick"], bool) or fields["pick"] not in (None, 0, 1)
        ):
            raise PageRefused(HTTPStatus.BAD_REQUEST, "pick is 1 (picked), 0 (rejected) or null")
        rating = fields.get("rating")
        if rating is not None and (
            isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5
        ):
            raise PageRefused(
                HTTPStatus.BAD_REQUEST, "rating is a whole number from 1 to 5, or null"
            )
        note = fields.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
            raise PageRefused(
                HTTPStatus.BAD_REQUEST, f"note is text of at most {MAX_NOTE} characters"
            )
        if not self.ledger.tasks.asks_for(self.job, posted["key"]):
            raise PageRefused(
                HTTPStatus.NOT_FOUND,
                f"{posted['key'][:16]}… is not a request of the job {self.job!r}",
            )
        try:
            return _review_fields(self.ledger.reviews.record(self.job, posted["key"], fields))
        except LEDGER_FAILURES as e:
            if "locked" in str(e) or "busy" in str(e) or isinstance(e, LedgerBusy):
                raise PageRefused(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    "the ledger is busy (a run is writing to it); try again",
                ) from None
            raise


def _parsed(body: bytes) -> Any:
    """A posted body as JSON, or `PageRefused` (400): not JSON, nested past what Python parses
    (8,000 levels), or text that is not Unicode (a lone surrogate, `"\\ud800"`, which the
    ledger could not store and the answer could not carry)."""
    try:
        posted = json.loads(body)
        json.dumps(posted, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # (a ValueError too: first)
        raise PageRefused(
            HTTPStatus.BAD_REQUEST, "the body holds text that is not Unicode (a lone surrogate)"
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise PageRefused(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
    except RecursionError:
        raise PageRefused(
            HTTPStatus.BAD_REQUEST, "the body is nested too deep for a review"
        ) from None
    return posted


def _review_fields(review: dict[str, Any]) -> dict[str, Any]:
    return {"pick": review.get("pick"), "rating": review.get("rating"), "note": review.get("note")}


class _Handler(LoopbackHandler):
    server: ReviewServer
    server_version = "batchgen-review"

    @property
    def session(self) -> Session:
        return self.server.session

    def do_GET(self) -> None:
        self._serve(self._get)

    def do_POST(self) -> None:
        self._serve(self._post)

    def _serve(self, method: Any) -> None:
        try:
            if not self._host_is_ours():
                raise PageRefused(
                    HTTPStatus.MISDIRECTED_REQUEST,
                    "this server answers only to its own address (127.0.0.1)",
                )
            method(urlsplit(self.path).path)
        except PageRefused as e:
            # A refused POST may leave its body unread: on a kept-alive connection it would be
            # read as the next request. The connection is closed instead.
            self._json(
                e.status,
                {"error": str(e)},
                {"Connection": "close"} if self.command == "POST" else None,
            )
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug: answered all the same, never a connection left hanging
            self._json(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": f"batchgen error: {type(e).__name__}: {e}"},
                {"Connection": "close"},
            )

    def _host_is_ours(self) -> bool:
        port = self.server.server_address[1]
        return self.headers.get("Host", "") in {
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            f"[::1]:{port}",
        }

    def _check_token(self) -> None:
        given = self.headers.get("X-Batchgen-Token", "")
        if not secrets.compare_digest(given.encode(), self.session.token.encode()):
            raise PageRefused(
                HTTPStatus.FORBIDDEN, "this page belongs to an earlier review session: reload it"
            )

    def _get(self, path: str) -> None:
        if path == "/":
            page = self.session.page(self._page_number())
            self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
        elif path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        elif path == "/api/tiles":
            self._check_token()
            self._json(HTTPStatus.OK, self.session.tiles(self._page_number()))
        elif (found := re.fullmatch(r"/media/([0-9a-f]{64})/(\d{1,3})", path)) is not None:
            file = self.session.file(found.group(1), int(found.group(2)))
            if file is None:
                raise PageRefused(HTTPStatus.NOT_FOUND, "no such video")
            self._file(file)
        else:
            raise PageRefused(HTTPStatus.NOT_FOUND, "no such page")

    def _page_number(self) -> int:
        """`?page=N` of the address (1 without it)."""
        given = parse_qs(urlsplit(self.path).query).get("page", ["1"])
        if len(given) != 1 or not re.fullmatch(r"[1-9][0-9]{0,8}", given[0]):
            raise PageRefused(HTTPStatus.NOT_FOUND, "a page is ?page=N, N from 1")
        return int(given[0])

    def _post(self, path: str) -> None:
        if path != "/api/review":
            raise PageRefused(HTTPStatus.NOT_FOUND, "no such endpoint")
        self._check_token()
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            raise PageRefused(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "a review is posted as application/json"
            )
        given = (self.headers.get("Content-Length") or "").strip()
        if not re.fullmatch(r"\d{1,9}", given):
            raise PageRefused(
                HTTPStatus.BAD_REQUEST if given else HTTPStatus.LENGTH_REQUIRED,
                "a review needs a Content-Length in bytes",
            )
        length = int(given)
        if not 0 < length <= MAX_BODY:
            raise PageRefused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a review is at most {MAX_BODY} bytes"
            )
        self._json(HTTPStatus.OK, {"review": self.session.review(_parsed(self.rfile.read(length)))})

    def _file(self, file: Path) -> None:
        """A video, with single byte ranges (so the browser can seek)."""
        size = file.stat().st_size
        start, end = 0, size - 1
        status = HTTPStatus.OK
        wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if wanted and (wanted.group(1) or wanted.group(2)):
            if wanted.group(1):
                start = int(wanted.group(1))
                end = min(int(wanted.group(2)), size - 1) if wanted.group(2) else size - 1
            else:
                start = max(0, size - int(wanted.group(2)))
            if start > end:
                self._send(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                    b"",
                    "text/plain",
                    {"Content-Range": f"bytes */{size}"},
                )
                return
            status = HTTPStatus.PARTIAL_CONTENT
        with open(file, "rb") as f:
            f.seek(start)
            data = f.read(end - start + 1)
        headers = {"Accept-Ranges": "bytes"}
        if status == HTTPStatus.PARTIAL_CONTENT:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(
            status, data, mimetypes.guess_type(file.name)[0] or "application/octet-stream", headers
        )

    def _json(self, status: int, value: Any, headers: dict[str, str] | None = None) -> None:
        self._send(
            status, json.dumps(value, ensure_ascii=False).encode(), "application/json", headers
        )

    def _send(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        # The page's own inline script and style, its own videos and the API's result files; nothing else.
        super()._send(
            status,
            payload,
            content_type,
            {
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; media-src 'self' https: http:",
                **(headers or {}),
            },
        )


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, session: Session, port: int = 0):
        self.session = session
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a browser that hangs up mid-video is normal


def open_session(
    ledger_path: Path | str,
    job: str,
    out: Path,
    rows: list[str] | None = None,
    cols: list[str] | None = None,
) -> Session:
    """A review session on the ledger: marks wait briefly for a run's write lock, then the
    page is told to retry (reading is never blocked: the ledger is in WAL mode)."""
    tiles.check_axes((rows or []) + (cols or []))
    ledger = Ledger.open(ledger_path, create=False, busy_timeout=WRITE_TIMEOUT)
    return Session(ledger, job, out, secrets.token_urlsafe(24), rows, cols)


@contextlib.contextmanager
def serving(session: Session, port: int = 0) -> Iterator[ReviewServer]:
    """Serve the review page in a background thread for the duration of the block."""
    try:
        server = ReviewServer(session, port)
    except OSError as e:
        raise PortBusy(f"cannot serve the review page on 127.0.0.1:{port}: {e.strerror}") from None
    with in_background(server, poll_interval=0.05):
        yield server
