"""`batchgen sandbox`: serve pixwith's stand-in, with its faults on demand (the default
provider's sandbox command; see `Description.sandbox_command`)."""

from __future__ import annotations

import time
from typing import Any

import click

from ....cli.options import Finite
from ....errors import UsageError
from ..facts import DEFAULT_CREDITS, DEFAULT_PORT

RATE = Finite(0, 1)


@click.command("sandbox")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="0 picks a free port.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of every random decision."
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    help="Accept this API key too (the test key is always accepted).",
)
@click.option(
    "--time-scale",
    type=Finite(0, 1000),
    default=1.0,
    show_default=True,
    help="Multiply each model's ETA (0.01: minutes become seconds).",
)
@click.option(
    "--fail-fraction", type=RATE, default=0.0, show_default=True, help="Tasks that end in status 3."
)
@click.option(
    "--credits",
    type=click.IntRange(0),
    default=DEFAULT_CREDITS,
    show_default=True,
    help="The balance; each create deducts an invented price (see the README).",
)
@click.option(
    "--latency-ms",
    type=Finite(0, 600_000),
    default=0.0,
    show_default=True,
    help="Added to every API answer.",
)
@click.option(
    "--rpm-limit",
    type=click.IntRange(1),
    help="Create calls per 60 s before answering 429 with Retry-After.",
)
@click.option(
    "--rate-429", type=RATE, default=0.0, show_default=True, help="Random 429 with Retry-After."
)
@click.option(
    "--rate-503", type=RATE, default=0.0, show_default=True, help="Random 503 with Retry-After."
)
@click.option(
    "--rate-500", type=RATE, default=0.0, show_default=True, help="Random 500 (nothing created)."
)
@click.option(
    "--drop-rate",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Close the connection before processing.",
)
@click.option(
    "--lose-answer-rate",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Create the task, then close without answering.",
)
@click.option(
    "--slow-rate",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Create the task, answer after --slow-seconds.",
)
@click.option("--slow-seconds", type=Finite(0, 3600), default=5.0, show_default=True)
@click.option(
    "--cut-download-rate",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Close result files half way.",
)
@click.option(
    "--reject-rate",
    type=RATE,
    default=0.0,
    show_default=True,
    help="Refuse valid bodies with code 0 (like moderation).",
)
def sandbox_command(port: int, keys: tuple[str, ...], **settings: Any) -> None:
    """Serve the built-in sandbox API on 127.0.0.1 until Ctrl-C.

    Same endpoints and rules as the real API; accepts the test key
    key_00000000000000000000000000000000. GET /_sandbox/stats shows what it received.
    """
    from .. import sandbox as sandbox_mod

    config = sandbox_mod.SandboxConfig(keys=(sandbox_mod.TEST_KEY, *keys), **settings)
    try:
        with sandbox_mod.running(config, port) as served:
            click.echo(
                f"sandbox listening on {served.base_url} (test key {sandbox_mod.TEST_KEY}); Ctrl-C stops it"
            )
            while True:
                time.sleep(3600)
    except sandbox_mod.SandboxPortBusy as e:
        raise UsageError(f"{e}; pick another with --port") from None
    except KeyboardInterrupt:
        click.echo("sandbox stopped")
