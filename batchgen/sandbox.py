"""The sandbox: a local stand-in for the pixwith.ai task API, with its bad days on demand.

Same endpoints, envelope and rules as the real API (bodies are checked with the same
`request.schema.json`), over real HTTP on 127.0.0.1. It accepts the documented test key,
answers with task ids and ETAs, moves tasks from processing (1) to completed (2) or, for a
fraction, failed (3), and serves a small playable MP4 for each completed task. Faults are
injected at configured rates from a seeded random generator.

Task ids carry their own state (creation time, ETA, model, outcome) under an HMAC, so a
sandbox started later, on the same port, answers for tasks an earlier one created: that is
what lets `run --sandbox` be followed by `poll --sandbox` and `download --sandbox`.

Everything it received is recorded (`Sandbox.calls`, `GET /_sandbox/stats`), so a test can
assert from the server's side that a request body was created exactly once.
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from importlib import resources
from typing import Any

from . import schemas
from .local_server import LoopbackHandler, in_background
from .models import catalogue, lookup

TEST_KEY = "key_00000000000000000000000000000000"
DEFAULT_PORT = 47878  # `run --sandbox` uses this port so that its requests keep one identity

# What the sandbox charges, how long it takes and which clip it serves, per model: the
# `sandbox` part of each family file in schemas/models/. The credits are INVENTED (the
# provider publishes no prices): they exist so that balances, caps and learned prices can be
# tried here; batchgen itself never assumes them. A task of num_outputs N costs N times as much.
DEFAULT_CREDITS = 1_000_000


def sandbox_price(body: dict[str, Any]) -> int:
    """What the sandbox charges for a (valid) body."""
    options = body.get("options") or {}
    credits = lookup(body["model_id"]).sandbox["credits"]  # type: ignore[union-attr]  # a valid body's model
    key = " ".join(
        str(options[name]) for name in ("resolution", "duration") if options.get(name) is not None
    )
    return int(credits.get(key, credits.get("default", 0))) * int(options.get("num_outputs") or 1)


def base_eta(model_id: str) -> float:
    """Seconds a task of `model_id` takes at time_scale 1 (invented: the API documents only
    `estimated_time`; where a model's page shows one, that figure)."""
    return float(lookup(model_id).sandbox.get("eta", 150))  # type: ignore[union-attr]


# Not a secret: it only makes task ids tamper-evident, so made-up ids are "not found".
_ID_KEY = b"batchgen sandbox task ids"
_TASK_ID = re.compile(r"^[0-9a-f]{42}$")


@dataclass
class SandboxConfig:
    """How the sandbox behaves. Rates are probabilities per call, from 0 to 1."""

    seed: int = 0
    keys: tuple[str, ...] = (TEST_KEY,)
    time_scale: float = 1.0  # multiplies the model's ETA (0.01: 240 s becomes 2.4 s)
    fail_fraction: float = 0.0  # tasks that end in status 3
    credits: int = DEFAULT_CREDITS  # the balance; creating deducts sandbox_price, "Credits not enough" when short
    latency_ms: float = 0.0  # added to every API answer
    rpm_limit: int | None = None  # create calls per sliding 60 s before 429 + Retry-After
    rate_429: float = 0.0  # random 429 with Retry-After (seconds or an HTTP date)
    rate_503: float = 0.0  # random 503 with Retry-After
    rate_500: float = 0.0  # random 500, nothing created
    drop_rate: float = 0.0  # connection closed before processing: nothing created
    lose_answer_rate: float = 0.0  # task created, then the connection closed: no answer
    slow_rate: float = 0.0  # task created, answer held back `slow_seconds` (provokes read timeouts)
    slow_seconds: float = 5.0
    retry_after: float = 1.0  # seconds given in Retry-After for random 429/503
    cut_download_rate: float = 0.0  # result file closed half way (for download tests)
    reject_rate: float = 0.0  # valid bodies refused anyway, code 0 (as content moderation would)
    reject_message: str = "prompt refused by content moderation"
    upload_expires: float = 600.0  # seconds a presigned upload target lasts
    expired_targets: int = (
        0  # the first N targets are issued already expired (to test asking again)
    )
    upload_fail_rate: float = 0.0  # the form POST answers 503


@dataclass(frozen=True)
class Call:
    """One call the sandbox received, and what it did about it."""

    at: float  # time.time() when it arrived
    endpoint: str
    outcome: str  # created, answered, invalid, unauthorized, 429, 503, 500, dropped, lost, ...
    body: Any = None
    task_id: str | None = None
    api_key_ok: bool = True
    content_type: str | None = None


@dataclass
class Sandbox:
    """The sandbox's state: configuration, the record of calls, and its address once serving."""

    config: SandboxConfig = field(default_factory=SandboxConfig)
    base_url: str = ""
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(self.config.seed)
        self._window: collections.deque[float] = collections.deque()
        self._created = 0
        self.balance = self.config.credits
        self.images: dict[str, tuple[str, bytes]] = {}  # object key → (content type, bytes)
        self._targets_issued = 0
        self.checker = schemas.RequestChecker()
        self._open_connections = 0
        self._idle = threading.Condition(self._lock)

    # -- connections being served -----------------------------------------------------------

    def connection_opened(self) -> None:
        with self._lock:
            self._open_connections += 1

    def connection_closed(self) -> None:
        with self._lock:
            self._open_connections -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Until no connection is being served (a killed client's calls in flight have been
        answered, or found cut): True, or False past `timeout` seconds."""
        with self._lock:
            return self._idle.wait_for(lambda: self._open_connections == 0, timeout)

    # -- the record ---------------------------------------------------------------------

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def created(self) -> list[Call]:
        """Create calls that created a task (answered or not)."""
        return [c for c in self.calls if c.task_id and c.endpoint == "create"]

    def created_per_body(self) -> collections.Counter[str]:
        """How many tasks each distinct body (canonical JSON) created."""
        return collections.Counter(_canonical(c.body) for c in self.created())

    def stats(self) -> dict[str, Any]:
        with self._lock:
            calls = list(self.calls)
        creates = [c for c in calls if c.endpoint == "create"]
        per_body = collections.Counter(_canonical(c.body) for c in creates if c.task_id)
        return {
            "base_url": self.base_url,
            "config": asdict(self.config) | {"keys": len(self.config.keys)},
            "calls": len(calls),
            "create_calls": len(creates),
            "created": sum(per_body.values()),
            "bodies_created_more_than_once": sum(1 for n in per_body.values() if n > 1),
            "outcomes": dict(collections.Counter(c.outcome for c in calls)),
            "create_times": [c.at for c in creates if c.outcome not in ("dropped",)],
        }

    # -- decisions ------------------------------------------------------------------------

    def chance(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._random.random() < rate

    def rpm_wait(self) -> float:
        """0 if a create call may go ahead now (and counts it), else seconds until it may."""
        limit = self.config.rpm_limit
        if not limit:
            return 0.0
        now = time.monotonic()
        with self._lock:
            while self._window and now - self._window[0] >= 60:
                self._window.popleft()
            if len(self._window) >= limit:
                return 60 - (now - self._window[0])
            self._window.append(now)
            return 0.0

    def take_credits(self, price: int) -> bool:
        """Deduct `price` from the balance, if it covers it."""
        with self._lock:
            if self.balance < price:
                return False
            self.balance -= price
            self._created += 1
            return True

    # -- task ids -------------------------------------------------------------------------

    def new_task(self, model_id: str, outputs: int = 1) -> tuple[str, int]:
        """A task id that carries its own state (when it was made, its ETA, its model, how
        many videos it makes, whether it will fail), and the ETA to announce (whole seconds)."""
        eta_ms = int(base_eta(model_id) * 1000 * self.config.time_scale)
        fails = self.chance(self.config.fail_fraction)
        model_index = [m.id for m in catalogue()].index(model_id)
        head = f"{int(time.time() * 1000):012x}{eta_ms:08x}{model_index:02x}{outputs:x}{int(fails):x}{secrets.randbits(24):06x}"
        return head + _mac(head), math.ceil(eta_ms / 1000)


def _sign(fields: dict[str, Any]) -> str:
    text = "\n".join(f"{k}={fields[k]}" for k in sorted(fields))
    return hmac.new(_ID_KEY, text.encode(), hashlib.sha256).hexdigest()


def _form_parts(content_type: str, raw: bytes) -> list[tuple[str, bytes, str | None]] | None:
    """(name, value, filename) of each part of a multipart/form-data body, in order."""
    import email.parser
    import email.policy

    if not content_type.lower().startswith("multipart/form-data"):
        return None
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    if not message.is_multipart():
        return None
    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            return None
        payload = part.get_payload(decode=True)
        parts.append((name, payload if isinstance(payload, bytes) else b"", part.get_filename()))
    return parts


def _mac(head: str) -> str:
    return hmac.new(_ID_KEY, head.encode(), hashlib.sha256).hexdigest()[:12]


@dataclass(frozen=True)
class Task:
    task_id: str
    created_ms: int
    eta_ms: int
    model_id: str
    fails: bool
    outputs: int = 1

    def status(self, now: float | None = None) -> int:
        now_ms = (time.time() if now is None else now) * 1000
        if now_ms < self.created_ms + self.eta_ms:
            return 1
        return 3 if self.fails else 2


def parse_task_id(task_id: object) -> Task | None:
    """The task a sandbox id stands for, or None for an id no sandbox issued."""
    if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
        return None
    head, mac = task_id[:30], task_id[30:]
    if not hmac.compare_digest(_mac(head), mac):
        return None
    models = catalogue()
    index = int(head[20:22], 16)
    if index >= len(models):
        return None
    return Task(
        task_id,
        int(head[:12], 16),
        int(head[12:20], 16),
        models[index].id,
        head[23] == "1",
        int(head[22], 16),
    )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sample_video(model_id: str) -> bytes:
    """The small playable MP4 served for a completed task of `model_id`."""
    sample = str(lookup(model_id).sandbox.get("sample", "sample-pro.mp4"))  # type: ignore[union-attr]
    return (resources.files("batchgen") / "data" / sample).read_bytes()


# -- HTTP ---------------------------------------------------------------------------------


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
        task_id, eta = sandbox.new_task(
            body["model_id"], int((body.get("options") or {}).get("num_outputs") or 1)
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
        extension = {"image/jpeg": (".jpg", ".jpeg"), "image/png": (".png",)}.get(str(content_type))
        if not isinstance(name, str) or extension is None or not name.lower().endswith(extension):
            sandbox.record(Call(time.time(), "pre_url", "invalid", body))
            self._answer(HTTPStatus.OK, 0, "Invalid image format")
            return
        with sandbox._lock:
            sandbox._targets_issued += 1
            expired = sandbox._targets_issued <= sandbox.config.expired_targets
        expires = int(time.time() + (-1 if expired else sandbox.config.upload_expires))
        key = f"images/{secrets.token_hex(8)}{extension[0]}"
        fields = {"key": key, "Content-Type": content_type, "x-amz-date": str(expires)}
        fields["x-amz-signature"] = _sign(fields)
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
        parts = _form_parts(self.headers.get("Content-Type") or "", raw)
        if parts is None:
            return refuse(400, "not a multipart/form-data body")
        names = [name for name, _, _ in parts]
        if not names or names[-1] != "file" or names.count("file") != 1:
            return refuse(400, "the file must come last, once, as the part named file")
        fields = {name: value.decode() for name, value, _ in parts[:-1]}
        if len(fields) != len(parts) - 1 or set(fields) != {
            "key",
            "Content-Type",
            "x-amz-date",
            "x-amz-signature",
        }:
            return refuse(400, "every field of the form, exactly once, and no other")
        if not hmac.compare_digest(
            _sign({k: v for k, v in fields.items() if k != "x-amz-signature"}),
            fields["x-amz-signature"],
        ):
            return refuse(403, "signature does not match")
        if int(fields["x-amz-date"]) < time.time():
            return refuse(403, "Request has expired")
        data = parts[-1][1]
        if len(data) > 10 * 1000 * 1000:
            return refuse(400, "EntityTooLarge")
        magic = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n"}[
            fields["Content-Type"]
        ]
        if not data.startswith(magic):
            return refuse(400, "the file is not what its Content-Type says")
        with sandbox._lock:
            sandbox.images[fields["key"]] = (fields["Content-Type"], data)
        sandbox.record(Call(time.time(), "upload", "stored", None, fields["key"]))
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
        video = sample_video(task.model_id)
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


class SandboxPortBusy(OSError):
    def __init__(self, port: int, cause: OSError):
        super().__init__(f"cannot serve the sandbox on 127.0.0.1:{port}: {cause.strerror}")
        self.port = port
