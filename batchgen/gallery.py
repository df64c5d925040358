"""The gallery: a job's videos side by side, as one HTML page.

Two uses of one page: `batchgen gallery` writes it beside the downloaded videos (static,
self-contained: inline CSS and script, no server, no CDN, so it works from file:// and the
folder can be zipped and shared), and `batchgen review` serves it live (review.py) with
controls to pick, reject, rate and note each video. Rows and columns are chosen from what
varies in the job: rows by prompt, columns by model and the options that differ, unless told
otherwise. Every string from the user is escaped: a prompt is text, never HTML.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from collections.abc import Callable
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

# A grid with fewer of its cells filled than this is laid out as rows of cards instead of a
# table: a job whose prompts each went to a few models would otherwise be mostly empty cells.
DENSE_ENOUGH = 0.5
HEADER_CHARACTERS = 80  # a longer header (a long prompt) is cut, with the whole in its tooltip


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
        if axis == "image_urls":
            return " ".join(self.image_urls) or "no image"
        name = axis.removeprefix("options.")
        return "-" if name not in self.options else models.value_text(self.options[name])

    @property
    def outcome(self) -> str:
        """What the tile shows: completed, failed, processing, or the submission's state."""
        if self.state == "submitted":
            return self.status or "processing"
        return self.state.replace("_", " ")

    @property
    def aspect(self) -> str:
        """The CSS aspect ratio the request asked for (the video's own corrects it on load)."""
        ratio = str(self.options.get("aspect_ratio") or "16:9")
        width, _, height = ratio.partition(":")
        return f"{width} / {height}" if width.isdigit() and height.isdigit() else "16 / 9"


MediaLinks = Callable[[dict[str, Any], list[str]], list[str]]


def tiles(ledger: Ledger, job: str, out: Path, media: MediaLinks | None = None) -> list[Tile]:
    """The job's tiles. `media(row, files)` gives the links for a row's videos (the files
    found on disk, as paths); by default, paths relative to `out` (the static page's folder)."""
    reviews = ledger.reviews(job)
    found = []
    for row in ledger.rows(job):
        body = json.loads(row["request"])
        files = files_on_disk(row, out)
        links = media(row, files) if media else [os.path.relpath(f, out) for f in files]
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
    if os.path.exists(recorded):
        return recorded
    beside = out / os.path.basename(recorded)
    return str(beside) if beside.exists() else None


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
            if axis in rows or axis in ("variant", "image_urls"):
                continue
            split = len({_key(tile, [*cols, axis]) for tile in found})
            if split > columns:
                cols.append(axis)
                columns = split
    return rows, cols


