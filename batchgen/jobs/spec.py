"""Reading a job file: safe YAML with line marks, checked against `job.schema.json`.

The result is a `Job`: the parsed data, where every value and key stands in the file, and the
contents of the prompt files, CSV tables and images it refers to (job.py holds the `Job`,
referenced.py reads what it refers to, so expansion needs no I/O).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import providers
from ..errors import JobError, Problem, UsageError
from ..ledger.location import configured_provider, find_root
from . import schemas
from .job import DEFAULT_MAX_REQUESTS, Job
from .job_files import read_job_text
from .referenced import load_images, load_referenced_files
from .yamldoc import YAML11_BOOLEANS, FieldPath, Marks, parse_yaml, scalar

__all__ = ["DEFAULT_MAX_REQUESTS", "Job", "check_structure", "load_job"]


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
    text = read_job_text(path, file, read)
    data, marks = parse_yaml(text, file)
    job = Job(path=path, file=file, name=_default_name(path), data=data, marks=marks, read=read)
    job.root = root or find_root(path.resolve().parent)[0]
    _refuse_too_many_entries(job)
    _choose_provider(job)
    problems = list(check_structure(job))
    if problems and _mend_unknown_fields(job):
        # What is still wrong once the typos are mended, said too (once): the typos' fields,
        # mended, may now break a rule of their own, and what they hid is checked at last.
        said = {(p.path, p.message) for p in problems}
        remaining = list(check_structure(job))
        problems += [p for p in remaining if (p.path, p.message) not in said]
        broken = _entries_of(remaining)
    else:
        broken = _entries_of(problems)
    if broken is None:  # the file's shape, not one entry's
        raise JobError(problems)
    job.name = data.get("name") or job.name
    by_entry = load_referenced_files(job, skip=broken)
    shared, image_problems = load_images(job, skip=broken | set(by_entry))
    for index, found in image_problems.items():
        by_entry.setdefault(index, []).extend(found)
    if shared:  # an image in defaults: every entry has it
        raise JobError(problems + shared + [p for found in by_entry.values() for p in found])
    job.problems = problems + [p for found in by_entry.values() for p in found]
    job.set_aside = broken | set(by_entry)
    if job.set_aside and len(job.set_aside) == len(job.entries):
        raise JobError(job.problems)
    return job


# A job file's top-level `provider:` line: what a command reads before it loads the job.
_PROVIDER_LINE = re.compile(r"^provider[ \t]*:[ \t]*([^#\n]*?)[ \t]*(?:#.*)?$", re.MULTILINE)


def provider_of(path: str | Path, root: Path | None = None) -> providers.Description:
    """The provider a job file's requests go to, read without loading the job (a command must
    know where to connect before it reads the whole file, which a big job takes seconds to
    parse): its top-level `provider:` line, else its project's batchgen.yaml's, else the
    default. `load_job` reads the same from the parsed file; a run refuses a job whose two
    readings differ (a `provider:` this line does not show: flow style, an alias)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""  # loading the job says what is wrong with the file
    found = _PROVIDER_LINE.search(text)
    named = scalar(found[1].strip("\"'")) if found else None
    line = text.count("\n", 0, found.start()) + 1 if found else None
    return _provider(
        named if isinstance(named, str) else None,
        root or find_root(path.resolve().parent)[0],
        lambda message: Problem(
            str(path), line, 1 if line else None, "provider" if found else "", message, _PLUGIN
        ),
    )


_PLUGIN = "a provider is a plugin: install its distribution"


def _provider(
    named: str | None, root: Path | None, problem: Callable[[str], Problem]
) -> providers.Description:
    """The provider `named` (else the project's at `root`, else the default); one that is not
    registered is a `JobError` said by `problem`."""
    try:
        return providers.named(named or (configured_provider(root) if root else None))
    except UsageError as e:
        raise JobError([problem(str(e))]) from None


