"""Step 2 of validation: every expanded request against its provider's rules (its catalogue's
`check`, for batchgen's own a request schema).

Runs over the whole expansion before anything is sent, reports every problem (grouped when
many combinations share it), and counts what the job stands for. It keeps only the keys seen,
never the bodies, so memory stays flat in the number of requests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import JobError, Problem
from ..providers import Finding
from ..urls import canonical_base_url
from .expand import (
    Origin,
    Request,
    expand,
    label_file_stem,
    merged_requests,
    model_name,
    unused_excludes,
    upper_bound,
)
from .job import Job
from .origins import Source, describe_origin, locate
from .prices import job_rules
from .spec import load_job
from .yamldoc import FieldPath


@dataclass
class ValidatedJob:
    """A job that passed both validation steps, with what they learned: its distinct requests'
    count by model, and the warnings (duplicates, excludes that match nothing)."""

    job: Job
    api_base: str
    allow_unverified: bool = False  # models the catalogue marks unverified are refused unless set
    unique: int = 0
    by_model_key: Counter[str] = field(default_factory=Counter)  # by the provider's model id
    warnings: list[Problem] = field(default_factory=list)

    @property
    def by_model(self) -> Counter[str]:
        """Distinct requests by model name."""
        catalogue = self.job.catalogue
        return Counter({model_name(catalogue, m): n for m, n in self.by_model_key.items()})

    def requests(self) -> Iterator[Request]:
        """The job's distinct requests, in file order (a fresh pass over the expansion)."""
        seen: set[int] = set()
        for request in expand(self.job, self.api_base):
            digest = seen_key(request.key)
            if digest not in seen:
                seen.add(digest)
                yield request


def seen_key(key: str) -> int:
    """A request's key as held to tell duplicates apart within a job: the first 88 bits of its
    SHA-256 as an int (two of a million requests share them with odds of ~1e-15), which takes
    48 bytes of memory against 64 for those bits as 23 bytes and 113 for the 64 hex characters:
    ~16 MB less than bytes at a million requests. Only this check uses it; the ledger keeps
    every key whole."""
    return int(key[:22], 16)


def check(job: Job, api_base: str | None = None, *, allow_unverified: bool = False) -> ValidatedJob:
    """Validate every request of `job` (step 2); raise `JobError` with every problem found.
    `api_base`: where its requests go (default: its provider's own)."""
    base = canonical_base_url(api_base or job.provider.default_base_url)
    result = ValidatedJob(job, base, allow_unverified)
    for _ in checked(result):
        pass
    return result


