"""The errors a user can act on, and the exit codes they carry.

Everything a user did wrong, and everything that stops a command, ends as one of these; the
command line turns them into a message and an exit code, never a traceback. The tree:

    BatchgenError                 a message for the user, and its exit code
    ├── JobError (2)              a job file is invalid: every problem found, with its place
    ├── UsageError (2)            bad usage: an option, a path, a value
    │   ├── NoLedger (2)          a command that only reads found no ledger
    │   └── PortBusy (2)          the port asked for (--port) is taken
    ├── NotCovered (3)            the balance does not cover the run, or a cap cannot read it
    ├── LedgerUnsound (3)         the ledger cannot be trusted: deleted, replaced or corrupt
    ├── LedgerFailed (3)          the ledger's database failed under a command
    │   └── LedgerBusy (3)        a lock on it not had in time
    ├── BalanceUnknown (1)        `credits` did not get the balance
    ├── NothingChosen (1)         `promote` found nothing picked
    └── PlanChanged (2)           the requests made again to send are not the ones planned

Below the tree, the exceptions batchgen raises and catches itself (a refused URL, a download
to retry, a template too big, a second signal): each is turned into a Problem or one of these
before it reaches a user. A SQLite ledger's own error (`sqlite3.Error`, in
`ledger.FAILURES` with LedgerFailed) is the one other thing the command line catches (exit 3).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # some requests rejected, failed or in doubt
EXIT_USAGE = 2  # bad usage or an invalid job file; nothing sent
EXIT_ABORTED = 3  # the API refused the key, credit ran out, or a run of identical errors
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a job file (or a file it refers to), located for a person.

    `line` and `column` are 1-based. `origin` names the matrix combination or CSV row that
    produced an expanded request; `count` says how many requests share this very problem.
    """

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    hint: str | None = None
    origin: str | None = None
    count: int = 1
    severity: str = "error"

    def location(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where

    def __str__(self) -> str:
        text = f"{self.location()}: {self.severity}: "
        if self.path:
            text += f"{self.path}: "
        text += self.message
        if self.origin:
            text += f" ({self.origin})"
        if self.hint:
            text += f"; {self.hint}"
        return text

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def at_offset(
        cls, file: str, text: str | bytes, offset: int, message: str, hint: str | None = None
    ) -> Problem:
        """A problem at `offset` into the file's text (or bytes), located by line and column."""
        newline = "\n" if isinstance(text, str) else b"\n"
        line = text.count(newline, 0, offset) + 1  # type: ignore[arg-type]
        column = offset - (text.rfind(newline, 0, offset) + 1) + 1  # type: ignore[arg-type]
        return cls(file, line, column, "", message, hint=hint)


class BatchgenError(Exception):
    """An error with a message for the user and the exit code it ends the program with."""

    exit_code = EXIT_USAGE


class JobError(BatchgenError):
    """A job file (or a file it refers to) is invalid: every problem found, not only the first."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class UsageError(BatchgenError):
    exit_code = EXIT_USAGE


class NoLedger(UsageError):
    """A command that only reads found no ledger (it never creates one)."""


class PortBusy(UsageError):
    """The port asked for (--port) is taken."""


class NotCovered(BatchgenError):
    """The balance does not cover the run, or cannot be read when a cap needs it."""

    exit_code = EXIT_ABORTED


class LedgerUnsound(BatchgenError):
    """The ledger cannot be trusted to keep the record: deleted, replaced or corrupt."""

    exit_code = EXIT_ABORTED


class LedgerFailed(BatchgenError):
    """The ledger's database failed under a command (its server gone, a lock not had in time):
    a PostgreSQL ledger's errors, as sqlite3.Error is a SQLite one's (`ledger.FAILURES`)."""

    exit_code = EXIT_ABORTED


class LedgerBusy(LedgerFailed):
    """Another thread of this process held the ledger longer than the process would wait."""


class BalanceUnknown(BatchgenError):
    """`batchgen credits` could not learn the balance (the API unreachable, or its answer
    nonsense): not a usage error, the command simply did not get its answer (exit 1)."""

    exit_code = EXIT_INCOMPLETE


class NothingChosen(BatchgenError):
    """No request of the job is picked (or rated high enough): nothing to promote."""

    exit_code = EXIT_INCOMPLETE


class PlanChanged(BatchgenError):
    """The job's expansion, made again to send, did not give the requests planned: the rest
    of them are not sent. (An expansion depends only on the job already read; this guards
    that rule, so that nothing is ever sent that was not planned, priced and linked.)"""


# -- raised and caught inside batchgen, each turned into a Problem or one of the above -------------


class Interrupted(Exception):
    """A second Ctrl-C (or SIGTERM/SIGHUP): the run exits at once; its calls in flight were
    marked in_doubt (sending/submit.py)."""

    def __init__(self, signal: int | None = None):
        super().__init__(signal)
        self.signal = signal


class StopSignal(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C, so a run handles all three
    the same way (app/session.py's signal handlers)."""

    def __init__(self, signal: int):
        super().__init__(signal)
        self.signal = signal


class InputRefused(Exception):
    """Why a file cannot be read as an input (a sentence about the file, without its name):
    jobs/user_files.py."""


class ImageProblem(Exception):
    """Why a local image cannot be sent (jobs/images.py): a sentence for a Problem."""


class TemplateProblem(Exception):
    """A template that cannot be compiled or rendered, in words for the user (jobs/templates.py)."""


class TemplateTooBig(Exception):
    """A template asked for more than it may make, or take (jobs/templates.py's bounds)."""


class PriceTie(Exception):
    """Two price rules match a request, equally specific (jobs/prices.py): the two rules."""

    def __init__(self, first: Any, second: Any):
        super().__init__(first, second)
        self.first, self.second = first, second


class UrlRefused(Exception):
    """A result URL (or a redirect) that batchgen will not fetch, and why (urls.py)."""


class DownloadRefused(Exception):
    """A file that will not be fetched (a rule, not bad luck): not retried (results/download.py)."""


class DownloadTransient(Exception):
    """A download attempt that failed in a way another attempt may not (results/download.py)."""


class PageRefused(Exception):
    """A request to the review server refused, with the HTTP status to answer
    (web/review_server.py)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class SandboxPortBusy(OSError):
    """The port asked for a sandbox is taken (a provider's sandbox: `batchgen sandbox --port`)."""

    def __init__(self, port: int, cause: OSError):
        super().__init__(f"cannot serve the sandbox on 127.0.0.1:{port}: {cause.strerror}")
        self.port = port
