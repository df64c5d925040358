"""Reading YAML the way editors read it: one safe document, with the line and column of every
value and key, within bounds on depth, size and aliases that are checked before the parse can
cost much.

Plain scalars resolve as in YAML 1.2's core schema (see `_BoundedLoader`).
"""

from __future__ import annotations

import gc
import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from ..errors import JobError, Problem

FieldPath = tuple[str | int, ...]
Mark = tuple[int, int]  # 1-based line and column

# Bounds on what a job file may ask of the parser (each refused with its line, in seconds):
MAX_DEPTH = 64  # nesting of mappings and lists (a real job needs about 6)
MAX_NODES = 1_000_000  # values in the file: about 200,000 explicit entries
MAX_EXPANDED = 2_000_000  # values once aliases are expanded (an alias bomb is far past it)
MAX_INT_DIGITS = 18  # an integer of more digits is no count, rpm or duration
FREEZE_ABOVE = (
    50_000  # values: a document this big is frozen out of the GC's scans (see parse_yaml)
)


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
    # The parse builds hundreds of thousands of long-lived objects and no garbage cycles: the
    # cyclic GC would rescan the growing heap over and over (2-3x the parse's time on a big
    # file). It is paused for the parse, and what the parse built is frozen out of later
    # collections (gc.freeze) when it is big; reference counting still frees it all as usual.
    gc_was_on = gc.isenabled()
    gc.disable()
    nodes = 0
    problems: list[Problem] = []
    try:
        built = _build(text)
        if built is None:  # aliases, tags, merge keys, a mistake to report: the full loader
            built = _load(text, file, problems)
        data, marks, nodes = built
    except yaml.MarkedYAMLError as e:
        raise JobError([_yaml_problem(e, file, text)]) from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (NUL, ...)
        message = f"YAML: character {e.character!r} is not allowed in a YAML file"
        raise JobError([Problem.at_offset(file, text, e.position, message)]) from None
    except yaml.YAMLError as e:  # errors without a position (rare)
        raise JobError([Problem(file, None, None, "", f"not valid YAML: {e}")]) from None
    except RecursionError:  # a last guard: _BoundedLoader stops far sooner
        raise JobError(
            [Problem(file, None, None, "", f"nested deeper than {MAX_DEPTH} levels")]
        ) from None
    finally:
        if gc_was_on:
            if nodes > FREEZE_ABOVE:
                gc.freeze()
            gc.enable()
    if problems:
        raise JobError(problems)
    return data, marks


def _load(text: str, file: str, problems: list[Problem]) -> tuple[Any, Marks, int]:
    """The full loader's way (any document `_build` passes up): bounds on the events, then
    nodes, then values, then a walk for marks and keys given twice (added to `problems`)."""
    nodes, aliases = _prescan(text)
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise JobError(
                [Problem(file, 1, 1, "", "the file is empty", hint="start with 'version: 1'")]
            )
        if aliases:
            _check_expansion(node)
        data = loader.construct_document(node)
        marks = Marks()
        _mark(loader, node, (), marks, problems, file, set())
    finally:
        loader.dispose()
    return data, marks, nodes


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


class _Bounds:
    """The depth and size bounds, enforced on the parser's events as they come, before any
    value is built: a huge or deeply nested file is refused in seconds and in little memory."""

    def __init__(self) -> None:
        self.depth = self.nodes = self.aliases = 0

    def count(self, event: Any) -> None:
        if isinstance(event, _NODE):
            self.nodes += 1
            if isinstance(event, yaml.AliasEvent):
                self.aliases += 1
            if self.nodes > MAX_NODES:
                raise ComposerError(
                    None,
                    None,
                    f"more than {MAX_NODES:,} values in one job file; put prompts in a prompts file or a CSV",
                    event.start_mark,  # type: ignore[arg-type]  # libyaml's Mark, same fields
                )
            if isinstance(event, _OPENING):
                self.depth += 1
                if self.depth > MAX_DEPTH:
                    raise ComposerError(
                        None,
                        None,
                        f"nested deeper than {MAX_DEPTH} levels",
                        event.start_mark,  # type: ignore[arg-type]  # libyaml's Mark, same fields
                    )
        elif isinstance(event, _CLOSING):
            self.depth -= 1


def _prescan(text: str) -> tuple[int, int]:
    """The bounds over the whole file, before the loader builds nodes. Returns the number of
    values and of aliases (none: no alias bomb to look for)."""
    parser = _Parser(text)
    bounds = _Bounds()
    try:
        while parser.check_event():
            bounds.count(parser.get_event())
    finally:
        parser.dispose()
    return bounds.nodes, bounds.aliases


class _Unusual(Exception):
    """Raised inside `_build`: the document needs the full loader (see there)."""


_NOT_YET = object()  # a mapping's key not read yet


