"""Reading YAML the way editors read it: one safe document, with the line and column of every
value and key, within bounds on depth, size and aliases that are checked before the parse can
cost much.

Plain scalars resolve as in YAML 1.2's core schema (see `_BoundedLoader`).
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from .errors import JobError, Problem

FieldPath = tuple[str | int, ...]
Mark = tuple[int, int]  # 1-based line and column

# Bounds on what a job file may ask of the parser (each refused with its line, in seconds):
MAX_DEPTH = 64  # nesting of mappings and lists (a real job needs about 6)
MAX_NODES = 1_000_000  # values in the file: about 200,000 explicit entries
MAX_EXPANDED = 2_000_000  # values once aliases are expanded (an alias bomb is far past it)
MAX_INT_DIGITS = 18  # an integer of more digits is no count, rpm or duration
FREEZE_ABOVE = 50_000  # values: a document this big is frozen out of the GC's scans (see parse_yaml)


@dataclass
class Marks:
    """Where each value (and each mapping key) of a YAML document stands."""

    values: dict[FieldPath, Mark] = field(default_factory=dict)
    keys: dict[FieldPath, Mark] = field(default_factory=dict)

    def at(self, path: FieldPath) -> Mark | None:
        """The mark of `path`, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            mark = self.values.get(tuple(path[:end]))
            if mark:
                return mark
        return None

    def key_at(self, path: FieldPath) -> Mark | None:
        return self.keys.get(tuple(path)) or self.at(path)


