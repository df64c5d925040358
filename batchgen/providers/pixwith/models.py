"""pixwith's model catalogue: every video model it offers, as data.

One file per model family in `schemas/models/` beside this module (its models' names, API ids, the page their
rules were read from, whether that page can be trusted, the rules themselves, and what the
sandbox makes of them). Everything else is derived from these files: the request schema and
the job schema's model names (model_schema.py, checked against the committed schemas by the
tests), the validator's hints, `batchgen models`, and the sandbox. Adding a model is adding
a file (or a model to a family's file).

A family's `options` and `images` apply to each of its models, which may override them
option by option (`null` for an option the family has and this model doesn't take).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...output.words import value_text

SCHEMAS = Path(__file__).resolve().parent / "schemas"


@functools.cache
def load(filename: str) -> dict[str, Any]:
    """A file of the catalogue (`request.schema.json`, `models/wan-2-2.json`, ...), parsed."""
    with open(SCHEMAS / filename, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


@functools.cache
def family_files() -> tuple[str, ...]:
    """The catalogue's family files (`schemas/models/*.json`)."""
    return tuple(sorted(p.name for p in (SCHEMAS / "models").glob("*.json")))


# Options in the order they are listed everywhere (schemas, `batchgen models`, hints).
OPTION_ORDER = (
    "prompt_optimization",
    "aspect_ratio",
    "resolution",
    "duration",
    "num_outputs",
    "sound",
    "fix_camera",
)


@dataclass(frozen=True)
class Option:
    """What one model takes for one option."""

    name: str
    values: tuple[Any, ...] | None  # the allowed values; None: any boolean
    optional: bool = False
    text_to_video_only: bool = False  # taken (and required) only when no image is given
    message: str | None = None  # the family file's words for a value outside `values`

    def words(self) -> str:
        """`16:9 or 9:16`, `a boolean`, `5 to 10`: the rule as a person reads it."""
        if self.values is None:
            return "true or false"
        return _either(self.values)


@dataclass(frozen=True, eq=False)
class Model:
    id: str
    name: str
    display: str
    family: str = ""
    family_display: str = ""
    page: str = ""
    verified: bool = True
    why_unverified: str | None = None
    images: tuple[int, int] = (0, 0)  # (at least, at most)
    options: dict[str, Option] = field(default_factory=dict)
    messages: dict[str, Any] = field(
        default_factory=dict
    )  # the family file's own words for some rules
    sandbox: dict[str, Any] = field(default_factory=dict)  # eta (s), credits, sample clip

    @property
    def label(self) -> str:
        """`WAN 2.2 Pro (2-9)`: how messages name it."""
        return f"{self.display} ({self.id})"

    def takes(self, option: str) -> bool:
        return option == "prompt_optimization" or option in self.options

    def image_words(self) -> str:
        low, high = self.images
        if high == 0:
            return "no image"
        if low == high:
            return f"exactly {low} image{'s' if low > 1 else ''}"
        if low == 0:
            return f"at most {high} image{'s' if high > 1 else ''} (optional)"
        return f"{low} to {high} images"


@functools.cache
def catalogue() -> tuple[Model, ...]:
    """Every model, WAN 2.2 first (the sandbox's task ids number them in this order)."""
    families = sorted(
        family_files(),
        key=lambda name: (name != "wan-2-2.json", name.removesuffix(".json")),
    )
    found: list[Model] = []
    for filename in families:
        found.extend(_family(load(f"models/{filename}")))
    return tuple(found)


def _family(data: dict[str, Any]) -> list[Model]:
    out = []
    for entry in data["models"]:
        options: dict[str, Any] = {**data.get("options", {}), **entry.get("options", {})}
        images = {**data.get("images", {}), **entry.get("images", {})}
        verified = entry.get("verified", data.get("verified", True))
        out.append(
            Model(
                id=entry["id"],
                name=entry["name"],
                display=entry["display"],
                family=data["family"],
                family_display=data["display"],
                page=data["page"],
                verified=verified,
                why_unverified=(entry.get("why_unverified") or data.get("why_unverified"))
                if not verified
                else None,
                images=(images.get("min", 0), images.get("max", 0)),
                options={
                    name: Option(
                        name,
                        tuple(rule["enum"]) if "enum" in rule else None,
                        rule.get("optional", False),
                        rule.get("text_to_video_only", False),
                        rule.get("message"),
                    )
                    for name in OPTION_ORDER
                    if (rule := options.get(name)) is not None
                },
                messages={
                    "too_many": images.get("too_many"),
                    "missing_images": images.get("missing"),
                    "missing": entry.get("missing", {}),
                    "not_taken": entry.get("not_taken", {}),
                },
                sandbox=entry.get("sandbox", {}),
            )
        )
    return out


def families() -> dict[str, dict[str, Any]]:
    """family → its file's contents (for the examples and the page)."""
    return {data["family"]: data for data in (load(f"models/{f}") for f in family_files())}


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


def option_names() -> list[str]:
    """Every option some model takes, in the catalogue's order."""
    taken = {name for model in catalogue() for name in model.options}
    return [name for name in OPTION_ORDER if name == "prompt_optimization" or name in taken]


def accepting(option: str, value: Any = None, *, images: int | None = None) -> list[Model]:
    """The models that take `option` (with `value`, if given), or `images` images."""
    found = []
    for model in catalogue():
        if images is not None:
            if model.images[0] <= images <= model.images[1]:
                found.append(model)
            continue
        rule = model.options.get(option)
        if rule is None:
            continue
        if (
            value is None
            or (rule.values is None and isinstance(value, bool))
            or (rule.values is not None and _member(value, rule.values))
        ):
            found.append(model)
    return found


def _member(value: Any, values: tuple[Any, ...]) -> bool:
    # As JSON Schema's enum compares: 5 is not true, "5" is not 5.
    return any(type(value) is type(v) and value == v for v in values)


def names(found: list[Model], limit: int = 6) -> str:
    """`kling2.5, kling2.6 and 3 more`: models named in a hint."""
    shown = [m.name for m in found[:limit]]
    more = len(found) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _either(values: tuple[Any, ...]) -> str:
    texts = [value_text(v) for v in values]
    if (
        len(texts) > 3
        and all(isinstance(v, int) for v in values)
        and list(values) == list(range(values[0], values[-1] + 1))
    ):
        return f"{texts[0]} to {texts[-1]}"
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " or " + texts[-1]