def checked(result: ValidatedJob) -> Iterator[Request]:
    """Step 2 as a stream: each distinct request as it is checked, so a caller that counts
    (plan) needs no second pass; raises `JobError` with every problem at the end, so whatever
    the caller made of the stream is to be discarded then. Fills in `result` as it goes."""
    job, api_base = result.job, result.api_base
    _check_size(job)
    catalogue = job.catalogue
    problems: dict[tuple[Any, ...], Problem] = {}
    # The keys seen, as `seen_key` gives them; and each duplicate's key and origin. Which entry
    # asked first, that a duplicate's warning names, is found after the pass (`_duplicates`): a
    # set of a million keys is ~8 MB smaller than a dict of them.
    keys: set[int] = set()
    duplicated: list[tuple[int, Origin]] = []
    verified: set[str] = set()  # model ids the catalogue marks verified (looked up once each)
    labels: dict[str, tuple[Origin, str]] = {}  # file stem → the first request's origin and id
    unused: dict[int, tuple[Origin, frozenset[str]]] = {}  # entry → vars no request of it reads
    for request in expand(job, api_base):
        if request.problem is not None:
            field, message = request.problem
            _add(
                problems,
                _located(
                    job,
                    request.origin,
                    (field,),
                    message,
                    "vars come from defaults, the entry, matrix axes vars.<name> and CSV columns vars.<name>",
                ),
            )
        entry = request.origin.entry
        seen = unused.get(entry)
        if seen is None:
            unused[entry] = (request.origin, request.unused_vars)
        elif seen[1]:
            unused[entry] = (seen[0], seen[1] & request.unused_vars)
        digest = seen_key(request.key)
        if digest in keys:
            duplicated.append((digest, request.origin))
            continue
        keys.add(digest)
        result.unique += 1
        result.by_model_key[str(request.model)] += 1
        if request.label is not None:
            # Compared as the file names they become (`shot/1`, `shot 1` and `Shot-1` are
            # one file on a Mac): two requests under one name would overwrite a paid video.
            stem = label_file_stem(request.label).casefold()
            first = labels.get(stem)
            if first is None:
                labels[stem] = (request.origin, request.label)
            else:
                other, other_label = first
                if other_label == request.label:
                    message = f"id {request.label!r} is given to more than one request (also {describe_origin(job, other)})"
                else:
                    message = (
                        f"ids {request.label!r} and {other_label!r} are one file name, {label_file_stem(other_label)}.mp4"
                        f" (the other is {describe_origin(job, other)})"
                    )
                _add(
                    problems,
                    _located(
                        job,
                        request.origin,
                        ("id",),
                        message,
                        "an id names one request of the job: add {{ variant }} or a var to it",
                    ),
                )
        if request.variant == 0:
            findings = catalogue.check(request.body, request.shape)
            for finding in _worth_saying(findings) if findings else ():
                _add(problems, _problem(job, request.origin, finding))
            model_key = str(request.model)
            if not result.allow_unverified and model_key not in verified:
                unverified = _unverified(job, request)
                if unverified is None:
                    verified.add(model_key)
                else:
                    _add(problems, unverified)
        yield request
    try:  # a price rule naming a model its provider does not have would never match
        job_rules(job)
    except JobError as e:
        for problem in e.problems:
            _add(problems, problem)
    if problems or job.problems:
        raise JobError(sorted([*job.problems, *problems.values()], key=_order))
    result.warnings = (
        list(job.warnings)
        + _duplicates(job, api_base, duplicated)
        + _unused_exclude_warnings(job)
        + _unused_var_warnings(job, unused)
    )


def _worth_saying(findings: list[Finding]) -> list[Finding]:
    """One finding a field (its first: its type before its value), and no "missing X" beside a
    misspelt field whose hint is X: the typo is the one mistake."""
    meant = {
        f.hint.split("'")[1]
        for f in findings
        if f.message.startswith("unknown field") and f.hint and f.hint.count("'") >= 2
    }
    said: set[tuple[str, ...]] = set()
    kept = []
    for finding in findings:
        if finding.field in said or (
            finding.kind == "missing" and ".".join(finding.field) in meant
        ):
            continue
        said.add(finding.field)
        kept.append(finding)
    return kept


def _unverified(job: Job, request: Request) -> Problem | None:
    """A request for a model whose page contradicts itself: refused unless allowed."""
    model = job.catalogue.lookup(str(request.model)) if request.model is not None else None
    if model is None or model.verified:
        return None
    message = f"{model.name} ({model.id}) is unverified: {model.why_unverified}"
    return _located(
        job,
        request.origin,
        ("model",),
        message,
        "batchgen models lists what is verified; --allow-unverified-models sends to it anyway",
    )


def _located(
    job: Job, origin: Origin, field: FieldPath, message: str, hint: str | None = None
) -> Problem:
    """A problem with one request's `field`, at the place in the file that set it."""
    return _at(job, origin, locate(job, origin, field), message, hint)


def _at(job: Job, origin: Origin, source: Source, message: str, hint: str | None) -> Problem:
    """A problem at `source`, naming the combination or row that produced the request when
    that is not already the place itself."""
    described = describe_origin(job, origin)
    return Problem(
        source.file,
        source.line,
        source.column,
        source.path,
        message,
        hint,
        origin=None if described == source.path else described,
    )


def _unused_var_warnings(
    job: Job, unused: dict[int, tuple[Origin, frozenset[str]]]
) -> list[Problem]:
    warnings = []
    for origin, names in unused.values():
        for name in sorted(names):
            problem = _located(
                job,
                origin,
                ("vars", name),
                f"var '{name}' is not used by the prompt or the id of requests[{origin.entry}]",
            )
            warnings.append(replace(problem, severity="warning", origin=None))
    return warnings


