"""Uploads: each distinct local image goes up once, before any request that shows it is sent.

The provider puts an image online (`Provider.upload`, one attempt); here are what every
provider shares: an image uploaded before (to the same API) is not uploaded again, the bytes
are checked against the identity validation gave them, and attempts are retried like a create
refused before processing. An image that never uploads leaves its requests unsent (nothing is
created for them).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import InputRefused
from ..jobs.images import LocalImage
from ..ledger import Ledger
from ..providers import Kind, Provider
from .limits import REAL_CLOCK, Backoff, Clock, attempts

UPLOAD_BACKOFF = Backoff(max_attempts=5)


@dataclass
class UploadReport:
    uploaded: int = 0
    reused: int = 0  # uploaded by an earlier run (or job)
    failed: dict[str, str] = field(default_factory=dict)  # sha256 → why


def upload_all(
    ledger: Ledger,
    provider: Provider,
    images: list[LocalImage],
    *,
    upload_base: str,
    backoff: Backoff = UPLOAD_BACKOFF,
    stop: threading.Event | None = None,
    clock: Clock = REAL_CLOCK,
) -> tuple[dict[str, str], UploadReport]:
    """Upload what is not uploaded yet; (`sha256:<hex>` → image URL, report)."""
    urls: dict[str, str] = {}
    report = UploadReport()
    stop = stop or threading.Event()
    for image in images:
        known = ledger.uploads.find(image.sha256, upload_base)
        if known:
            urls[image.ref] = known
            report.reused += 1
            continue
        result = _upload(provider, image, backoff, lambda s: clock.sleep(s, stop))
        if isinstance(result, Failure):
            report.failed[image.sha256] = f"{image.path}: {result.reason}"
            continue
        ledger.uploads.record(image.sha256, upload_base, result, image.name, image.size)
        urls[image.ref] = result
        report.uploaded += 1
    return urls, report


@dataclass(frozen=True)
class Failure:
    reason: str


def _upload(
    provider: Provider,
    image: LocalImage,
    backoff: Backoff,
    wait: Callable[[float], bool],
) -> str | Failure:
    try:
        data = image.data()  # once for every attempt
    except InputRefused as e:
        return Failure(f"cannot read it any more: {e}")
    if hashlib.sha256(data).hexdigest() != image.sha256:  # its identity says other bytes
        return Failure(
            "the file changed since the job was validated: run again to validate it anew"
        )
    reason = "not tried"
    for attempt in attempts(backoff, wait=wait):  # noqa: B007 (reported after the loop)
        uploaded = provider.upload(image, data)
        if uploaded.kind is Kind.OK:
            return uploaded.url
        reason = uploaded.reason
        if uploaded.kind is not Kind.RETRY:
            return Failure(reason)  # refused: another try changes nothing
    return Failure(f"{reason} (after {attempt} attempts)")
