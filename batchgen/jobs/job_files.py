"""The files a job refers to, read and checked: its prompts files (`PromptFile`), CSV tables
(`Table`, cells typed by the schema), local images; and the bounded, UTF-8 reading every file
of the user's goes through. Each problem is located in the file it is in, by line."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from ..errors import InputRefused, JobError, Problem
from . import schemas
from .user_files import read_regular


class Prompts(Sequence[str]):
    """A prompts file's prompts, held as their UTF-8 bytes end to end and where each ends: a
    list of half a million short strings costs ~95 bytes a prompt, this its bytes and 4 more
    (~27 MB less at half a million prompts). UTF-8 rather than one joined string, as a single
    emoji would make a joined string four bytes a character throughout. Each prompt is
    decoded when asked for."""

    __slots__ = ("_data", "_ends")

    def __init__(self, prompts: Iterable[str] = ()) -> None:
        self._data = bytearray()
        self._ends = array("I")  # a prompts file is at most MAX_FILE_SIZE (64 MiB)
        for prompt in prompts:
            self.append(prompt)

    def append(self, prompt: str) -> None:
        self._data += prompt.encode()
        self._ends.append(len(self._data))

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self._ends)
        if not 0 <= index < len(self._ends):
            raise IndexError("prompt index out of range")  # as a list's, either side
        return self._data[self._ends[index - 1] if index else 0 : self._ends[index]].decode()

    def __iter__(self) -> Iterator[str]:
        start = 0
        for end in self._ends:
            yield self._data[start:end].decode()
            start = end

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Prompts):
            return self._ends == other._ends and self._data == other._data
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # as a list's: equal to one, so not hashable

    def __repr__(self) -> str:
        return f"Prompts({len(self)} prompts)"


@dataclass(frozen=True)
class PromptFile:
    """A prompts file: one prompt per non-blank line not starting with `#`, trimmed."""

    file: str
    prompts: Prompts
    # Each prompt's line, as machine integers: a prompts file of a million lines would hold
    # ~45 MB more as a list of (prompt, line) tuples.
    lines: array[int]


@dataclass(frozen=True)
class Table:
    """A CSV of requests: its header (field paths) and, per row, its line and typed values.

    A cell left empty sets nothing (the row inherits); a value of `None` deletes the field.
    Rows are tuples aligned with `columns`, with `Table.UNSET` for empty cells.
    """

    file: str
    columns: list[str]
    rows: list[tuple[int, tuple[Any, ...]]]

    UNSET = object()


def read_text_file(path: str) -> str:
    """A YAML file of the user's (a job, a prices file): bounded, UTF-8; or a located JobError."""
    return read_job_text(Path(path), path)


def read_job_text(path: Path, file: str, read: dict[str, str] | None = None) -> str:
    """The text of a job (or prices) file; its SHA-256 noted in `read` (see unchanged.py)."""
    try:
        raw = read_regular(path)
    except InputRefused as e:
        raise JobError(
            [Problem(file, None, None, "", str(e), hint="a job file is a YAML file")]
        ) from None
    if read is not None:
        read[file] = hashlib.sha256(raw).hexdigest()
    return decode_utf8(raw, file)


