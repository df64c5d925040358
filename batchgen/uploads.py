"""Uploads: each distinct local image goes up once, before any request that shows it is sent.

The provider's flow: `pre_url` (image name and content type) answers a presigned S3 form
(`upload_url.url` and `upload_url.fields`) and the CDN URL the image will have; then one
`multipart/form-data` POST to that form carrying every field exactly once, the file last, as
`file`, and no API key. The values are opaque and used exactly as given. Each attempt asks
pre_url afresh, so a target that expired (they last 10 minutes) is simply replaced. Failures
are retried like a create refused before processing; an image that never uploads leaves its
requests unsent (nothing is created for them).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .api import Api, Kind
from .images import LOCAL, LocalImage
from .ledger import Ledger
from .limits import REAL_CLOCK, Backoff, Clock, attempts
from .user_files import InputRefused

UPLOAD_BACKOFF = Backoff(max_attempts=5)


@dataclass
class UploadReport:
    uploaded: int = 0
    reused: int = 0  # uploaded by an earlier run (or job)
    failed: dict[str, str] = field(default_factory=dict)  # sha256 → why


def upload_all(
    ledger: Ledger,
    api: Api,
    images: list[LocalImage],
    *,
    upload_base: str,
    client: httpx.Client | None = None,
    backoff: Backoff = UPLOAD_BACKOFF,
    stop: threading.Event | None = None,
    clock: Clock = REAL_CLOCK,
) -> tuple[dict[str, str], UploadReport]:
    """Upload what is not uploaded yet; (`sha256:<hex>` → image URL, report)."""
    urls: dict[str, str] = {}
    report = UploadReport()
    stop = stop or threading.Event()
    own = client is None
    # No API key on the form POST: it goes to the storage host, not the API.
    client = client or httpx.Client(
        timeout=httpx.Timeout(30.0, read=120.0), follow_redirects=False, trust_env=False
    )
    try:
        for image in images:
            known = ledger.uploads.find(image.sha256, upload_base)
            if known:
                urls[image.ref] = known
                report.reused += 1
                continue
            result = _upload(api, client, image, backoff, lambda s: clock.sleep(s, stop))
            if isinstance(result, Failure):
                report.failed[image.sha256] = f"{image.path}: {result.reason}"
                continue
            ledger.uploads.record(image.sha256, upload_base, result, image.name, image.size)
            urls[image.ref] = result
            report.uploaded += 1
    finally:
        if own:
            client.close()
    return urls, report


@dataclass(frozen=True)
class Failure:
    reason: str


def _upload(
    api: Api,
    client: httpx.Client,
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
        target = api.pre_url(image.name, image.content_type)
        if target.kind is Kind.AUTH:
            return Failure(f"the API refused the key ({target.message})")
        if target.kind is not Kind.OK:
            reason = f"pre_url: {target.message}"
            if target.kind is Kind.RETRY:
                continue
            return Failure(reason)  # refused (bad format, ...): another try changes nothing
        form = _form(target.data or {})
        if form is None:
            reason = "pre_url answered without an upload form and an image URL"
            continue
        url, fields, image_url = form
        try:
            answer = client.post(
                url, data=fields, files={"file": (image.name, data, image.content_type)}
            )
        except httpx.HTTPError as e:
            reason = f"upload: {type(e).__name__}: {e}"
            continue
        if 200 <= answer.status_code < 300:
            return image_url
        reason = f"upload: HTTP {answer.status_code} {answer.text[:120]}"
        if answer.status_code < 500 and answer.status_code not in (403, 408, 429):
            return Failure(reason)  # 403: expired or refused signature: ask pre_url again
    return Failure(f"{reason} (after {attempt} attempts)")


def _form(data: dict[str, Any]) -> tuple[str, dict[str, str], str] | None:
    upload = data.get("upload_url")
    image_url = data.get("image_url")
    if not isinstance(upload, dict) or not isinstance(image_url, str) or not image_url:
        return None
    url, fields = upload.get("url"), upload.get("fields")
    if not isinstance(url, str) or not isinstance(fields, dict):
        return None
    return url, {str(k): str(v) for k, v in fields.items()}, image_url


def resolve(body: dict[str, Any], urls: dict[str, str]) -> dict[str, Any] | None:
    """The body as sent: local images replaced by their URLs; None if one did not upload."""
    images = body.get("image_urls")
    if not isinstance(images, list) or not any(
        isinstance(u, str) and u.startswith(LOCAL) for u in images
    ):
        return body
    sent = []
    for item in images:
        if isinstance(item, str) and item.startswith(LOCAL):
            if item not in urls:
                return None
            item = urls[item]
        sent.append(item)
    return {**body, "image_urls": sent}
