"""Prompt templates: `{{ name }}` placeholders filled from a request's `vars`.

Jinja2, chosen by the project for this, in its sandboxed environment: a job file is data that
may come from anyone, and a template must not reach Python objects. Undefined names are
errors (StrictUndefined), never silently empty text. Compiled templates are cached by source,
so a 100,000-request matrix compiles its prompt once.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
_MARKERS = ("{{", "{%", "{#")


class TemplateProblem(Exception):
    """A template that cannot be compiled or rendered, in words for the user."""


def is_template(text: object) -> bool:
    return isinstance(text, str) and any(marker in text for marker in _MARKERS)


@functools.lru_cache(maxsize=4096)
def _compiled(source: str) -> jinja2.Template:
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateProblem(f"template syntax error: {e.message}") from None


@functools.lru_cache(maxsize=4096)
def names(source: str) -> frozenset[str]:
    """The variables a template reads (empty for one that does not compile)."""
    try:
        return frozenset(meta.find_undeclared_variables(_ENV.parse(source)))
    except jinja2.TemplateSyntaxError:
        return frozenset()


def render(source: str, values: dict[str, Any]) -> str:
    """`source` with its placeholders filled from `values`; TemplateProblem if it cannot be."""
    template = _compiled(source)
    try:
        return template.render(values)
    except jinja2.UndefinedError as e:
        known = ", ".join(sorted(values)) or "none"
        raise TemplateProblem(f"{e.message} (vars here: {known})") from None
    except jinja2.TemplateError as e:  # the sandbox refusing an attribute, a bad filter, ...
        raise TemplateProblem(f"template error: {e}") from None
    except Exception as e:  # an expression failing on the values given (1 / 0, ...)
        raise TemplateProblem(f"template error: {type(e).__name__}: {e}") from None
