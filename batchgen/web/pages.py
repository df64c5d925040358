"""The gallery and the review page: one HTML page made from `templates/`, in two uses.

`batchgen gallery` writes it beside the downloaded videos (static, self-contained: the CSS and
script of `static/` inlined, no server, no CDN, so it works from file:// and the folder can be
zipped and shared), and `batchgen review` serves it live (review_server.py) with controls to
pick, reject, rate and note each video. Rows and columns are chosen from what varies in the
job (tiles.py). The templates autoescape: a prompt is text, never HTML.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from ..ledger import Ledger
from ..output.words import value_text
from ..times import timestamp
from .tiles import (
    MediaLinks,
    Tile,
    check_axes,
    choose_axes,
    job_summary,
    key,
    ordered,
    summary,
    tiles,
)
from .tiles import varying_axes as varying_of

# A grid with fewer of its cells filled than this is laid out as rows of cards instead of a
# table: a job whose prompts each went to a few models would otherwise be mostly empty cells.
DENSE_ENOUGH = 0.5
# Tiles a page shows at most: a job of any size is read, rendered and served a page at a time
# (100,000 tiles were one 70 MB page, 10 s and 1 GB before its first byte).
PAGE_TILES = 500
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
    *,
    summary_text: str | None = None,
    paging: Paging | None = None,
) -> str:
    """The page for `found`, rows keyed by `rows` and columns by `cols` (live: the review page);
    `varying`: varying_axes(found), if the caller has it. `summary_text` says what the whole
    job is, when `found` is one page of it (`paging`); else the summary is of `found`."""
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
            summary=summary(found, unsent) if summary_text is None else summary_text,
            paging=paging if paging and paging.pages > 1 else None,
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
        f"{k} {value_text(v)}"
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
    options = ", ".join(f"{k} {value_text(v)}" for k, v in sorted(tile.options.items()))
    # The caption says what the headers don't, and what is the same for every tile is said once
    # in the page's header instead (`varying`: the fields that differ between tiles).
    shown = set(rows) | set(cols)
    unshown = ", ".join(
        f"{k} {value_text(v)}"
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
        "images": " ".join(tile.images),
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


class NoSuchPage(LookupError):
    """A page number past the job's last page (or below 1)."""


@dataclass(frozen=True)
class Paging:
    """Where a page stands among the job's pages, and the links to its neighbours."""

    number: int
    pages: int
    first: int  # the page's first tile, counted from 1 among the job's
    last: int
    total: int
    previous: str | None
    next: str | None


def page_count(total: int) -> int:
    return max(1, -(-total // PAGE_TILES))


def page_file(number: int) -> str:
    """The static gallery's file for a page: index.html, then page-2.html, page-3.html, …"""
    return "index.html" if number == 1 else f"page-{number}.html"


def live_link(number: int) -> str:
    """The review page's address for a page."""
    return "/" if number == 1 else f"/?page={number}"


def _paging(number: int, pages: int, shown: int, total: int, link: Callable[[int], str]) -> Paging:
    first = (number - 1) * PAGE_TILES + 1
    return Paging(
        number,
        pages,
        first if shown else 0,
        first + shown - 1,
        total,
        link(number - 1) if number > 1 else None,
        link(number + 1) if number < pages else None,
    )


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
    number: int = 1,
) -> str:
    """Page `number` of `job` from the ledger as it is now (its tiles only are read: a page
    of a job of any size is a few hundred rows, in time and in memory)."""
    check_axes((rows or []) + (cols or []))
    total = ledger.tasks.sent_count(job, current_only=current_only)
    pages = page_count(total)
    if not 1 <= number <= pages:
        raise NoSuchPage(f"the job {job!r} has {pages} page{'s' if pages > 1 else ''}")
    keys = list(
        ledger.tasks.keys_in_order(
            job, start=(number - 1) * PAGE_TILES, limit=PAGE_TILES, current_only=current_only
        )
    )
    paging = _paging(number, pages, len(keys), total, live_link if live else page_file)
    return _page_of(ledger, job, out, keys, rows, cols, live, media, current_only, paging)


def _page_of(
    ledger: Ledger,
    job: str,
    out: Path,
    keys: list[str],
    rows: list[str] | None,
    cols: list[str] | None,
    live: Live | None,
    media: MediaLinks | None,
    current_only: bool,
    paging: Paging,
) -> str:
    found = tiles(ledger, job, out, media, current_only=current_only, keys=keys)
    varying = varying_of(found)
    rows, cols = choose_axes(found, rows, cols, varying)
    return render(
        job,
        found,
        rows,
        cols,
        live=live,
        varying=varying,
        summary_text=job_summary(ledger, job, current_only=current_only),
        paging=paging,
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
    """Write the gallery of `job` into `out`: index.html, and page-2.html, … when the job has
    more than a page of tiles (each page made and written in turn: memory stays that of one
    page). Return the first page's path."""
    check_axes((rows or []) + (cols or []))
    total = ledger.tasks.sent_count(job, current_only=current_only)
    pages = page_count(total)
    keys = ledger.tasks.keys_in_order(job, current_only=current_only)
    for number in range(1, pages + 1):
        chunk = list(itertools.islice(keys, PAGE_TILES))
        paging = _paging(number, pages, len(chunk), total, page_file)
        text = _page_of(ledger, job, out, chunk, rows, cols, None, None, current_only, paging)
        _write_file(out / page_file(number), text)
    for stale in out.glob("page-*.html"):  # a longer gallery's pages, written here before
        number_text = stale.stem.removeprefix("page-")
        if number_text.isdigit() and int(number_text) > pages and _is_ours(stale):
            stale.unlink()
    return out / page_file(1)


def _write_file(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


def _is_ours(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return '<meta name="generator" content="batchgen">' in f.read(2000)
    except OSError:
        return False