def _choose_provider(job: Job) -> None:
    """The job's provider (its `provider:`, else its project's, else the default), and the
    provider's older spellings of fields renamed to batchgen's own (see `field_aliases`)."""
    data = job.data
    named = data.get("provider") if isinstance(data, dict) else None
    if named is not None and not isinstance(named, str):
        return  # step 1 says what is wrong with it
    where = ("provider",) if named else ()
    provider = _provider(named, job.root, lambda message: job.problem(where, message, hint=_PLUGIN))
    job.provider_name = provider.name
    if provider.field_aliases and isinstance(data, dict):
        _rename_fields(job, provider.field_aliases)


def _rename_fields(job: Job, aliases: Any) -> None:
    """Rename `aliases`' fields wherever a job file writes request fields (defaults, entries,
    matrix axes, include and exclude items, price rules), keeping their marks."""

    def rename(mapping: Any, at: FieldPath) -> None:
        if not isinstance(mapping, dict):
            return
        for old, new in aliases.items():
            if old in mapping and new not in mapping:
                _rename_key(mapping, old, new)  # in place: a matrix's axes keep their order
                _move_marks(job.marks, (*at, old), (*at, new))

    data = job.data
    rename(data.get("defaults"), ("defaults",))
    for index, rule in enumerate(data.get("prices") or []):
        rename(rule, ("prices", index))
    entries = data.get("requests")
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, dict):
            continue
        rename(entry, ("requests", index))
        rename(entry.get("matrix"), ("requests", index, "matrix"))
        for part in ("include", "exclude"):
            items = entry.get(part)
            for k, item in enumerate(items if isinstance(items, list) else []):
                rename(item, ("requests", index, part, k))


def _mend_unknown_fields(job: Job) -> bool:
    """Mend step 1's unknown fields as their hints say: a near miss (`optoins`, `aspect_ration`)
    renamed to the field it is near, any other left out. So the rest of the file is checked in
    the same pass (step 1's other rules, then step 2's per-request ones): a typo in `defaults`
    hid every other problem, and a bad `duration: 10` beside a typo in one options map showed
    only on the next pass. The typos are still reported, and nothing is sent. True when
    something was mended (the job's data and marks are changed in place)."""
    mended = False
    for _ in range(8):  # a mended key may reveal a typo inside it: a few levels, not forever
        found = [
            leaf
            for error in schemas.validator("job").iter_errors(job.data)
            for leaf in schemas.leaf_errors(error)
            if leaf.validator == "additionalProperties" and isinstance(leaf.instance, dict)
        ]
        if not found:
            break
        for error in found:
            at = tuple(error.absolute_path)
            allowed = schemas.allowed_keys(error)
            mapping: dict[str, Any] = error.instance  # type: ignore[assignment]  # checked above
            for key in schemas.unexpected_keys(error):
                hint = schemas.suggest(key, allowed)
                near = hint.split("'")[1] if hint else None
                value = mapping.pop(key)
                if near is not None and near not in mapping:
                    mapping[near] = value
                    _move_marks(job.marks, (*at, key), (*at, near))
                mended = True
    return mended


def _rename_key(mapping: dict[str, Any], old: str, new: str) -> None:
    """`old` renamed `new` where it stands in `mapping`'s order."""
    items = [(new if key == old else key, value) for key, value in mapping.items()]
    mapping.clear()
    mapping.update(items)


def _move_marks(marks: Marks, old: FieldPath, new: FieldPath) -> None:
    for table in (marks.values, marks.keys):
        for path in [p for p in table if p[: len(old)] == old]:
            table[new + path[len(old) :]] = table[path]


def _entries_of(problems: list[Problem]) -> set[int] | None:
    """The entries the problems are in, or None if one lies outside every entry."""
    entries = set()
    for problem in problems:
        found = re.match(r"^requests\[(\d+)\]", problem.path)
        if found is None:
            return None
        entries.add(int(found.group(1)))
    return entries


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
    differ only in their prompt get the same verdict (the prompt's own subschema reads its type,
    length and characters), so the file is checked with one stand-in entry, and each
    distinct entry shape on its own, once; errors are then located at each entry's index. (A
    prompt too long or holding a control character is checked with its entry, as it is.)"""
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
    if isinstance(prompt, str) and not schemas.plain_prompt(prompt):
        return None  # its own errors (the character, the length) are its own
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
