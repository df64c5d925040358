"""The gallery: a job's videos side by side, as one static HTML page beside them.

Self-contained (inline CSS and script, no server, no CDN), so it works from file:// and the
folder can be zipped and shared. Rows and columns are chosen from what varies in the job:
rows by prompt, columns by model and the options that differ, unless told otherwise. Every
string from the user is escaped: a prompt is text, never HTML.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import models, schemas
from .errors import UsageError
from .ledger import Ledger
from .times import timestamp

# Fields a row or a column can be keyed by; options.<name> are added from the job's requests.
BASE_AXES = ("prompt", "model", "variant", "image_urls")


@dataclass
class Tile:
    """One request of the job and what became of it."""

    key: str
    prompt: str
    model: str
    options: dict[str, Any]
    image_urls: list[str]
    variant: int
    task_id: str | None
    state: str
    status: str | None
    error: str | None
    files: list[str] = field(default_factory=list)  # relative to the gallery's folder
    label: str | None = None  # the job's `id` for it

    def value(self, axis: str) -> str:
        if axis == "prompt":
            return self.prompt
        if axis == "model":
            return self.model
        if axis == "variant":
            return f"v{self.variant}"
        if axis == "image_urls":
            return " ".join(self.image_urls) or "no image"
        name = axis.removeprefix("options.")
        return "-" if name not in self.options else json.dumps(self.options[name]).strip('"')

    @property
    def outcome(self) -> str:
        """What the tile shows: completed, failed, processing, or the submission's state."""
        if self.state == "submitted":
            return self.status or "processing"
        return self.state.replace("_", " ")


def tiles(ledger: Ledger, job: str, out: Path) -> list[Tile]:
    rows = ledger.rows(job)
    found = []
    for row in rows:
        body = json.loads(row["request"])
        files = [_locate(f, out) for f in json.loads(row["files"] or "[]")]
        found.append(
            Tile(
                key=row["key"],
                prompt=body.get("prompt", ""),
                model=models.label(str(body.get("model_id"))),
                options=body.get("options", {}),
                image_urls=body.get("image_urls", []),
                variant=row["variant"],
                task_id=row["task_id"],
                state=row["state"],
                status=row["status"],
                error=row["error"],
                files=[os.path.relpath(f, out) for f in files if f],
                label=row.get("label"),
            )
        )
    return found


def _locate(recorded: str, out: Path) -> str | None:
    # Paths are recorded as download saw them (relative to where it ran); the gallery may be
    # written from elsewhere, so a file is also looked for by name in the gallery's folder.
    if os.path.exists(recorded):
        return recorded
    beside = out / os.path.basename(recorded)
    return str(beside) if beside.exists() else None


def varying_axes(found: list[Tile]) -> list[str]:
    """The fields whose value differs between the job's requests, in a natural order."""
    option_names = sorted({name for tile in found for name in tile.options})
    candidates = [*BASE_AXES[:2], *(f"options.{n}" for n in option_names), *BASE_AXES[2:]]
    return [axis for axis in candidates if len({tile.value(axis) for tile in found}) > 1]


def choose_axes(found: list[Tile], rows: list[str] | None, cols: list[str] | None) -> tuple[list[str], list[str]]:
    varying = varying_axes(found)
    if rows is None:
        rows = ["prompt"] if "prompt" in varying or not varying else varying[:1]
    if cols is None:
        # Variants and image URLs stack inside a cell: as columns they would scatter the grid.
        cols = [axis for axis in varying if axis not in rows and axis not in ("variant", "image_urls")]
    return rows, cols


