"""Where a job's ledger is: it belongs to the project that holds the job file, not to the
folder the command happens to run in.

Without `--ledger` (or `BATCHGEN_LEDGER`), walk up from the job file's folder to the first
folder that has a `batchgen.db`; if there is none, the ledger goes at the root of the git work
tree that holds the job file, else in the job file's own folder. Commands given a job's name
(not a file) walk up from the current directory the same way. The folder found is also the
project's root: the files a job refers to must lie inside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

LEDGER_NAME = "batchgen.db"


@dataclass(frozen=True)
class Project:
    root: Path  # the folder the ledger belongs to; a job's files must lie inside it
    ledger: Path
    how: str  # why this ledger: for the line every command prints

    def describe(self) -> str:
        return f"ledger: {self.ledger} ({self.how})"


def find_root(start: Path, where: str = "the job's folder") -> tuple[Path, str]:
    """The project folder for `start` (`where`, in words) and how it was found."""
    start = start.resolve()
    folders = (start, *start.parents)
    for folder in folders:
        if (folder / LEDGER_NAME).exists():
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
        return Project(root, Path(explicit), "given by --ledger or BATCHGEN_LEDGER")
    return Project(root, root / LEDGER_NAME, how)
