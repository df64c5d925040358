"""pixwith.ai's task API: what every command knows of it before connecting (`PROVIDER`).

Everything pixwith-specific is in this folder: facts.py (its base URL, key variable, test
key), models.py and schemas/ (its model catalogue, as data), catalogue.py (its bodies and their
rules), model_schema.py (the request schema derived from the catalogue), answers.py (its
envelope and what each answer means), client.py (its calls, uploads included), bodies.py (how
a body shows images), sandbox/ (the local stand-in). The catalogue, the client and the sandbox
are imported only when a command asks for them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from typing import Any

from ..base import Catalogue, Description, Provider, Served
from .bodies import images_shown, with_images
from .facts import (
    BASE_URL_VARIABLE,
    DEFAULT_BASE_URL,
    DEFAULT_CREDITS,
    DEFAULT_PORT,
    KEY_VARIABLE,
    SANDBOX_IDENTITY,
    TEST_KEY,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CREDITS",
    "DEFAULT_PORT",
    "KEY_VARIABLE",
    "PROVIDER",
    "SANDBOX_IDENTITY",
    "TEST_KEY",
]


def connect(base_url: str, key: str, **options: Any) -> Provider:
    """A client for the API at `base_url` (options: timeout, max_connections, transport)."""
    from .client import PixwithApi

    return PixwithApi(base_url, key, **options)


def catalogue() -> Catalogue:
    """Its models and the rules of its bodies."""
    from .catalogue import CATALOGUE

    return CATALOGUE


def starter_job() -> str:
    """`batchgen init`'s jobs/first.yaml: two prompts on WAN 2.2 Fast."""
    return resources.files(__name__).joinpath("starter.yaml").read_text(encoding="utf-8")


@contextlib.contextmanager
def serve_sandbox(time_scale: float) -> Iterator[Served]:
    """A sandbox of this command's own, on a free port."""
    from . import sandbox as sandbox_package

    config = sandbox_package.SandboxConfig(time_scale=time_scale)
    with sandbox_package.running(config) as served:
        yield Served(served.base_url, TEST_KEY, f"{served.base_url}/_sandbox/files/")


PROVIDER = Description(
    name="pixwith",
    default_base_url=DEFAULT_BASE_URL,
    key_variable=KEY_VARIABLE,
    base_url_variable=BASE_URL_VARIABLE,
    connect=connect,
    catalogue=catalogue,
    images_shown=images_shown,
    with_images=with_images,
    sandbox=serve_sandbox,
    sandbox_identity=SANDBOX_IDENTITY,
    sandbox_credits=DEFAULT_CREDITS,
    default=True,
    sandbox_command=f"{__name__}.sandbox.command:sandbox_command",
    starter_job=starter_job,
    # Job files written before batchgen had words of its own named images as pixwith does.
    field_aliases={"image_urls": "images"},
)
