"""How a pixwith request body shows images: `image_urls`, a list of URLs. A local image stands
there as `sha256:<hex>` until it is uploaded (see images.py); what is sent has its URL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ...jobs.images import LOCAL


def images_shown(body: dict[str, Any]) -> Iterator[str]:
    """The local images (`sha256:<hex>`) the body shows."""
    for item in body.get("image_urls") or ():
        if isinstance(item, str) and item.startswith(LOCAL):
            yield item


def with_images(body: dict[str, Any], urls: dict[str, str]) -> dict[str, Any] | None:
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
