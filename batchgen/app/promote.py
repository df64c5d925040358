"""Promote: the requests a review chose, written out as a new job file with overrides.

The two-pass way of working: cheap drafts of many prompts, a review that picks the winners,
then the winners again at full quality. `promote` writes that second job: one entry per chosen
request, made from the fields the first job gave it (the prompt's template and its vars, the
id's template, the images as files or URLs, the meta), with `--set FIELD=VALUE` applied to
each. The new file is validated like any job before it is written; it is never written broken.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from .. import providers
from ..errors import JobError, NothingChosen, Problem, UsageError
from ..jobs import schemas
from ..jobs.expand import sourced
from ..jobs.images import LOCAL, is_local, local_path
from ..jobs.job import Job
from ..jobs.spec import load_job
from ..jobs.validate import validate_job
from ..jobs.yamldoc import scalar
from ..ledger import Ledger
from ..providers import Catalogue
from ..times import timestamp

ENTRY_FIELDS = ("id", "prompt", "model", "images", "options", "vars", "meta")


@dataclass(frozen=True)
class Override:
    """One `--set FIELD=VALUE`: a field path and its value (None deletes the field)."""

    text: str
    path: tuple[str, ...]
    value: Any


def parse_override(text: str) -> Override:
    """`options.duration=8` → an Override; an unknown field is refused with a suggestion."""
    field, equals, raw = text.partition("=")
    field = field.strip()
    if not equals or not field:
        raise UsageError(f"--set {text!r}: write FIELD=VALUE, like options.resolution=720p")
    known = ["prompt", "model", "images", "id"]
    path = tuple(field.split("."))
    named = len(path) == 2 and path[0] in ("vars", "meta", "options") and bool(path[1])
    if field not in known and not named:
        hint = (
            schemas.suggest(field, known)
            or f"fields: {', '.join(known)}, options.<name>, vars.<name>, meta.<name>"
        )
        raise UsageError(f"--set {text!r}: unknown field {field!r}; {hint}")
    value: Any = raw.split() if field == "images" else scalar(raw.strip())
    return Override(text, path, value)


def check_output(out: Path, job_file: Path | None, *, force: bool) -> None:
    """Refuse to write over the job file promoted from (the drafts, and the review's record of
    which request is which), and over any existing file unless `force`."""
    if out.exists() and job_file is not None and _same_file(out, job_file):
        raise UsageError(
            f"-o {out} is the job file being promoted: write the winners to a new file"
        )
    if out.exists() and not force:
        raise UsageError(f"{out} exists: choose another -o, or --force to replace it")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def promote(
    ledger: Ledger,
    job: str,
    job_file: str | None,
    out: Path,
    *,
    picked: bool,
    rating_at_least: int | None,
    overrides: list[Override],
    root: Path | None = None,
) -> int:
    """Write `out`, a job of the requests of `job` that the review chose, with the overrides.
    Returns how many entries it has. Raises NothingChosen, or JobError (naming the request)
    if the new job would not validate; `out` is then left as it was."""
    chosen = ledger.reviews.chosen(job, picked=picked, rating_at_least=rating_at_least)
    if not chosen:
        raise NothingChosen(
            f"nothing in job {job!r} is {_choice(picked, rating_at_least)}: mark videos with `batchgen review {job}` first"
        )
    job_file = job_file or chosen[0]["job_file"]
    source_job = _loaded(job_file, root)
    source = (
        _source(source_job, {row["api_base"] for row in chosen}) if source_job is not None else {}
    )
    entries: dict[
        str, dict[str, Any]
    ] = {}  # canonical entry → entry (variants of one request become repeat)
    order: list[tuple[int, str]] = []
    # Each entry as the user knows it: its filled-in id and prompt (the entry may hold
    # templates), for messages about it.
    known_as: dict[str, tuple[str | None, str]] = {}
    for row in chosen:
        found = source.get(row["key"])
        if found is not None and source_job is not None:
            position, fields = found
            entry = _entry_from_fields(fields, source_job.path.parent, out.parent)
        else:  # the job file no longer asks for it (edited, moved): what the ledger sent
            position, entry = len(order) + 1_000_000_000, _entry_from_ledger(row)
        for override in overrides:
            _apply(entry, override)
        identity = json.dumps(entry, sort_keys=True, default=str)
        if identity in entries:
            entries[identity]["repeat"] = entries[identity].get("repeat", 1) + 1
        else:
            entries[identity] = entry
            order.append((position, identity))
            known_as[identity] = (row.get("label"), str(row.get("prompt") or ""))
    ordered = [entries[identity] for _, identity in sorted(order)]
    shown = [known_as[identity] for _, identity in sorted(order)]
    for entry in ordered:
        if entry.get("repeat", 1) > 1 and "id" in entry and "variant" not in str(entry["id"]):
            entry["id"] = (
                f"{entry['id']}-{{{{ variant }}}}"  # variants of one request need ids of their own
            )
    text = _job_text(
        job,
        job_file,
        ordered,
        source_job=source_job,
        picked=picked,
        rating_at_least=rating_at_least,
        overrides=overrides,
    )
    _write_validated(text, out, shown)
    return len(ordered)


def _source(job: Job, api_bases: set[str]) -> dict[str, tuple[int, dict[str, Any]]]:
    """key → (position in the job, the fields it was made from)."""
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    for api_base in api_bases:
        for position, (request, fields) in enumerate(sourced(job, api_base)):
            found.setdefault(request.key, (position, fields))
    return found


def _loaded(job_file: str | None, root: Path | None) -> Job | None:
    if not job_file or not os.path.isfile(job_file):
        return None
    try:
        return load_job(job_file, root)
    except JobError:  # broken since: the ledger's record of each request is used instead
        return None


def _entry_from_fields(fields: dict[str, Any], folder: Path, new_folder: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    for name in ENTRY_FIELDS:
        value = fields.get(name)
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
        if value is None or value == {}:
            continue
        if name == "images":
            value = [
                _moved(item, folder, new_folder)
                for item in (value if isinstance(value, list) else [value])
            ]
        entry[name] = value
    return entry


def _moved(item: Any, folder: Path, new_folder: Path) -> Any:
    """A local image's path as the new job file (in `new_folder`) must write it."""
    if not is_local(item):
        return item
    return os.path.relpath((folder / local_path(item)).resolve(), new_folder.resolve())