def format_path(path: FieldPath) -> str:
    """`requests[2].options.duration` for ("requests", 2, "options", "duration")."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_yaml(text: str, file: str) -> tuple[Any, Marks]:
    """Safe-load one YAML document, with the mark of every value and key.

    Only plain YAML types are constructed: a `!!python/...` tag is an error, never executed.
    A key given twice in one mapping is an error (YAML loaders usually keep the last silently).
    """
    loader = None
    # The parse builds hundreds of thousands of long-lived objects and no garbage cycles: the
    # cyclic GC would rescan the growing heap over and over (2-3x the parse's time on a big
    # file). It is paused for the parse, and what the parse built is frozen out of later
    # collections (gc.freeze) when it is big; reference counting still frees it all as usual.
    gc_was_on = gc.isenabled()
    gc.disable()
    nodes = 0
    try:
        nodes, aliases = _prescan(text)
        loader = _BoundedLoader(text)
        node = loader.get_single_node()
        if node is None:
            raise JobError([Problem(file, 1, 1, "", "the file is empty", hint="start with 'version: 1'")])
        if aliases:
            _check_expansion(node)
        data = loader.construct_document(node)
        marks = Marks()
        problems: list[Problem] = []
        _mark(loader, node, (), marks, problems, file, set())
    except yaml.MarkedYAMLError as e:
        raise JobError([_yaml_problem(e, file, text)]) from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (NUL, ...)
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise JobError([Problem(file, line, column, "", f"YAML: character {e.character!r} is not allowed in a YAML file")]) from None
    except yaml.YAMLError as e:  # errors without a position (rare)
        raise JobError([Problem(file, None, None, "", f"not valid YAML: {e}")]) from None
    except RecursionError:  # a last guard: _BoundedLoader stops far sooner
        raise JobError([Problem(file, None, None, "", f"nested deeper than {MAX_DEPTH} levels")]) from None
    finally:
        if loader is not None:
            loader.dispose()
        if gc_was_on:
            if nodes > FREEZE_ABOVE:
                gc.freeze()
            gc.enable()
    if problems:
        raise JobError(problems)
    return data, marks


YAML11_BOOLEANS = {"yes", "no", "on", "off", "y", "n"}
_SURROGATE = re.compile("[\ud800-\udfff]")


# libyaml's C loader when PyYAML has it (several times faster on big files), else the
# pure-Python one; both give every node its line and column.
try:
    from yaml.cyaml import CParser as _Parser  # type: ignore[attr-defined]
    from yaml.cyaml import CSafeLoader as _SafeLoader
except ImportError:  # PyYAML built without libyaml
    _Parser = yaml.SafeLoader  # type: ignore[assignment,misc]
    _SafeLoader = yaml.SafeLoader  # type: ignore[assignment,misc]

_OPENING = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_CLOSING = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
_NODE = (yaml.ScalarEvent, yaml.AliasEvent, *_OPENING)


def _prescan(text: str) -> tuple[int, int]:
    """Enforce the depth and size bounds on the parser's events, before any node is built:
    a huge or deeply nested file is refused in seconds and in little memory. Returns the
    number of values and of aliases (none: no alias bomb to look for)."""
    parser = _Parser(text)
    depth = nodes = aliases = 0
    try:
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, _NODE):
                nodes += 1
                if isinstance(event, yaml.AliasEvent):
                    aliases += 1
                if nodes > MAX_NODES:
                    raise ComposerError(
                        None, None, f"more than {MAX_NODES:,} values in one job file; put prompts in a prompts file or a CSV",
                        event.start_mark,  # type: ignore[arg-type]  # libyaml's Mark, same fields
                    )
                if isinstance(event, _OPENING):
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)  # type: ignore[arg-type]
            elif isinstance(event, _CLOSING):
                depth -= 1
    finally:
        parser.dispose()
    return nodes, aliases


class _BoundedLoader(_SafeLoader):
    """The safe loader, reading plain scalars as YAML 1.2's core schema does (the way the
    published JSON Schema, check-jsonschema and the YAML language server see a file): `16:9`
    and `yes`/`no`/`on`/`off` are strings, `0o17` is octal and `017` decimal; only
    `true`/`false` are booleans and `null`/`~`/nothing is null.

    Integers and strings are bounded: an integer of more than MAX_INT_DIGITS digits, or a
    string with a lone surrogate (like "\\ud800", which cannot be sent as UTF-8), is a located
    error. Depth and size are bounded by `_prescan`."""

    yaml_implicit_resolvers: dict[Any, Any] = {}

    def construct_yaml_int(self, node: Any) -> int:
        text = str(self.construct_scalar(node))
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if len(digits) > MAX_INT_DIGITS:
            raise ConstructorError(None, None, f"an integer of {len(digits)} digits is too large", node.start_mark)
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        return sign * int(digits, 10)

    def construct_yaml_str(self, node: Any) -> str:
        value = super().construct_yaml_str(node)
        if not value.isascii() and _SURROGATE.search(value):
            raise ConstructorError(None, None, "a lone surrogate escape (like \\ud800) is not valid Unicode", node.start_mark)
        return str(value)


# YAML 1.2 core schema: https://yaml.org/spec/1.2.2/#1032-tag-resolution
for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+.0123456789"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    _BoundedLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first))
_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])
_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)
_BoundedLoader.add_constructor("tag:yaml.org,2002:str", _BoundedLoader.construct_yaml_str)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse an alias bomb before anything walks the expanded document: the number of values
    once every alias is expanded, counted in one pass over the distinct nodes."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(item) for item in node.value)
        else:
            total = 1
        sizes[id(node)] = total
        return total

    expanded = size(root)
    distinct = len(sizes)
    if expanded > max(MAX_EXPANDED, 20 * distinct):
        raise ComposerError(
            None, None, f"aliases expand to {expanded:,} values (from {distinct:,} written); that is an alias bomb, not a job",
            root.start_mark,
        )


def _yaml_problem(e: yaml.MarkedYAMLError, file: str, text: str = "") -> Problem:
    mark = e.problem_mark or e.context_mark
    if mark is not None and _char_at(text, mark.line, mark.column) == "\t" and "'\\t'" not in str(e.problem):
        e.problem = "found character '\\t' that cannot start any token"  # libyaml does not name it
    message = " ".join(str(part) for part in (e.context, e.problem) if part) or "not valid YAML"
    hint = None
    if "python/" in message or "could not determine a constructor" in message:
        message = message.replace("could not determine a constructor for the tag", "tag not allowed:")
        hint = "job files are plain YAML; tags that construct objects are refused"
    elif "found character '\\t'" in message:
        hint = "indent with spaces, not tabs"
    line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
    return Problem(file, line, column, "", f"YAML: {message}", hint)


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.splitlines()
    return lines[line][column : column + 1] if 0 <= line < len(lines) else ""


def _mark(
    loader: Any,
    node: yaml.Node,
    path: FieldPath,
    marks: Marks,
    problems: list[Problem],
    file: str,
    seen: set[int],
) -> None:
    marks.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    # An alias shares its anchor's node: marking it once keeps an alias bomb linear.
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            # Plain text keys (nearly all) are read as they are; others are constructed.
            plain = isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:str"
            key = key_node.value if plain else loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                key = str(key)
            if key in first:
                problems.append(
                    Problem(
                        file,
                        key_node.start_mark.line + 1,
                        key_node.start_mark.column + 1,
                        format_path(path + (str(key),)),
                        f"key '{key}' is given twice in this mapping",
                        hint=f"the first is on line {first[key].start_mark.line + 1}; keep one",
                    )
                )
                continue
            first[key] = key_node
            child = path + (key,)
            marks.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _mark(loader, value_node, child, marks, problems, file, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _mark(loader, item, path + (i,), marks, problems, file, seen)