def _check_size(job: Job) -> None:
    limit = job.max_requests
    bound = upper_bound(job)
    if bound <= limit:
        return
    has_exclude = any(entry.get("exclude") for entry in job.entries)
    if has_exclude:  # count exactly, but stop as soon as the limit is passed
        count = 0
        for index in range(len(job.entries)):
            if index in job.set_aside:
                continue
            repeat = job.repeat_for(index)
            for _ in merged_requests(job, index):
                count += repeat
                if count > limit:
                    break
            if count > limit:
                break
        if count <= limit:
            return
        size = f"more than {limit:,} requests (up to {bound:,} before exclude)"
    else:
        size = f"{bound:,} requests"
    where = ("limits", "max_requests") if "max_requests" in job.limits else ("requests",)
    raise JobError(
        [
            job.problem(
                where,
                f"the job expands to {size}, past limits.max_requests ({limit:,}); nothing was sent",
                hint="split the job, or raise limits.max_requests if you mean it",
            )
        ]
    )


def _problem(job: Job, origin: Origin, finding: Finding) -> Problem:
    """A provider's finding, at the place in the file that set the field it is about."""
    source = locate(job, origin, finding.field)
    hint = finding.hint
    if finding.kind == "refused" and source.layer not in ("missing",):
        leaf = finding.field[-1] if finding.field else ""
        if source.layer == "defaults" or (
            source.layer == "entry" and origin != Origin(origin.entry)
        ):
            unset = f"set {leaf}: null for this entry (it is inherited from {source.path})"
        else:
            unset = f"remove {leaf}"
        hint = f"{unset}; {hint}" if hint else unset
    return _at(job, origin, source, finding.message, hint)


def _add(problems: dict[tuple[Any, ...], Problem], problem: Problem) -> None:
    group = (problem.file, problem.line, problem.column, problem.path, problem.message)
    seen = problems.get(group)
    if seen is None:
        problems[group] = problem
    else:
        problems[group] = replace(seen, count=seen.count + 1)


def _order(problem: Problem) -> tuple[str, int, int]:
    return (problem.file, problem.line or 0, problem.column or 0)


def _duplicates(job: Job, api_base: str, duplicated: list[tuple[int, Origin]]) -> list[Problem]:
    """A warning per (entry, earlier entry) pair of the duplicates found, counted: the entry
    that first asked for each key is found by a pass over the job's requests up to the last
    of those first requests (a job with no duplicate has none to make)."""
    if not duplicated:
        return []
    wanted = {digest for digest, _ in duplicated}
    first_entry: dict[int, int] = {}
    for request in expand(job, api_base):
        digest = seen_key(request.key)
        if digest in wanted and digest not in first_entry:
            first_entry[digest] = request.origin.entry
            if len(first_entry) == len(wanted):
                break
    found: dict[tuple[int, int], Problem] = {}
    for digest, origin in duplicated:
        earlier = first_entry[digest]
        group = (origin.entry, earlier)
        seen = found.get(group)
        if seen:
            found[group] = replace(seen, count=seen.count + 1)
            continue
        same = (
            "an earlier request of this entry"
            if earlier == origin.entry
            else f"requests[{earlier}]"
        )
        problem = job.problem(
            ("requests", origin.entry),
            f"same request as {same}: it is sent once",
            hint="use repeat: N to ask for several variants of one request",
        )
        found[group] = replace(problem, severity="warning", origin=describe_origin(job, origin))
    return list(found.values())


def _unused_exclude_warnings(job: Job) -> list[Problem]:
    warnings = []
    for index in range(len(job.entries)):
        if index in job.set_aside:
            continue
        for k in unused_excludes(job, index):
            problem = job.problem(
                ("requests", index, "exclude", k), "this exclude matches no combination"
            )
            warnings.append(replace(problem, severity="warning"))
    return warnings


def validate_job(
    path: str,
    api_base: str | None = None,
    *,
    root: Path | None = None,
    allow_unverified: bool = False,
) -> ValidatedJob:
    """Both steps for the job file at `path`; raise `JobError` with every problem found.
    `root`: the project its files must lie in (default: found from the job's folder);
    `allow_unverified`: accept models the catalogue marks unverified (`--allow-unverified-models`)."""
    return check(load_job(path, root), api_base, allow_unverified=allow_unverified)
