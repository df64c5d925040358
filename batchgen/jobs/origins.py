"""Where a value of an expanded request came from, for messages that name the file, line and
field: the layer that set it (`locate`) and the entry, combination, row or include item it
was expanded from (`describe_origin`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .expand import Origin, axes, split_path
from .job import Job
from .job_files import Table
from .yamldoc import FieldPath, format_path


@dataclass(frozen=True)
class Source:
    """Where a field of an expanded request was set: a place in the job file, or a CSV cell."""

    file: str
    line: int | None
    column: int | None
    path: str
    layer: str  # "defaults", "entry", "combination", "row", "include", or "missing"


def describe_origin(job: Job, origin: Origin) -> str:
    """`requests[1], matrix combination prompt='A cat', model='wan2.2-fast'` and the like."""
    where = f"requests[{origin.entry}]"
    if origin.combination is not None:
        parts = [
            f"{axis.field}={_brief(axis.values[i])}"
            for axis, i in zip(axes(job, origin.entry), origin.combination)
        ]
        return f"{where}, matrix combination " + ", ".join(parts)
    if origin.include is not None:
        return f"{where}, include[{origin.include}]"
    if origin.row is not None:
        table = job.tables[origin.entry]
        return f"{where}, {table.file} row {origin.row + 1} (line {table.rows[origin.row][0]})"
    return where


def _brief(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")


def locate(job: Job, origin: Origin, field: FieldPath) -> Source:
    """The topmost layer that set `field` (a job field path) for the request from `origin`."""
    index = origin.entry
    entry_path: FieldPath = ("requests", index)
    entry = job.entries[index]
    candidates: list[tuple[str, FieldPath, dict[str, Any] | None]] = []
    if origin.include is not None:
        candidates.append(
            ("include", entry_path + ("include", origin.include), entry["include"][origin.include])
        )
    if origin.combination is not None:
        source = _locate_in_combination(job, origin, field)
        if source:
            return source
    if origin.row is not None:
        table = job.tables[index]
        line, values = table.rows[origin.row]
        for number, (column, value) in enumerate(zip(table.columns, values), start=1):
            if value is not Table.UNSET and _covers(split_path(column), field):
                return Source(table.file, line, number, column, "row")
    candidates.append(("entry", entry_path, entry))
    candidates.append(("defaults", ("defaults",), job.data.get("defaults")))
    for layer, prefix, fields in candidates:
        found = _find_in_fields(fields, field)
        if found is not None:
            return _source(job, prefix + found, layer)
    return _source(job, entry_path, "missing")


def _locate_in_combination(job: Job, origin: Origin, field: FieldPath) -> Source | None:
    for axis, i in zip(axes(job, origin.entry), origin.combination or ()):
        covered = split_path(axis.field)
        value = axis.values[i]
        if axis.field == "options" and isinstance(value, dict):
            if len(field) < 2 or field[1] not in value:
                continue
        elif not _covers(covered, field):
            continue
        prompt_file = job.prompt_files.get(origin.entry)
        if axis.field == "prompt" and prompt_file is not None:
            return Source(prompt_file.file, prompt_file.lines[i], 1, "prompt", "combination")
        return _source(job, ("requests", origin.entry, "matrix", axis.field, i), "combination")
    return None


def _covers(setter: tuple[str, ...], field: FieldPath) -> bool:
    """Whether setting `setter` decides `field` (setting `options` decides `options.duration`)."""
    return tuple(field[: len(setter)]) == setter or tuple(setter[: len(field)]) == tuple(field)


def _find_in_fields(fields: dict[str, Any] | None, field: FieldPath) -> FieldPath | None:
    """The path within `fields` that sets `field` (or deletes it with null), if any."""
    if not isinstance(fields, dict) or not field:
        return None
    dotted = ".".join(str(p) for p in field)
    if dotted in fields:  # include items may use dotted paths
        return (dotted,)
    head = field[0]
    if head not in fields:
        return None
    value = fields[head]
    if len(field) == 1 or not isinstance(value, dict):
        return (head,)
    inner = _find_in_fields(value, field[1:])
    return (head,) + inner if inner else None


def _source(job: Job, path: FieldPath, layer: str) -> Source:
    mark = job.marks.at(path)
    line, column = mark if mark else (None, None)
    return Source(job.file, line, column, format_path(path), layer)
