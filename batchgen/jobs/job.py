"""A job: a job file parsed and checked against the job schema, with what it refers to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import providers
from ..errors import Problem
from .images import LocalImage
from .job_files import PromptFile, Table
from .yamldoc import FieldPath, Marks, format_path

DEFAULT_MAX_REQUESTS = 10_000


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
    # The provider its requests go to (`provider:`, else the project's batchgen.yaml, else the
    # default): its catalogue makes and checks every body.
    provider_name: str | None = None

    @property
    def provider(self) -> providers.Description:
        return providers.named(self.provider_name)

    @property
    def catalogue(self) -> providers.Catalogue:
        return providers.catalogue_of(self.provider_name)

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
