"""Reading a job file: safe YAML with line marks, checked against `job.schema.json`.

The result is a `Job`: the parsed data, where every value and key stands in the file, and the
contents of the prompt files and CSV tables it refers to (so expansion needs no I/O).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import schemas
from .errors import JobError, Problem
from .images import ImageProblem, LocalImage, is_local, local_path, read_image
from .ledger_location import find_root
from .user_files import InputRefused, inside, read_regular
from .yamldoc import YAML11_BOOLEANS, FieldPath, Marks, format_path, parse_yaml

DEFAULT_MAX_REQUESTS = 10_000


@dataclass(frozen=True)
class PromptFile:
    """A prompts file: one prompt per non-blank line not starting with `#`, trimmed."""

    file: str
    prompts: list[str]
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


@dataclass
class Job:
    """A job file, parsed and checked against the job schema."""

    path: Path
    file: str  # as the user named it, for messages
    name: str
    data: dict[str, Any]
    marks: Marks
    prompt_files: dict[int, PromptFile] = field(default_factory=dict)
    tables: dict[int, Table] = field(default_factory=dict)
    images: dict[str, LocalImage] = field(
        default_factory=dict
    )  # local image path as written → the file
    root: Path | None = None  # the project: files the job refers to must lie inside it
    # Entries set aside for their own mistakes (structure, missing files): the other entries
    # are still expanded and checked, so one pass reports every mistake (see `load_job`).
    problems: list[Problem] = field(default_factory=list)
    set_aside: set[int] = field(default_factory=set)
    warnings: list[Problem] = field(
        default_factory=list
    )  # found while loading (mislabelled images)
    defaults_layer: dict[str, Any] | None = field(default=None, repr=False)  # expand.py's cache
    # Each file read as text (the job file, prompts files, CSV tables) → the SHA-256 of its
    # bytes; with `images`, all its requests are made from (see unchanged.py).
    read: dict[str, str] = field(default_factory=dict)

    @property
    def entries(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.data["requests"]
        return entries

    @property
    def limits(self) -> dict[str, int]:
        return self.data.get("limits") or {}

    @property
    def max_requests(self) -> int:
        return self.limits.get("max_requests", DEFAULT_MAX_REQUESTS)

    def repeat_for(self, index: int) -> int:
        return self.entries[index].get("repeat") or self.data.get("repeat") or 1

    def problem(
        self, path: FieldPath, message: str, *, hint: str | None = None, key: bool = False
    ) -> Problem:
        mark = self.marks.key_at(path) if key else self.marks.at(path)
        line, column = mark if mark else (None, None)
        return Problem(self.file, line, column, format_path(path), message, hint)


def load_job(path: str | Path, root: Path | None = None) -> Job:
    """Read, parse and check one job file, with the files it refers to.

    A mistake in the file's overall shape (YAML, `version`, `defaults`, `limits`, `prices`)
    raises `JobError` here. A mistake inside one entry, or in a file it refers to, sets that
    entry aside (`job.set_aside`, `job.problems`) so that validation still checks the others
    and reports everything at once; `validate.check` raises with all of it.

    `root` is the project folder the job's files must lie in (default: found from the job
    file's folder, as its ledger is; see ledger_location.py)."""
    file = str(path)
    path = Path(path)
    read: dict[str, str] = {}
    text = _read_text(path, file, read)
    data, marks = parse_yaml(text, file)
    job = Job(path=path, file=file, name=_default_name(path), data=data, marks=marks, read=read)
    job.root = root or find_root(path.resolve().parent)[0]
    _refuse_too_many_entries(job)
    problems = list(check_structure(job))
    broken = _entries_of(problems)
    if broken is None:  # the file's shape, not one entry's
        raise JobError(problems)
    job.name = data.get("name") or job.name
    by_entry = _load_referenced_files(job, skip=broken)
    shared, image_problems = _load_images(job, skip=broken | set(by_entry))
    for index, found in image_problems.items():
        by_entry.setdefault(index, []).extend(found)
    if shared:  # an image in defaults: every entry has it
        raise JobError(problems + shared + [p for found in by_entry.values() for p in found])
    job.problems = problems + [p for found in by_entry.values() for p in found]
    job.set_aside = broken | set(by_entry)
    if job.set_aside and len(job.set_aside) == len(job.entries):
        raise JobError(job.problems)
    return job


