"""The files a job refers to, read into it: each entry's prompts file and CSV table, and every
local image it names (in defaults, entries, matrix axes, include items and CSV cells).
A file's problem sets its entry aside, not the whole job (see spec.load_job)."""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ImageProblem, InputRefused, JobError, Problem
from .images import is_local, local_path, read_image
from .job import Job
from .job_files import PromptFile, Prompts, _lines, decode_utf8, parse_table
from .user_files import inside, read_regular
from .yamldoc import FieldPath


def load_referenced_files(job: Job, skip: set[int]) -> dict[int, list[Problem]]:
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
                job.tables[index] = parse_table(
                    *loaded, problems, job.catalogue.option_type, job.provider.field_aliases
                )
        if problems:
            found[index] = problems
    return found


def load_images(job: Job, skip: set[int]) -> tuple[list[Problem], dict[int, list[Problem]]]:
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
                Problem(cell[0], cell[1], cell[2], "images", str(e), hint)
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
    if "images" in defaults:
        visit(defaults["images"], ("defaults", "images"), None)
    for index, entry in enumerate(job.entries):
        if index in skip:
            continue
        places: list[tuple[Any, FieldPath]] = []
        if "images" in entry:
            places.append((entry["images"], ("requests", index, "images")))
        matrix = entry.get("matrix") or {}
        if "images" in matrix:
            places.append((matrix["images"], ("requests", index, "matrix", "images")))
        for k, item in enumerate(entry.get("include") or []):
            if isinstance(item, dict) and "images" in item:
                places.append((item["images"], ("requests", index, "include", k, "images")))
        for value, path in places:
            visit(value, path, index)
        table = job.tables.get(index)
        if table is not None and "images" in table.columns:
            column = table.columns.index("images")
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
    prompts = Prompts()
    lines = array("L")
    for number, line in enumerate(_lines(text), start=1):
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
