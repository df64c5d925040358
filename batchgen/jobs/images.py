"""Local images: an `images` item that is a path (relative to the job file) or `{file: path}`.

Each distinct file is read and checked when the job is loaded: a regular file inside the
project, at most 10 MB, a JPEG or a PNG by its bytes (not its name). In a request's identity it
stands as `sha256:<hex>` of its bytes, so keys are known before any upload and do not change
when a file is uploaded again. What is sent is the CDN URL the upload gave (see uploads.py).

A file whose name says one format and whose bytes another (a PNG named .jpg) is uploaded as
what its bytes are, with the matching content type and extension, and validation warns.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ImageProblem, InputRefused
from .user_files import inside, read_regular

MAX_IMAGE_SIZE = 10 * 1000 * 1000  # "at most 10 MB"
LOCAL = "sha256:"  # how a local image stands in a request body before upload
_FORMATS = {b"\xff\xd8\xff": ("image/jpeg", ".jpg"), b"\x89PNG\r\n\x1a\n": ("image/png", ".png")}
_NAMED = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


@dataclass(frozen=True)
class LocalImage:
    path: Path
    sha256: str
    size: int
    content_type: str
    name: str  # what pre_url is told: the file's name, with the extension its bytes deserve
    mislabelled: bool  # its name says another format

    @property
    def ref(self) -> str:
        return LOCAL + self.sha256

    def data(self) -> bytes:
        return read_regular(self.path, limit=MAX_IMAGE_SIZE)


def is_local(item: Any) -> bool:
    """Whether an `images` item names a file rather than a URL."""
    if isinstance(item, dict):
        return "file" in item
    return (
        isinstance(item, str)
        and not item.lower().startswith(("http://", "https://"))
        and not item.startswith(LOCAL)
    )


def local_path(item: Any) -> str:
    return str(item["file"]) if isinstance(item, dict) else str(item)


def read_image(path: Path, root: Path | None, shown: str | None = None) -> LocalImage:
    """Check and hash one local image; ImageProblem says what is wrong with it (naming it as
    `shown`, the way the job wrote it)."""
    shown = shown or str(path)
    try:
        if root is not None and not inside(path, root):
            raise ImageProblem(f"{shown} is outside the job's project ({root})")
        data = read_regular(path, limit=MAX_IMAGE_SIZE)
    except InputRefused as e:
        raise ImageProblem(
            f"{shown}: {e}" if str(e) != "no such file" else f"image not found: {shown}"
        ) from None
    kind = next((k for magic, k in _FORMATS.items() if data.startswith(magic)), None)
    if kind is None:
        raise ImageProblem(
            f"{shown} is not a JPEG or PNG image (judged by its bytes); the API takes only those"
        )
    content_type, extension = kind
    named = _NAMED.get(path.suffix.lower())
    stem = path.stem or "image"
    return LocalImage(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        content_type=content_type,
        name=path.name if named == content_type else stem + extension,
        mislabelled=named != content_type,
    )
