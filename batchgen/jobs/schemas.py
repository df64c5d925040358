"""JSON Schemas: the job file's (shipped in schemas/), and the tools a provider checks its
request bodies with (`BodyChecker`), loaded once, compiled once, their errors made readable.

The schemas are the one source of truth for what a job file and a request body may hold;
this module adds no rules of its own. Hints are derived from the schemas (enum values,
property names, `errorMessage` annotations), never re-coded here.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from collections.abc import Hashable, Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema
    import referencing
    from jsonschema.exceptions import ValidationError

# jsonschema (and referencing) are imported where a validator is built, not here: ~50 ms of
# every start that poll, download, status and tasks, which check no job file, do not need.

SCHEMA_NAMES = ("job",)


def schema_dir() -> Path:
    # Installed: the wheel carries schemas/ inside the package. From a source checkout
    # (editable install, or running the tests in place) they sit at the top of the repo.
    packaged = Path(str(resources.files("batchgen"))) / "schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "schemas"


@functools.cache
def load(filename: str) -> dict[str, Any]:
    """The parsed contents of a shipped schema file (`job.schema.json`)."""
    with open(schema_dir() / filename, encoding="utf-8") as f:
        schema: dict[str, Any] = json.load(f)
    return schema


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema called `name` (`job`)."""
    return load(f"{name}.schema.json")


def schema_text(name: str) -> str:
    return (schema_dir() / f"{name}.schema.json").read_text(encoding="utf-8")


@functools.cache
def _registry() -> referencing.Registry:
    # A schema may refer to another shipped beside it by relative URI, the way an editor or
    # check-jsonschema resolves it from the file beside it.
    import referencing

    return referencing.Registry().with_resources(
        (f"{name}.schema.json", referencing.Resource.from_contents(schema(name)))
        for name in SCHEMA_NAMES
    )


@functools.cache
def validator(name: str, pointer: str = "") -> jsonschema.Draft202012Validator:
    """A compiled validator for schema `name`, or for the subschema at JSON pointer `pointer`."""
    import jsonschema

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
    close = difflib.get_close_matches(word, strings, n=3, cutoff=0.6)
    if not close:
        return None
    # Of the near misses, the one that starts like the word: "16:10" means "16:9", not "1:1".
    best = max(
        close, key=lambda c: (len(os.path.commonprefix([c.lower(), word.lower()])), -close.index(c))
    )
    return f"did you mean '{best}'?"


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
    from jsonschema.exceptions import best_match

    return leaf_errors(best_match(e for errs in matching for e in errs))


def _is_type_mismatch(error: ValidationError) -> bool:
    # A branch that rejects the value's JSON type outright (at the branch's own level).
    return not error.relative_path and error.validator in ("type", "const") and not error.context


def _rule(error: ValidationError) -> Any:
    """The value of the schema keyword that failed (`enum`'s list, `type`'s name, ...)."""
    return error.validator_value


def expected_types(error: ValidationError) -> list[str]:
    """For an anyOf whose every branch is a type mismatch: the types it would take."""
    found: list[str] = []
    for sub in error.context or []:
        value = _rule(sub) if sub.validator == "type" else None
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


def missing_property(error: ValidationError) -> str | None:
    """The property a `required` error is about (jsonschema raises one error per property,
    but says which only in its message: `'duration' is a required property`)."""
    missing = [
        k for k in _rule(error) if isinstance(error.instance, dict) and k not in error.instance
    ]
    for name in missing:
        if error.message.startswith(repr(name)):
            return str(name)
    return missing[0] if missing else None


def schema_has_custom(error: ValidationError) -> bool:
    """Whether the schema gives its own words (`errorMessage`) for this error."""
    return isinstance(error.schema, dict) and "errorMessage" in error.schema


def describe(error: ValidationError) -> tuple[str, str | None]:
    """A message and an optional hint for one (already most-relevant) validation error."""
    schema_here = error.schema if isinstance(error.schema, dict) else {}
    custom = schema_here.get("errorMessage")
    if error.validator == "enum":
        options = ", ".join(json.dumps(v) for v in _rule(error))
        message = f"{json.dumps(error.instance, ensure_ascii=False)} is not one of {options}"
        return custom or message, suggest(error.instance, _rule(error))
    if error.validator == "const":
        message = (
            f"{json.dumps(error.instance, ensure_ascii=False)} must be {json.dumps(_rule(error))}"
        )
        return custom or message, None
    if error.validator == "required":
        return custom or f"missing required field '{missing_property(error)}'", None
    if error.validator == "type":
        expected = _rule(error)
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        found = _json_type(error.instance)
        return (
            custom or f"expected {_article(expected)}, found {found} {_short(error.instance)}",
            None,
        )
    if error.validator in ("anyOf", "oneOf"):
        types = expected_types(error)
        if types:
            wanted = " or ".join(_article(t) for t in types)
            return (
                custom
                or f"expected {wanted}, found {_json_type(error.instance)} {_short(error.instance)}",
                None,
            )
    if error.validator == "not" and not _rule(error):
        return custom or "this field is not allowed here", None
    if error.validator == "pattern" and isinstance(error.instance, str):
        return custom or _unmatched(error.instance, _rule(error)), None
    if error.validator in ("maxLength", "minLength") and isinstance(error.instance, str):
        # The value itself is not quoted: it may be megabytes.
        length = len(error.instance)
        if error.validator == "minLength" and length == 0:
            return custom or "must not be empty", None
        bound = "at most" if error.validator == "maxLength" else "at least"
        return custom or f"{length:,} characters; {bound} {_rule(error):,} are allowed", None
    return custom or error.message, None


