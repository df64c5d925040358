"""`batchgen init`: a folder made ready for jobs, as promptfoo's `init` does.

It writes three things and changes nothing a user already has:

- `.gitignore` gains the lines that keep the ledger, its side files and `outputs/` out of git
  (lines already there are kept, and none is written twice);
- `jobs/first.yaml`, the project's provider's starter job, unless that file exists;
- an empty ledger at the folder, so the folder is the project's root (the walk of
  `ledger.location.find_root` stops there) - unless a ledger is found at or above it already: a second
  ledger would forget what the first one paid for, and its jobs would be sent again. A
  project whose `batchgen.yaml` names a server's ledger gets no `batchgen.db` (it would never
  be used); `init --ledger postgresql://…` writes that `batchgen.yaml` (to be committed, so
  every clone uses the server) and makes the ledger's tables there.

The starter files are package data (`batchgen/data/starter/`, and the provider's own job), not
strings in the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .. import providers
from ..errors import UsageError
from ..ledger import Ledger
from ..ledger.location import (
    CONFIG_NAME,
    LEDGER_NAME,
    configured_ledger,
    configured_provider,
    find_root,
    is_url,
    shown,
)

STARTER_JOB = Path("jobs") / "first.yaml"


@dataclass
class Initialized:
    """What `init` did, for the command to say (paths relative to the folder)."""

    folder: Path
    ignored: list[str] = field(default_factory=list)  # .gitignore lines added
    job_written: bool = False
    ledger: Path | str | None = None  # the project's ledger: a file, or a server's URL
    ledger_is_new: bool = False
    config_written: bool = False  # batchgen.yaml written, naming the server's ledger


def _starter(name: str) -> str:
    return (resources.files("batchgen") / "data" / "starter" / name).read_text(encoding="utf-8")


def _existing_ledger(root: Path) -> Path | None:
    """The ledger of the project `root` (the walk of `find_root` found it), if it has one."""
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


def init(folder: Path, ledger_url: str | None = None) -> Initialized:
    """Make `folder` (created if missing) ready for batchgen jobs; see the module's doc.
    `ledger_url`: the project's ledger is on that server (`batchgen.yaml` names it)."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    folder = folder.resolve()
    done = Initialized(folder)
    done.ignored = add_ignores(folder / ".gitignore")
    job = folder / STARTER_JOB
    # The project's provider's own first job (its models, its options).
    starter = providers.named(configured_provider(find_root(folder)[0])).starter_job
    if not job.exists() and starter is not None:
        job.parent.mkdir(parents=True, exist_ok=True)
        job.write_text(starter(), encoding="utf-8")
        done.job_written = True
    if ledger_url is not None:
        done.config_written = _name_the_server(folder, ledger_url)
        Ledger(ledger_url).close()  # the tables, on the server, nothing in them
        done.ledger = ledger_url
        return done
    root, _ = find_root(folder)
    configured = configured_ledger(root / CONFIG_NAME)
    if configured is not None:  # the project's batchgen.yaml names its ledger
        done.ledger = configured if is_url(configured) else Path(configured)
        if isinstance(done.ledger, Path) and not done.ledger.exists():
            Ledger(done.ledger).close()
            done.ledger_is_new = True
        return done
    done.ledger = _existing_ledger(root)
    if done.ledger is None:
        done.ledger = folder / LEDGER_NAME
        Ledger(done.ledger).close()  # the tables, nothing in them
        done.ledger_is_new = True
    return done


def _name_the_server(folder: Path, url: str) -> bool:
    """Write `batchgen.yaml` naming the server's ledger; False when it names it already. It is
    committed with the jobs: a password never goes in it."""
    if not is_url(url):
        raise UsageError(
            f"--ledger {url}: expected a postgresql:// URL (a file's ledger needs no --ledger)"
        )
    if shown(url) != url:
        raise UsageError(
            f"--ledger {shown(url)}: batchgen.yaml is committed with the jobs, so the URL may not hold"
            " a password; give it to PostgreSQL another way (PGPASSWORD, ~/.pgpass)"
        )
    config = folder / CONFIG_NAME
    present = configured_ledger(config)
    if present == url:
        return False
    if present is not None:
        raise UsageError(f"{config} names another ledger ({shown(present)}): edit it by hand")
    with open(config, "a", encoding="utf-8") as f:
        f.write(
            f"# The ledger every clone of this project shares (batchgen init --ledger).\nledger: {url}\n"
        )
    return True
