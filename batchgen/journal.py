"""The journal: where a received task id goes when the ledger cannot take it.

An answer with a task id means a task was created and will be billed. If the ledger cannot
record it (locked past the busy timeout, disk full, the file deleted or replaced under the
run), the answer is appended to `batchgen.db.journal` beside the ledger, one JSON object per
line, and fsynced; the run prints it too. A run that finds its ledger deleted or replaced
also copies every row it can still read from the file it has open (which is gone for
everyone else) into the journal: a task it or an earlier run paid for, or a request that may
have been created (`in_doubt`), is not sent again. The next command that opens the ledger
replays the journal into it. Replaying is idempotent, so a crash between the replay's commit
and the removal of what it replayed only replays the same lines again.

The journal is written by a run in trouble while another command may be replaying it, so
the two take turns on an exclusive `flock` of the file: a replay first moves the journal
aside under a name of its own (`take`), and an append that finds its file moved meanwhile
writes to the new journal instead. So no line is written into a file already read, and none
is removed unread.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
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
    return _append(journal_path(ledger), data)


def _append(path: Path, data: bytes) -> Path:
    fd = _open_locked(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    try:
        # A line torn by a failed write or a crash is ended first, so it cannot swallow this one.
        end = os.lseek(fd, 0, os.SEEK_END)
        if end and os.pread(fd, 1, end - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)  # releases the lock
    return path


def _open_locked(path: Path, flags: int) -> int:
    """A descriptor of the file now at `path`, with its exclusive lock held. A file moved
    away by a replay between the open and the lock is let go, and the one at `path` opened
    instead (FileNotFoundError when there is none and `flags` does not create it)."""
    while True:
        fd = os.open(path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def take(ledger: Path) -> list[Path]:
    """For a replay: move the journal aside, under a name no one else writes to, and return
    every journal so moved that is still to be replayed (this one, and any a replay that
    crashed or failed left behind), oldest first. Remove them with `discard` once replayed."""
    path = journal_path(ledger)
    try:
        fd = _open_locked(path, os.O_RDONLY)
    except FileNotFoundError:
        pass
    else:
        try:
            os.rename(path, path.with_name(f"{path.name}.taken-{time.time_ns():020d}-{os.getpid()}"))
        finally:
            os.close(fd)
    return _taken(path)


def _taken(path: Path) -> list[Path]:
    """The journals moved aside from `path` by `take` and not yet discarded, oldest first."""
    prefix = f"{path.name}.taken-"
    try:
        with os.scandir(path.parent) as found:
            return sorted(Path(e.path) for e in found if e.name.startswith(prefix))
    except FileNotFoundError:
        return []


def entries(ledger: Path) -> Iterator[dict[str, Any]]:
    """Every entry the next replay will record: those of journals taken and not yet replayed,
    then the journal's."""
    path = journal_path(ledger)
    return read([*_taken(path), path])


def read(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """The entries of these journal files; a torn line (a crash mid-write) is skipped."""
    for path in paths:
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
        except FileNotFoundError:  # replayed and removed by another command meanwhile
            continue


def discard(paths: list[Path]) -> None:
    """Remove journals `take` gave, once what they hold is committed to the ledger."""
    for path in paths:
        path.unlink(missing_ok=True)
