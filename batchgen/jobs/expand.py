"""ValidatedJob: a `Job` becomes the stream of API requests it stands for. Pure: no I/O.

Each request is the merge of layers, lowest first: `defaults`, the entry's fixed fields, the
matrix combination or CSV row, the `include` item. A layer is a list of assignments
(field path, value); `None` deletes what a lower layer set. Requests are produced one at a
time, so a 100,000-request job holds one merged body at a time, not 100,000.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import TemplateProblem
from ..providers import Catalogue, Fields
from . import templates as prompt_templates
from .images import LocalImage, is_local, local_path
from .job import Job
from .job_files import Table

Assignment = tuple[tuple[str, ...], Any]


# NamedTuples, not dataclasses: one of each per request, and a frozen dataclass costs
# several times more to build (it matters at 100,000 requests).
class Origin(NamedTuple):
    """Which part of the job file produced a request (for messages; not part of its identity)."""

    entry: int
    combination: tuple[int, ...] | None = None  # index of the value taken on each matrix axis
    include: int | None = None
    row: int | None = None  # index into the entry's table rows


class Request(NamedTuple):
    key: str
    variant: int
    body: dict[str, Any]
    origin: Origin
    label: str | None = None  # its `id`, rendered (not sent, not part of the identity)
    meta: dict[str, Any] | None = None  # its `meta` (not sent either)
    problem: tuple[str, str] | None = None  # (field, message): a template that cannot be filled
    unused_vars: frozenset[str] = frozenset()  # vars neither its prompt nor its id reads
    # Stands for the body without its prompt, when the expansion knows requests that share one
    # (equal shapes: equal rests), so that validation checks each rest once; None: not known.
    # Unique to its expansion (its first item), so that no two jobs' shapes are ever equal.
    shape: tuple[int, ...] | None = None
    model: str | None = None  # the provider's id for its model, as the ledger records it
    provider: str | None = None  # the provider's name (None: the default one)


# One encoder for every call: json.dumps would build a new one each time (hot in big jobs).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """The identity's canonical JSON: sorted keys, no spaces, UTF-8 kept as is (README, "How
    sending behaves")."""
    return _CANONICAL.encode(value)


def identity(api_base: str, body: dict[str, Any], variant: int) -> str:
    """A request's key: SHA-256 of the canonical JSON of {api, body, variant}."""
    document = {"api": api_base.rstrip("/"), "body": body, "variant": variant}
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def _identities(api_json: str, body: dict[str, Any], variants: int) -> list[str]:
    # Same bytes as `identity` (the three keys are already in sorted order), with the API base
    # encoded once per job and the body once for all its variants.
    head = '{"api":' + api_json + ',"body":' + canonical_json(body) + ',"variant":'
    return [hashlib.sha256(f"{head}{v}}}".encode()).hexdigest() for v in range(variants)]


# -- layers ---------------------------------------------------------------------------------


def split_path(field: str) -> tuple[str, ...]:
    """`options.duration` → ("options", "duration")."""
    return tuple(field.split("."))


def assignments(fields: dict[str, Any] | None) -> list[Assignment]:
    """The leaf assignments a mapping of fields makes. `options`, `vars` and `meta` objects
    are merged key by key."""
    out: list[Assignment] = []
    for name, value in (fields or {}).items():
        if name in ("matrix", "include", "exclude", "rows", "repeat"):
            continue
        path = split_path(name)
        if path in _MERGED_BY_KEY and isinstance(value, dict):
            out.extend((path + (k,), v) for k, v in value.items())
        else:
            out.append((path, value))
    return out


_MERGED_BY_KEY = {("options",), ("vars",), ("meta",)}


def apply(body: dict[str, Any], layer: list[Assignment]) -> None:
    for path, value in layer:
        target = body
        for part in path[:-1]:
            inner = target.get(part)
            if not isinstance(inner, dict):
                inner = target[part] = {}
            target = inner
        target[path[-1]] = value


def _copy(body: dict[str, Any]) -> dict[str, Any]:
    # Layers only replace values, never mutate lists, so two levels of copying suffice.
    return {k: dict(v) if isinstance(v, dict) else v for k, v in body.items()}


