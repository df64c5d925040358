"""The providers batchgen can send to: each a `Description` (see base.py for the protocol
every provider's client follows), found by name.

Providers are plugins, as llm's models are: a distribution registers one under the
`batchgen.providers` entry-point group (`[project.entry-points."batchgen.providers"]
memory = "batchgen_memory:PROVIDER"`), and `named` loads it when a command asks for it. pixwith
is registered the same way from inside the package (as llm's default plugins are), and is the
one a command talks to (`DEFAULT`) until the command line learns to choose.
"""

from __future__ import annotations

import functools
import importlib
from importlib import metadata

from ..errors import UsageError
from .base import Balance, Description, Kind, Outcome, Provider, Served, TaskState, Uploaded

DEFAULT = "pixwith"

__all__ = [
    "DEFAULT",
    "Balance",
    "Description",
    "Kind",
    "Outcome",
    "Provider",
    "Served",
    "TaskState",
    "Uploaded",
    "available",
    "key_variables",
    "named",
    "refresh",
]


ENTRY_POINTS = "batchgen.providers"
_BUILT_IN = {"pixwith": f"{__name__}.pixwith:PROVIDER"}


@functools.cache
def _registered() -> dict[str, str]:
    """name → where its `Description` is ("module:attribute"): the built-in ones, then those
    installed distributions register (a built-in name is not taken over)."""
    found = dict(_BUILT_IN)
    for entry in metadata.entry_points(group=ENTRY_POINTS):
        found.setdefault(entry.name, entry.value)
    return found


def available() -> tuple[str, ...]:
    """The names of the providers there are: built in, and registered by entry point."""
    return tuple(sorted(_registered()))


def refresh() -> None:
    """Look for registered providers again (a distribution installed meanwhile: the tests)."""
    _registered.cache_clear()
    _loaded.cache_clear()


def named(name: str = DEFAULT) -> Description:
    """The provider of that name, loaded from where it is registered."""
    if name not in _registered():
        raise UsageError(f"no provider named {name!r} (there are: {', '.join(available())})")
    return _loaded(name)


def key_variables() -> set[str]:
    """Every registered provider's key variable (none of them is passed to another program)."""
    found = set()
    for name in available():
        try:
            found.add(named(name).key_variable)
        except UsageError:
            continue  # a provider that cannot be loaded holds no key here
    return found


@functools.cache
def _loaded(name: str) -> Description:
    where = _registered()[name]
    module, _, attribute = where.partition(":")
    try:
        description = getattr(importlib.import_module(module), attribute or "PROVIDER")
    except (ImportError, AttributeError) as e:
        raise UsageError(f"the provider {name!r} ({where}) could not be loaded: {e}") from None
    if not isinstance(description, Description):
        raise UsageError(f"the provider {name!r} ({where}) is not a batchgen Description")
    return description