@dataclass(frozen=True)
class Live:
    """What the review page adds to the static one: the session's token, and controls."""

    token: str


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
    row_keys = _ordered({_key(t, rows) for t in found}, found, rows)
    col_keys = _ordered({_key(t, cols) for t in found}, found, cols)
    grid: dict[tuple[tuple[str, ...], tuple[str, ...]], list[Tile]] = {}
    for tile in found:
        grid.setdefault((_key(tile, rows), _key(tile, cols)), []).append(tile)
    cells = len(row_keys) * len(col_keys)
    differing = frozenset(varying_axes(found) if varying is None else varying)
    as_cards = len(col_keys) > 1 and len(grid) < DENSE_ENOUGH * cells
    e = html.escape
    body = []
    if as_cards:  # rows of cards, each captioned with its column: no empty cells
        for row_key in row_keys:
            cards = "".join(
                _tile_html(t, rows, cols, live, _label(cols, col_key), differing)
                for col_key in col_keys
                for t in grid.get((row_key, col_key), [])
            )
            body.append(
                f"<section class=row><h2>{_header(rows, row_key)}</h2><div class=cards>{cards}</div></section>"
            )
        layout = "\n".join(body)
    else:
        head = "".join(f"<th scope=col>{_header(cols, key)}</th>" for key in col_keys)
        for row_key in row_keys:
            tds = "".join(
                "<td>"
                + "".join(
                    _tile_html(t, rows, cols, live, None, differing)
                    for t in grid.get((row_key, col_key), [])
                )
                + "</td>"
                for col_key in col_keys
            )
            body.append(f"<tr><th scope=row>{_header(rows, row_key)}</th>{tds}</tr>")
        layout = (
            f"<table><thead><tr><th scope=col>{e(_axes_legend(rows))} \\ {e(_axes_legend(cols))}</th>{head}</tr></thead>"
            f"<tbody>\n" + "\n".join(body) + "\n</tbody></table>"
        )
    return _PAGE.format(
        title=e(job),
        summary=e(summary(found, unsent)),
        same=e(_same_for_all(found, differing)),
        layout=layout,
        style=_STYLE,
        script=_SCRIPT + (_LIVE_SCRIPT if live else ""),
        token=f'<meta name="batchgen-token" content="{e(live.token)}">' if live else "",
        mode="live" if live else "static",
        note="" if live else " · generated " + e(timestamp()),
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


def summary(found: list[Tile], unsent: int = 0) -> str:
    outcomes = Counter(t.outcome for t in found)
    text = ", ".join(f"{n} {o}" for o, n in outcomes.most_common())
    if unsent:
        text += f", {unsent} not sent yet"
    picked = sum(1 for t in found if t.review.get("pick") == 1)
    if picked:
        text += f" · {picked} picked"
    return text


def _key(tile: Tile, axes: list[str]) -> tuple[str, ...]:
    return tuple(tile.value(axis) for axis in axes)


def _ordered(
    keys: set[tuple[str, ...]], found: list[Tile], axes: list[str]
) -> list[tuple[str, ...]]:
    # In the order the tiles first show them (the ledger's order: first submitted first).
    first: dict[tuple[str, ...], int] = {}
    for i, tile in enumerate(found):
        first.setdefault(_key(tile, axes), i)
    return sorted(keys, key=lambda k: first[k])


def _meta(text: str | None) -> dict[str, Any]:
    """A row's `meta` (JSON in job_tasks), or {} for none or a value that is not a mapping."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _label(axes: list[str], key: tuple[str, ...]) -> str:
    """A header's text: the values alone (`wan2.2-pro · 9:16`); the legend names the fields."""
    if not axes:
        return "all"
    return " · ".join(key)


def _header(axes: list[str], key: tuple[str, ...]) -> str:
    """A header cut to HEADER_CHARACTERS, the whole text in its tooltip."""
    text = _label(axes, key)
    if len(text) <= HEADER_CHARACTERS:
        return html.escape(text)
    return f'<span title="{html.escape(text)}">{html.escape(text[: HEADER_CHARACTERS - 1])}…</span>'


def _axes_legend(axes: list[str]) -> str:
    return " · ".join(axis.removeprefix("options.") for axis in axes) or "all"


def _tile_html(
    tile: Tile,
    rows: list[str],
    cols: list[str],
    live: Live | None,
    column: str | None = None,
    varying: frozenset[str] = frozenset(),
) -> str:
    e = html.escape
    options = ", ".join(f"{k} {models.value_text(v)}" for k, v in sorted(tile.options.items()))
    # The caption says what the headers don't, and what is the same for every tile is said once
    # in the page's header instead (`varying`: the fields that differ between tiles).
    shown = set(rows) | set(cols)
    unshown = ", ".join(
        f"{k} {models.value_text(v)}"
        for k, v in sorted(tile.options.items())
        if f"options.{k}" not in shown and f"options.{k}" in varying
    )
    caption = [f"<b class=column>{e(column)}</b>"] if column else []
    model = f"<b>{e(tile.model)}</b> " if "model" not in shown else ""
    caption += ([f"<b>{e(tile.label)}</b>"] if tile.label else []) + [
        f"{model}v{tile.variant}" + (f" · {e(unshown)}" if unshown else "")
    ]
    if tile.image_urls:
        caption.append("image: " + e(" ".join(tile.image_urls)))
    meta = ", ".join(
        f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
        for k, v in sorted(tile.meta.items())
    )
    if meta:
        caption.append(f"<span class=meta>{e(meta)}</span>")
    task = (
        f'<span title="{e(tile.task_id)}">task {e(tile.task_id[:12])}…</span>'
        if tile.task_id
        else "not sent"
    )
    caption.append(f"{task} · <span class=status>{e(tile.outcome)}</span>")
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
    prompt = "" if "prompt" in rows or "prompt" in cols else f"<q>{e(tile.prompt)}</q><br>"
    pick = tile.review.get("pick")
    return (
        f'<figure class="tile {e(tile.outcome.replace(" ", "-"))}" data-key="{e(tile.key)}" data-search="{e(searchable)}"'
        f' data-pick="{"" if pick is None else pick}" style="--aspect: {tile.aspect}">'
        f"<div class=media>{media_html(tile)}</div>"
        f"<figcaption>{prompt}{'<br>'.join(caption)} <span class=duration></span></figcaption>"
        f"{_marks_html(tile, live)}</figure>"
    )


def media_html(tile: Tile) -> str:
    """The videos of a tile, or a placeholder saying why there are none yet."""
    e = html.escape
    if tile.files:
        return "".join(
            f'<video src="{e(_link(path))}" muted loop autoplay playsinline preload="metadata" title="{e(tile.prompt)}"></video>'
            for path in tile.files
        )
    why = {"completed": "not downloaded yet: batchgen download"}.get(tile.outcome, tile.outcome)
    if tile.error and tile.outcome != "completed":
        why += f": {tile.error}"
    return f'<div class="placeholder {e(tile.outcome.replace(" ", "-"))}">{e(why)}</div>'


def _link(path: str) -> str:
    # A URL (the review page's /media/…, or a result URL) as it is; a file path, quoted.
    return path if path.startswith(("/", "http://", "https://")) else quote(path)


def _marks_html(tile: Tile, live: Live | None) -> str:
    """The review of a tile: controls on the review page, the marks as text in the gallery."""
    e = html.escape
    review = tile.review
    pick, rating, note = review.get("pick"), review.get("rating"), review.get("note") or ""
    if live is None:
        if pick is None and rating is None and not note:
            return ""
        parts = [
            "<b class=picked>picked</b>"
            if pick == 1
            else "<b class=rejected>rejected</b>"
            if pick == 0
            else ""
        ]
        if rating:
            parts.append(
                f'<span class=stars title="{rating} of 5">{"★" * rating}{"☆" * (5 - rating)}</span>'
            )
        if note:
            parts.append(f"<span class=note>{e(note)}</span>")
        return f"<div class=marks>{' '.join(p for p in parts if p)}</div>"
    stars = "".join(
        f'<button type=button class=star data-rating="{n}" aria-pressed="{str(bool(rating and n <= rating)).lower()}" title="{n} of 5">★</button>'
        for n in range(1, 6)
    )
    return (
        "<div class=marks>"
        f'<button type=button class=pick aria-pressed="{str(pick == 1).lower()}">✓ pick</button>'
        f'<button type=button class=reject aria-pressed="{str(pick == 0).lower()}">✗ reject</button>'
        f"<span class=stars>{stars}</span>"
        f'<textarea class=note rows=1 maxlength=2000 placeholder="note" aria-label="note">{e(note)}</textarea>'
        "</div>"
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


def page(
    ledger: Ledger,
    job: str,
    out: Path,
    rows: list[str] | None = None,
    cols: list[str] | None = None,
    live: Live | None = None,
    media: MediaLinks | None = None,
) -> str:
    """The page for `job` from the ledger as it is now."""
    check_axes((rows or []) + (cols or []))
    found = tiles(ledger, job, out, media)
    varying = varying_axes(found)
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
) -> Path:
    """Write `out/index.html` for `job`; return its path."""
    text = page(ledger, job, out, rows, cols)
    path = out / "index.html"
    part = out / "index.html.part"
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)
    return path


