"""The journal: where a received task id goes when the ledger cannot take it.

An answer with a task id means a task was created and will be billed. If the ledger cannot
record it (locked past the busy timeout, disk full, the file deleted or replaced under the
run), the answer is appended to `batchgen.db.journal` beside the ledger, one JSON object per
line, and fsynced; the run prints it too. A run that finds its ledger deleted or replaced
also copies every row it can still read from the file it has open (which is gone for
everyone else) into the journal: a task it or an earlier run paid for, or a request that may
have been created (`in_doubt`), is not sent again. The next command that opens the ledger replays the
journal into it and empties it. Replaying is idempotent, so a crash between the replay's
commit and the truncation only replays the same lines again.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, Iterator

RESERVE = 256 * 1024  # bytes kept free for the journal while a run sends


def journal_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".journal")


def _reserve_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".journal.reserve")


def reserve(ledger: Path) -> None:
    """Set disk space aside for the journal: on a full disk, where the ledger fails, the space
    is given back so the journal can still take what the run receives."""
    try:
        with open(_reserve_path(ledger), "wb") as f:
            f.write(b"\0" * RESERVE)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        _reserve_path(ledger).unlink(missing_ok=True)


def release_reserve(ledger: Path) -> None:
    _reserve_path(ledger).unlink(missing_ok=True)


def append(ledger: Path, *entries: dict[str, Any]) -> Path:
    """Append entries (received answers, or rows rescued from a lost ledger), durably, with
    one fsync; raise OSError if even that fails."""
    data = "".join(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n" for entry in entries).encode("utf-8")
    try:
        return _append(journal_path(ledger), data)
    except OSError as e:
        if e.errno != errno.ENOSPC or not _reserve_path(ledger).exists():
            raise
    release_reserve(ledger)  # the disk is full: the space set aside is for this
    # A line torn by the failed write is ended first, so it cannot swallow the next one.
    return _append(journal_path(ledger), b"\n" + data)


def _append(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def entries(ledger: Path) -> Iterator[dict[str, Any]]:
    """The journal's entries; a torn last line (a crash mid-write) is skipped."""
    path = journal_path(ledger)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                    continue
                if isinstance(entry.get("task_id"), str) or entry.get("state") == "in_doubt":
                    yield entry
    except FileNotFoundError:
        return


def clear(ledger: Path) -> None:
    path = journal_path(ledger)
    try:
        with open(path, "r+b") as f:
            f.truncate(0)
            os.fsync(f.fileno())
        path.unlink()
    except FileNotFoundError:
        pass
