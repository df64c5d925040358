"""The gallery and the review page: one HTML page made from `templates/`, in two uses.

`batchgen gallery` writes it beside the downloaded videos (static, self-contained: the CSS and
script of `static/` inlined, no server, no CDN, so it works from file:// and the folder can be
zipped and shared), and `batchgen review` serves it live (review_server.py) with controls to
pick, reject, rate and note each video. Rows and columns are chosen from what varies in the
job (tiles.py). The templates autoescape: a prompt is text, never HTML.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from .. import models
from ..ledger import Ledger
from ..times import timestamp
from .tiles import MediaLinks, Tile, check_axes, choose_axes, key, ordered, summary, tiles
from .tiles import varying_axes as varying_of

# A grid with fewer of its cells filled than this is laid out as rows of cards instead of a
# table: a job whose prompts each went to a few models would otherwise be mostly empty cells.
DENSE_ENOUGH = 0.5
HEADER_CHARACTERS = 80  # a longer header (a long prompt) is cut, with the whole in its tooltip


@dataclass(frozen=True)
class Live:
    """What the review page adds to the static one: the session's token, and controls."""

    token: str


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("batchgen.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a name the page uses and the code forgot fails
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@functools.cache
def _static(name: str) -> Markup:
    """A file of `static/`, to inline in the page (ours, so trusted markup)."""
    text = (resources.files("batchgen.web") / "static" / name).read_text(encoding="utf-8")
    return Markup(text)


def _macros() -> Any:
    return _environment().get_template("tile.html.j2").module


def render(
    job: str,
    found: list[Tile],
    rows: list[str],
    cols: list[str],
    unsent: int = 0,
    live: Live | None = None,
    varying: list[str] | None = None,
) -> str:
    """The page for `found`, rows keyed by `rows` and columns by `cols` (live: the review page);
    `varying`: varying_axes(found), if the caller has it."""
    row_keys = ordered({key(t, rows) for t in found}, found, rows)
    col_keys = ordered({key(t, cols) for t in found}, found, cols)
    grid: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Tile]] = {}
    for tile in found:
        grid.setdefault((key(tile, rows), key(tile, cols)), []).append(tile)
    differing = frozenset(varying_of(found) if varying is None else varying)
    as_cards = len(col_keys) > 1 and len(grid) < DENSE_ENOUGH * len(row_keys) * len(col_keys)

    def view(tile: Tile, column: str | None) -> dict[str, Any]:
        return _tile_view(tile, rows, cols, column, differing)

    table = [
        {
            "header": _label(rows, row_key),
            "cells": [
                [
                    view(t, _label(cols, col_key) if as_cards else None)
                    for t in grid.get((row_key, col_key), [])
                ]
                for col_key in col_keys
            ],
        }
        for row_key in row_keys
    ]
    script = _static("gallery.js") + (Markup("\n") + _static("review.js") if live else "")
    return (
        _environment()
        .get_template("page.html.j2")
        .render(
            title=job,
            summary=summary(found, unsent),
            same=_same_for_all(found, differing),
            as_cards=as_cards,
            rows=table,
            columns=[_label(cols, k) for k in col_keys],
            legend=f"{_axes_legend(rows)} \\ {_axes_legend(cols)}",
            header_limit=HEADER_CHARACTERS,
            live=live,
            style=_static("gallery.css"),
            script=script,
            mode="live" if live else "static",
            generated=None if live else timestamp(),
        )
    )


def _same_for_all(found: list[Tile], varying: frozenset[str]) -> str:
    """`same for all: wan2.2-pro, aspect_ratio 16:9, …`: what no header or caption repeats."""
    if not found:
        return ""
    first = found[0]
    same = [first.model] if "model" not in varying else []
    same += [
        f"{k} {models.value_text(v)}"
        for k, v in sorted(first.options.items())
        if f"options.{k}" not in varying
    ]
    return "same for all: " + ", ".join(same) if same else ""