def _entries_of(problems: list[Problem]) -> set[int] | None:
    """The entries the problems are in, or None if one lies outside every entry."""
    entries = set()
    for problem in problems:
        found = re.match(r"^requests\[(\d+)\]", problem.path)
        if found is None:
            return None
        entries.add(int(found.group(1)))
    return entries


def read_text_file(path: str) -> str:
    """A YAML file of the user's (a job, a prices file): bounded, UTF-8; or a located JobError."""
    return _read_text(Path(path), path)


def _read_text(path: Path, file: str, read: dict[str, str] | None = None) -> str:
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
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        bad = raw[e.start : e.start + 1].hex()
        raise JobError(
            [
                Problem(
                    file,
                    line,
                    column,
                    "",
                    f"not valid UTF-8 (byte 0x{bad})",
                    hint="save the file as UTF-8",
                )
            ]
        ) from None


def _default_name(path: Path) -> str:
    # The name names a folder under outputs/, so the stem is made safe for that.
    name = re.sub(r"[^A-Za-z0-9._ -]+", "-", path.stem).strip(" .-")
    return name[:100] or "job"


def _refuse_too_many_entries(job: Job) -> None:
    """Before the schema check walks them all: a plain entry is at least one request, so more
    plain entries than `limits.max_requests` can only be refused (the count says why)."""
    if not isinstance(job.data, dict) or not isinstance(job.data.get("requests"), list):
        return
    limits = job.data.get("limits")
    limit = limits.get("max_requests") if isinstance(limits, dict) else None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        limit = DEFAULT_MAX_REQUESTS
    plain = sum(
        1
        for entry in job.data["requests"]
        if isinstance(entry, dict) and "matrix" not in entry and "rows" not in entry
    )
    if plain > limit:
        where = (
            ("limits", "max_requests")
            if isinstance(limits, dict) and "max_requests" in limits
            else ("requests",)
        )
        raise JobError(
            [
                job.problem(
                    where,
                    f"the job has {plain:,} request entries, past limits.max_requests ({limit:,}); nothing was sent",
                    hint="split the job, or raise limits.max_requests if you mean it",
                )
            ]
        )


def check_structure(job: Job) -> Iterator[Problem]:
    """Step 1: the file against `job.schema.json`, every error located.

    A job of 100,000 explicit entries would cost a jsonschema walk each (~200 µs). Entries that
    differ only in their prompt get the same verdict (the prompt's own subschema only reads its
    type and whether it is empty), so the file is checked with one stand-in entry, and each
    distinct entry shape on its own, once; errors are then located at each entry's index."""
    data = job.data
    entries = data.get("requests") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        yield from _errors(job, schemas.validator("job").iter_errors(data), ())
        return
    yield from _errors(
        job, schemas.validator("job").iter_errors({**data, "requests": [{"prompt": "x"}]}), ()
    )
    entry_validator = schemas.validator("job", "/$defs/entry")
    verdicts: dict[str, list[Any]] = {}
    for index, entry in enumerate(entries):
        key = _shape(entry)
        errors = verdicts.get(key) if key is not None else None
        if errors is None:
            errors = list(entry_validator.iter_errors(entry))
            if key is not None:
                verdicts[key] = errors
        if errors:
            yield from _errors(job, errors, ("requests", index), entry)


def _shape(entry: Any) -> str | None:
    """What decides an entry's verdict: all of it but its prompt's text (None: no shortcut)."""
    if not isinstance(entry, dict):
        return None
    prompt = entry.get("prompt")
    kind = f"{type(prompt).__name__}:{bool(prompt)}" if "prompt" in entry else "-"
    # repr() tells apart every two values the schema could judge differently (True from 1).
    return kind + repr({k: v for k, v in entry.items() if k != "prompt"})


