"""What the web pages show: a job's requests from the ledger as tiles, and the axes they are
laid out on. Plain data: the markup is in `templates/`, made by pages.py."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import providers
from ..errors import UsageError
from ..jobs import schemas
from ..ledger import Ledger
from ..output.words import value_text

# Fields a row or a column can be keyed by; options.<name> are added from the job's requests.
BASE_AXES = ("prompt", "model", "variant", "images")


@dataclass
class Tile:
    """One request of the job and what became of it."""

    key: str
    prompt: str
    model: str
    options: dict[str, Any]
    images: list[str]
    variant: int
    task_id: str | None
    state: str
    status: str | None
    error: str | None
    files: list[str] = field(default_factory=list)  # the videos, as the page links them
    label: str | None = None  # the job's `id` for it
    meta: dict[str, Any] = field(default_factory=dict)  # the job's `meta` for it (not sent)
    review: dict[str, Any] = field(default_factory=dict)  # pick, rating, note (reviews table)

    def value(self, axis: str) -> str:
        if axis == "prompt":
            return self.prompt
        if axis == "model":
            return self.model
        if axis == "variant":
            return f"v{self.variant}"
        if axis == "images":
            return " ".join(self.images) or "no image"
        name = axis.removeprefix("options.")
        return "-" if name not in self.options else value_text(self.options[name])

    @property
    def outcome(self) -> str:
        return outcome_of(self.state, self.status)

    @property
    def aspect(self) -> str:
        """The CSS aspect ratio the request asked for (the video's own corrects it on load)."""
        ratio = str(self.options.get("aspect_ratio") or "16:9")
        width, _, height = ratio.partition(":")
        return f"{width} / {height}" if width.isdigit() and height.isdigit() else "16 / 9"


def outcome_of(state: str, status: str | None) -> str:
    """What a tile shows: completed, failed, processing, or the submission's state."""
    if state == "submitted":
        return status or "processing"
    return state.replace("_", " ")


MediaLinks = Callable[[dict[str, Any], list[str]], list[str]]


def tiles(
    ledger: Ledger,
    job: str,
    out: Path,
    media: MediaLinks | None = None,
    *,
    current_only: bool = True,
    keys: list[str] | None = None,
) -> list[Tile]:
    """The job's tiles (those of `keys` only, in their order: a page). `media(row, files)`
    gives the links for a row's videos (the files found on disk, as paths); by default, paths
    relative to `out` (the static page's folder)."""
    if keys is None:
        rows: Iterable[dict[str, Any]] = ledger.tasks.rows(job, current_only=current_only)
        reviews = ledger.reviews.of(job)
    else:
        rows = ledger.tasks.rows_of(job, keys, current_only=current_only)
        reviews = ledger.reviews.of(job, keys)
    found = []
    # A local image is shown by its file's name, not by the URL it was uploaded to (a
    # rehearsal's upload URL is dead once its sandbox stops).
    image_names: dict[str, str] = {}

    def shown(url: str) -> str:
        if url not in image_names:
            image_names[url] = ledger.uploads.name_of(url) or url
        return image_names[url]

    for row in rows:
        asked = providers.fields_of(row.get("provider"), json.loads(row["request"]))
        files = files_on_disk(row, out)
        links = media(row, files) if media else [os.path.relpath(f, out) for f in files]
        found.append(
            Tile(
                key=row["key"],
                prompt=asked.prompt or "",
                model=providers.model_label(str(asked.model)),
                options=dict(asked.options),
                images=[shown(url) for url in asked.images],
                variant=row["variant"],
                task_id=row["task_id"],
                state=row["state"],
                status=row["status"],
                error=row["error"],
                files=links,
                label=row.get("label"),
                meta=_meta(row.get("meta")),
                review=reviews.get(row["key"], {}),
            )
        )
    return found


def files_on_disk(row: dict[str, Any], out: Path) -> list[str]:
    """The downloaded videos of a task row that are on disk."""
    return [f for f in (_locate(f, out) for f in json.loads(row["files"] or "[]")) if f]


def _locate(recorded: str, out: Path) -> str | None:
    # Paths are recorded as download saw them (relative to where it ran); the gallery may be
    # written from elsewhere, so a file is also looked for by name in the gallery's folder.
    # A file elsewhere is not this folder's (a rehearsal's clip, in outputs/sandbox/).
    if os.path.exists(recorded) and _inside(recorded, out):
        return recorded
    beside = out / os.path.basename(recorded)
    return str(beside) if beside.exists() else None


def _inside(path: str, folder: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))


