"""The sandbox's HTTP side: a local stand-in for the pixwith.ai task API, with its bad days
on demand.

Same endpoints, envelope and rules as the real API (bodies are checked with the same
`request.schema.json`), over real HTTP on 127.0.0.1. It accepts the documented test key,
answers with task ids and ETAs, moves tasks from processing (1) to completed (2) or, for a
fraction, failed (3), and serves a small playable MP4 for each completed task. Faults are
injected at configured rates from a seeded random generator.

Everything it received is recorded (`Sandbox.calls`, `GET /_sandbox/stats`), so a test can
assert from the server's side that a request body was created exactly once.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from typing import Any

from ....errors import SandboxPortBusy
from ....jobs import schemas
from ....web.local_server import LoopbackHandler, in_background
from . import storage
from .state import Call, Sandbox, SandboxConfig, parse_task_id, sample_video, sandbox_price


class _Drop(Exception):
    """Close the connection without an answer."""


class _Handler(LoopbackHandler):
    server: SandboxServer
    server_version = "batchgen-sandbox"

    @property
    def sandbox(self) -> Sandbox:
        return self.server.sandbox

    # -- routing --------------------------------------------------------------------------

    def do_POST(self) -> None:
        if self.path == "/_sandbox/upload":
            self._upload()
            return
        endpoint = {
            "/api/task/create": "create",
            "/api/task/get": "get",
            "/api/task/get_credits": "credits",
            "/api/task/pre_url": "pre_url",
        }.get(self.path)
        body = self._read_body()
        if endpoint is None:
            self._answer(HTTPStatus.NOT_FOUND, 0, f"no such endpoint: POST {self.path}")
            return
        try:
            if endpoint == "create":
                self._create(body)
            elif endpoint == "credits":
                self._credits()
            elif endpoint == "pre_url":
                self._pre_url(body)
            else:
                self._get(body)
        except _Drop:
            self.close_connection = True

    def do_GET(self) -> None:
        if self.path == "/_sandbox/stats":
            self._send(HTTPStatus.OK, json.dumps(self.sandbox.stats()).encode(), "application/json")
        elif self.path == "/_sandbox/calls":
            calls = [asdict(c) for c in list(self.sandbox.calls)]
            self._send(HTTPStatus.OK, json.dumps(calls).encode(), "application/json")
        elif self.path.startswith("/_sandbox/files/"):
            self._file(self.path.rsplit("/", 1)[-1])
        elif self.path.startswith("/_sandbox/images/"):
            found = self.sandbox.images.get(self.path.removeprefix("/_sandbox/"))
            if found is None:
                self._answer(HTTPStatus.NOT_FOUND, 0, "no such image")
            else:
                self._send(HTTPStatus.OK, found[1], found[0])
        elif self.path.startswith("/api/"):
            self._answer(HTTPStatus.METHOD_NOT_ALLOWED, 0, "the API takes POST with a JSON body")
        else:
            self._answer(HTTPStatus.NOT_FOUND, 0, f"no such endpoint: GET {self.path}")

    # -- endpoints ------------------------------------------------------------------------

    def _create(self, raw: bytes | None) -> None:
        sandbox, config = self.sandbox, self.sandbox.config
        arrived = time.time()
        key_ok = self.headers.get("Api-Key") in config.keys
        body = _json_or_none(raw)

        def record(outcome: str, task_id: str | None = None) -> None:
            sandbox.record(
                Call(
                    arrived,
                    "create",
                    outcome,
                    body,
                    task_id,
                    key_ok,
                    self.headers.get("Content-Type"),
                )
            )

        if sandbox.chance(config.drop_rate):
            record("dropped")
            raise _Drop
        self._delay()
        wait = sandbox.rpm_wait()
        if wait:
            record("429")
            self._answer(429, 0, "rate limit exceeded", {"Retry-After": str(math.ceil(wait))})
            return
        for status in (429, 503, 500):
            if sandbox.chance(getattr(config, f"rate_{status}")):
                record(str(status))
                headers = {"Retry-After": self._retry_after()} if status != 500 else {}
                self._answer(status, 0, HTTPStatus(status).phrase.lower(), headers)
                return
        problem = self._refusal(raw, body, key_ok)
        if problem:
            record(problem[0])
            self._answer(*problem[1:])
            return
        problems = schemas.body_problems(body, sandbox.checker)
        if problems:
            record("invalid")
            self._answer(HTTPStatus.OK, 0, "; ".join(problems))
            return
        if any(self._unknown_image(url) for url in body.get("image_urls") or []):
            record("invalid_image")
            self._answer(HTTPStatus.OK, 0, "Invalid image url")
            return
        if sandbox.chance(config.reject_rate):
            record("rejected")
            self._answer(HTTPStatus.OK, 0, config.reject_message)
            return
        if not sandbox.take_credits(sandbox_price(body)):
            record("no_credit")
            self._answer(HTTPStatus.OK, 0, "Credits not enough")
            return
        options = body.get("options") or {}
        task_id, eta = sandbox.new_task(
            body["model_id"], int(options.get("num_outputs") or 1), options
        )
        if sandbox.chance(config.lose_answer_rate):
            record("lost", task_id)
            raise _Drop
        if sandbox.chance(config.slow_rate):
            record("slow", task_id)
            time.sleep(config.slow_seconds)
        else:
            record("created", task_id)
        self._answer(HTTPStatus.OK, 1, "success", data={"task_id": task_id, "estimated_time": eta})
        sandbox.task_answered()

    def _credits(self) -> None:
        """POST /api/task/get_credits (no body): the balance."""
        sandbox = self.sandbox
        key_ok = self.headers.get("Api-Key") in sandbox.config.keys
        self._delay()
        if not key_ok:
            sandbox.record(Call(time.time(), "credits", "unauthorized", None, None, key_ok))
            self._answer(
                HTTPStatus.OK, 2, "Invalid API key. Get a valid API key at https://pixwith.ai/api"
            )
            return
        with sandbox._lock:
            balance = sandbox.balance
        sandbox.record(Call(time.time(), "credits", "answered", None, None, key_ok))
        self._answer(HTTPStatus.OK, 1, "success", data={"credits": balance})

    def _unknown_image(self, url: str) -> bool:
        """A sandbox image URL (any port: an earlier sandbox's too) for an image never uploaded here."""
        if "/_sandbox/images/" not in url or not url.startswith(
            ("http://127.0.0.1:", "http://localhost:")
        ):
            return False
        return "images/" + url.split("/_sandbox/images/", 1)[1] not in self.sandbox.images

    def _pre_url(self, raw: bytes | None) -> None:
        """POST /api/task/pre_url: a presigned form for one image, and the URL it will have."""
        sandbox = self.sandbox
        body = _json_or_none(raw)
        problem = self._refusal(raw, body, self.headers.get("Api-Key") in sandbox.config.keys)
        if problem:
            self._answer(*problem[1:])
            return
        name = body.get("image_name") if isinstance(body, dict) else None
        content_type = body.get("content_type") if isinstance(body, dict) else None
        extension = storage.EXTENSIONS.get(str(content_type))
        if not isinstance(name, str) or extension is None or not name.lower().endswith(extension):
            sandbox.record(Call(time.time(), "pre_url", "invalid", body))
            self._answer(HTTPStatus.OK, 0, "Invalid image format")
            return
        with sandbox._lock:
            sandbox._targets_issued += 1
            expired = sandbox._targets_issued <= sandbox.config.expired_targets
        expires = time.time() + (-1 if expired else sandbox.config.upload_expires)
        fields = storage.new_form(str(content_type), expires=expires)
        key = fields["key"]
        sandbox.record(Call(time.time(), "pre_url", "answered", body))
        self._answer(
            HTTPStatus.OK,
            1,
            "success",
            data={
                "upload_url": {"url": f"{sandbox.base_url}/_sandbox/upload", "fields": fields},
                "image_url": f"{sandbox.base_url}/_sandbox/{key}",
            },
        )

    def _upload(self) -> None:
        """The presigned form POST, checked as S3 would: every field once, the file last,
        the signature, the expiry, the size, the content type; and no API key."""
        sandbox = self.sandbox
        raw = self._read_body() or b""

        def refuse(status: int, why: str) -> None:
            sandbox.record(Call(time.time(), "upload", why))
            self._send(status, why.encode(), "text/plain")

        if self.headers.get("Api-Key"):
            return refuse(400, "an API key was sent to the storage host")
        if sandbox.chance(sandbox.config.upload_fail_rate):
            return refuse(503, "slow down")
        stored = storage.accept(self.headers.get("Content-Type") or "", raw)
        if isinstance(stored, storage.Refused):
            return refuse(stored.status, stored.why)
        with sandbox._lock:
            sandbox.images[stored.key] = (stored.content_type, stored.data)
        sandbox.record(Call(time.time(), "upload", "stored", None, stored.key))
        self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")

    def _get(self, raw: bytes | None) -> None:
        sandbox = self.sandbox
        arrived = time.time()
        key_ok = self.headers.get("Api-Key") in sandbox.config.keys
        body = _json_or_none(raw)
        self._delay()
        problem = self._refusal(raw, body, key_ok)
        if problem:
            sandbox.record(Call(arrived, "get", problem[0], body, None, key_ok))
            self._answer(*problem[1:])
            return
        task = parse_task_id(body.get("task_id") if isinstance(body, dict) else None)
        if task is None:
            sandbox.record(Call(arrived, "get", "not_found", body, None, key_ok))
            self._answer(HTTPStatus.OK, 0, "task not found: task_id is unknown")
            return
        status = task.status()
        data: dict[str, Any] = {"task_id": task.task_id, "status": status, "result_urls": []}
        if status == 2:
            # One file per video the task makes (num_outputs); the first keeps the plain name.
            data["result_urls"] = [
                f"{sandbox.base_url}/_sandbox/files/{task.task_id}{f'-{i}' if i else ''}.mp4"
                for i in range(task.outputs)
            ]
        if status == 3:
            data["error"] = "generation failed"
        sandbox.record(Call(arrived, "get", "answered", body, task.task_id, key_ok))
        self._answer(HTTPStatus.OK, 1, "success", data=data)

    def _file(self, name: str) -> None:
        task_id, _, index = name.removesuffix(".mp4").partition("-")
        task = parse_task_id(task_id)
        if (
            task is None
            or task.status() != 2
            or not name.endswith(".mp4")
            or not (index == "" or index.isdigit() and 0 < int(index) < task.outputs)
        ):
            self._answer(HTTPStatus.NOT_FOUND, 0, "no such file")
            return
        video = sample_video(task.aspect_ratio, task.seconds)
        if self.sandbox.chance(self.sandbox.config.cut_download_rate):
            self.sandbox.record(Call(time.time(), "file", "cut", None, task.task_id))
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(video)))
            self.end_headers()
            self.wfile.write(video[: len(video) // 2])
            self.close_connection = True
            return
        self.sandbox.record(Call(time.time(), "file", "served", None, task.task_id))
        self._send(HTTPStatus.OK, video, "video/mp4")

    # -- helpers --------------------------------------------------------------------------

    def _refusal(
        self, raw: bytes | None, body: Any, key_ok: bool
    ) -> tuple[str, int, int, str] | None:
        """(outcome, HTTP status, code, message) for a call refused before its body is read."""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return (
                "bad_content_type",
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                0,
                "Content-Type must be application/json",
            )
        if raw is None:
            return (
                "no_length",
                HTTPStatus.LENGTH_REQUIRED,
                0,
                "a Content-Length header is required",
            )
        if body is None and raw.strip() != b"null":
            return ("bad_json", HTTPStatus.BAD_REQUEST, 0, "the body is not valid JSON")
        if not key_ok:
            return (
                "unauthorized",
                HTTPStatus.OK,
                2,
                "Invalid API key. Get a valid API key at https://pixwith.ai/api",
            )
        return None

    def _retry_after(self) -> str:
        seconds = self.sandbox.config.retry_after
        # Half the time the HTTP-date form, which clients must also understand.
        if self.sandbox.chance(0.5):
            return email.utils.formatdate(time.time() + seconds, usegmt=True)
        return str(math.ceil(seconds))

    def _delay(self) -> None:
        if self.sandbox.config.latency_ms:
            time.sleep(self.sandbox.config.latency_ms / 1000)

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return None
        return self.rfile.read(int(length))

    def _answer(
        self,
        status: int,
        code: int,
        message: str,
        headers: dict[str, str] | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        envelope: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            envelope["data"] = data
        self._send(status, json.dumps(envelope).encode(), "application/json", headers)


def _json_or_none(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, sandbox: Sandbox, port: int = 0):
        self.sandbox = sandbox
        super().__init__(("127.0.0.1", port), _Handler)
        sandbox.base_url = f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-call is normal here (timeouts, kills): not worth a trace.
        pass

    # Counted in the serving thread as it accepts (before the handler's thread starts), and
    # uncounted once the handler is done with the connection: see Sandbox.wait_idle.
    def process_request(self, request: Any, client_address: Any) -> None:
        self.sandbox.connection_opened()
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            self.sandbox.connection_closed()


@contextlib.contextmanager
def running(config: SandboxConfig | None = None, port: int = 0) -> Iterator[Sandbox]:
    """Serve a sandbox on 127.0.0.1 in a background thread for the duration of the block."""
    sandbox = Sandbox(config or SandboxConfig())
    try:
        server = SandboxServer(sandbox, port)
    except OSError as e:
        raise SandboxPortBusy(port, e) from None
    with in_background(server, poll_interval=0.05):
        yield sandbox