_STYLE = """
:root { color-scheme: light dark; --line: #8884; --muted: #888; --tile: 18rem; }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; }
header { position: sticky; top: 0; left: 0; padding: .75rem 1rem; background: Canvas; border-bottom: 1px solid var(--line); z-index: 2; }
h1 { font-size: 1.2rem; margin: 0 0 .25rem; }
header p { margin: 0 0 .5rem; color: var(--muted); }
header label { margin-left: 1rem; }
input[type=search] { width: min(30rem, 100%); padding: .4rem .6rem; font: inherit; }
#notice { color: #c60; font-weight: 600; }
.scroll { overflow-x: auto; padding: 0 1rem 1rem 0; }
table { border-collapse: collapse; }
th, td { border: 1px solid var(--line); padding: .5rem; vertical-align: top; text-align: left; }
thead th { position: sticky; top: 0; background: Canvas; font-weight: 600; white-space: nowrap; }
tbody th { max-width: 16rem; font-weight: 600; }
section.row { padding: .5rem 1rem; border-bottom: 1px solid var(--line); }
section.row h2 { font-size: 1rem; margin: .25rem 0 .5rem; }
.cards { display: flex; flex-wrap: wrap; gap: .75rem; align-items: flex-start; }
figure { margin: 0 0 .5rem; width: min(var(--tile), 70vw); }
.media video, .placeholder { width: 100%; aspect-ratio: var(--aspect, 16 / 9); background: #0002; border-radius: 4px; display: block; }
figure[style*="9 / 16"], figure[style*="3 / 4"] { width: min(calc(var(--tile) * .6), 50vw); }
.placeholder { display: grid; place-items: center; text-align: center; padding: .5rem; color: var(--muted); }
.failed .placeholder, .rejected .placeholder, .broken video { outline: 2px solid #d33; color: #d33; }
.processing .placeholder, .in-doubt .placeholder { outline: 2px dashed #c90; }
figcaption { font-size: 12px; color: var(--muted); margin-top: .25rem; word-break: break-word; }
figcaption .column { color: CanvasText; }
.status { font-weight: 600; }
figure[data-pick="1"] .media { outline: 3px solid #2a2; border-radius: 4px; }
figure[data-pick="0"] .media { opacity: .45; }
.marks { font-size: 12px; margin-top: .25rem; display: flex; flex-wrap: wrap; gap: .25rem; align-items: center; }
.marks .picked { color: #2a2; } .marks .rejected { color: #d33; }
.marks button { font: inherit; padding: .15rem .4rem; border: 1px solid var(--line); border-radius: 4px; background: none; color: inherit; cursor: pointer; }
.marks button.pick[aria-pressed=true] { background: #2a2; color: white; }
.marks button.reject[aria-pressed=true] { background: #d33; color: white; }
.marks button.star { border: none; padding: 0 .05rem; color: var(--muted); }
.marks button.star[aria-pressed=true], .stars { color: #e90; }
.marks textarea { width: 100%; font: inherit; resize: vertical; }
.hidden { display: none; }
"""