def render(job: str, found: list[Tile], rows: list[str], cols: list[str], unsent: int = 0) -> str:
    """The gallery page for `found`, rows keyed by `rows` and columns by `cols`."""
    row_keys = _ordered({_key(t, rows) for t in found}, found, rows)
    col_keys = _ordered({_key(t, cols) for t in found}, found, cols)
    grid: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Tile]] = {}
    for tile in found:
        grid.setdefault((_key(tile, rows), _key(tile, cols)), []).append(tile)
    outcomes = Counter(t.outcome for t in found)
    summary = ", ".join(f"{n} {o}" for o, n in outcomes.most_common())
    if unsent:
        summary += f", {unsent} not sent yet"
    e = html.escape
    head = "".join(f"<th scope=col>{e(_label(cols, key))}</th>" for key in col_keys)
    body = []
    for row_key in row_keys:
        cells = []
        for col_key in col_keys:
            inside = "".join(_tile_html(t, rows, cols) for t in grid.get((row_key, col_key), []))
            cells.append(f"<td>{inside}</td>")
        body.append(f"<tr><th scope=row>{e(_label(rows, row_key))}</th>{''.join(cells)}</tr>")
    return _PAGE.format(
        title=e(job),
        summary=e(summary),
        corner=e(" · ".join(rows)),
        head=head,
        body="\n".join(body),
        generated=e(timestamp()),
        style=_STYLE,
        script=_SCRIPT,
    )


def _key(tile: Tile, axes: list[str]) -> tuple[str, ...]:
    return tuple(tile.value(axis) for axis in axes)


def _ordered(keys: set[tuple[str, ...]], found: list[Tile], axes: list[str]) -> list[tuple[str, ...]]:
    # In the order the tiles first show them (the ledger's order: first submitted first).
    first: dict[tuple[str, ...], int] = {}
    for i, tile in enumerate(found):
        first.setdefault(_key(tile, axes), i)
    return sorted(keys, key=lambda k: first[k])


def _label(axes: list[str], key: tuple[str, ...]) -> str:
    if not axes:
        return "all"
    if axes == ["prompt"]:
        return key[0]
    return ", ".join(f"{axis.removeprefix('options.')} {value}" for axis, value in zip(axes, key))


def _tile_html(tile: Tile, rows: list[str], cols: list[str]) -> str:
    e = html.escape
    options = ", ".join(f"{k} {json.dumps(v).strip(chr(34))}" for k, v in sorted(tile.options.items()))
    # The caption says what the row and column headers don't.
    shown = set(rows) | set(cols)
    unshown = ", ".join(
        f"{k} {json.dumps(v).strip(chr(34))}" for k, v in sorted(tile.options.items()) if f"options.{k}" not in shown
    )
    caption = ([f"<b>{e(tile.label)}</b>"] if tile.label else []) + [f"<b>{e(tile.model)}</b> v{tile.variant}", e(unshown)]
    if tile.image_urls:
        caption.append("image: " + e(" ".join(tile.image_urls)))
    caption.append(f"task {e(tile.task_id or '-')} · <span class=status>{e(tile.outcome)}</span>")
    searchable = " ".join([tile.label or "", tile.prompt, tile.model, options, tile.outcome, tile.task_id or "", f"v{tile.variant}"]).lower()
    if tile.files:
        media = "".join(
            f'<video src="{e(quote(path))}" muted loop autoplay playsinline preload="metadata" title="{e(tile.prompt)}"></video>'
            for path in tile.files
        )
    else:
        why = {"completed": "not downloaded yet: batchgen download"}.get(tile.outcome, tile.outcome)
        if tile.error and tile.outcome != "completed":
            why += f": {tile.error}"
        media = f'<div class="placeholder {e(tile.outcome.replace(" ", "-"))}">{e(why)}</div>'
    prompt = "" if "prompt" in rows or "prompt" in cols else f"<q>{e(tile.prompt)}</q><br>"
    return (
        f'<figure class="tile {e(tile.outcome.replace(" ", "-"))}" data-search="{e(searchable)}">{media}'
        f"<figcaption>{prompt}{'<br>'.join(caption)} <span class=duration></span></figcaption></figure>"
    )


def axis_names() -> list[str]:
    """Every field a row or column can be keyed by (the options come from the request schema)."""
    options = schemas.schema("request")["properties"]["options"]["properties"]
    return [*BASE_AXES, *(f"options.{name}" for name in options)]


