"""pixwith's `Catalogue`: its bodies (`model_id`, `image_urls`, `options`), the rules of
`schemas/request.schema.json` (derived from models.py's family files), and what the core asks
of a body (its model, its price class), all in batchgen's words.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ...jobs import schemas
from ...jobs.images import LOCAL
from ...jobs.yamldoc import YAML11_BOOLEANS
from ...output.progress import table
from ...output.words import value_text
from ..base import Fields, Finding
from . import models
from .models import Model

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

# Changes what the prompt says, not what the video costs: left out of a request's price class.
UNPRICED = "prompt_optimization"


class PixwithCatalogue:
    """The catalogue of models.py, with the request schema it derives."""

    def models(self) -> Sequence[Model]:
        return models.catalogue()

    def lookup(self, name_or_id: str) -> Model | None:
        return models.lookup(name_or_id)

    def body(self, fields: Fields) -> dict[str, Any]:
        """The body for POST /api/task/create: `model_id` from the name or id, `image_urls`
        only when there are images, options as given."""
        body: dict[str, Any] = {}
        if fields.prompt is not None:
            body["prompt"] = fields.prompt
        if fields.model is not None:
            body["model_id"] = models.model_id(fields.model)
        if fields.images:
            body["image_urls"] = list(fields.images)
        if fields.options is not None:
            body["options"] = fields.options
        return body

    def fields(self, body: dict[str, Any]) -> Fields:
        options = body.get("options")
        return Fields(
            body.get("prompt"),
            body.get("model_id"),
            tuple(body.get("image_urls") or ()),
            options if isinstance(options, dict) else {},
        )

    @functools.cached_property
    def _checker(self) -> schemas.BodyChecker:
        return schemas.BodyChecker(models.load("request.schema.json"))

    def check(self, body: dict[str, Any], shape: Hashable | None = None) -> list[Finding]:
        errors = self._checker.errors(_checkable(body), shape)
        return [_finding(error) for error in errors] if errors else []

    def option_type(self, name: str) -> str | None:
        rule = models.load("request.schema.json")["$defs"].get(name)
        if rule is None:
            return None
        found = rule.get("type")
        if found is None and rule.get("enum"):
            kinds = {type(v) for v in rule["enum"]}
            found = "integer" if kinds == {int} else "string"
        return found if isinstance(found, str) else None

    def priced(self, path: tuple[str, ...]) -> bool:
        return path == ("model",) or (
            len(path) == 2 and path[0] == "options" and path[1] != UNPRICED
        )

    def price_class(self, body: dict[str, Any]) -> tuple[Any, ...]:
        """(model id, options but prompt_optimization as sorted pairs, number of images)."""
        options = body.get("options")
        items = (
            tuple(sorted((k, v) for k, v in options.items() if k != UNPRICED))
            if isinstance(options, dict)
            else ()
        )
        return (body.get("model_id"), items, len(body.get("image_urls") or ()))

    def request_schema(self) -> dict[str, Any]:
        return models.load("request.schema.json")

    def report(self, *, as_json: bool, rules: bool = False) -> list[str]:
        return models_report(models.catalogue(), as_json=as_json, rules=rules)

    def class_document(self, cls: tuple[Any, ...]) -> dict[str, Any]:
        # The ledger's `prices` table has keyed learned prices by this document since they
        # were first learned: its spelling stays.
        model_id, items, images = cls
        return {"model_id": model_id, "options": dict(items), "images": images}

    def describe_class(self, document: dict[str, Any]) -> str:
        options = document.get("options") or {}
        parts = [models.label(str(document.get("model_id")))]
        parts += [_option_words(k, v) for k, v in sorted(options.items())]
        images = document.get("images")
        if images:
            parts.append(f"{images} image{'s' if images > 1 else ''}")
        return " ".join(parts)


def _option_words(name: str, value: object) -> str:
    if name == "duration":
        return f"{value} s"
    if name == "num_outputs":
        return f"{value} video{'' if value == 1 else 's'}"
    if isinstance(value, bool):
        return f"{name} {'on' if value else 'off'}"
    return str(value)


def _checkable(body: dict[str, Any]) -> dict[str, Any]:
    """The body as the request schema should judge it: a local image (`sha256:…`, uploaded
    when sending) stands as a URL."""
    urls = body.get("image_urls")
    if not isinstance(urls, list) or not any(
        isinstance(u, str) and u.startswith(LOCAL) for u in urls
    ):
        return body
    return {
        **body,
        "image_urls": [
            f"https://local.image/{u[len(LOCAL) :]}"
            if isinstance(u, str) and u.startswith(LOCAL)
            else u
            for u in urls
        ],
    }


def _field_of(body_path: tuple[Any, ...]) -> tuple[str, ...]:
    """The job-file field for a body path: model_id is written `model`; URLs are `images`,
    as a whole list."""
    if not body_path:
        return ()
    if body_path[0] == "model_id":
        return ("model",)
    if body_path[0] == "image_urls":
        return ("images",)
    return tuple(map(str, body_path))


def _finding(error: ValidationError) -> Finding:
    body_path = tuple(error.path)
    unexpected = schemas.unexpected_keys(error)
    if unexpected:  # an option no model takes (a typo, most likely)
        key = unexpected[0]
        field = (*_field_of(body_path), key)
        near = schemas.suggest(key, schemas.allowed_keys(error))
        near = (
            near and near.replace("'", f"'{'.'.join(field[:-1])}.", 1) if len(field) > 1 else near
        )
        return Finding(field, f"unknown field '{'.'.join(field)}'", near)
    message, hint = schemas.describe(error)
    if error.validator == "type" and not hint:
        if isinstance(error.instance, str) and error.instance.lower() in YAML11_BOOLEANS:
            hint = "a boolean is true or false (job files are YAML 1.2, where yes, no, on and off are text)"
        elif isinstance(error.instance, (bool, int, float)) and "string" in message:
            hint = "put it in quotes to keep it as text"
    field = _field_of(body_path)
    kind = "refused" if error.validator == "not" else "value"
    if error.validator == "required":
        kind = "missing"
        missing = schemas.missing_property(error)
        field = _field_of(body_path + (missing,)) if missing else field
        if not schemas.schema_has_custom(error):
            message = f"missing {'.'.join(field)}"
        hint = "set it in defaults or in this entry"
    if field == ("model",) and error.validator == "enum":
        names = [m.name for m in models.catalogue()]
        hint = schemas.suggest(error.instance, names) or f"models: {', '.join(names)}"
    if kind == "refused":
        hint = None  # the core says how to unset it; the models that take it are added below
    return Finding(field, message, _other_models(field, error, hint), kind)


def _other_models(field: tuple[str, ...], error: ValidationError, hint: str | None) -> str | None:
    """The hint, with the models that would take what this request asked of its own (an
    option, a value, that many images): derived from the catalogue, as the rules are."""
    takers: list[Model] = []
    if len(field) == 2 and field[0] == "options":
        if error.validator == "not":
            takers = models.accepting(str(field[1]))
            what = f"{field[1]} is taken by"
        elif error.validator == "enum" and schemas.schema_has_custom(error):
            takers = models.accepting(str(field[1]), error.instance)
            hint = None  # "did you mean" a value this model takes would hide the real choice
            what = f"{value_text(error.instance)} is taken by"
    elif field == ("images",) and error.validator in ("not", "maxItems", "required"):
        count = len(error.instance) if isinstance(error.instance, list) else 0
        takers = models.accepting("", images=count)
        what = (
            f"{count} image{'' if count == 1 else 's'}: taken by" if count else "no image: taken by"
        )
    if not takers:
        return hint
    found = f"{what} {models.names(takers)}"
    return f"{hint}; {found}" if hint else found


def models_report(found: Iterable[Model], *, as_json: bool, rules: bool = False) -> list[str]:
    """`batchgen models`: a line per model (with --rules, each model's rules under it), or
    one JSON object per model."""
    if as_json:
        return [json.dumps(_model_dict(m), ensure_ascii=False) for m in found]
    found = list(found)
    rows = [
        (
            m.name,
            m.id,
            m.display,
            "yes" if m.verified else "NO",
            m.image_words(),
            ", ".join(m.options),
        )
        for m in found
    ]
    lines = table(rows, ("model", "id", "display", "verified", "images", "options"))
    unverified = [m for m in found if not m.verified]
    if rules:
        for model in found:
            lines += [
                "",
                f"{model.name} ({model.id}) {model.display}: {model.page}",
                f"  images: {model.image_words()}",
            ]
            lines += [
                f"  options.{o.name}: {o.words()}" + _option_note(o) for o in model.options.values()
            ]
            lines.append("  options.prompt_optimization: true or false")
    if unverified:
        lines.append("")
        lines += [
            f"unverified: {m.name}: {m.why_unverified} (--allow-unverified-models to use it)"
            for m in unverified
        ]
    return lines


def _option_note(option: models.Option) -> str:
    if option.text_to_video_only:
        return " (text-to-video only: with an image it follows the image)"
    return " (optional)" if option.optional else ""


def _model_dict(model: Model) -> dict[str, Any]:
    return {
        "name": model.name,
        "id": model.id,
        "display": model.display,
        "family": model.family,
        "page": model.page,
        "verified": model.verified,
        "why_unverified": model.why_unverified,
        "images": {"min": model.images[0], "max": model.images[1]},
        "options": {
            o.name: {
                "values": list(o.values) if o.values is not None else [True, False],
                "optional": o.optional,
                "text_to_video_only": o.text_to_video_only,
            }
            for o in model.options.values()
        },
    }


CATALOGUE = PixwithCatalogue()


def catalogue() -> PixwithCatalogue:
    return CATALOGUE
