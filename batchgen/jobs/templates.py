"""Prompt templates: `{{ name }}` placeholders filled from a request's `vars`.

Jinja2, chosen by the project for this, in its sandboxed environment: a job file is data that
may come from anyone, and a template must not reach Python objects. Undefined names are
errors (StrictUndefined), never silently empty text. Compiled templates are cached by source,
so a 100,000-request matrix compiles its prompt once.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import TemplateProblem, TemplateTooBig

if TYPE_CHECKING:
    import jinja2

_MARKERS = ("{{", "{%", "{#")


# What one template may make: a prompt is text a person wrote, and a job file may come from
# anyone. `{{ 'x' * 10**9 }}` took 3.9 GB and a minute before it was refused.
MAX_TEXT = 10_000  # characters (or items) in the output and in any value made on the way
# And how much work it may take: three nested `range(9999)` loops ran for minutes in
# `validate`. Every loop iteration and every call is a step; a render has a budget of steps and
# of time, checked as it goes (see `_counted`).
MAX_STEPS = 100_000
MAX_SECONDS = 2.0
_MAX_POWER_BITS = 256  # `a ** b` no bigger than this
_WIDE_FORMAT = re.compile(r"\d{6,}")  # a width or precision of 100,000 or more in a format string


@functools.cache
def _env() -> Any:
    # Imported on first use: most jobs have no template, and Jinja2 costs ~0.1 s to import.
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    class BoundedEnvironment(SandboxedEnvironment):
        """The sandbox, with every operator, call and filter that can make a value bigger
        than its inputs checked before it runs (and what it made, after)."""

        intercepted_binops = frozenset(["*", "**", "%", "+"])

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _check_binop(operator, left, right)
            return _bounded(super().call_binop(context, operator, left, right))

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            _step()  # a macro calling itself twice over would double its work per level
            _check_arguments(__obj, args, kwargs)
            return _bounded(super().call(__context, __obj, *args, **kwargs))

    env = BoundedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    # What renders differently each time would give a request a new identity on every run,
    # and every rerun would send (and bill) it again: such names are not there to be used.
    for name in _UNSTABLE_FILTERS:
        del env.filters[name]
    for name in _UNSTABLE_GLOBALS:
        del env.globals[name]
    for name, function in list(env.filters.items()):
        env.filters[name] = _bounded_filter(function)
    env.globals[_LOOP] = _counted
    return env


class _Budget(threading.local):
    """The steps and time left to the render under way in this thread (`render` sets them)."""

    steps = MAX_STEPS
    deadline = float("inf")


_budget = _Budget()
_LOOP = "batchgen_counted_loop"  # what every `{% for %}` iterates through (see `_compiled`)


def _step() -> None:
    _budget.steps -= 1
    if _budget.steps < 0:
        raise TemplateTooBig(
            f"a template may take at most {MAX_STEPS:,} steps (loop iterations and calls) per prompt"
        )
    if _budget.steps % 1024 == 0 and time.monotonic() > _budget.deadline:
        raise TemplateTooBig(f"a template may take at most {MAX_SECONDS:g} seconds per prompt")


def _counted(iterable: Any) -> Any:
    """A loop's items, each a step of the render's budget."""
    for item in iterable:
        _step()
        yield item


def _too_big(what: str) -> TemplateTooBig:
    return TemplateTooBig(f"{what}: a template may make at most {MAX_TEXT:,} characters")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)) else 0


def _bounded(value: Any) -> Any:
    if _size(value) > MAX_TEXT:
        raise _too_big(f"a value of {_size(value):,} items")
    return value


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for sized, times in ((left, right), (right, left)):
            if _size(sized) and isinstance(times, int) and _size(sized) * times > MAX_TEXT:
                raise _too_big(f"repeating {_size(sized):,} items {times:,} times")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            if right * abs(left).bit_length() > _MAX_POWER_BITS:
                raise _too_big(
                    f"{left} ** {right}, a number of {right * abs(left).bit_length():,} bits"
                )
    elif operator == "%" and isinstance(left, str):
        _check_format(left, right if isinstance(right, tuple) else (right,))
    elif operator == "+" and _size(left) + _size(right) > MAX_TEXT:
        raise _too_big(f"joining {_size(left):,} and {_size(right):,} items")


def _check_format(text: str, args: tuple[Any, ...] | list[Any]) -> None:
    if _WIDE_FORMAT.search(text) or any(
        isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_TEXT and "*" in text
        for a in args
    ):
        raise _too_big("a format with a width that big")


def _check_arguments(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Before a call or a filter: no width, count or fill past the bound (`center(10**9)`,
    `'%*d' | format(10**9, 1)`), and no replace that would pass it."""
    values = (*args, *kwargs.values())
    if any(isinstance(v, int) and not isinstance(v, bool) and v > MAX_TEXT for v in values):
        raise _too_big(
            f"{getattr(function, '__name__', 'a call')}({', '.join(map(repr, values))[:60]})"
        )
    target = getattr(function, "__wrapped__", function)  # the sandbox wraps str.format
    owner = getattr(target, "__self__", None)
    name = getattr(target, "__name__", "")
    if isinstance(owner, str) and name in ("format", "format_map"):
        _check_format(owner, args)
    if isinstance(owner, str) and name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1])