def decode_utf8(raw: bytes, file: str) -> str:
    """The text of `raw` (a leading BOM dropped), or a located error for bytes that aren't UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.start + 1].hex()
        raise JobError(
            [
                Problem.at_offset(
                    file, raw, e.start, f"not valid UTF-8 (byte 0x{bad})", "save the file as UTF-8"
                )
            ]
        ) from None


# A line and its end, as str.splitlines ends lines (\r\n, \n, \r, \v, \f, \x1c-\x1e, \x85,
# \u2028, \u2029).
_LINE = re.compile(
    r"([^\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]*)(\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]|\Z)"
)


def _lines(text: str) -> Iterator[str]:
    """`text.splitlines()`, one line at a time: the list of a million lines is ~90 MB."""
    position, end = 0, len(text)
    while position < end:
        found = _LINE.match(text, position)
        assert found is not None  # the pattern matches at any position
        yield found[1]
        position = found.end()


def _column_types() -> dict[str, str]:
    """Each fixed CSV header a table may use, and how its cells are typed, from the job schema
    (`options.<name>` columns are typed by the provider: see `parse_table`)."""
    combination = schemas.schema("job")["$defs"]["combination"]["properties"]
    types = {}
    for column in combination:
        if column in ("options", "vars", "meta"):
            continue  # objects: no way to write one in a cell (vars.<name>, meta.<name> are columns)
        types[column] = "list" if column == "images" else "string"
    return types


def parse_table(
    display: str,
    text: str,
    problems: list[Problem],
    option_type: Callable[[str], str | None] = lambda name: None,
    aliases: Mapping[str, str] | None = None,
) -> Table:
    """A CSV table of requests, its cells typed by the schema and the provider's options
    (`option_type`); problems located by line. `aliases`: the provider's older spellings of
    fields, as headers may still write them."""
    types = _column_types()
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as e:
        problems.append(Problem(display, 1, None, "", f"CSV: {e}"))
        return Table(display, [], [])
    if not header or not any(h.strip() for h in header):
        problems.append(
            Problem(
                display,
                1,
                None,
                "",
                "the CSV has no header row",
                hint="name the columns: prompt,model,...",
            )
        )
        return Table(display, [], [])
    columns = [(aliases or {}).get(h.strip(), h.strip()) for h in header]
    for number, column in enumerate(columns, start=1):
        if _NAMED_COLUMN.match(column):
            types[column] = "string"
        elif _OPTION_COLUMN.match(column):
            found = option_type(column.split(".", 1)[1])
            types[column] = found if found in ("integer", "number", "boolean") else "string"
        elif column not in types:
            leaf = column.rsplit(".", 1)[-1]
            hint = (
                schemas.suggest(column, [*types, f"options.{leaf}"])
                or f"columns can be: {', '.join(types)}, options.<name>"
            )
            problems.append(Problem(display, 1, number, column, f"unknown column '{column}'", hint))
        elif columns.index(column) != number - 1:
            problems.append(
                Problem(display, 1, number, column, f"column '{column}' is given twice")
            )
    rows: list[tuple[int, tuple[Any, ...]]] = []
    line = reader.line_num
    try:
        for cells in reader:
            start, line = line + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(columns):
                problems.append(
                    Problem(
                        display,
                        start,
                        None,
                        "",
                        f"row has {len(cells)} cells, the header {len(columns)}",
                    )
                )
                continue
            values = tuple(
                _cell(display, start, number, column, types.get(column, "string"), cell, problems)
                for number, (column, cell) in enumerate(zip(columns, cells), start=1)
            ) + (Table.UNSET,) * (len(columns) - len(cells))
            rows.append((start, values))
    except csv.Error as e:
        problems.append(Problem(display, reader.line_num, None, "", f"CSV: {e}"))
    if not rows and not problems:
        problems.append(Problem(display, 1, None, "", "the CSV has a header but no rows"))
    return Table(display, columns, rows)


_OPTION_COLUMN = re.compile(r"^options\.[A-Za-z_][A-Za-z0-9_]{0,63}$")
_NAMED_COLUMN = re.compile(r"^(?:vars|meta)\.[A-Za-z_][A-Za-z0-9_]*$")  # vars.<name>, meta.<name>
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


def _cell(
    display: str, line: int, number: int, column: str, kind: str, cell: str, problems: list[Problem]
) -> Any:
    text = cell.strip()
    if text == "":
        return Table.UNSET
    if text == "null" and column != "prompt":  # a prompt may well be the word "null"
        return None
    if kind == "list":
        return text.split()
    if kind == "boolean":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        problems.append(Problem(display, line, number, column, f"'{text}' is not true or false"))
        return Table.UNSET
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            problems.append(
                Problem(display, line, number, column, f"'{text}' is not a whole number")
            )
            return Table.UNSET
    if kind == "number":
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            problems.append(Problem(display, line, number, column, f"'{text}' is not a number"))
            return Table.UNSET
        return int(value) if value.is_integer() and "." not in text else value
    return text
