"""How far one download may go: its size, its time, a stall, its retries.

Apart from download.py so that the command line can show the defaults in its options without
loading the HTTP client (what `status` or `--version` would pay for nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..sending.limits import Backoff

DEFAULT_MAX_FILE_SIZE = 2 << 30  # 2 GiB
DEFAULT_DEADLINE = 600.0  # seconds for one file, all hops and retries of one attempt included
DEFAULT_STALL_TIMEOUT = 60.0  # seconds without a byte
DOWNLOAD_BACKOFF = Backoff(base=0.5, cap=10.0, max_attempts=4)


@dataclass(frozen=True)
class Bounds:
    """What `download` allows each file (`--max-file-size`, `--deadline`, `--stall-timeout`)."""

    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    deadline: float = DEFAULT_DEADLINE
    stall_timeout: float = DEFAULT_STALL_TIMEOUT
    backoff: Backoff = DOWNLOAD_BACKOFF


DEFAULT_BOUNDS = Bounds()