def check_axes(axes: list[str]) -> None:
    known = axis_names()
    for axis in axes:
        if axis not in known:
            hint = schemas.suggest(axis, known) or f"fields: {', '.join(known)}"
            raise UsageError(f"unknown field {axis!r} for --rows/--cols; {hint}")


def write(ledger: Ledger, job: str, out: Path, rows: list[str] | None = None, cols: list[str] | None = None) -> Path:
    """Write `out/index.html` for `job`; return its path."""
    check_axes((rows or []) + (cols or []))
    found = tiles(ledger, job, out)
    rows, cols = choose_axes(found, rows, cols)
    page = render(job, found, rows, cols, unsent=ledger.unsent_count(job))
    path = out / "index.html"
    part = out / "index.html.part"
    part.write_text(page, encoding="utf-8")
    os.replace(part, path)
    return path


_STYLE = """
:root { color-scheme: light dark; --line: #8884; --muted: #888; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; }
header { position: sticky; top: 0; left: 0; padding: .75rem 1rem; background: Canvas; border-bottom: 1px solid var(--line); z-index: 2; }
h1 { font-size: 1.2rem; margin: 0 0 .25rem; }
header p { margin: 0 0 .5rem; color: var(--muted); }
input[type=search] { width: min(30rem, 100%); padding: .4rem .6rem; font: inherit; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; }
th, td { border: 1px solid var(--line); padding: .5rem; vertical-align: top; text-align: left; }
thead th { position: sticky; top: 0; background: Canvas; }
tbody th { max-width: 16rem; font-weight: 600; }
figure { margin: 0 0 .5rem; width: min(18rem, 70vw); }
video, .placeholder { width: 100%; aspect-ratio: 16 / 9; background: #0002; border-radius: 4px; display: block; }
.placeholder { display: grid; place-items: center; text-align: center; padding: .5rem; color: var(--muted); }
.failed .placeholder, .rejected .placeholder, .broken video { outline: 2px solid #d33; color: #d33; }
.processing .placeholder, .in-doubt .placeholder { outline: 2px dashed #c90; }
figcaption { font-size: 12px; color: var(--muted); margin-top: .25rem; word-break: break-word; }
.status { font-weight: 600; }
.hidden { display: none; }
"""

_SCRIPT = """
const filter = document.getElementById('filter');
filter.addEventListener('input', () => {
  const words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean);
  for (const row of document.querySelectorAll('tbody tr')) {
    let shown = 0;
    const rowText = row.querySelector('th').textContent.toLowerCase();
    for (const tile of row.querySelectorAll('figure')) {
      const text = rowText + ' ' + tile.dataset.search;
      const match = words.every(w => text.includes(w));
      tile.classList.toggle('hidden', !match);
      shown += match;
    }
    row.classList.toggle('hidden', shown === 0);
  }
});
function showDuration(video) {
  video.dataset.duration = video.duration.toFixed(2);
  const badge = video.closest('figure').querySelector('.duration');
  if (badge) badge.textContent = '· ' + video.duration.toFixed(1) + ' s';
}
for (const video of document.querySelectorAll('video')) {
  if (video.readyState >= 1) showDuration(video);
  video.addEventListener('loadedmetadata', () => showDuration(video));
  video.addEventListener('error', () => { video.closest('figure').classList.add('broken'); video.dataset.error = '1'; });
}
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="batchgen">
<title>{title} · batchgen gallery</title>
<style>{style}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<p>{summary} · generated {generated}</p>
<input id="filter" type="search" placeholder="Filter: prompt, model, option, status…" aria-label="Filter">
</header>
<div class="scroll">
<table>
<thead><tr><th scope=col>{corner}</th>{head}</tr></thead>
<tbody>
{body}
</tbody>
</table>
</div>
<script>{script}</script>
</body>
</html>
"""
