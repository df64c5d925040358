"""The shipped JSON Schemas: loaded once, compiled once, and their errors made readable.

The schemas are the one source of truth for what a job file and a request body may hold;
this module adds no rules of its own. Hints are derived from the schemas (enum values,
property names, `errorMessage` annotations), never re-coded here.
"""

from __future__ import annotations

import difflib
import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import referencing
from jsonschema.exceptions import ValidationError, best_match

SCHEMA_NAMES = ("job", "request")


def _schema_dir() -> Path:
    # Installed: the wheel carries schemas/ inside the package. From a source checkout
    # (editable install, or running the tests in place) they sit at the top of the repo.
    packaged = Path(str(resources.files("batchgen"))) / "schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "schemas"


@functools.cache
def load(filename: str) -> dict[str, Any]:
    """The parsed contents of a shipped schema file (`job.schema.json`, `models.json`, ...)."""
    with open(_schema_dir() / filename, encoding="utf-8") as f:
        return json.load(f)


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema called `name` (`job` or `request`)."""
    return load(f"{name}.schema.json")


def schema_text(name: str) -> str:
    return (_schema_dir() / f"{name}.schema.json").read_text(encoding="utf-8")


@functools.cache
def _registry() -> referencing.Registry:
    # job.schema.json refers to request.schema.json by relative URI, the way an editor or
    # check-jsonschema resolves it from the file beside it.
    return referencing.Registry().with_resources(
        (f"{name}.schema.json", referencing.Resource.from_contents(schema(name))) for name in SCHEMA_NAMES
    )


@functools.cache
def validator(name: str, pointer: str = "") -> jsonschema.Draft202012Validator:
    """A compiled validator for schema `name`, or for the subschema at JSON pointer `pointer`."""
    target: Any = schema(name)
    if pointer:
        target = _registry().resolver().lookup(f"{name}.schema.json#{pointer}").contents
        if "$ref" in json.dumps(target):
            # Keep the base URI so the subschema's own references still resolve.
            target = {"$ref": f"{name}.schema.json#{pointer}"}
    return jsonschema.Draft202012Validator(target, registry=_registry())


def suggest(word: object, choices: Iterable[object]) -> str | None:
    """`did you mean 'x'?` for a near miss among `choices`, or None."""
    if not isinstance(word, str):
        return None
    strings = [c for c in choices if isinstance(c, str)]
    lowered = {c.lower(): c for c in strings}
    if word.lower() in lowered:
        return f"did you mean '{lowered[word.lower()]}'?"
    close = difflib.get_close_matches(word, strings, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def leaf_errors(error: ValidationError) -> list[ValidationError]:
    """The errors that explain `error` to a person.

    For anyOf/oneOf, jsonschema reports one error per branch. The branches whose type does
    not even match the value (a mapping given where `null` is the other choice) say nothing
    useful, so they are dropped and the remaining branch's own errors are reported instead.
    When every branch is a type mismatch, the one error is kept (its message lists the types).
    """
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        return [error]
    branches: dict[object, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    matching = [errs for errs in branches.values() if not any(_is_type_mismatch(e) for e in errs)]
    if len(matching) == 1:
        return [leaf for sub in matching[0] for leaf in leaf_errors(sub)]
    if not matching:
        return [error]
    return leaf_errors(best_match(e for errs in matching for e in errs))


def _is_type_mismatch(error: ValidationError) -> bool:
    # A branch that rejects the value's JSON type outright (at the branch's own level).
    return not error.relative_path and error.validator in ("type", "const") and not error.context


def expected_types(error: ValidationError) -> list[str]:
    """For an anyOf whose every branch is a type mismatch: the types it would take."""
    found: list[str] = []
    for sub in error.context or []:
        value = sub.validator_value if sub.validator == "type" else None
        for t in value if isinstance(value, list) else [value]:
            if t and t not in found:
                found.append(t)
    return found


def unexpected_keys(error: ValidationError) -> list[str]:
    """The keys an `additionalProperties: false` error complains about."""
    if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
        return []
    allowed = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    return [k for k in error.instance if k not in allowed]


def allowed_keys(error: ValidationError) -> list[str]:
    return list(error.schema.get("properties", {})) if isinstance(error.schema, dict) else []


def schema_has_custom(error: ValidationError) -> bool:
    """Whether the schema gives its own words (`errorMessage`) for this error."""
    return isinstance(error.schema, dict) and "errorMessage" in error.schema


def describe(error: ValidationError) -> tuple[str, str | None]:
    """A message and an optional hint for one (already most-relevant) validation error."""
    schema_here = error.schema if isinstance(error.schema, dict) else {}
    custom = schema_here.get("errorMessage")
    if error.validator == "enum":
        options = ", ".join(json.dumps(v) for v in error.validator_value)
        message = f"{json.dumps(error.instance, ensure_ascii=False)} is not one of {options}"
        return custom or message, suggest(error.instance, error.validator_value)
    if error.validator == "const":
        message = f"{json.dumps(error.instance, ensure_ascii=False)} must be {json.dumps(error.validator_value)}"
        return custom or message, None
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in (error.instance or {})]
        return custom or f"missing required field {', '.join(repr(m) for m in missing)}", None
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        found = _json_type(error.instance)
        return custom or f"expected {_article(expected)}, found {found} {_short(error.instance)}", None
    if error.validator in ("anyOf", "oneOf"):
        types = expected_types(error)
        if types:
            wanted = " or ".join(_article(t) for t in types)
            return custom or f"expected {wanted}, found {_json_type(error.instance)} {_short(error.instance)}", None
    if error.validator == "not" and not error.validator_value:
        return custom or "this field is not allowed here", None
    return custom or error.message, None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "mapping"


def _article(word: str) -> str:
    word = {"array": "list", "object": "mapping"}.get(word, word)
    if word == "null":
        return word
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _short(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