def _unmatched(text: str, pattern: str) -> str:
    """Why `text` does not match a pattern of characters it may not hold: the first one, named."""
    allowed = re.compile(pattern.removeprefix("^").removesuffix("*$"))
    for at, character in enumerate(text):
        if not allowed.fullmatch(character):
            return (
                f"holds the control character U+{ord(character):04X} at character {at + 1}"
                " (only tab and line breaks are allowed)"
            )
    return f"does not match {pattern}"


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


class BodyChecker:
    """A provider's request schema over many bodies, fast.

    A jsonschema check of a body costs ~200 µs, too slow for 100,000 requests. Bodies of one
    job mostly differ only in their prompt, and no rule of a request schema may read the prompt
    except the prompt's own subschema (`prompt_pointer`; each provider's tests assert this). So
    the rest of a body is checked once per distinct rest (with a placeholder prompt), and the
    prompt on its own: by one scan when the provider's prompt rule is the job file's own
    (`plain_prompt`), else by its subschema.
    """

    def __init__(self, schema: dict[str, Any], prompt_pointer: str = "/$defs/prompt") -> None:
        import jsonschema
        import referencing

        resource = referencing.Resource.from_contents(schema)
        registry = referencing.Registry().with_resource("request", resource)
        self.body_validator = jsonschema.Draft202012Validator(schema, registry=registry)
        self.prompt_validator = jsonschema.Draft202012Validator(
            {"$ref": f"request#{prompt_pointer}"}, registry=registry
        )
        # The job file's own prompt rule, word for word: its verdict is then one C scan.
        prompt_rule = registry.resolver().lookup(f"request#{prompt_pointer}").contents
        self.job_prompt_rule = prompt_rule == load("job.schema.json")["$defs"]["prompt"]
        self.memo: dict[Hashable, list[ValidationError]] = {}

    def errors(self, body: dict[str, Any], shape: Hashable | None = None) -> list[ValidationError]:
        """The leaf errors of `body`; `shape`, when given, stands for the body without its
        prompt (bodies of equal shape have equal rests: `Request.shape`), and saves reading it."""
        has_prompt = "prompt" in body
        rest = None if shape is not None else {k: v for k, v in body.items() if k != "prompt"}
        memo_key = ("shape", has_prompt, shape) if rest is None else _memo_key(has_prompt, rest)
        found = self.memo.get(memo_key)
        if found is None:
            if len(self.memo) > 200_000:  # a long-lived checker (many jobs): start afresh
                self.memo.clear()
            if rest is None:
                rest = {k: v for k, v in body.items() if k != "prompt"}
            # "x" stands in for any valid prompt: the prompt is checked on its own below.
            probe = dict(rest, prompt="x") if has_prompt else rest
            found = self.memo[memo_key] = self._leaves(self.body_validator.iter_errors(probe))
        if has_prompt and not self._prompt_ok(body["prompt"]):
            prompt_errors = self._leaves(self.prompt_validator.iter_errors(body["prompt"]))
            for error in prompt_errors:
                error.path.appendleft("prompt")
            return found + prompt_errors
        return found

    def _prompt_ok(self, prompt: Any) -> bool:
        if type(prompt) is not str or not self.job_prompt_rule:
            return bool(self.prompt_validator.is_valid(prompt))
        return plain_prompt(prompt)  # one scan in C, not the validator's walk

    @staticmethod
    def _leaves(errors: Iterator[ValidationError]) -> list[ValidationError]:
        return [leaf for error in errors for leaf in leaf_errors(error)]


@functools.cache
def _prompt_rules() -> tuple[int, re.Pattern[str]]:
    schema = load("job.schema.json")["$defs"]["prompt"]
    return int(schema["maxLength"]), re.compile(schema["pattern"])


def plain_prompt(text: str) -> bool:
    """Whether a prompt's text is within the job file's bounds (length, characters): a provider
    whose prompt rule is no narrower judges it as any other such text."""
    longest, pattern = _prompt_rules()
    return 0 < len(text) <= longest and pattern.search(text) is not None


def _memo_key(has_prompt: bool, rest: dict[str, Any]) -> tuple[bool, str]:
    # repr() of JSON data (dicts, lists, strings, numbers, booleans, None) tells apart every
    # two values the schema could judge differently: True from 1, 5 from 5.0, "5" from 5.
    # It is one C call; key order only costs a cache miss, never a wrong verdict.
    return (has_prompt, repr(rest))


def body_problems(body: Any, checker: BodyChecker) -> list[str]:
    """`path: message` for each way a request body breaks its schema (for a sandbox)."""
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    out = []
    for error in checker.errors(body):
        message, _ = describe(error)
        paths = [tuple(error.path)]
        if error.validator == "required":
            paths = [(*error.path, missing_property(error) or "")]
            message = message if schema_has_custom(error) else "is required"
        unexpected = unexpected_keys(error)
        if unexpected:
            paths, message = [(*error.path, k) for k in unexpected], "is not a known field"
        for path in paths:
            out.append(f"{'.'.join(map(str, path))}: {message}" if path else message)
    return out
