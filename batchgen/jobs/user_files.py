"""Reading the files a user points batchgen at, within bounds.

Job files, prompt files, CSV tables and key files must be regular files (a FIFO would block
forever, /dev/zero never ends) of at most `MAX_FILE_SIZE` bytes, and the files a job refers to
must lie inside its project: a prompts file of `../../etc/passwd` would send its lines, as
prompts, to a third party.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import InputRefused

MAX_FILE_SIZE = 64 << 20  # 64 MiB


def read_regular(path: str | Path, *, limit: int = MAX_FILE_SIZE) -> bytes:
    """The bytes of `path`, if it is a regular file (after symlinks) of at most `limit` bytes."""
    _check_name(path)
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputRefused("no such file") from None
    except IsADirectoryError:
        raise InputRefused("is a directory") from None
    except OSError as e:
        raise InputRefused(f"cannot read it: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InputRefused("is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise InputRefused(f"is not a regular file (it is a {_kind(info.st_mode)})")
        if info.st_size > limit:
            raise InputRefused(f"is {info.st_size:,} bytes, over the limit of {limit:,}")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # it grew while being read
                raise InputRefused(f"is over the limit of {limit:,} bytes")
        return b"".join(chunks)
    except OSError as e:
        raise InputRefused(f"cannot read it: {e.strerror}") from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _check_name(path: str | Path) -> None:
    # A NUL byte (a CSV cell, a "\0" escape in YAML) makes os calls raise ValueError.
    if "\x00" in str(path):
        raise InputRefused("is not a valid file name (it has a NUL byte)")


def inside(path: str | Path, root: Path) -> bool:
    """Whether `path`, symlinks resolved, lies inside `root`; InputRefused for a name no file
    can have."""
    _check_name(path)
    try:
        return Path(path).resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False
