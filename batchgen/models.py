"""The model catalogue: names, API ids and display names, read from `schemas/models.json`.

Adding a model of the same provider is a data change: the catalogue, the enums of the two
schemas, and the model's rules in `request.schema.json` (tests check the three agree).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from . import schemas


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    display: str


@functools.cache
def catalogue() -> tuple[Model, ...]:
    return tuple(Model(**m) for m in schemas.load("models.json")["models"])


@functools.cache
def _by_name_or_id() -> dict[str, Model]:
    table = {}
    for model in catalogue():
        table[model.id] = model
        table[model.name] = model
    return table


def lookup(name_or_id: str) -> Model | None:
    """The model a job file names, by name (`wan2.2-pro`) or API id (`2-9`)."""
    return _by_name_or_id().get(name_or_id)


@functools.cache
def _ids() -> dict[str, str]:
    return {key: model.id for key, model in _by_name_or_id().items()}


def model_id(name_or_id: object) -> object:
    """The API id for a name or id; anything else is returned unchanged for the schema to reject."""
    if isinstance(name_or_id, str):
        return _ids().get(name_or_id, name_or_id)
    return name_or_id


def label(model_id: str) -> str:
    """`wan2.2-pro` for `2-9`: the name people know a model by."""
    model = lookup(model_id)
    return model.name if model else model_id