def _entry_from_ledger(row: dict[str, Any]) -> dict[str, Any]:
    asked = providers.fields_of(row.get("provider"), json.loads(row["request"]))
    entry: dict[str, Any] = {}
    if row.get("label"):
        entry["id"] = row["label"]
    entry["prompt"] = asked.prompt
    entry["model"] = providers.model_label(str(asked.model))
    urls = list(asked.images)
    if any(isinstance(url, str) and url.startswith(LOCAL) for url in urls):
        raise UsageError(
            f"request {row.get('label') or row['key'][:12]} used a local image, and its job file ({row.get('job_file')}) "
            "no longer asks for it: promote needs the job file that made it"
        )
    if urls:
        entry["images"] = urls
    if asked.options:
        entry["options"] = dict(asked.options)
    if row.get("meta"):
        entry["meta"] = json.loads(row["meta"])
    return entry


def _apply(entry: dict[str, Any], override: Override) -> None:
    *parents, name = override.path
    target = entry
    for part in parents:
        inner = target.get(part)
        if not isinstance(inner, dict):
            inner = target[part] = {}
        target = inner
    if override.value is None:
        target.pop(name, None)
    else:
        target[name] = override.value


def _job_text(
    job: str,
    job_file: str | None,
    entries: list[dict[str, Any]],
    *,
    source_job: Job | None,
    picked: bool,
    rating_at_least: int | None,
    overrides: list[Override],
) -> str:
    lines = [
        f"# Promoted by `batchgen promote` at {timestamp()}",
        _comment(
            f"from job {job!r}"
            + (f" ({job_file})" if job_file else "")
            + f": the requests {_choice(picked, rating_at_least)} in its review"
        ),
    ]
    if overrides:
        lines.append(
            _comment(
                "with "
                + " ".join(f"--set {json.dumps(o.text, ensure_ascii=False)}" for o in overrides)
            )
        )
    document: dict[str, Any] = {"version": 1}
    if source_job is not None:
        if source_job.data.get("provider"):  # its requests go where the first job's went
            document["provider"] = source_job.data["provider"]
        if source_job.data.get("limits"):  # the first job's sending limits
            document["limits"] = source_job.data["limits"]
        if source_job.data.get("prices"):
            if any(_changes_the_class(o, source_job.catalogue) for o in overrides):
                # Its prices were for the drafts' model and options; the winners are other
                # requests now, and a price that no longer applies would fool a spend cap.
                lines.append(
                    "# prices: not carried from the first job, as --set changes what each request is; declare them"
                )
            else:
                document["prices"] = source_job.data["prices"]
    document["requests"] = entries
    body = yaml.safe_dump(
        document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100
    )
    return "\n".join(lines) + "\n" + body


def _comment(text: str) -> str:
    """A comment line holding `text`, which stays on it: a character that ends a line for YAML,
    for an editor or for Python (a newline, U+0085, U+2028, U+2029, ...) or any other that does
    not print is written as its escape, so no `--set` value or file name can start a line of
    YAML (a `prices:` planted in a comment, invisibly)."""
    return "# " + "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def _changes_the_class(override: Override, catalogue: Catalogue) -> bool:
    """Whether an override can change a request's price class (its provider says)."""
    path = override.path
    return path[0] == "images" or catalogue.priced(path)


def _choice(picked: bool, rating_at_least: int | None) -> str:
    """`picked and rated 4 or more`: which requests a promote takes."""
    return " and ".join(
        part
        for part in (
            "picked" if picked else "",
            f"rated {rating_at_least} or more" if rating_at_least else "",
        )
        if part
    )


def _write_validated(text: str, out: Path, entries: list[tuple[str | None, str]]) -> None:
    """Write `text` to `out` only if it validates (as `batchgen validate` would see it there);
    else JobError naming each request."""
    part = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    part.write_text(text, encoding="utf-8")
    try:
        validate_job(
            str(part), allow_unverified=True
        )  # whether to send to such a model is the run's question
    except JobError as e:
        part.unlink()
        raise JobError([_named(problem, out, entries) for problem in e.problems]) from None
    except BaseException:
        part.unlink()
        raise
    os.replace(part, out)


def _named(problem: Problem, out: Path, entries: list[tuple[str | None, str]]) -> Problem:
    """A problem of the would-be file, told by the request it is about: its id and prompt as
    they were filled in (not the templates that make them)."""
    which = None
    if problem.path.startswith("requests["):
        index = int(problem.path[len("requests[") : problem.path.index("]")])
        if 0 <= index < len(entries):
            label, prompt = entries[index]
            which = f"request {label!r}, " if label else "request "
            which += f"{prompt[:50]!r}" + ("…" if len(prompt) > 50 else "")
    return replace(problem, file=f"{out} (not written)", origin=which or problem.origin)
