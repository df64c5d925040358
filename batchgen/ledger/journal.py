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

A disk that is full when an answer arrives was full for the ledger too, and any space freed
then can be taken by something else before the journal line is written. So each run allocates
its journal space when it starts (`Reserve`) and, on a full disk, writes into it in place.

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
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RESERVE = 256 * 1024  # bytes set aside per run for the journal (some 250 task ids)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def journal_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".journal")


class Reserve:
    """A journal file of one run's own, its space allocated (and fsynced) when the run starts.

    On a full disk the run's answers are written into it in place: blocks already allocated
    need no free space, so nothing else (the ledger's WAL, another program) can take it first.
    Its lock is held for the run's life; the run hands it to the replay when it ends (`close`),
    and a reserve whose run died with it is adopted by the next replay (`take`)."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self.fd = fd
        self.used = 0
        self._lock = threading.Lock()

    def write(self, data: bytes) -> bool:
        """Write `data` into the space set aside, durably; False if it does not fit."""
        with self._lock:
            if self.used + len(data) > RESERVE:
                return False
            view = memoryview(data)
            at = self.used
            while view:
                written = os.pwrite(self.fd, view, at)
                view, at = view[written:], at + written
            os.fsync(self.fd)
            self.used = at
            return True

    def close(self) -> None:
        """The run ends: what it wrote here goes to the next replay; an unused reserve goes."""
        with self._lock:
            try:
                if self.used:
                    os.rename(
                        self.path,
                        _taken_name(self.path.parent, self.path.name.split(".journal.reserve-")[0]),
                    )
                else:
                    self.path.unlink(missing_ok=True)
            finally:
                os.close(self.fd)  # releases the lock


_reserves: dict[Path, Reserve] = {}  # ledger → this process's run's reserve
_reserves_lock = threading.Lock()


def reserve(ledger: Path) -> str | None:
    """Set disk space aside for the journal while a run sends (see `Reserve`). On a disk too
    full for even that, the run goes on without (as it would without a journal), and this says
    why, for the run to tell the user; None when the space is set aside."""
    path = ledger.with_name(f"{ledger.name}.journal.reserve-{time.time_ns():020d}-{os.getpid()}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        return e.strerror or str(e)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _allocate(fd, RESERVE)
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        path.unlink(missing_ok=True)
        return e.strerror or str(e)
    with _reserves_lock:
        old = _reserves.pop(ledger, None)
        _reserves[ledger] = Reserve(path, fd)
    if old is not None:
        old.close()
    return None


def _allocate(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.pwrite(fd, b"\0" * size, 0)  # a file system without fallocate: written out instead


def release_reserve(ledger: Path) -> None:
    with _reserves_lock:
        held = _reserves.pop(ledger, None)
    if held is not None:
        held.close()


def append(ledger: Path, *entries: dict[str, Any]) -> Path:
    """Append entries (received answers, or rows rescued from a lost ledger), durably, with
    one fsync; on a full disk into the run's reserve; raise OSError if even that fails."""
    data = "".join(
        json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n" for entry in entries
    ).encode("utf-8")
    try:
        return _append(journal_path(ledger), data)
    except OSError as e:
        if e.errno not in _DISK_FULL:
            raise
        with _reserves_lock:
            held = _reserves.get(ledger)
        if held is None or not held.write(data):
            raise
        return held.path


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
    every journal so moved that is still to be replayed (this one, any a replay that crashed
    or failed left behind, and the reserves of runs that died), oldest first. Remove them with
    `discard` once replayed."""
    path = journal_path(ledger)
    try:
        fd = _open_locked(path, os.O_RDONLY)
    except FileNotFoundError:
        pass
    else:
        try:
            os.rename(path, _taken_name(ledger.parent, ledger.name))
        finally:
            os.close(fd)
    _adopt_orphan_reserves(ledger)
    return _taken(path)


def _taken_name(folder: Path, ledger_name: str) -> Path:
    return folder / f"{ledger_name}.journal.taken-{time.time_ns():020d}-{os.getpid()}"


def _reserves_of(ledger: Path) -> list[Path]:
    return _beside(ledger, ".journal.reserve-")


def _beside(file: Path, suffix: str) -> list[Path]:
    """The files named `file`'s name + `suffix` + anything, in its folder, sorted (by the
    time their names start with: oldest first)."""
    prefix = file.name + suffix
    try:
        with os.scandir(file.parent) as found:
            return sorted(Path(e.path) for e in found if e.name.startswith(prefix))
    except FileNotFoundError:
        return []


def _adopt_orphan_reserves(ledger: Path) -> None:
    """A reserve whose lock is free belongs to a run that is gone (killed before it could hand
    it over): what it holds is replayed; an empty one is removed."""
    for path in _reserves_of(ledger):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its run is still going
            if os.pread(fd, 1, 0) not in (b"", b"\0"):
                os.rename(path, _taken_name(ledger.parent, ledger.name))
            else:
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _taken(path: Path) -> list[Path]:
    """The journals moved aside from `path` by `take` and not yet discarded, oldest first."""
    return _beside(path, ".taken-")


def entries(ledger: Path) -> Iterator[dict[str, Any]]:
    """Every entry the next replay will record: those of journals taken and not yet replayed,
    then the journal's."""
    path = journal_path(ledger)
    return read([*_taken(path), *_reserves_of(ledger), path])


def read(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """The entries of these journal files; a torn line (a crash mid-write) is skipped."""
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    line = line.strip("\0")  # a reserve's space not written yet
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
