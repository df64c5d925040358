"""The sandbox's storage host: presigned upload forms, issued and checked as S3 would.

pre_url hands out a form (object key, content type, expiry, signature) and the URL the image
will have; the form POST must carry every field exactly once, the file last, a valid
signature before the expiry, and bytes that are what the content type says.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ....jobs.images import MAX_IMAGE_SIZE
from .state import _ID_KEY

EXTENSIONS = {"image/jpeg": (".jpg", ".jpeg"), "image/png": (".png",)}
_MAGIC = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n"}
_FIELDS = {"key", "Content-Type", "x-amz-date", "x-amz-signature"}


def new_form(content_type: str, *, expires: float) -> dict[str, str]:
    """The fields of a presigned form for one image of `content_type`, valid until `expires`."""
    key = f"images/{secrets.token_hex(8)}{EXTENSIONS[content_type][0]}"
    fields = {"key": key, "Content-Type": content_type, "x-amz-date": str(int(expires))}
    fields["x-amz-signature"] = _sign(fields)
    return fields


@dataclass(frozen=True)
class Stored:
    key: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Refused:
    status: int
    why: str


def accept(content_type: str, raw: bytes) -> Stored | Refused:
    """What a form POST with this Content-Type and body stores, or why it is refused."""
    parts = _form_parts(content_type, raw)
    if parts is None:
        return Refused(400, "not a multipart/form-data body")
    names = [name for name, _, _ in parts]
    if not names or names[-1] != "file" or names.count("file") != 1:
        return Refused(400, "the file must come last, once, as the part named file")
    fields = {name: value.decode() for name, value, _ in parts[:-1]}
    if len(fields) != len(parts) - 1 or set(fields) != _FIELDS:
        return Refused(400, "every field of the form, exactly once, and no other")
    unsigned = {k: v for k, v in fields.items() if k != "x-amz-signature"}
    if not hmac.compare_digest(_sign(unsigned), fields["x-amz-signature"]):
        return Refused(403, "signature does not match")
    if int(fields["x-amz-date"]) < time.time():
        return Refused(403, "Request has expired")
    data = parts[-1][1]
    if len(data) > MAX_IMAGE_SIZE:
        return Refused(400, "EntityTooLarge")
    if not data.startswith(_MAGIC[fields["Content-Type"]]):
        return Refused(400, "the file is not what its Content-Type says")
    return Stored(fields["key"], fields["Content-Type"], data)


def _sign(fields: dict[str, Any]) -> str:
    text = "\n".join(f"{k}={fields[k]}" for k in sorted(fields))
    return hmac.new(_ID_KEY, text.encode(), hashlib.sha256).hexdigest()


def _form_parts(content_type: str, raw: bytes) -> list[tuple[str, bytes, str | None]] | None:
    """(name, value, filename) of each part of a multipart/form-data body, in order."""
    import email.parser
    import email.policy

    if not content_type.lower().startswith("multipart/form-data"):
        return None
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    if not message.is_multipart():
        return None
    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            return None
        payload = part.get_payload(decode=True)
        parts.append((name, payload if isinstance(payload, bytes) else b"", part.get_filename()))
    return parts
