"""What batchgen asks of a video-generation API, and what every answer means for the money.

The rest of batchgen speaks only these words. Before anything is sent, a provider's
`Catalogue` turns a request in batchgen's words (`Fields`: prompt, model, images, the model's
own options) into the body its API takes, checks it (`Finding`s said against the job file's
fields), and says what the ledger and the pages need of a body (its model, its price class).
Then its `Provider` sends a body with `create`, asks after a task with `get`, reads the
account's `balance`, and has a local image put online with `upload`; each call answers an
`Outcome` whose `Kind` says what may be done next.

A provider is a `Description` registered under the `batchgen.providers` entry point group
(see `__init__.py`); batchgen's own are registered the same way.

The one question that matters for money: could a create call have created (and billed) a task?
- `RETRY`: certainly not (refused before processing, or the request never left). Safe to send
  again.
- `IN_DOUBT`: maybe (no answer after sending, a server error, an answer that is not the
  documented one). Never resent without the user saying so.
- `OK`, `REJECTED` (the API refused this request), `AUTH` (key refused), `NO_CREDIT`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from ..jobs.images import LocalImage

# -- a request in batchgen's words, and what a provider's catalogue says of it -------------------


class Fields(NamedTuple):
    """A request as a job file asks for it, whatever the provider: what its body is made from,
    and what a body is read back as (for the ledger, the pages, prices and promote)."""

    prompt: Any = None
    model: Any = None  # the provider's own id for the model (a job file may give its name)
    images: tuple[str, ...] = ()  # URLs, or `sha256:<hex>` for a local image not uploaded yet
    options: Any = {}  # the model's own options (a mapping, unless the job file is wrong)


class Model(Protocol):
    """A model as the core shows it."""

    @property
    def id(self) -> str: ...  # the provider's own id (what the ledger records)

    @property
    def name(self) -> str: ...  # how job files and messages name it

    @property
    def display(self) -> str: ...

    @property
    def verified(self) -> bool: ...  # False: its documented rules contradict themselves

    @property
    def why_unverified(self) -> str | None: ...


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a request body, said against the job file's fields: `field` is a
    job-file path (`("model",)`, `("options", "duration")`, `("images",)`). `kind`: "missing"
    (the request lacks it), "refused" (the model does not take the field at all: the core says
    how to unset an inherited one), else "value"."""

    field: tuple[str, ...]
    message: str
    hint: str | None = None
    kind: str = "value"


class Catalogue(Protocol):
    """A provider's models and the rules of its bodies."""

    def models(self) -> Sequence[Model]:
        """Every model it offers, in the order they are listed."""
        ...

    def lookup(self, name_or_id: str) -> Model | None:
        """The model a job file names (by name or by the provider's id)."""
        ...

    def body(self, fields: Fields) -> dict[str, Any]:
        """The body to send for a request (None values left out)."""
        ...

    def fields(self, body: dict[str, Any]) -> Fields:
        """What `body` asks for, in batchgen's words (the inverse of `body`)."""
        ...

    def check(self, body: dict[str, Any], shape: Hashable | None = None) -> list[Finding]:
        """What is wrong with `body` (a local image stands as `sha256:<hex>`). `shape`, when
        given, stands for the body without its prompt: bodies of equal shape differ only in
        their prompt, so the rest may be judged once."""
        ...

    def option_type(self, name: str) -> str | None:
        """The JSON type of an option's values (`integer`, `boolean`, …): how a CSV cell is read."""
        ...

    def price_class(self, body: dict[str, Any]) -> tuple[Any, ...]:
        """What can plausibly change a body's price, as a hashable value (learned prices are per
        class): for most providers the model, the options that cost, the number of images."""
        ...

    def class_document(self, cls: tuple[Any, ...]) -> dict[str, Any]:
        """A price class as JSON data (how the ledger's `prices` table keys it)."""
        ...

    def describe_class(self, document: dict[str, Any]) -> str:
        """`wan2.2-pro 480p 5 s 16:9`: a price class as people read it."""
        ...

    def request_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of its request bodies, if it has one (`batchgen schema request`)."""
        ...

    def report(self, *, as_json: bool, rules: bool = False) -> list[str]:
        """`batchgen models`: a line per model (`rules`: each model's rules under the list),
        or (`as_json`) one JSON object per model."""
        ...

    def priced(self, path: tuple[str, ...]) -> bool:
        """Whether a job-file field is part of the price class (a price rule naming only such
        fields is the same for a whole class)."""
        ...


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
    # create's: what `get` needs beside the task id to find the task again (a status URL, for
    # a provider whose URLs name more than the id), recorded with it; opaque to the core
    handle: str | None = None

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

    def get(self, task_id: str, handle: str | None = None) -> Outcome:
        """A task's state (`handle`: what its create answered beside the id, if anything).
        Safe to repeat, so no answer at all is RETRY."""
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
    base URL requests are sent to (and known by), the environment variables holding its key
    (and another base URL), how to connect, its catalogue, how its bodies show local images,
    and its sandbox. (Money is counted in integer credits until a provider's own
    unit comes with the second provider.)

    Only this is imported for every command; `connect`, `catalogue` and `sandbox` import the
    provider's client, models and sandbox when called."""

    name: str
    default_base_url: str
    key_variable: str
    connect: Callable[..., Provider]  # (base_url, key, *, timeout=, max_connections=, transport=)
    catalogue: Callable[[], Catalogue]  # loaded when first asked for (cache it)
    images_shown: Callable[[dict[str, Any]], Iterator[str]]  # the local-image refs in a body
    with_images: Callable[[dict[str, Any], dict[str, str]], dict[str, Any] | None]
    sandbox: Callable[[float], AbstractContextManager[Served]]  # (time_scale)
    sandbox_identity: str  # the base URL sandbox requests are known by, whatever port serves
    sandbox_credits: int
    base_url_variable: str = ""  # the environment variable naming another base URL, if any
    default: bool = False  # the provider a job goes to when nothing names one
    # "module:attribute" of a click command serving its sandbox on its own (`batchgen sandbox`)
    sandbox_command: str = ""
    starter_job: Callable[[], str] | None = None  # the text of `init`'s jobs/first.yaml
    # Job-file fields of an older spelling, and what they are now (`{"old": "images"}`):
    # a job written for this provider before batchgen's own words keeps working.
    field_aliases: Mapping[str, str] = field(default_factory=dict)
