"""The journal: where a received task id goes when the ledger cannot take it.

An answer with a task id means a task was created and will be billed. If the ledger cannot
record it (locked past the busy timeout, disk full, the file deleted or replaced under the
run), the answer is appended to `batchgen.db.journal` beside the ledger, one JSON object per
line, and fsynced; the run prints it too. The next command that opens the ledger replays the
journal into it and empties it. Replaying is idempotent, so a crash between the replay's
commit and the truncation only replays the same lines again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator


def journal_path(ledger: Path) -> Path:
    return ledger.with_name(ledger.name + ".journal")


def append(ledger: Path, entry: dict[str, Any]) -> Path:
    """Append one received answer, durably; raise OSError if even that fails."""
    path = journal_path(ledger)
    line = (json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
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
                if isinstance(entry, dict) and isinstance(entry.get("key"), str) and isinstance(entry.get("task_id"), str):
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
