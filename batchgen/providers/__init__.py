"""The providers batchgen can send to: each a `Description` (see base.py for the protocol
every provider's client and catalogue follow), found by name.

Providers are plugins, as llm's models are: a distribution registers one under the
`batchgen.providers` entry-point group (`[project.entry-points."batchgen.providers"]
memory = "batchgen_memory:PROVIDER"`), and `named` loads it when a command asks for it.
batchgen's own provider is registered the same way, by batchgen's own pyproject.toml, and
says it is the default (`Description.default`): the one a job goes to when neither the job
nor the project's batchgen.yaml names one.
"""

from __future__ import annotations

import functools
import importlib
from importlib import metadata
from typing import Any

from ..errors import UsageError
from .base import (
    Balance,
    Catalogue,
    Description,
    Fields,
    Finding,
    Kind,
    Model,
    Outcome,
    Provider,
    Served,
    TaskState,
    Uploaded,
)

__all__ = [
    "Balance",
    "Catalogue",
    "Description",
    "Fields",
    "Finding",
    "Kind",
    "Model",
    "Outcome",
    "Provider",
    "Served",
    "TaskState",
    "Uploaded",
    "available",
    "default_name",
    "catalogue_of",
    "fields_of",
    "for_api",
    "key_variables",
    "model_label",
    "named",
    "refresh",
]


ENTRY_POINTS = "batchgen.providers"


@functools.cache
def _registered() -> dict[str, str]:
    """name → where its `Description` is ("module:attribute"), as installed distributions
    (batchgen among them) register them; the first of a name wins."""
    found: dict[str, str] = {}
    for entry in metadata.entry_points(group=ENTRY_POINTS):
        found.setdefault(entry.name, entry.value)
    return found


def available() -> tuple[str, ...]:
    """The names of the providers registered."""
    return tuple(sorted(_registered()))


def refresh() -> None:
    """Look for registered providers again (a distribution installed meanwhile: the tests)."""
    _registered.cache_clear()
    _loaded.cache_clear()
    default_name.cache_clear()
    model_label.cache_clear()
    catalogue_of.cache_clear()


@functools.cache
def default_name() -> str:
    """The provider a job goes to when nothing names one: the only one registered, else the
    one that says it is the default."""
    names = available()
    if not names:
        raise UsageError("no provider is registered: batchgen's install is broken (reinstall it)")
    if len(names) == 1:
        return names[0]
    for name in names:
        try:
            if _loaded(name).default:
                return name
        except UsageError:
            continue  # a plugin that cannot be loaded is not the default
    return names[0]


def named(name: str | None = None) -> Description:
    """The provider of that name (None: the default), loaded from where it is registered."""
    if name is None:
        name = default_name()
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


def for_api(api_base: str | None) -> Description:
    """The provider whose requests are known by `api_base` (its own base URL or its sandbox's),
    else the default one (a stand-in at another address is taken for the default's)."""
    if api_base:
        for name in available():
            try:
                provider = _loaded(name)
            except UsageError:
                continue
            if api_base in (provider.default_base_url, provider.sandbox_identity):
                return provider
    return named()


@functools.cache
def catalogue_of(name: str | None) -> Catalogue:
    """The catalogue of the provider named (None: the default), made once."""
    return named(name).catalogue()


def fields_of(provider: str | None, body: dict[str, Any]) -> Fields:
    """What a recorded body asked for, in batchgen's words (`provider`: the ledger's
    `tasks.provider`, None for the default)."""
    return catalogue_of(provider).fields(body)


@functools.cache
def model_label(model: str) -> str:
    """A model's name as people know it, for its provider's id, from the catalogue of the
    provider that has it (the default's first); the id itself when none has it."""
    names = sorted(available(), key=lambda name: name != default_name())
    for name in names:
        try:
            found = catalogue_of(name).lookup(model)
        except UsageError:
            continue
        if found is not None:
            return found.name
    return model
