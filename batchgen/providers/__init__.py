"""The providers batchgen can send to, each a folder here whose package exports `PROVIDER`, a
`Description` (see base.py for the protocol every provider's client follows).

Only pixwith.ai exists today; `named` finds any other folder by its name, so adding a
provider is adding a folder. Which provider a command talks to is `DEFAULT` until the command
line learns to choose (nothing else needs to change for it).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

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
    "named",
]


@functools.cache
def available() -> tuple[str, ...]:
    """The names of the providers in this folder."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg))


def named(name: str = DEFAULT) -> Description:
    """The provider of that name (its folder's `PROVIDER`)."""
    if name not in available():
        raise UsageError(f"no provider named {name!r} (there are: {', '.join(available())})")
    description = importlib.import_module(f"{__name__}.{name}").PROVIDER
    if not isinstance(description, Description):
        raise TypeError(f"batchgen.providers.{name}.PROVIDER is not a Description")
    return description
