"""`batchgen keys`: API keys kept in the user's config folder (see stored_keys.py), as llm's
`keys` commands keep theirs. Parsing and printing only; no key is ever printed."""

from __future__ import annotations

import sys

import click

from .. import providers
from ..errors import UsageError
from ..output.console import Terminal
from ..providers.keys import check_api_key, remember_secret
from ..providers.stored_keys import key_for, keys_path, store, stored


@click.group("keys")
def keys_command() -> None:
    """Keep API keys for batchgen, so that no shell variable holds them."""


def _provider(name: str) -> providers.Description:
    try:
        return providers.named(name)
    except UsageError:
        raise UsageError(
            f"no provider named {name!r}: keys are stored per provider ({', '.join(providers.available())})"
        ) from None


@keys_command.command("set")
@click.argument("name")
def set_key(name: str) -> None:
    """Store the key for provider NAME (a registered provider's name): asked for without echo on a terminal,
    else read from standard input. Used when neither --api-key-file nor the provider's
    variable gives one."""
    provider = _provider(name)
    if sys.stdin.isatty():
        key = click.prompt(f"{name} API key", hide_input=True, prompt_suffix=": ")
    else:
        key = sys.stdin.readline()
    key = key.strip()
    remember_secret(key)
    check_api_key(key, "standard input" if not sys.stdin.isatty() else "the prompt")
    path = store(name, key)
    Terminal().err(
        f"stored the {name} key in {path}; {provider.key_variable} or --api-key-file, when given, win over it"
    )


@keys_command.command("remove")
@click.argument("name")
def remove_key(name: str) -> None:
    """Forget the stored key of provider NAME."""
    if key_for(name) is None:
        raise UsageError(f"no key stored for {name!r} in {keys_path()}")
    store(name, None)
    Terminal().err(f"removed the {name} key from {keys_path()}")


@keys_command.command("list")
def list_keys() -> None:
    """The providers that have a stored key (names only, never the keys)."""
    for name in sorted(stored()):
        click.echo(name)


@keys_command.command("path")
def path_of_keys() -> None:
    """Where the keys are stored (BATCHGEN_USER_DIR moves it)."""
    click.echo(keys_path())
