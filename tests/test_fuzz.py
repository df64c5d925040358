"""Input fuzzing: batchgen never crashes. A job file is either accepted (and every expanded
request then passes request.schema.json) or refused with located problems; a server answer,
however malformed, never marks a request submitted without a task id."""

from __future__ import annotations

import json
import shutil
import string

import httpx
import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from helpers import REPO

from batchgen import schemas
from batchgen.api import Api, Kind, classify
from batchgen.errors import JobError
from batchgen.validate import validate_job

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
REQUEST = jsonschema.Draft202012Validator(schemas.schema("request"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A copy of jobs/ (with its prompt file and CSV) to write fuzzed job files into."""
    target = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(REPO / "jobs", target, dirs_exist_ok=True)
    return target


def judge(path) -> None:
    """Accepted with valid requests, or refused with every problem located; nothing else."""
    try:
        expansion = validate_job(str(path))
    except JobError as e:
        assert e.problems
        for problem in e.problems:
            assert problem.file and problem.line is not None and problem.message, problem
        return
    for request in expansion.requests():
        assert REQUEST.is_valid(request.body), request.body
        assert len(request.key) == 64


EXAMPLE = (REPO / "jobs" / "example.yaml").read_text()
SOURCES = [EXAMPLE] + [p.read_text(errors="replace") for p in sorted((REPO / "tests" / "broken").glob("*.yaml"))]
NOISE = st.text(alphabet=":{}[]-#\"'\t\n!&*|>%@,?0123456789 abcnull~", min_size=1, max_size=8)


@st.composite
def mutated_yaml(draw) -> str:
    text = draw(st.sampled_from(SOURCES))
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "duplicate-line", "swap-lines"]))
        if kind == "insert":
            text = text[:at] + draw(NOISE) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 12)) :]
        else:
            lines = text.splitlines(keepends=True)
            i = draw(st.integers(0, len(lines) - 1))
            if kind == "duplicate-line":
                lines.insert(i, lines[i])
            else:
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            text = "".join(lines)
    return text


@FUZZ
@given(text=mutated_yaml())
def test_mutated_yaml_never_crashes(folder, text):
    path = folder / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8")
    judge(path)


MODELS = st.sampled_from(["wan2.2-lite", "wan2.2-pro", "wan2.2-fast", "2-8", "2-9", "2-10"])
OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "prompt_optimization": st.one_of(st.booleans(), st.none()),
        "aspect_ratio": st.sampled_from(["16:9", "9:16", None]),
        "resolution": st.sampled_from(["480p", "720p", None]),
        "duration": st.sampled_from([5, 8, None]),
    },
)
URLS = st.one_of(st.none(), st.just("https://e.com/a.jpg"), st.lists(st.just("https://e.com/b.jpg"), min_size=0, max_size=3))


@st.composite
def rule_breaking_jobs(draw) -> dict:
    fields = lambda: st.fixed_dictionaries({}, optional={"model": MODELS, "image_urls": URLS, "options": OPTIONS, "prompt": st.just("a cat")})
    entry = draw(fields())
    entry.setdefault("prompt", "a cat")
    matrix_entry = {"matrix": {"model": draw(st.lists(MODELS, min_size=1, max_size=3, unique=True)), "options.duration": [5, 8, None]}}
    matrix_entry.update(draw(fields()))
    return {"version": 1, "defaults": draw(fields()), "requests": [entry, matrix_entry]}


@FUZZ
@given(job=rule_breaking_jobs())
def test_schema_valid_rule_breaking_jobs_are_accepted_only_when_every_request_is_valid(folder, job):
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    judge(path)


CELL = st.one_of(
    st.text(alphabet=string.printable + "éß€\u2028", max_size=20),
    st.sampled_from(["", "null", "5", "8", "true", "maybe", "wan2.2-lite", "2-10", "720p", "9:16", "https://e.com/x.jpg a b"]),
)
HEADERS = st.lists(
    st.sampled_from(["prompt", "model", "image_urls", "options.duration", "options.resolution", "options.aspect_ratio",
                     "options.prompt_optimization", "option.duration", "", "prompt"]),
    min_size=1,
    max_size=6,
)


@FUZZ
@given(header=HEADERS, rows=st.lists(st.lists(CELL, max_size=7), max_size=5), bom=st.booleans(), nul=st.booleans())
def test_hostile_csv_never_crashes(folder, header, rows, bom, nul):
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    text = ("\ufeff" if bom else "") + buffer.getvalue() + ("\x00" if nul else "")
    (folder / "hostile.csv").write_text(text, encoding="utf-8")
    job = folder / "csvjob.yaml"
    job.write_text(
        "version: 1\ndefaults:\n  model: wan2.2-pro\n  options: {prompt_optimization: true, aspect_ratio: '16:9', resolution: 480p, duration: 5}\n"
        "requests:\n  - rows: {file: hostile.csv}\n",
        encoding="utf-8",
    )
    judge(job)


# -- malformed server answers -------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "code": st.one_of(st.sampled_from([0, 1, 2, "1", None, 1.0]), st.integers()),
        "message": json_values,
        "data": st.one_of(json_values, st.fixed_dictionaries({}, optional={"task_id": json_values, "estimated_time": json_values, "status": json_values, "result_urls": json_values})),
    },
)
answers = st.one_of(envelopes.map(lambda v: json.dumps(v).encode()), json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64))
statuses = st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 418, 429, 500, 502, 503, 504])


@settings(max_examples=400, deadline=None)
@given(status=statuses, raw=answers, retry_after=st.one_of(st.none(), st.text(max_size=30)))
def test_no_answer_crashes_the_classifier_or_passes_for_a_success_without_task_id(status, raw, retry_after):
    for creating in (True, False):
        outcome = classify(status, retry_after, raw, creating=creating)
        if outcome.kind is Kind.OK and creating:
            assert isinstance(outcome.task_id, str) and outcome.task_id.strip()
        if creating and outcome.kind is Kind.OK:
            assert status < 300


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(st.tuples(statuses, answers), min_size=1, max_size=12))
def test_a_submission_against_garbage_answers_records_nothing_false(tmp_path_factory, script):
    from batchgen.expand import Origin, Request
    from batchgen.ledger import Ledger
    from batchgen.limits import Backoff
    from batchgen.submit import RunSettings, Submission

    answers_left = list(script)

    def handler(request):
        status, raw = answers_left.pop(0) if answers_left else (200, b"not json")
        return httpx.Response(status, content=raw, headers={"Retry-After": "0"})

    folder = tmp_path_factory.mktemp("garbage")
    requests = [Request(f"{i:064x}", 0, {"prompt": f"p{i}", "model_id": "2-9", "options": {}}, Origin(0)) for i in range(6)]
    with Ledger(folder / "ledger.db") as ledger, Api("https://api.pixwith.ai", "k", transport=httpx.MockTransport(handler)) as api:
        run_id = ledger.start_run("j", "j.yaml", "https://api.pixwith.ai", {})
        settings_ = RunSettings(rpm=None, concurrency=2, backoff=Backoff(base=0.0, max_attempts=2), max_identical_errors=1000)
        Submission(ledger, api, settings_, job="j", api_base="https://api.pixwith.ai", run_id=run_id).run(requests)
        rows = list(ledger.rows())
    for row in rows:
        assert row["state"] in ("submitted", "rejected", "failed", "in_doubt"), row["state"]
        if row["state"] == "submitted":
            assert isinstance(row["task_id"], str) and row["task_id"].strip()