_SCRIPT = """
const filter = document.getElementById('filter');
const pickedOnly = document.getElementById('picked-only');
function applyFilter() {
  const words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean);
  for (const row of document.querySelectorAll('tbody tr, section.row')) {
    let shown = 0;
    const rowText = row.querySelector('th, h2').textContent.toLowerCase();
    for (const tile of row.querySelectorAll('figure')) {
      const note = tile.querySelector('textarea.note');  // a note written since the page was made
      const text = rowText + ' ' + tile.dataset.search + (note ? ' ' + note.value.toLowerCase() : '');
      const match = words.every(w => text.includes(w)) && (!pickedOnly.checked || tile.dataset.pick === '1');
      tile.classList.toggle('hidden', !match);
      shown += match;
    }
    row.classList.toggle('hidden', shown === 0);
  }
  // Columns left with nothing to show collapse too.
  const head = document.querySelectorAll('thead th');
  for (let i = 1; i < head.length; i++) {
    const cells = document.querySelectorAll(`tbody tr:not(.hidden) td:nth-child(${i + 1})`);
    const empty = [...cells].every(td => !td.querySelector('figure:not(.hidden)'));
    head[i].classList.toggle('hidden', empty);
    for (const td of document.querySelectorAll(`tbody td:nth-child(${i + 1})`)) td.classList.toggle('hidden', empty);
  }
}
filter.addEventListener('input', applyFilter);
pickedOnly.addEventListener('change', applyFilter);
function showDuration(video) {
  video.dataset.duration = video.duration.toFixed(2);
  // The cell keeps the video's own shape, whatever the request asked for.
  if (video.videoWidth && video.videoHeight) video.closest('figure').style.setProperty('--aspect', `${video.videoWidth} / ${video.videoHeight}`);
  const badge = video.closest('figure').querySelector('.duration');
  if (badge) badge.textContent = '· ' + video.duration.toFixed(1) + ' s';
}
function watchVideos(root) {
  for (const video of root.querySelectorAll('video')) {
    if (video.readyState >= 1) showDuration(video);
    video.addEventListener('loadedmetadata', () => showDuration(video));
    video.addEventListener('error', () => { video.closest('figure').classList.add('broken'); video.dataset.error = '1'; });
  }
}
watchVideos(document);
"""

