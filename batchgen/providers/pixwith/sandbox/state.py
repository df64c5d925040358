"""The sandbox's state: how it is set to behave, what it received, its balance, and the task ids
that carry their own state.

Task ids carry their creation time, ETA, model and outcome under an HMAC, so a sandbox
started later, on the same port, answers for tasks an earlier one created: that is what lets
`run --sandbox` be followed by `poll --sandbox` and `download --sandbox`.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ....jobs import schemas
from ..facts import DEFAULT_CREDITS, TEST_KEY
from ..models import catalogue, load, lookup
from . import clips

# What the sandbox charges, how long it takes and which clip it serves, per model: the
# `sandbox` part of each family file in schemas/models/. The credits are INVENTED (the
# provider publishes no prices): they exist so that balances, caps and learned prices can be
# tried here; batchgen itself never assumes them. A task of num_outputs N costs N times as much.


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
# 30 hex of state (when, ETA, model, outputs, fails, random) and a 12-hex MAC; ids issued
# since rehearsal clips took the request's shape carry 3 more (aspect ratio, seconds).
_TASK_ID = re.compile(r"^[0-9a-f]{42}(?:[0-9a-f]{3})?$")
_ASPECT_NAMES = list(clips.ASPECTS)


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
        self.checker = schemas.BodyChecker(load("request.schema.json"))
        self._open_connections = 0
        self._idle = threading.Condition(self._lock)
        self.tasks_answered = 0  # create calls whose task id was written back to the client
        self._answered = threading.Condition(self._lock)

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

    def task_answered(self) -> None:
        with self._lock:
            self.tasks_answered += 1
            self._answered.notify_all()

    def wait_answered(self, n: int, timeout: float) -> bool:
        """Until `n` created tasks' answers were written to their clients (a test that must
        act once the client holds its task id waits on this): True, or False past `timeout`."""
        with self._lock:
            return self._answered.wait_for(lambda: self.tasks_answered >= n, timeout)

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

    def new_task(
        self, model_id: str, outputs: int = 1, options: dict[str, Any] | None = None
    ) -> tuple[str, int]:
        """A task id that carries its own state (when it was made, its ETA, its model, how
        many videos it makes, whether it will fail, and the shape of its clip: the aspect
        ratio and seconds `options` ask for), and the ETA to announce (whole seconds)."""
        eta_ms = int(base_eta(model_id) * 1000 * self.config.time_scale)
        fails = self.chance(self.config.fail_fraction)
        model_index = [m.id for m in catalogue()].index(model_id)
        options = options or {}
        aspect = options.get("aspect_ratio")
        aspect_index = _ASPECT_NAMES.index(aspect) + 1 if aspect in clips.ASPECTS else 0
        seconds = options.get("duration")
        seconds = seconds if isinstance(seconds, int) and 0 < seconds < 256 else 0
        head = (
            f"{int(time.time() * 1000):012x}{eta_ms:08x}{model_index:02x}{outputs:x}{int(fails):x}"
            f"{secrets.randbits(24):06x}"
        )
        shape = f"{aspect_index:x}{seconds:02x}"
        return head + _mac(head + shape) + shape, math.ceil(eta_ms / 1000)


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
    aspect_ratio: str | None = None  # the clip's shape, as the request asked
    seconds: int | None = None

    def status(self, now: float | None = None) -> int:
        now_ms = (time.time() if now is None else now) * 1000
        if now_ms < self.created_ms + self.eta_ms:
            return 1
        return 3 if self.fails else 2


def parse_task_id(task_id: object) -> Task | None:
    """The task a sandbox id stands for, or None for an id no sandbox issued."""
    if not isinstance(task_id, str) or not _TASK_ID.match(task_id):
        return None
    head, mac, shape = task_id[:30], task_id[30:42], task_id[42:]
    if not hmac.compare_digest(_mac(head + shape), mac):
        return None
    models = catalogue()
    index = int(head[20:22], 16)
    if index >= len(models):
        return None
    aspect_index = int(shape[0], 16) if shape else 0
    return Task(
        task_id,
        int(head[:12], 16),
        int(head[12:20], 16),
        models[index].id,
        head[23] == "1",
        int(head[22], 16),
        _ASPECT_NAMES[aspect_index - 1] if 0 < aspect_index <= len(_ASPECT_NAMES) else None,
        int(shape[1:], 16) or None if shape else None,
    )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sample_video(aspect_ratio: str | None = None, seconds: int | None = None) -> bytes:
    """The small playable MP4 served for a completed task: of the aspect ratio and duration
    its request asked for (clips.py)."""
    return clips.clip(aspect_ratio, seconds)
