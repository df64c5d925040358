"""What batchgen asks of a video-generation API, and what every answer means for the money.

The rest of batchgen speaks only these words: it sends a request's body with `create`, asks
after a task with `get`, reads the account's `balance`, and has a local image put online with
`upload`; each call answers an `Outcome` whose `Kind` says what may be done next. A provider
(a folder under `batchgen/providers/`) turns them into its own HTTP calls and answers.

The one question that matters for money: could a create call have created (and billed) a task?
- `RETRY`: certainly not (refused before processing, or the request never left). Safe to send
  again.
- `IN_DOUBT`: maybe (no answer after sending, a server error, an answer that is not the
  documented one). Never resent without the user saying so.
- `OK`, `REJECTED` (the API refused this request), `AUTH` (key refused), `NO_CREDIT`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..jobs.images import LocalImage


class Kind(enum.Enum):
    OK = "ok"
    RETRY = "retry"
    IN_DOUBT = "in_doubt"
    REJECTED = "rejected"
    AUTH = "auth"
    NO_CREDIT = "no_credit"


@dataclass(frozen=True)
class TaskState:
    """A task as `get` found it, in batchgen's words."""

    status: str  # "processing", "completed" or "failed"
    result_urls: tuple[str, ...] = ()
    error: str | None = None  # why it failed, if the provider said


@dataclass(frozen=True)
class Outcome:
    """What one call came to: `create` fills `task_id` and `estimated_time`, `get` fills
    `task`; `data` is the provider's own answer, for its client's use."""

    kind: Kind
    message: str = ""
    task_id: str | None = None
    estimated_time: float | None = None
    retry_after: float | None = None  # seconds, from a Retry-After header
    data: dict[str, Any] | None = None
    http_status: int | None = None  # None when no answer came
    task: TaskState | None = None  # get's answer, when OK

    @property
    def throttled(self) -> bool:
        """The API asked us to slow down (429 or 503): pause everyone, not only this call."""
        return self.http_status in (429, 503)


@dataclass(frozen=True)
class Balance:
    """What the balance read said: the credits, or None and why not (`kind` AUTH: the key)."""

    credits: int | None
    problem: str = ""
    kind: Kind = Kind.OK


@dataclass(frozen=True)
class Uploaded:
    """One attempt to put a local image online: its URL (`kind` OK), or why not, with `kind`
    RETRY when another attempt may succeed."""

    kind: Kind
    url: str = ""
    reason: str = ""


class Provider(Protocol):
    """A connection to one provider's API, with one key; closed when done."""

    def create(self, body: dict[str, Any]) -> Outcome:
        """Ask for a task. Never raises for anything the network does."""
        ...

    def get(self, task_id: str) -> Outcome:
        """A task's state. Safe to repeat, so no answer at all is RETRY."""
        ...

    def balance(self) -> Balance:
        """The account's credits, or why they are not known."""
        ...

    def upload(self, image: LocalImage, data: bytes) -> Uploaded:
        """One attempt to upload `data` (the bytes of `image`, checked by the caller)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Provider: ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass(frozen=True)
class Served:
    """A sandbox serving: where calls go, the key it takes, and where its result files are."""

    base_url: str
    key: str
    files_url: str


@dataclass(frozen=True)
class Description:
    """A provider as the command line knows it, before anything is connected: its name, the
    base URL requests are sent to (and known by), the environment variable holding its key,
    how to connect, how its request bodies show local images, and its sandbox.

    Only this is imported for every command; `connect` and `sandbox` import the provider's
    client and sandbox when called."""

    name: str
    default_base_url: str
    key_variable: str
    connect: Callable[..., Provider]  # (base_url, key, *, timeout=, max_connections=, transport=)
    images_shown: Callable[[dict[str, Any]], Iterator[str]]  # the local-image refs in a body
    with_images: Callable[[dict[str, Any], dict[str, str]], dict[str, Any] | None]
    sandbox: Callable[[float], AbstractContextManager[Served]]  # (time_scale)
    sandbox_identity: str  # the base URL sandbox requests are known by, whatever port serves
    sandbox_credits: int
    base_url_variable: str = ""  # the environment variable naming another base URL, if any
