"""`batchgen init`: a folder made ready for jobs, as promptfoo's `init` does.

It writes three things and changes nothing a user already has:

- `.gitignore` gains the lines that keep the ledger, its side files and `outputs/` out of git
  (lines already there are kept, and none is written twice);
- `jobs/first.yaml`, a starter job, unless that file exists;
- an empty ledger at the folder, so the folder is the project's root (the walk of
  `ledger_location.find_root` stops there) - unless a ledger is found at or above it already: a second
  ledger would forget what the first one paid for, and its jobs would be sent again.

The starter files are package data (`batchgen/data/starter/`), not strings in the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import UsageError
from ..ledger import Ledger
from ..ledger.location import LEDGER_NAME, find_root

STARTER_JOB = Path("jobs") / "first.yaml"


@dataclass
class Initialized:
    """What `init` did, for the command to say (paths relative to the folder)."""

    folder: Path
    ignored: list[str] = field(default_factory=list)  # .gitignore lines added
    job_written: bool = False
    ledger: Path | None = None  # the project's ledger
    ledger_is_new: bool = False


def _starter(name: str) -> str:
    return (resources.files("batchgen") / "data" / "starter" / name).read_text(encoding="utf-8")


def _existing_ledger(folder: Path) -> Path | None:
    """The ledger the walk of `find_root` finds at or above `folder`, if there is one."""
    root, _ = find_root(folder)
    return root / LEDGER_NAME if (root / LEDGER_NAME).exists() else None


def add_ignores(gitignore: Path) -> list[str]:
    """Append to `gitignore` the starter's rules it lacks; return the rules added."""
    wanted = _starter("gitignore").splitlines()
    rules = [line for line in wanted if line and not line.startswith("#")]
    text = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    have = {line.strip() for line in text.splitlines()}
    missing = [rule for rule in rules if rule not in have]
    if not missing:
        return []
    # The whole commented block when none of it is there; else only what lacks, under a title.
    block = wanted if missing == rules else ["# batchgen", *missing]
    prefix = ("" if text.endswith("\n") else "\n") + "\n" if text else ""
    with open(gitignore, "a", encoding="utf-8") as f:
        f.write(prefix + "\n".join(block) + "\n")
    return missing


def init(folder: Path) -> Initialized:
    """Make `folder` (created if missing) ready for batchgen jobs; see the module's doc."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    done = Initialized(folder)
    done.ignored = add_ignores(folder / ".gitignore")
    job = folder / STARTER_JOB
    if not job.exists():
        job.parent.mkdir(parents=True, exist_ok=True)
        job.write_text(_starter("first.yaml"), encoding="utf-8")
        done.job_written = True
    done.ledger = _existing_ledger(folder)
    if done.ledger is None:
        done.ledger = folder / LEDGER_NAME
        Ledger(done.ledger).close()  # the tables, nothing in them
        done.ledger_is_new = True
    return done
