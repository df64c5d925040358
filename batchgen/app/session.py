"""What every command works with: the console it speaks to, the API it talks to (where to
send, with what key; the built-in sandbox started only when asked for), the project's ledger
opened and what opening it repaired, which job a name means, and signals as interrupts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from .. import providers
from ..errors import EXIT_INTERRUPTED, InputRefused, StopSignal, UsageError
from ..jobs.spec import load_job, provider_of
from ..jobs.user_files import read_regular
from ..ledger import Ledger
from ..ledger.location import Project, configured_provider
from ..output.words import count
from ..providers.keys import check_api_key, remember_secret
from ..providers.stored_keys import key_for, keys_path
from ..urls import canonical_base_url, check_api_base

SANDBOX_TIME_SCALE = 0.02  # `--sandbox`: a 240 s generation takes about 5 s
MAX_KEY_FILE = 4096


class Console(Protocol):
    """Where a command's words go: `out` for results (stdout), `err` for everything else."""

    interactive: bool

    def out(self, line: str) -> None: ...

    def err(self, line: str) -> None: ...

    def detail(self, line: str) -> None: ...

    def confirm(self, question: str) -> bool: ...


# -- where to send, with what key ---------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The API a command talks to: its provider, the base URL that is part of each request's
    identity (and recorded in the ledger), the one calls go to (they differ only for the
    sandbox), the key."""

    identity_base: str
    base_url: str
    key: str
    sandbox_files: str | None = None  # `--sandbox`: the running sandbox's file URL prefix
    provider: providers.Description = field(default_factory=providers.named)

    def connect(self, **options: Any) -> providers.Provider:
        """A client for this API (options: timeout, max_connections, transport)."""
        return self.provider.connect(self.base_url, self.key, **options)

    def rebase(self, url: str) -> str:
        """A recorded result URL, pointed at the sandbox serving now (for `--sandbox`)."""
        if not self.sandbox_files:
            return url
        # A sandbox's files are under one path whatever port serves them.
        folder = urlsplit(self.sandbox_files).path
        if folder in url and urlsplit(url).hostname == "127.0.0.1":
            return self.sandbox_files + url.split(folder, 1)[1]
        return url


def read_api_key(api_key_file: str | None, variable: str, name: str = "") -> str | None:
    """The key from --api-key-file, else the provider's variable (its `key_variable`), else the
    one stored for provider `name` (`batchgen keys set`), checked; never echoed anywhere."""
    if api_key_file:
        source = f"--api-key-file {api_key_file}"
        try:
            raw = read_regular(api_key_file, limit=MAX_KEY_FILE)
        except InputRefused as e:
            raise UsageError(f"{source}: {e}") from None
        try:
            from_file = raw.decode(
                "ascii"
            ).strip()  # the file's own line break is not part of the key
        except UnicodeDecodeError:
            raise UsageError(
                f"{source}: not a text file holding an API key (it has non-ASCII bytes)"
            ) from None
        if not from_file:
            raise UsageError(f"{source}: the file is empty")
        remember_secret(from_file)
        return check_api_key(from_file, source)
    from_env = os.environ.get(variable) or None
    if from_env is not None:
        remember_secret(from_env)
        return check_api_key(from_env, variable)
    from_store = key_for(name) if name else None
    if from_store is not None:
        remember_secret(from_store)
        return check_api_key(from_store, f"the stored {name} key ({keys_path()})")
    return None


def job_provider(job: str | None, project: Project | None = None) -> providers.Description:
    """The provider of a command's job: a job file's (`provider:`, else its project's), else
    (a job's name, or none) the project's batchgen.yaml's, else the default."""
    if job is not None and os.path.isfile(job):
        return provider_of(job, project.root if project else None)
    return providers.named(configured_provider(project.root) if project else None)


def api_base_of(provider: providers.Description, given: str | None) -> str:
    """The base URL requests go to, canonical (see `_base_url`)."""
    return canonical_base_url(_base_url(provider, given))


def _base_url(provider: providers.Description, given: str | None) -> str:
    """`--base-url` as given, else the provider's variable, else the provider's own URL."""
    variable = provider.base_url_variable
    return given or (os.environ.get(variable) if variable else None) or provider.default_base_url


@contextlib.contextmanager
def api_target(
    *,
    sandbox: bool,
    base_url: str | None,
    api_key_file: str | None,
    need_key: bool,
    provider: providers.Description | None = None,
) -> Iterator[Target]:
    """The configured API of `provider` (default: the default one), or a sandbox of this
    command's own (on a free port)."""
    provider = provider or providers.named()
    if not sandbox:
        base = check_api_base(_base_url(provider, base_url))
        key = read_api_key(api_key_file, provider.key_variable, provider.name)
        if need_key and not key:
            raise UsageError(
                f"no API key: set {provider.key_variable}, store one with `batchgen keys set {provider.name}`,"
                " or pass --api-key-file (or try --sandbox)"
            )
        yield Target(base, base, key or "", provider=provider)
        return
    with provider.sandbox(sandbox_time_scale()) as served:
        # Its requests are known by one address whatever port serves them, so that their
        # identities stay the same from run to run (and match ledgers made before).
        yield Target(
            provider.sandbox_identity, served.base_url, served.key, served.files_url, provider
        )


def sandbox_time_scale() -> float:
    """How fast `--sandbox`'s tasks end: SANDBOX_TIME_SCALE of a real generation's time, or
    BATCHGEN_SANDBOX_TIME_SCALE's (0 to 1; the tests make rehearsals near instant)."""
    given = os.environ.get("BATCHGEN_SANDBOX_TIME_SCALE")
    if not given:
        return SANDBOX_TIME_SCALE
    try:
        scale = float(given)
    except ValueError:
        scale = -1.0
    if not 0 <= scale <= 1:  # nan fails both
        raise UsageError(
            f"BATCHGEN_SANDBOX_TIME_SCALE={given!r}: expected a number from 0 to 1 (a fraction of a real generation's time)"
        )
    return scale


# -- signals and interruption --------------------------------------------------------------------


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP act like Ctrl-C for the block: the first stops claiming and waits for
    the calls in flight, a second quits at once. (Only the main thread may install handlers;
    elsewhere, as in some test runners, the defaults stay.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise StopSignal(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def interrupted_exit(error: BaseException) -> int:
    """130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    number = getattr(error, "signal", None)
    return 128 + number if number else EXIT_INTERRUPTED


def open_ledger(project: Project, console: Console, *, create: bool) -> Ledger:
    """Open the project's ledger and say which one it is, and what opening it repaired."""
    ledger = Ledger.open(project.ledger, create=create)
    console.err(project.describe())
    replayed, recovered = ledger.repaired
    if replayed:
        console.err(f"recorded {replayed} task ids kept in the journal by an earlier run")
    if recovered:
        console.err(
            f"{count(recovered, 'request')} left 'sending' by an earlier run that ended {'is' if recovered == 1 else 'are'} now in_doubt"
        )
    return ledger


def output_folder(name: str, out: str | None = None, api_base: str | None = None) -> Path:
    """Where a job's videos, manifest and gallery go: `--out`, else outputs/<job>/ of the
    folder the command runs in, for the API the job is paid on (the provider's own); a
    rehearsal's go elsewhere, so that its clips never land among the real videos:
    outputs/sandbox/<job>/ for the built-in sandbox, outputs/<host>/<job>/ for another API."""
    if out:
        return Path(out)
    return Path("outputs", *api_folder(api_base), name)


def api_folder(api_base: str | None) -> tuple[str, ...]:
    """The folder under outputs/ that holds the results of `api_base` (none for the API that
    is paid for)."""
    provider = providers.for_api(api_base)
    if api_base is None or api_base == provider.default_base_url:
        return ()
    if api_base == provider.sandbox_identity:
        return ("sandbox",)
    parts = urlsplit(api_base)
    host = (parts.hostname or "other").replace(":", "_")
    return (host + (f"-{parts.port}" if parts.port else ""),)


def resolve_job(ledger: Ledger, job: str | None) -> str | None:
    """A job's name in the ledger, from a job file or a name; None means every job."""
    if job is None:
        return None
    if os.path.isfile(job):
        return load_job(job).name
    if job in ledger.tasks.job_names():
        return job
    known = ", ".join(ledger.tasks.job_names()) or "none yet"
    raise UsageError(
        f"no job file or job named {job!r} in the ledger {ledger.shown} (jobs: {known})"
    )


def named_job(name: str | None) -> str:
    if name is None:  # only when no job was given, which these commands' arguments forbid
        raise UsageError("a job is needed")
    return name