def _errors(job: Job, errors: Any, prefix: FieldPath, instance: Any = None) -> Iterator[Problem]:
    for error in sorted(errors, key=lambda e: list(map(str, e.absolute_path))):
        for leaf in schemas.leaf_errors(error):
            yield from _located(job, leaf, prefix, instance)


def _located(
    job: Job, error: Any, prefix: FieldPath = (), instance: Any = None
) -> Iterator[Problem]:
    path = prefix + tuple(error.absolute_path)
    if instance is not None and tuple(error.absolute_path) == ("prompt",):
        error.instance = instance.get("prompt")  # a remembered verdict: this entry's own prompt
    unexpected = schemas.unexpected_keys(error)
    if unexpected:
        for key in unexpected:
            yield job.problem(
                path + (key,),
                f"unknown field '{key}'",
                hint=schemas.suggest(key, schemas.allowed_keys(error)) or _allowed_hint(error),
                key=True,
            )
        return
    message, hint = schemas.describe(error)
    if not hint and isinstance(error.instance, (bool, int, float)) and "string" in message:
        hint = "put it in quotes to keep it as text"
    if (
        not hint
        and isinstance(error.instance, str)
        and error.instance.lower() in YAML11_BOOLEANS
        and "boolean" in message
    ):
        hint = "a boolean is true or false (job files are YAML 1.2, where yes, no, on and off are text)"
    if path == () and not isinstance(job.data, dict):
        message, hint = "a job file is a mapping with version: 1 and requests: [...]", None
    yield job.problem(path, message, hint=hint)


def _allowed_hint(error: Any) -> str | None:
    keys = schemas.allowed_keys(error)
    return f"allowed here: {', '.join(keys)}" if keys else None


# -- files a job refers to ---------------------------------------------------------------


def _load_referenced_files(job: Job, skip: set[int]) -> dict[int, list[Problem]]:
    """Read each entry's prompts file and CSV table; the problems found, by entry."""
    found: dict[int, list[Problem]] = {}
    for index, entry in enumerate(job.entries):
        if index in skip:
            continue
        problems: list[Problem] = []
        matrix = entry.get("matrix") or {}
        if isinstance(matrix.get("prompt"), dict):
            loaded = _read_referenced(
                job, ("requests", index, "matrix", "prompt", "file"), problems
            )
            if loaded is not None:
                job.prompt_files[index] = _parse_prompts(job, index, *loaded, problems)
        if "rows" in entry:
            loaded = _read_referenced(job, ("requests", index, "rows", "file"), problems)
            if loaded is not None:
                job.tables[index] = parse_table(*loaded, problems)
        if problems:
            found[index] = problems
    return found


def _load_images(job: Job, skip: set[int]) -> tuple[list[Problem], dict[int, list[Problem]]]:
    """Read and check every local image the job names (in defaults, entries, matrix axes,
    include items and CSV cells); the problems found in defaults, and by entry."""
    found: dict[int | None, list[Problem]] = {}

    def visit(value: Any, path: FieldPath, entry: int | None) -> None:
        items = value if isinstance(value, list) else [value]
        for position, item in enumerate(items):
            if isinstance(item, list):  # a matrix axis value
                visit(item, (*path, position), entry)
            elif is_local(item):
                note(
                    local_path(item),
                    (*path, position) if isinstance(value, list) else path,
                    entry,
                    None,
                )

    def note(
        written: str, path: FieldPath, entry: int | None, cell: tuple[str, int, int] | None
    ) -> None:
        if written in job.images:
            return
        try:
            image = read_image(job.path.parent / written, job.root, written)
        except ImageProblem as e:
            hint = "a path is relative to the job file; an image URL starts with https://"
            problem = (
                Problem(cell[0], cell[1], cell[2], "image_urls", str(e), hint)
                if cell
                else job.problem(path, str(e), hint=hint)
            )
            found.setdefault(entry, []).append(problem)
            return
        job.images[written] = image
        if image.mislabelled:
            job.warnings.append(
                replace(
                    job.problem(
                        path,
                        f"{written} holds a {image.content_type.split('/')[1].upper()}: it is uploaded as {image.content_type} ({image.name})",
                    ),
                    severity="warning",
                )
            )

    defaults = job.data.get("defaults") or {}
    if "image_urls" in defaults:
        visit(defaults["image_urls"], ("defaults", "image_urls"), None)
    for index, entry in enumerate(job.entries):
        if index in skip:
            continue
        places: list[tuple[Any, FieldPath]] = []
        if "image_urls" in entry:
            places.append((entry["image_urls"], ("requests", index, "image_urls")))
        matrix = entry.get("matrix") or {}
        if "image_urls" in matrix:
            places.append((matrix["image_urls"], ("requests", index, "matrix", "image_urls")))
        for k, item in enumerate(entry.get("include") or []):
            if isinstance(item, dict) and "image_urls" in item:
                places.append((item["image_urls"], ("requests", index, "include", k, "image_urls")))
        for value, path in places:
            visit(value, path, index)
        table = job.tables.get(index)
        if table is not None and "image_urls" in table.columns:
            column = table.columns.index("image_urls")
            for line, values in table.rows:
                cell = values[column]
                for item in cell if isinstance(cell, list) else []:
                    if is_local(item):
                        note(
                            item,
                            ("requests", index, "rows", "file"),
                            index,
                            (table.file, line, column + 1),
                        )
    return found.pop(None, []), {
        index: problems for index, problems in found.items() if index is not None
    }