def request_body(
    merged: dict[str, Any], catalogue: Catalogue, images: dict[str, LocalImage] | None = None
) -> dict[str, Any]:
    """The provider's body for merged job fields: no nulls, no empty list of images, local
    images as `sha256:<hex>` (their URL once uploaded is put in at sending)."""
    urls = merged.get("images")
    if isinstance(urls, str):
        urls = [urls]
    if isinstance(urls, list):
        urls = tuple(_image(u, images) for u in urls)
    options = merged.get("options")
    if isinstance(options, dict):
        options = {k: v for k, v in options.items() if v is not None}
    return catalogue.body(Fields(merged.get("prompt"), merged.get("model"), urls or (), options))


def model_of(catalogue: Catalogue, model: Any) -> str | None:
    """The provider's id for a model a job file names (by name or id), as the ledger records it."""
    if not isinstance(model, str):
        return None
    found = catalogue.lookup(model)
    return found.id if found is not None else model


def _image(item: Any, images: dict[str, LocalImage] | None) -> Any:
    if images is not None and is_local(item):
        found = images.get(local_path(item))
        if found is not None:
            return found.ref
    return item


# -- entries --------------------------------------------------------------------------------


@dataclass
class _Axis:
    field: str
    values: Sequence[Any]  # a prompts file's are `job_files.Prompts`

    def layers(self) -> list[list[Assignment]]:
        """The assignments each value of the axis makes, by value index."""
        path = split_path(self.field)
        if self.field == "options":
            return [
                [(("options", k), v) for k, v in value.items()]
                if isinstance(value, dict)
                else [(path, value)]
                for value in self.values
            ]
        return [[(path, value)] for value in self.values]


def axes(job: Job, index: int) -> list[_Axis]:
    """The matrix axes of entry `index`, in the order written, prompt files read."""
    matrix = job.entries[index].get("matrix") or {}
    out = []
    for field, values in matrix.items():
        if isinstance(values, dict):  # {file: prompts.txt}
            values = job.prompt_files[index].prompts
        out.append(_Axis(field, values))
    return out


def _combination_layers(
    job: Job, index: int, product: bool = True
) -> Iterator[tuple[Origin, list[Assignment]]]:
    entry = job.entries[index]
    if "matrix" in entry:
        if product:
            # Each axis as (value index, its assignments) pairs, built once per entry.
            picks = [list(enumerate(axis.layers())) for axis in axes(job, index)]
            for combo in itertools.product(*picks):
                yield (
                    Origin(index, tuple(i for i, _ in combo)),
                    [a for _, layer in combo for a in layer],
                )
        for k, item in enumerate(entry.get("include") or []):
            yield Origin(index, include=k), assignments(item)
    elif "rows" in entry:
        table = job.tables[index]
        paths = [split_path(c) for c in table.columns]
        for r, (_, values) in enumerate(table.rows):
            layer = [(p, v) for p, v in zip(paths, values) if v is not Table.UNSET]
            yield Origin(index, row=r), layer
    else:
        yield Origin(index), []


def _excluded(
    merged: dict[str, Any], exclude: list[list[Assignment]], catalogue: Catalogue
) -> bool:
    return any(
        all(_same(_get(merged, path), value, catalogue, path) for path, value in item)
        for item in exclude
    )


