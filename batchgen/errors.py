"""The errors a user can act on, and the exit codes they carry.

Everything a user did wrong ends as one of these; the CLI turns them into a message and an
exit code, never a traceback.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
