"""pixwith's request schema, derived from its model catalogue (models.py).

`schemas/request.schema.json` (beside this module) is generated whole from the family files in
`schemas/models/`. It is committed (editors and check-jsonschema read it as a file), and a test
fails if it differs from what this module derives, so the catalogue stays the one source of
truth. After editing a family file:

    python -m batchgen.providers.pixwith.model_schema   # rewrites schemas/request.schema.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from . import models

DRAFT = "https://json-schema.org/draft/2020-12/schema"

_OPTION_DEFS: dict[str, dict[str, Any]] = {
    "prompt_optimization": {
        "type": "boolean",
        "description": "true: the prompt is translated to English",
    },
    "aspect_ratio": {},
    "resolution": {},
    "duration": {"type": "integer", "description": "Seconds."},
    "num_outputs": {
        "type": "integer",
        "description": "How many videos the task makes (each is a result file).",
    },
    "sound": {"type": "boolean", "description": "true: the video has generated sound."},
    "fix_camera": {"type": "boolean", "description": "true: the camera does not move."},
}

PROMPT_MAX = 10_000  # characters
PROMPT_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f\\ud800-\\udfff]*$"


def request_schema() -> dict[str, Any]:
    catalogue = models.catalogue()
    names = models.option_names()
    most_images = max(m.images[1] for m in catalogue)
    return {
        "$schema": DRAFT,
        "title": "pixwith.ai create-task request body",
        "description": (
            "One body for POST /api/task/create. Generated from the model catalogue (schemas/models/*.json) by "
            "`python -m batchgen.providers.pixwith.model_schema`: edit those files, not this one. The per-model rules are the if/then "
            "blocks under allOf; errorMessage gives each rule in words."
        ),
        "type": "object",
        "required": ["prompt", "model_id", "options"],
        "additionalProperties": False,
        "properties": {
            "prompt": {"$ref": "#/$defs/prompt"},
            "model_id": {"$ref": "#/$defs/model_id"},
            "image_urls": {
                "type": "array",
                "minItems": 1,
                "maxItems": most_images,
                "items": {"$ref": "#/$defs/image_url"},
                "errorMessage": f"image_urls takes {'1 or 2' if most_images == 2 else f'1 to {most_images}'} image URLs (the second is the last frame)",
            },
            "options": {
                "type": "object",
                "required": ["prompt_optimization"],
                "additionalProperties": False,
                "properties": {name: {"$ref": f"#/$defs/{name}"} for name in names},
            },
        },
        "allOf": [_model_rules(model, names, most_images) for model in catalogue],
        "$defs": {
            "prompt": {
                "type": "string",
                "minLength": 1,
                # Longer than any model reads; a 30 MB prompt was sent before this bound.
                "maxLength": PROMPT_MAX,
                # No control characters but tab and line breaks (a NUL is taken by SQLite and
                # refused by PostgreSQL), and no lone surrogate (no UTF-8 spells one).
                "pattern": PROMPT_PATTERN,
                "description": f"What the video shows: text of 1 to {PROMPT_MAX:,} characters, no control characters but tab and line breaks.",
            },
            "model_id": {
                "description": ", ".join(f"{m.id} {m.display}" for m in catalogue)
                + " (catalogue: batchgen/providers/pixwith/schemas/models/)",
                "enum": [m.id for m in catalogue],
            },
            "image_url": {
                "type": "string",
                "pattern": "^https?://[^\\s]+$",
                "errorMessage": "an image URL starts with http:// or https:// and has no spaces",
            },
            **{name: _option_def(name) for name in names},
        },
    }


def _option_def(name: str) -> dict[str, Any]:
    found = dict(_OPTION_DEFS[name])
    if found.get("type") == "boolean":
        return found
    values: list[Any] = []
    for model in models.catalogue():
        rule = model.options.get(name)
        for value in rule.values or () if rule else ():
            if value not in values:
                values.append(value)
    if name == "resolution":
        values.sort(key=lambda v: int(str(v).rstrip("p")))
    elif found.get("type") == "integer":
        values.sort()
    return {**found, "enum": values}


def _model_rules(model: models.Model, names: list[str], most_images: int) -> dict[str, Any]:
    """`if model_id is this model, then its rules` (only what is narrower than the whole)."""
    then: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    low, high = model.images
    if high == 0:
        properties["image_urls"] = {
            "not": {},
            "errorMessage": f"{model.label} takes no image: image_urls is not allowed",
        }
    elif high < most_images:
        properties["image_urls"] = {
            "maxItems": high,
            "errorMessage": model.messages["too_many"]
            or f"{model.label} takes at most {high} image{'s' if high > 1 else ''} in image_urls",
        }
    if low >= 1:
        then["required"] = ["image_urls"]
        then["errorMessage"] = (
            model.messages["missing_images"]
            or f"{model.label} needs {model.image_words()} in image_urls"
        )
    option_rules: dict[str, Any] = {}
    required: list[dict[str, Any]] = []
    conditional: list[dict[str, Any]] = []
    for name in names:
        if name == "prompt_optimization":
            continue
        rule = model.options.get(name)
        if rule is None:
            option_rules[name] = {
                "not": {},
                "errorMessage": model.messages["not_taken"].get(name) or _not_taken(model, name),
            }
            continue
        if rule.values is not None and list(rule.values) != _option_def(name)["enum"]:
            option_rules[name] = {
                "enum": list(rule.values),
                "errorMessage": rule.message or f"{model.label} takes {name} {rule.words()}",
            }
        if rule.text_to_video_only:
            conditional.append(_text_to_video_only(model, rule))
        elif not rule.optional:
            item: dict[str, Any] = {"required": [name]}
            if name in model.messages["missing"]:
                item["errorMessage"] = model.messages["missing"][name]
            required.append(item)
    options: dict[str, Any] = {"properties": option_rules}
    if required:
        options["allOf"] = required
    properties["options"] = options
    then["properties"] = properties
    if conditional:
        then["allOf"] = conditional
    return {
        "if": {"properties": {"model_id": {"const": model.id}}, "required": ["model_id"]},
        "then": then,
    }


def _not_taken(model: models.Model, name: str) -> str:
    families: list[str] = []
    for other in models.accepting(name):
        if other.family_display not in families:
            families.append(other.family_display)
    return f"{model.label} does not take options.{name}" + (
        f" (an option of {', '.join(families)})" if families else ""
    )


def _text_to_video_only(model: models.Model, rule: models.Option) -> dict[str, Any]:
    """An option taken only without an image (Kling 2.6's aspect ratio follows the image)."""
    return {
        "if": {"required": ["image_urls"]},
        "then": {
            "properties": {
                "options": {
                    "properties": {
                        rule.name: {
                            "not": {},
                            "errorMessage": f"{model.label} takes options.{rule.name} only for text-to-video: with an image, it follows the image",
                        }
                    }
                }
            }
        },
        "else": {
            "properties": {
                "options": {
                    "required": [rule.name],
                    "errorMessage": f"{model.label} needs options.{rule.name} for text-to-video: {rule.words()}",
                }
            }
        },
    }


def schema_text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write(folder: Path) -> list[Path]:
    """Rewrite the request schema in `folder` from the catalogue; return the files changed."""
    path = folder / "request.schema.json"
    text = schema_text(request_schema())
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
        return [path]
    return []


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool, run by hand
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else models.SCHEMAS
    for path in write(target):
        print(f"rewrote {path}")