def _get(merged: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = merged
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _same(actual: Any, wanted: Any, catalogue: Catalogue, path: tuple[str, ...]) -> bool:
    # Compare as the API will see them: a model by id, one image URL as a one-item list.
    if path == ("model",):
        return model_of(catalogue, actual) == model_of(catalogue, wanted)
    if isinstance(actual, str) and isinstance(wanted, str):
        return actual == wanted
    if isinstance(actual, str):
        actual = [actual]
    if isinstance(wanted, str):
        wanted = [wanted]
    return bool(actual == wanted)


def _base(job: Job, index: int) -> dict[str, Any]:
    """`defaults` with entry `index`'s own fields over them: what its combinations start from."""
    defaults = _defaults(job)
    base = _copy(defaults)
    apply(base, assignments(job.entries[index]))
    return base


def _defaults(job: Job) -> dict[str, Any]:
    """The defaults layer, built once per job (a job of 100,000 entries asks 100,000 times)."""
    if job.defaults_layer is None:
        job.defaults_layer = {}
        apply(job.defaults_layer, assignments(job.data.get("defaults")))
    return job.defaults_layer


def merged_requests(
    job: Job, index: int, *, product: bool = True
) -> Iterator[tuple[Origin, dict[str, Any]]]:
    """(origin, merged job fields) for every request of entry `index`, before repeat
    (`product` False: a matrix's `include` items only)."""
    entry = job.entries[index]
    base = _base(job, index)
    if "matrix" not in entry and "rows" not in entry:  # one request: `base` is already its own copy
        yield Origin(index), base
        return
    exclude = [assignments(item) for item in entry.get("exclude") or []]
    for origin, layer in _combination_layers(job, index, product):
        merged = _copy(base)
        apply(merged, layer)
        if origin.combination is not None and exclude and _excluded(merged, exclude, job.catalogue):
            continue
        yield origin, merged


def expand(job: Job, api_base: str | None = None) -> Iterator[Request]:
    """Every request of the job, in file order, duplicates included (see `ValidatedJob`).

    A prompt with `{{ placeholders }}` is rendered with the request's `vars`: the rendered
    prompt is what is sent and what the identity is made of. A template that cannot be filled
    is left as written, with the reason in `Request.problem`, for validation to report.
    `api_base`: where the requests go (default: the job's provider's own)."""
    for request, _ in sourced(job, api_base):
        yield request


def sourced(job: Job, api_base: str | None = None) -> Iterator[tuple[Request, dict[str, Any]]]:
    """`expand`, each request with the job fields it was made from (the merged layers, as
    written: the prompt's template, vars, the id's template, local image paths). Promote
    writes a new job from these. The fields are shared by a request's variants: don't change them."""
    catalogue, provider = job.catalogue, job.provider_name
    if api_base is None:
        api_base = job.provider.default_base_url
    api_json = canonical_json(api_base.rstrip("/"))
    for index in range(len(job.entries)):
        if index in job.set_aside:
            continue
        repeat = job.repeat_for(index)
        prompts = _prompt_axis(job, index)
        if prompts is not None:
            yield from _prompt_matrix(job, index, prompts, api_json, repeat, catalogue)
        for origin, merged in merged_requests(job, index, product=prompts is None):
            if (
                "vars" not in merged
                and "id" not in merged
                and "meta" not in merged
                and not prompt_templates.is_template(merged.get("prompt"))
            ):
                # The common case, kept cheap: nothing to render, name or keep.
                body = request_body(merged, catalogue, job.images)
                model = model_of(catalogue, merged.get("model"))
                for variant, key in enumerate(_identities(api_json, body, repeat)):
                    yield (
                        Request(key, variant, body, origin, model=model, provider=provider),
                        merged,
                    )
                continue
            values = _present(merged.get("vars"))
            rendered, problem, used = _render_prompt(merged, values)
            body = request_body(
                merged if rendered is None else {**merged, "prompt": rendered},
                catalogue,
                job.images,
            )
            model = model_of(catalogue, merged.get("model"))
            label_source = merged.get("id")
            label_names = (
                prompt_templates.names(str(label_source))
                if prompt_templates.is_template(label_source)
                else frozenset()
            )
            used |= label_names
            meta = _present(merged.get("meta")) or None
            unused = frozenset(values) - used
            # An id that does not say `{{ variant }}` names the first variant; the others get
            # `-v1`, `-v2`...: without it, every repeat of a row would share one file name.
            numbered = label_source is not None and "variant" not in label_names
            for variant, key in enumerate(_identities(api_json, body, repeat)):
                label, label_problem = _label(label_source, values, catalogue, model, variant)
                if numbered and variant and label is not None:
                    label = f"{label}-v{variant}"
                yield (
                    Request(
                        key,
                        variant,
                        body,
                        origin,
                        label,
                        meta,
                        problem or label_problem,
                        unused,
                        model=model,
                        provider=provider,
                    ),
                    merged,
                )


# -- the common big job, fast -----------------------------------------------------------------
#
# A big job is nearly always a matrix with one long prompt axis (a prompts file) crossed with a
# few short ones. Then everything but the prompt depends only on the other axes: the rest of
# each body, its canonical JSON and its check are made once per combination of those, and a
# request costs one string encoding and one hash per variant.


def _prompt_axis(job: Job, index: int) -> int | None:
    """The position of entry `index`'s prompt axis when the fast path makes its matrix's
    requests the same as the general one would; None otherwise."""
    entry = job.entries[index]
    if "matrix" not in entry or entry.get("exclude"):
        return None
    matrix = axes(job, index)
    found = [i for i, axis in enumerate(matrix) if axis.field == "prompt"]
    if len(found) != 1:
        return None
    base = _base(job, index)
    if "vars" in base or "id" in base or "meta" in base:
        return None
    for i, axis in enumerate(matrix):
        if i == found[0]:
            if not all(
                isinstance(p, str) and not prompt_templates.is_template(p) for p in axis.values
            ):
                return None
        elif split_path(axis.field)[0] in ("vars", "id", "meta", "prompt"):
            return None
    return found[0]


def _prompt_matrix(
    job: Job, index: int, at: int, api_json: str, repeat: int, catalogue: Catalogue
) -> Iterator[tuple[Request, dict[str, Any]]]:
    """The matrix's requests in the order `itertools.product` gives (as `merged_requests`),
    each with its merged fields; `at` is the prompt axis.

    A provider whose body holds the prompt as its `prompt` field, after every other field in
    sorted order, gets the fast way; any other, the general one (each body made whole)."""
    base = _base(job, index)
    provider = job.provider_name
    expansion = next(_EXPANSIONS)
    all_axes = axes(job, index)
    prompts = all_axes[at].values
    others = [list(enumerate(axis.layers())) for i, axis in enumerate(all_axes) if i != at]
    encode = (
        json.encoder.encode_basestring
    )  # the canonical encoder's own string encoding (ensure_ascii=False)
    Rest = tuple[dict[str, Any], dict[str, Any], str, tuple[int, ...], str | None]
    rests: dict[tuple[int, ...], Rest] = {}
    for combo in _product([len(axis.values) for axis in all_axes], at):
        others_at = combo[:at] + combo[at + 1 :]
        rest = rests.get(others_at)
        if rest is None:
            merged_rest = _copy(base)
            merged_rest.pop("prompt", None)
            for axis, i in zip(others, others_at):
                apply(merged_rest, axis[i][1])
            body_rest = request_body(merged_rest, catalogue, job.images)
            # Canonical JSON sorts keys, and "prompt" sorts after every other body field.
            # The identity document as `_identities` spells it, cut where the prompt goes: kept
            # inline, as a request here costs one encoding and one hash (a shared helper cost
            # ~12% of a million-request plan).
            text = canonical_json(body_rest)[:-1]
            head = (
                '{"api":' + api_json + ',"body":' + text + ("," if body_rest else "") + '"prompt":'
            )
            if not _prompt_last(merged_rest, body_rest, catalogue, job):
                head = ""  # this provider's body is made whole, request by request
            model = model_of(catalogue, merged_rest.get("model"))
            shape_of = (expansion, index, *others_at)
            rest = rests[others_at] = (merged_rest, body_rest, head, shape_of, model)
        merged_rest, body_rest, head, shape, model = rest
        prompt = prompts[combo[at]]
        merged = dict(merged_rest, prompt=prompt)
        origin = Origin(index, combo)
        if not head:
            body = request_body(merged, catalogue, job.images)
            for variant, key in enumerate(_identities(api_json, body, repeat)):
                yield (
                    Request(
                        key, variant, body, origin, shape=shape, model=model, provider=provider
                    ),
                    merged,
                )
            continue
        body = {"prompt": prompt, **body_rest}
        tail = head + encode(prompt) + '},"variant":'
        for variant in range(repeat):
            key = hashlib.sha256(f"{tail}{variant}}}".encode()).hexdigest()
            yield (
                Request(key, variant, body, origin, shape=shape, model=model, provider=provider),
                merged,
            )


_EXPANSIONS = itertools.count()  # each prompt matrix expanded: the first item of its shapes


def _prompt_last(
    merged_rest: dict[str, Any], body_rest: dict[str, Any], catalogue: Catalogue, job: Job
) -> bool:
    """Whether the provider's body for these fields is `body_rest` with the prompt added as
    its `prompt` field, which sorts after every other: then the fast way spells it right."""
    probe = request_body(dict(merged_rest, prompt="\x00"), catalogue, job.images)
    return probe == {**body_rest, "prompt": "\x00"} and all(k < "prompt" for k in body_rest)


def _product(sizes: list[int], big: int) -> Iterator[tuple[int, ...]]:
    """The index tuples `itertools.product(*map(range, sizes))` gives, in its order, without
    holding axis `big`'s indices in memory as product would (a million ints, ~40 MB)."""
    before = list(itertools.product(*map(range, sizes[:big])))
    after = list(itertools.product(*map(range, sizes[big + 1 :])))
    for head in before:
        for i in range(sizes[big]):
            for tail in after:
                yield (*head, i, *tail)


def _present(mapping: Any) -> dict[str, Any]:
    """A merged `vars` or `meta` without the names a null deleted."""
    return {k: v for k, v in mapping.items() if v is not None} if isinstance(mapping, dict) else {}


def _render_prompt(
    merged: dict[str, Any], values: dict[str, Any]
) -> tuple[str | None, tuple[str, str] | None, frozenset[str]]:
    """(the rendered prompt or None, the problem filling it, the var names it reads)."""
    prompt = merged.get("prompt")
    if not isinstance(prompt, str) or not prompt_templates.is_template(prompt):
        return None, None, frozenset()
    used = prompt_templates.names(prompt)
    try:
        return prompt_templates.render(prompt, values), None, used
    except TemplateProblem as e:
        return None, ("prompt", str(e)), used


def _label(
    source: Any, values: dict[str, Any], catalogue: Catalogue, model: str | None, variant: int
) -> tuple[str | None, tuple[str, str] | None]:
    """The request's `id`: a template sees each var by name, `model` (its name) and `variant`."""
    if source is None:
        return None, None
    if not prompt_templates.is_template(source):
        return str(source), None
    try:
        return prompt_templates.render(
            str(source),
            {**values, "model": model_name(catalogue, model), "variant": variant},
        ), None
    except TemplateProblem as e:
        return None, ("id", str(e))


def model_name(catalogue: Catalogue, model: str | None) -> str:
    """`wan2.2-pro`: the name people know a model by (its id if the catalogue has none)."""
    found = catalogue.lookup(model) if model is not None else None
    return found.name if found is not None else str(model)


def label_file_stem(label: str) -> str:
    """A label as a file name (without `.mp4`): letters, digits, `.`, `_`, `-` kept, any run
    of anything else one `-`. Two ids with the same stem, in any letter case, are one file on
    some disks: validation refuses them."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip(".-")[:120]
    return name or "video"


def upper_bound(job: Job) -> int:
    """How many requests the job stands for before `exclude` and duplicates: cheap to compute."""
    total = 0
    for index, entry in enumerate(job.entries):
        if index in job.set_aside:
            continue
        if "matrix" in entry:
            count = math.prod(len(axis.values) for axis in axes(job, index)) + len(
                entry.get("include") or []
            )
        elif "rows" in entry:
            count = len(job.tables[index].rows)
        else:
            count = 1
        total += count * job.repeat_for(index)
    return total


def unused_excludes(job: Job, index: int) -> list[int]:
    """Indexes of the `exclude` items of entry `index` that match no combination."""
    entry = job.entries[index]
    items = [assignments(item) for item in entry.get("exclude") or []]
    if not items:
        return []
    base = _base(job, index)
    used: set[int] = set()
    for origin, layer in _combination_layers(job, index):
        if origin.combination is None:
            continue
        merged = _copy(base)
        apply(merged, layer)
        used.update(k for k, item in enumerate(items) if _excluded(merged, [item], job.catalogue))
        if len(used) == len(items):
            break
    return [k for k in range(len(items)) if k not in used]
