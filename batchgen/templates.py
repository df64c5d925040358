"""Prompt templates: `{{ name }}` placeholders filled from a request's `vars`.

Jinja2, chosen by the project for this, in its sandboxed environment: a job file is data that
may come from anyone, and a template must not reach Python objects. Undefined names are
errors (StrictUndefined), never silently empty text. Compiled templates are cached by source,
so a 100,000-request matrix compiles its prompt once.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

_MARKERS = ("{{", "{%", "{#")


@functools.cache
def _env() -> Any:
    # Imported on first use: most jobs have no template, and Jinja2 costs ~0.1 s to import.
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    # What renders differently each time would give a request a new identity on every run,
    # and every rerun would send (and bill) it again: such names are not there to be used.
    for name in _UNSTABLE_FILTERS:
        del env.filters[name]
    for name in _UNSTABLE_GLOBALS:
        del env.globals[name]
    return env


_UNSTABLE_FILTERS = ("random",)  # a random item of a list
_UNSTABLE_GLOBALS = ("lipsum",)  # random lorem ipsum
_WHY_UNSTABLE = "a prompt must render the same on every run: it is the request's identity, which tells a rerun what is already done"


class TemplateProblem(Exception):
    """A template that cannot be compiled or rendered, in words for the user."""


def is_template(text: object) -> bool:
    # One scan for "{" first: nearly every prompt has none (this runs once per request).
    return isinstance(text, str) and "{" in text and any(marker in text for marker in _MARKERS)


@functools.lru_cache(maxsize=4096)
def _compiled(source: str) -> "jinja2.Template":
    import jinja2

    try:
        return _env().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        unstable = any(f"No filter named {name!r}" in str(e.message) for name in _UNSTABLE_FILTERS)
        raise TemplateProblem(f"template syntax error: {e.message}" + (f" ({_WHY_UNSTABLE})" if unstable else "")) from None


@functools.lru_cache(maxsize=4096)
def names(source: str) -> frozenset[str]:
    """The variables a template reads (empty for one that does not compile)."""
    import jinja2
    from jinja2 import meta

    try:
        return frozenset(meta.find_undeclared_variables(_env().parse(source)))
    except jinja2.TemplateSyntaxError:
        return frozenset()


def render(source: str, values: dict[str, Any]) -> str:
    """`source` with its placeholders filled from `values`; TemplateProblem if it cannot be."""
    import jinja2

    template = _compiled(source)
    try:
        return template.render(values)
    except jinja2.UndefinedError as e:
        if any(f"'{name}' is undefined" in str(e.message) for name in _UNSTABLE_GLOBALS if name not in values):
            raise TemplateProblem(f"{e.message} ({_WHY_UNSTABLE})") from None
        known = ", ".join(sorted(values)) or "none"
        raise TemplateProblem(f"{e.message} (vars here: {known})") from None
    except jinja2.TemplateError as e:  # the sandbox refusing an attribute, a bad filter, ...
        raise TemplateProblem(f"template error: {e}") from None
    except Exception as e:  # an expression failing on the values given (1 / 0, ...)
        raise TemplateProblem(f"template error: {type(e).__name__}: {e}") from None