def _check_replace(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        count = text.count(old) if old else len(text) + 1
        if len(text) + count * len(new) > MAX_TEXT:
            raise _too_big(f"replacing {count:,} times")


def _bounded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    # Filters that take the environment, context or eval context get it first (by Jinja2's
    # own marking, kept on the wrapper): the value is the argument after it.
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        value, extra = (args[skip], args[skip + 1 :]) if len(args) > skip else (None, ())
        _check_arguments(function, tuple(extra), kwargs)
        if function.__name__ in ("do_replace", "sync_do_replace") and len(extra) >= 2:
            _check_replace(str(value), extra[0], extra[1])
        if function.__name__ == "do_format" and isinstance(value, str):
            _check_format(value, extra)
        return _bounded(function(*args, **kwargs))

    return bounded


_UNSTABLE_FILTERS = ("random",)  # a random item of a list
_UNSTABLE_GLOBALS = ("lipsum",)  # random lorem ipsum
_WHY_UNSTABLE = "a prompt must render the same on every run: it is the request's identity, which tells a rerun what is already done"


def is_template(text: object) -> bool:
    # One scan for "{" first: nearly every prompt has none (this runs once per request).
    return isinstance(text, str) and "{" in text and any(marker in text for marker in _MARKERS)


@functools.lru_cache(maxsize=4096)
def _compiled(source: str) -> jinja2.Template:
    import jinja2
    from jinja2 import nodes

    try:
        parsed = _env().parse(source)
        # Every loop iterates through `_counted`, which charges each item to the render's budget.
        for loop in parsed.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name(_LOOP, "load"), [loop.iter], [], None, None)
        template: jinja2.Template = _env().from_string(parsed)
        return template
    except jinja2.TemplateSyntaxError as e:
        unstable = any(f"No filter named {name!r}" in str(e.message) for name in _UNSTABLE_FILTERS)
        raise TemplateProblem(
            f"template syntax error: {e.message}" + (f" ({_WHY_UNSTABLE})" if unstable else "")
        ) from None


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
    _budget.steps, _budget.deadline = MAX_STEPS, time.monotonic() + MAX_SECONDS
    try:
        made, length = [], 0
        for chunk in template.generate(
            values
        ):  # streamed, so that a loop cannot make gigabytes first
            length += len(chunk)
            if length > MAX_TEXT:
                raise _too_big("the rendered text")
            made.append(chunk)
        return "".join(made)
    except TemplateTooBig as e:
        raise TemplateProblem(str(e)) from None
    except jinja2.UndefinedError as e:
        if any(
            f"'{name}' is undefined" in str(e.message)
            for name in _UNSTABLE_GLOBALS
            if name not in values
        ):
            raise TemplateProblem(f"{e.message} ({_WHY_UNSTABLE})") from None
        known = ", ".join(sorted(values)) or "none"
        raise TemplateProblem(f"{e.message} (vars here: {known})") from None
    except jinja2.TemplateError as e:  # the sandbox refusing an attribute, a bad filter, ...
        raise TemplateProblem(f"template error: {e}") from None
    except Exception as e:  # an expression failing on the values given (1 / 0, ...)
        raise TemplateProblem(f"template error: {type(e).__name__}: {e}") from None