# The review page only: marks are posted with the session's token; the page follows the
# ledger (new videos, other tabs' marks) by asking for the tiles every few seconds.
_LIVE_SCRIPT = """
const token = document.querySelector('meta[name=batchgen-token]').content;
const notice = document.getElementById('notice');
function say(text) { notice.textContent = text; }
async function send(figure, fields, tries = 0) {
  let answer;
  try {
    answer = await fetch('/api/review', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-Batchgen-Token': token},
                                          body: JSON.stringify({key: figure.dataset.key, ...fields})});
  } catch (error) { say('The review server is not answering: is batchgen review still running?'); return; }
  if (answer.status === 503 && tries < 10) { say('The ledger is busy (a run is writing); trying again…'); setTimeout(() => send(figure, fields, tries + 1), 1000); return; }
  const result = await answer.json().catch(() => ({error: answer.statusText}));
  if (!answer.ok) { say(result.error || answer.statusText); return; }
  say('');
  showReview(figure, result.review);
}
function showReview(figure, review) {
  figure.dataset.pick = review.pick === null || review.pick === undefined ? '' : String(review.pick);
  figure.querySelector('button.pick').setAttribute('aria-pressed', String(review.pick === 1));
  figure.querySelector('button.reject').setAttribute('aria-pressed', String(review.pick === 0));
  for (const star of figure.querySelectorAll('button.star')) star.setAttribute('aria-pressed', String(!!review.rating && Number(star.dataset.rating) <= review.rating));
  const note = figure.querySelector('textarea.note');
  if (document.activeElement !== note) note.value = review.note || '';
  figure.dataset.rating = review.rating || '';
}
document.addEventListener('click', event => {
  const button = event.target.closest('.marks button');
  if (!button) return;
  const figure = button.closest('figure');
  if (button.classList.contains('pick')) send(figure, {pick: figure.dataset.pick === '1' ? null : 1});
  else if (button.classList.contains('reject')) send(figure, {pick: figure.dataset.pick === '0' ? null : 0});
  else if (button.classList.contains('star')) {
    const n = Number(button.dataset.rating);
    send(figure, {rating: Number(figure.dataset.rating) === n ? null : n});
  }
});
document.addEventListener('change', event => {
  if (event.target.matches('textarea.note')) send(event.target.closest('figure'), {note: event.target.value});
});
for (const figure of document.querySelectorAll('figure')) {
  const on = figure.querySelectorAll('button.star[aria-pressed=true]').length;
  figure.dataset.rating = on || '';
}
async function follow() {
  try {
    const answer = await fetch('/api/tiles', {headers: {'X-Batchgen-Token': token}});
    if (answer.status === 403) { say((await answer.json()).error); return; }
    if (answer.ok) {
      const state = await answer.json();
      document.getElementById('summary').textContent = state.summary;
      let fresh = 0;
      for (const tile of state.tiles) {
        const figure = document.querySelector(`figure[data-key="${tile.key}"]`);
        if (!figure) { fresh++; continue; }
        if (figure.dataset.media !== tile.media_html) {
          if (figure.dataset.media !== undefined) { figure.querySelector('.media').innerHTML = tile.media_html; watchVideos(figure); }
          figure.dataset.media = tile.media_html;
        }
        figure.className = 'tile ' + tile.outcome.replace(/ /g, '-') + (figure.classList.contains('hidden') ? ' hidden' : '');
        figure.querySelector('.status').textContent = tile.outcome;
        showReview(figure, tile.review);
      }
      if (fresh) say(`${fresh} new requests in this job: reload the page to see them.`);
      applyFilter();
    }
  } catch (error) { say('The review server is not answering: is batchgen review still running?'); }
  setTimeout(follow, 3000);
}
setTimeout(follow, 3000);
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="batchgen">
{token}
<title>{title} · batchgen {mode}</title>
<style>{style}</style>
</head>
<body data-mode="{mode}">
<header>
<h1>{title}</h1>
<p><span id="summary">{summary}</span>{note} <span id="notice" role="status"></span><br><small>{same}</small></p>
<input id="filter" type="search" placeholder="Filter: prompt, model, option, status, note…" aria-label="Filter">
<label><input id="picked-only" type="checkbox"> picked only</label>
</header>
<div class="scroll">
{layout}
</div>
<script>{script}</script>
</body>
</html>
"""