def _read_referenced(job: Job, path: FieldPath, problems: list[Problem]) -> tuple[str, str] | None:
    """(display name, text) of the file named at `path`, relative to the job file."""
    entry: Any = job.data
    for part in path:
        entry = entry[part]
    target = job.path.parent / entry
    display = str(Path(job.file).parent / entry)
    try:
        if job.root is not None and not inside(target, job.root):
            problems.append(
                job.problem(
                    path,
                    f"{display} is outside the job's project ({job.root})",
                    hint="a job may only use files inside its project",
                )
            )
            return None
        raw = read_regular(target)
        job.read[display] = hashlib.sha256(raw).hexdigest()
        return display, decode_utf8(raw, display)
    except InputRefused as e:
        hint = "paths are relative to the job file" if str(e) == "no such file" else None
        problems.append(
            job.problem(
                path,
                f"{display}: {e}" if str(e) != "no such file" else f"file not found: {display}",
                hint=hint,
            )
        )
    except JobError as e:
        problems.extend(e.problems)
    return None


def _parse_prompts(
    job: Job, index: int, display: str, text: str, problems: list[Problem]
) -> PromptFile:
    prompts: list[str] = []
    lines = array("L")
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if "\x00" in stripped:
            problems.append(
                Problem(
                    display,
                    number,
                    stripped.index("\x00") + 1,
                    "prompt",
                    "a NUL byte in a prompt",
                    hint="a prompts file is text",
                )
            )
            continue
        if stripped and not stripped.startswith("#"):
            prompts.append(stripped)
            lines.append(number)
    if not prompts:
        problems.append(
            job.problem(
                ("requests", index, "matrix", "prompt", "file"), f"{display} holds no prompts"
            )
        )
    return PromptFile(display, prompts, lines)


def _column_types() -> dict[str, str]:
    """Each CSV header a table may use, and how its cells are typed, from the job schema."""
    combination = schemas.schema("job")["$defs"]["combination"]["properties"]
    request_defs = schemas.schema("request")["$defs"]
    types = {}
    for column in combination:
        if column in ("options", "vars", "meta"):
            continue  # objects: no way to write one in a cell (vars.<name>, meta.<name> are columns)
        leaf = column.rsplit(".", 1)[-1]
        types[column] = (
            "list" if column == "image_urls" else request_defs.get(leaf, {}).get("type", "string")
        )
    return types


def parse_table(display: str, text: str, problems: list[Problem]) -> Table:
    """A CSV table of requests, its cells typed by the schema; problems located by line."""
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
    columns = [h.strip() for h in header]
    for number, column in enumerate(columns, start=1):
        if _NAMED_COLUMN.match(column):
            types[column] = "string"
        elif column not in types:
            hint = schemas.suggest(column, types) or f"columns can be: {', '.join(types)}"
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
    return text