def _build(text: str) -> tuple[Any, Marks, int] | None:
    """The data and marks of a plain document, built straight from the parser's events in one
    pass, under the same bounds; or None when the document needs the full loader.

    Composing nodes, constructing values from them and walking them again for marks took
    three passes and most of the time on a big job file (100,000 entries: ~2 s of 3.7 s).
    Nearly every job file is plain: one document, mappings with scalar keys, sequences and
    untagged scalars. Anything else (an alias, an explicit tag, a merge key `<<`, a key that
    is not a scalar, a key given twice, an integer or string to refuse, several documents or
    none) returns None, and `parse_yaml` reads the file with the loader, so those keep exactly
    the loader's values and messages (tests/test_yamldoc.py compares the two)."""
    parser = _Parser(text)
    bounds = _Bounds()
    marks = Marks()
    values, keys = marks.values, marks.keys
    # One frame per open mapping or list: [container, its path, the key read (or _NOT_YET), the key's mark]
    stack: list[list[Any]] = []
    root: Any = _NOT_YET
    try:
        while parser.check_event():
            event: Any = parser.get_event()
            bounds.count(event)
            kind = type(event)
            if kind is yaml.ScalarEvent:
                if event.tag is not None:
                    raise _Unusual
                value: Any = _scalar(event.value, event.implicit[0])
            elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
                if event.tag is not None:
                    raise _Unusual
                value = {} if kind is yaml.MappingStartEvent else []
            elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                frame = stack.pop()
                if frame[2] is not _NOT_YET:  # cannot happen in a parsed mapping; be safe
                    raise _Unusual
                continue
            elif kind is yaml.DocumentStartEvent:
                if root is not _NOT_YET:  # a second document: the loader says so
                    raise _Unusual
                continue
            elif kind is yaml.AliasEvent:
                raise _Unusual
            else:  # stream and document ends
                continue
            mark = (event.start_mark.line + 1, event.start_mark.column + 1)
            if not stack:
                root, path = value, ()
                values[()] = mark
            else:
                frame = stack[-1]
                container = frame[0]
                if type(container) is list:
                    path = frame[1] + (len(container),)
                    container.append(value)
                    values[path] = mark
                elif frame[2] is _NOT_YET:  # this value is a key
                    if kind is not yaml.ScalarEvent or value in container:
                        raise _Unusual
                    frame[2], frame[3] = value, mark
                    continue
                else:
                    path = frame[1] + (frame[2],)
                    container[frame[2]] = value
                    keys[path] = frame[3]
                    values[path] = mark
                    frame[2] = _NOT_YET
            if kind is not yaml.ScalarEvent:
                stack.append([value, path, _NOT_YET, None])
    except _Unusual:
        return None
    finally:
        parser.dispose()
    if root is _NOT_YET:  # an empty file: the loader's message
        return None
    return root, marks, bounds.nodes


def scalar(text: str) -> Any:
    """A value typed as a plain YAML scalar is (`8` → 8, `720p` → "720p", `null` → None),
    the way a job file would read it (for values given on the command line)."""
    try:
        return _scalar(text, True)
    except _Unusual:
        return text


def _scalar(text: str, plain: bool) -> Any:
    """An untagged scalar's value, resolved as `_BoundedLoader` resolves it (YAML 1.2 core)."""
    if not plain:
        tag = _STR
    else:
        tag = _STR
        for candidate, pattern in _BoundedLoader.yaml_implicit_resolvers.get(text[:1], ()):
            if pattern.match(text):
                tag = candidate
                break
    if tag is _STR:
        if not text.isascii() and _SURROGATE.search(text):
            raise _Unusual
        return text
    if tag == _INT:
        digits = text.lstrip("+-")
        if len(digits) > MAX_INT_DIGITS:
            raise _Unusual
        return _int(text)
    if tag == _FLOAT:
        return _float(text)
    if tag == _BOOL:
        return text.lower() == "true"
    if tag == _NULL:
        return None
    raise _Unusual  # the merge key


_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"


def _int(text: str) -> int:
    """A core-schema integer: decimal, 0o octal or 0x hexadecimal, with an optional sign."""
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    return sign * int(digits, 10)


def _float(text: str) -> float:
    """A core-schema float, as PyYAML's SafeConstructor reads it (`.inf`, `-.Inf`, `.nan`)."""
    value = text.lower()
    sign = -1.0 if value.startswith("-") else 1.0
    value = value.lstrip("+-")
    if value == ".inf":
        return sign * math.inf
    if value == ".nan":
        return math.nan
    return sign * float(value)


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
        digits = text.lstrip("+-")
        if len(digits) > MAX_INT_DIGITS:
            raise ConstructorError(
                None, None, f"an integer of {len(digits)} digits is too large", node.start_mark
            )
        return _int(text)

    def construct_yaml_str(self, node: Any) -> str:
        value = super().construct_yaml_str(node)
        if not value.isascii() and _SURROGATE.search(value):
            raise ConstructorError(
                None,
                None,
                "a lone surrogate escape (like \\ud800) is not valid Unicode",
                node.start_mark,
            )
        return str(value)


# YAML 1.2 core schema: https://yaml.org/spec/1.2.2/#1032-tag-resolution
for _tag, _pattern, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    _BoundedLoader.add_implicit_resolver(
        f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), list(_first)
    )
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
            None,
            None,
            f"aliases expand to {expanded:,} values (from {distinct:,} written); that is an alias bomb, not a job",
            root.start_mark,
        )


def _yaml_problem(e: yaml.MarkedYAMLError, file: str, text: str = "") -> Problem:
    mark = e.problem_mark or e.context_mark
    if (
        mark is not None
        and _char_at(text, mark.line, mark.column) == "\t"
        and "'\\t'" not in str(e.problem)
    ):
        e.problem = "found character '\\t' that cannot start any token"  # libyaml does not name it
    message = " ".join(str(part) for part in (e.context, e.problem) if part) or "not valid YAML"
    hint = None
    if "python/" in message or "could not determine a constructor" in message:
        message = message.replace(
            "could not determine a constructor for the tag", "tag not allowed:"
        )
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
            plain = (
                isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:str"
            )
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