def varying_axes(found: list[Tile]) -> list[str]:
    """The fields whose value differs between the job's requests, in a natural order."""
    option_names = sorted({name for tile in found for name in tile.options})
    candidates = [*BASE_AXES[:2], *(f"options.{n}" for n in option_names), *BASE_AXES[2:]]
    return [axis for axis in candidates if len({tile.value(axis) for tile in found}) > 1]


def choose_axes(
    found: list[Tile],
    rows: list[str] | None,
    cols: list[str] | None,
    varying: list[str] | None = None,
) -> tuple[list[str], list[str]]:
    varying = varying_axes(found) if varying is None else varying
    if rows is None:
        rows = ["prompt"] if "prompt" in varying or not varying else varying[:1]
    if cols is None:
        # Variants and image URLs stack inside a cell: as columns they would scatter the grid.
        # An axis that splits no column is left to the captions: when each model takes its own
        # options, the columns are the models, not "wan2.2-pro · 5 · - · 720p".
        cols = []
        columns = 1
        for axis in varying:
            if axis in rows or axis in ("variant", "images"):
                continue
            split = len({key(tile, [*cols, axis]) for tile in found})
            if split > columns:
                cols.append(axis)
                columns = split
    return rows, cols


def summary(found: list[Tile], unsent: int = 0) -> str:
    """`3 completed, 1 failed, 2 not sent yet · 1 picked`, of these tiles."""
    outcomes = Counter(t.outcome for t in found)
    return _summary(outcomes, unsent, sum(1 for t in found if t.review.get("pick") == 1))


def job_summary(ledger: Ledger, job: str, *, current_only: bool = True) -> str:
    """The same of the whole job, from its maintained counts: a page shows some of its tiles,
    and says what all of them are."""
    outcomes: Counter[str] = Counter()
    for row in ledger.tasks.counts(job, current_only):
        if row["state"]:
            outcomes[outcome_of(row["state"], row["status"] or None)] += row["n"]
    standing = ledger.tasks.standing(job, current_only=current_only)
    return _summary(
        outcomes, standing.unsent, ledger.reviews.picked(job, current_only=current_only)
    )


def _summary(outcomes: Counter[str], unsent: int, picked: int) -> str:
    text = ", ".join(f"{n} {o}" for o, n in outcomes.most_common())
    if unsent:
        text += f", {unsent} not sent yet"
    if picked:
        text += f" · {picked} picked"
    return text


def key(tile: Tile, axes: list[str]) -> tuple[str, ...]:
    return tuple(tile.value(axis) for axis in axes)


def ordered(
    keys: set[tuple[str, ...]], found: list[Tile], axes: list[str]
) -> list[tuple[str, ...]]:
    # In the order the tiles first show them (the ledger's order: first submitted first).
    first: dict[tuple[str, ...], int] = {}
    for i, tile in enumerate(found):
        first.setdefault(key(tile, axes), i)
    return sorted(keys, key=lambda k: first[k])


def _meta(text: str | None) -> dict[str, Any]:
    """A row's `meta` (JSON in job_tasks), or {} for none or a value that is not a mapping."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def axis_names() -> list[str]:
    """The fields a row or column can be keyed by, besides any `options.<name>`."""
    return [*BASE_AXES, "options.<name>"]


_OPTION_AXIS = re.compile(r"^options\.[A-Za-z_][A-Za-z0-9_]*$")


def check_axes(axes: list[str]) -> None:
    known = axis_names()
    for axis in axes:
        if axis not in BASE_AXES and not _OPTION_AXIS.match(axis):
            hint = schemas.suggest(axis, known) or f"fields: {', '.join(known)}"
            raise UsageError(f"unknown field {axis!r} for --rows/--cols; {hint}")
