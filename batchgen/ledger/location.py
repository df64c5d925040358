"""Where a job's ledger is: it belongs to the project that holds the job file, not to the
folder the command happens to run in.

Without `--ledger` (or `BATCHGEN_LEDGER`), walk up from the job file's folder to the first
folder that has a `batchgen.db` or a `batchgen.yaml`; if there is none, the ledger goes at the
root of the git work tree that holds the job file, else in the job file's own folder. Commands
given a job's name (not a file) walk up from the current directory the same way. The folder
found is also the project's root: the files a job refers to must lie inside it.

A `batchgen.yaml` there may name the ledger (`ledger: postgresql://host/db`, a ledger a team
shares; or a file's path, relative to it): committed with the jobs, so every clone of the
repository uses the same ledger. `--ledger` and `BATCHGEN_LEDGER` still come first.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError

LEDGER_NAME = "batchgen.db"
CONFIG_NAME = "batchgen.yaml"


def is_url(location: str | Path) -> bool:
    """Whether `location` names a PostgreSQL ledger (else it is a SQLite file's path)."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def shown(location: str | Path) -> str:
    """A ledger's location as messages name it (and as it is passed on, to `--on-done`): a
    URL's password is left out, however the URL is spelled, even one that does not parse (a
    password may hold `@`, `/` or a bad %-escape: everything up to the last `@` before the
    query is the user and password)."""
    text = str(location)
    if not is_url(text):
        return text
    scheme, rest = text.split("://", 1)
    authority, mark, query = rest.partition("?")
    at = authority.rfind("@")
    if at >= 0:
        user = authority[:at].split(":", 1)[0]
        authority = f"{user}@{authority[at + 1 :]}"
    query = re.sub(r"(?i)((?:^|&)password=)[^&]*", r"\1…", query)
    return f"{scheme}://{authority}{mark}{query}"


@dataclass(frozen=True)
class Project:
    root: Path  # the folder the ledger belongs to; a job's files must lie inside it
    ledger: Path | str  # a SQLite file, or a PostgreSQL ledger's URL
    how: str  # why this ledger: for the line every command prints

    def describe(self) -> str:
        return f"ledger: {shown(self.ledger)} ({self.how})"

    def ledger_exists(self) -> bool:
        """Whether there may be a ledger to read: a SQLite file that exists, or any server
        (opened with `create=False`, a database without batchgen's tables says so)."""
        return is_url(self.ledger) or Path(self.ledger).exists()


def find_root(start: Path, where: str = "the job's folder") -> tuple[Path, str]:
    """The project folder for `start` (`where`, in words) and how it was found."""
    start = start.resolve()
    folders = (start, *start.parents)
    for folder in folders:
        if (folder / LEDGER_NAME).exists() or (folder / CONFIG_NAME).exists():
            return folder, f"found above {where}" if folder != start else f"found in {where}"
    for folder in folders:
        if (folder / ".git").exists():  # a folder, or a file in a worktree or submodule
            return folder, "new, at the root of the git work tree"
    return start, "new"


def locate(job_file: str | None, explicit: str | None) -> Project:
    """The project of `job_file` (a path), or of the current directory when it is None.

    `explicit` is `--ledger` / `BATCHGEN_LEDGER`: it names the ledger, but the project root
    (which confines the job's files) is still found by the walk."""
    is_file = bool(job_file) and os.path.isfile(str(job_file))
    start = Path(str(job_file)).resolve().parent if is_file else Path.cwd()
    root, how = find_root(start, "the job's folder" if is_file else "the current folder")
    if explicit:
        where: Path | str = explicit if is_url(explicit) else Path(explicit)
        return Project(root, where, "given by --ledger or BATCHGEN_LEDGER")
    configured = configured_ledger(root / CONFIG_NAME)
    if configured is not None:
        return Project(root, configured, f"named by {root / CONFIG_NAME}")
    return Project(root, root / LEDGER_NAME, how)


SETTINGS = ("ledger", "provider")  # what a project's batchgen.yaml may say


def project_settings(config: Path) -> dict[str, Any]:
    """What a project's `batchgen.yaml` says (`ledger:`, `provider:`), checked; {} if none."""
    try:
        text = config.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{config}: cannot be read ({e})") from None
    try:
        settings = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{config}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise UsageError(
            f"{config}:1: expected a mapping (ledger: …), got {type(settings).__name__}"
        )
    unknown = sorted(str(name) for name in settings if name not in SETTINGS)
    if unknown:
        raise UsageError(
            f"{config}: unknown setting {unknown[0]!r} (those known are {', '.join(map(repr, SETTINGS))})"
        )
    for name, what in (
        ("ledger", "a postgresql:// URL or a file's path"),
        ("provider", "a provider's name"),
    ):
        value = settings.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise UsageError(
                f"{config}:{_line_of(text, name)}: {name}: expected {what}, got {value!r}"
            )
    return {name: value for name, value in settings.items() if value is not None}


def configured_ledger(config: Path) -> Path | str | None:
    """The ledger a project's `batchgen.yaml` names (`ledger:`), if it has one."""
    ledger: str | None = project_settings(config).get("ledger")
    if ledger is None:
        return None
    return ledger if is_url(ledger) else config.parent / ledger


def configured_provider(root: Path) -> str | None:
    """The provider a project's `batchgen.yaml` names for its jobs (`provider:`), if any."""
    provider: str | None = project_settings(root / CONFIG_NAME).get("provider")
    return provider


def _line_of(text: str, name: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(f"{name}:"):
            return number
    return 1