def _label(axes: list[str], values: tuple[str, ...]) -> str:
    """A header's text: the values alone (`wan2.2-pro · 9:16`); the legend names the fields."""
    return " · ".join(values) if axes else "all"


def _axes_legend(axes: list[str]) -> str:
    return " · ".join(axis.removeprefix("options.") for axis in axes) or "all"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _tile_view(
    tile: Tile,
    rows: list[str],
    cols: list[str],
    column: str | None,
    varying: frozenset[str],
) -> dict[str, Any]:
    """What the tile macro shows of `tile`: plain text, escaped by the template."""
    options = ", ".join(f"{k} {models.value_text(v)}" for k, v in sorted(tile.options.items()))
    # The caption says what the headers don't, and what is the same for every tile is said once
    # in the page's header instead (`varying`: the fields that differ between tiles).
    shown = set(rows) | set(cols)
    unshown = ", ".join(
        f"{k} {models.value_text(v)}"
        for k, v in sorted(tile.options.items())
        if f"options.{k}" not in shown and f"options.{k}" in varying
    )
    meta = ", ".join(f"{k}: {_text(v)}" for k, v in sorted(tile.meta.items()))
    searchable = " ".join(
        [
            tile.label or "",
            tile.prompt,
            tile.model,
            options,
            meta,
            tile.outcome,
            tile.task_id or "",
            f"v{tile.variant}",
            tile.review.get("note") or "",
        ]
    ).lower()
    pick = tile.review.get("pick")
    return {
        "key": tile.key,
        "outcome": tile.outcome,
        "outcome_class": tile.outcome.replace(" ", "-"),
        "search": searchable,
        "pick": "" if pick is None else str(pick),
        "aspect": tile.aspect,
        "prompt": None if "prompt" in shown else tile.prompt,
        "column": column,
        "model": None if "model" in shown else tile.model,
        "label": tile.label,
        "variant": tile.variant,
        "unshown": unshown,
        "images": " ".join(tile.image_urls),
        "meta": meta,
        "task_id": tile.task_id,
        "media": _media_view(tile),
        "review": {
            "pick": pick,
            "rating": tile.review.get("rating"),
            "note": tile.review.get("note") or "",
        },
    }


def _media_view(tile: Tile) -> dict[str, Any]:
    why = {"completed": "not downloaded yet: batchgen download"}.get(tile.outcome, tile.outcome)
    if tile.error and tile.outcome != "completed":
        why += f": {tile.error}"
    return {
        "links": [_link(path) for path in tile.files],
        "prompt": tile.prompt,
        "why": why,
        "outcome_class": tile.outcome.replace(" ", "-"),
    }


def media_html(tile: Tile) -> str:
    """The videos of a tile, or a placeholder saying why there are none yet."""
    return str(_macros().media(_media_view(tile)))


def _link(path: str) -> str:
    # A URL (the review page's /media/…, or a result URL) as it is; a file path, quoted.
    return path if path.startswith(("/", "http://", "https://")) else quote(path)


def page(
    ledger: Ledger,
    job: str,
    out: Path,
    rows: list[str] | None = None,
    cols: list[str] | None = None,
    live: Live | None = None,
    media: MediaLinks | None = None,
    *,
    current_only: bool = True,
) -> str:
    """The page for `job` from the ledger as it is now."""
    check_axes((rows or []) + (cols or []))
    found = tiles(ledger, job, out, media, current_only=current_only)
    varying = varying_of(found)
    rows, cols = choose_axes(found, rows, cols, varying)
    return render(
        job, found, rows, cols, unsent=ledger.unsent_count(job), live=live, varying=varying
    )


def write(
    ledger: Ledger,
    job: str,
    out: Path,
    rows: list[str] | None = None,
    cols: list[str] | None = None,
    *,
    current_only: bool = True,
) -> Path:
    """Write `out/index.html` for `job`; return its path."""
    text = page(ledger, job, out, rows, cols, current_only=current_only)
    path = out / "index.html"
    part = out / "index.html.part"
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)
    return path
