"""Input fuzzing: batchgen never crashes. A job file is either accepted (and every expanded
request then passes request.schema.json) or refused with located problems; a server answer,
however malformed, never marks a request submitted without a task id."""

from __future__ import annotations

import json
import os
import shutil
import string
import sys

import httpx
import jsonschema
import pytest
import yaml
from helpers import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.errors import JobError
from batchgen.jobs.validate import validate_job
from batchgen.providers import Kind
from batchgen.providers.pixwith import models
from batchgen.providers.pixwith.answers import classify
from batchgen.providers.pixwith.catalogue import _checkable as checkable_body
from batchgen.providers.pixwith.client import PixwithApi

FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
REQUEST = jsonschema.Draft202012Validator(models.load("request.schema.json"))


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
        assert REQUEST.is_valid(checkable_body(request.body)), request.body
        assert len(request.key) == 64


EXAMPLE = (REPO / "jobs" / "example.yaml").read_text()
SOURCES = [EXAMPLE] + [
    p.read_text(errors="replace") for p in sorted((REPO / "tests" / "broken").glob("*.yaml"))
]
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
URLS = st.one_of(
    st.none(),
    st.just("https://e.com/a.jpg"),
    st.lists(st.just("https://e.com/b.jpg"), min_size=0, max_size=3),
)


@st.composite
def rule_breaking_jobs(draw) -> dict:
    fields = st.fixed_dictionaries(
        {},
        optional={
            "model": MODELS,
            "image_urls": URLS,
            "options": OPTIONS,
            "prompt": st.just("a cat"),
        },
    )
    entry = draw(fields)
    entry.setdefault("prompt", "a cat")
    matrix_entry = {
        "matrix": {
            "model": draw(st.lists(MODELS, min_size=1, max_size=3, unique=True)),
            "options.duration": [5, 8, None],
        }
    }
    matrix_entry.update(draw(fields))
    return {"version": 1, "defaults": draw(fields), "requests": [entry, matrix_entry]}


@FUZZ
@given(job=rule_breaking_jobs())
def test_schema_valid_rule_breaking_jobs_are_accepted_only_when_every_request_is_valid(folder, job):
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False), encoding="utf-8")
    judge(path)


CELL = st.one_of(
    st.text(alphabet=string.printable + "éß€\u2028", max_size=20),
    st.sampled_from(
        [
            "",
            "null",
            "5",
            "8",
            "true",
            "maybe",
            "wan2.2-lite",
            "2-10",
            "720p",
            "9:16",
            "https://e.com/x.jpg a b",
        ]
    ),
)
HEADERS = st.lists(
    st.sampled_from(
        [
            "prompt",
            "model",
            "image_urls",
            "options.duration",
            "options.resolution",
            "options.aspect_ratio",
            "options.prompt_optimization",
            "option.duration",
            "",
            "prompt",
        ]
    ),
    min_size=1,
    max_size=6,
)


@FUZZ
@given(
    header=HEADERS,
    rows=st.lists(st.lists(CELL, max_size=7), max_size=5),
    bom=st.booleans(),
    nul=st.booleans(),
)
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


# -- malformed server answers ---------------------------------------------------------------------

json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "code": st.one_of(st.sampled_from([0, 1, 2, "1", None, 1.0]), st.integers()),
        "message": json_values,
        "data": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "task_id": json_values,
                    "estimated_time": json_values,
                    "status": json_values,
                    "result_urls": json_values,
                },
            ),
        ),
    },
)
answers = st.one_of(
    envelopes.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)
statuses = st.sampled_from([200, 201, 204, 301, 400, 401, 403, 404, 418, 429, 500, 502, 503, 504])


@settings(max_examples=400, deadline=None)
@given(status=statuses, raw=answers, retry_after=st.one_of(st.none(), st.text(max_size=30)))
def test_no_answer_crashes_the_classifier_or_passes_for_a_success_without_task_id(
    status, raw, retry_after
):
    for creating in (True, False):
        outcome = classify(status, retry_after, raw, creating=creating)
        if outcome.kind is Kind.OK and creating:
            assert isinstance(outcome.task_id, str) and outcome.task_id.strip()
        if creating and outcome.kind is Kind.OK:
            assert status < 300


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(script=st.lists(st.tuples(statuses, answers), min_size=1, max_size=12))
def test_a_submission_against_garbage_answers_records_nothing_false(tmp_path_factory, script):
    from batchgen.jobs.expand import Origin, Request
    from batchgen.ledger import Ledger
    from batchgen.sending.limits import Backoff
    from batchgen.sending.run_report import RunSettings
    from batchgen.sending.submit import Submission

    answers_left = list(script)

    def handler(request):
        status, raw = answers_left.pop(0) if answers_left else (200, b"not json")
        return httpx.Response(status, content=raw, headers={"Retry-After": "0"})

    folder = tmp_path_factory.mktemp("garbage")
    requests = [
        Request(f"{i:064x}", 0, {"prompt": f"p{i}", "model_id": "2-9", "options": {}}, Origin(0))
        for i in range(6)
    ]
    with (
        Ledger(folder / "ledger.db") as ledger,
        PixwithApi("https://api.pixwith.ai", "k", transport=httpx.MockTransport(handler)) as api,
    ):
        run_id = ledger.runs.start("j", "j.yaml", "https://api.pixwith.ai", {})
        settings_ = RunSettings(
            rpm=None,
            concurrency=2,
            backoff=Backoff(base=0.0, max_attempts=2),
            max_identical_errors=1000,
        )
        Submission(
            ledger, api, settings_, job="j", api_base="https://api.pixwith.ai", run_id=run_id
        ).run(requests)
        rows = list(ledger.tasks.rows())
    for row in rows:
        assert row["state"] in ("submitted", "rejected", "failed", "in_doubt"), row["state"]
        if row["state"] == "submitted":
            assert isinstance(row["task_id"], str) and row["task_id"].strip()


# -- hostile files: exit 2, located, in seconds and bounded memory --------------------------------

PRO = "defaults:\n  model: wan2.2-pro\n  options: {prompt_optimization: true, aspect_ratio: '16:9', resolution: 480p, duration: 5}\n"
MEMORY_LIMIT = 1 << 30  # address space for the whole process, interpreter included
# Seconds before a case counts as hung: each takes under 2 on a quiet machine, but the bound
# that matters is the memory cap (limit_memory); this only stops a hang, so it is generous
# for a loaded 2-core machine.
TIME_LIMIT = 120


def alias_bomb() -> str:
    levels = "".join(f"    l{i + 1}: &l{i + 1} [{', '.join([f'*l{i}'] * 10)}]\n" for i in range(8))
    return (
        "version: 1\ndefaults:\n  model: wan2.2-pro\n  options:\n    l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
        + levels
        + "requests: [{prompt: a}]\n"
    )


def hostile_cases(folder):
    """(name, batchgen arguments, words the message must hold) for each hostile input."""

    def write(name: str, text: str | bytes) -> str:
        path = folder / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    os.mkfifo(folder / "fifo.yaml")
    os.mkfifo(folder / "fifo.txt")
    os.symlink("/dev/zero", folder / "zero.txt")
    (folder / "inner").mkdir()
    os.symlink(folder / "fifo.txt", folder / "inner" / "link-to-fifo.txt")
    ok = write("ok.yaml", "version: 1\n" + PRO + "requests:\n  - prompt: a\n")
    return [
        ("FIFO as job file", ["validate", str(folder / "fifo.yaml")], "FIFO"),
        (
            "FIFO as prompts file",
            [
                "validate",
                write(
                    "fp.yaml",
                    "version: 1\n" + PRO + "requests:\n  - matrix: {prompt: {file: fifo.txt}}\n",
                ),
            ],
            "FIFO",
        ),
        (
            "symlink to a FIFO",
            [
                "validate",
                write(
                    "lf.yaml",
                    "version: 1\n"
                    + PRO
                    + "requests:\n  - matrix: {prompt: {file: inner/link-to-fifo.txt}}\n",
                ),
            ],
            "FIFO",
        ),
        (
            "symlink to /dev/zero as prompts",
            [
                "validate",
                write(
                    "zp.yaml",
                    "version: 1\n" + PRO + "requests:\n  - matrix: {prompt: {file: zero.txt}}\n",
                ),
            ],
            "zero.txt",
        ),
        (
            "symlink to /dev/zero as CSV",
            [
                "validate",
                write("zc.yaml", "version: 1\n" + PRO + "requests:\n  - rows: {file: zero.txt}\n"),
            ],
            "zero.txt",
        ),
        (
            "prompts outside the project",
            [
                "validate",
                write(
                    "out.yaml",
                    "version: 1\n"
                    + PRO
                    + "requests:\n  - matrix: {prompt: {file: ../../../../etc/passwd}}\n",
                ),
            ],
            "outside",
        ),
        (
            "flow nesting 5,000 deep",
            [
                "validate",
                write("deep.yaml", "version: 1\nrequests: " + "[" * 5000 + "]" * 5000 + "\n"),
            ],
            "nest",
        ),
        (
            "block nesting 3,000 deep",
            [
                "validate",
                write(
                    "deepb.yaml",
                    "version: 1\nrequests:\n" + "".join("  " * i + "- \n" for i in range(1, 3000)),
                ),
            ],
            "nested deeper",
        ),
        (
            "5,000-digit integer",
            [
                "validate",
                write(
                    "int.yaml",
                    "version: 1\nlimits: {rpm: " + "9" * 5000 + "}\nrequests: [{prompt: a}]\n",
                ),
            ],
            "too large",
        ),
        (
            "NUL byte",
            ["validate", write("nul.yaml", b"version: 1\nrequests:\n  - prompt: a\x00b\n")],
            "not allowed",
        ),
        (
            "NUL in a prompts file's name",
            [
                "validate",
                write(
                    "nulname.yaml",
                    "version: 1\n" + PRO + 'requests:\n  - matrix: {prompt: {file: "a\\0b.txt"}}\n',
                ),
            ],
            "NUL byte",
        ),
        (
            "NUL in an image's name",
            [
                "validate",
                write(
                    "nulimage.yaml",
                    "version: 1\n" + PRO + 'requests:\n  - {prompt: a, image_urls: "cat\\0.png"}\n',
                ),
            ],
            "NUL byte",
        ),
        (
            "lone surrogate escape",
            [
                "validate",
                write("sur.yaml", "version: 1\n" + PRO + 'requests:\n  - prompt: "a\\ud800b"\n'),
            ],
            "nicode",
        ),
        (
            "alias bomb under defaults.options",
            ["validate", write("bomb.yaml", alias_bomb())],
            "alias",
        ),
        (
            "500,000 entries",
            [
                "validate",
                write(
                    "big.yaml",
                    "version: 1\n"
                    + PRO
                    + "requests:\n"
                    + "".join(f"- {{prompt: p{i}}}\n" for i in range(500_000)),
                ),
            ],
            "values",
        ),
        (
            "--api-key-file /dev/zero",
            ["run", ok, "--yes", "--api-key-file", "/dev/zero"],
            "character device",
        ),
        (
            "--api-key-file a binary",
            ["run", ok, "--yes", "--api-key-file", sys.executable],
            "--api-key-file",
        ),
        ("--read-timeout nan", ["run", ok, "--yes", "--read-timeout", "nan"], "finite"),
        (
            "--base-url http://[::1",
            ["run", ok, "--yes", "--base-url", "http://[::1"],
            "not a valid URL",
        ),
        ("sandbox --port 99999", ["sandbox", "--port", "99999"], "99999"),
        ("--out /dev/null", ["download", ok, "--out", "/dev/null"], "/dev/null"),
    ]


@pytest.mark.slow
def test_hostile_files_are_refused_in_seconds_and_bounded_memory(tmp_path):
    import resource
    import subprocess
    import time

    (tmp_path / ".git").mkdir()  # the project
    from batchgen.ledger import Ledger

    Ledger(tmp_path / "batchgen.db").close()  # so that download gets as far as --out

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = {
        **os.environ,
        "PIXWITH_API_KEY": "key_00000000000000000000000000000000",
        "PIXWITH_BASE_URL": "http://127.0.0.1:9",
    }
    env.pop("BATCHGEN_LEDGER", None)
    failures = []
    for name, args, words in hostile_cases(tmp_path):
        started = time.monotonic()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "batchgen", *args],
                capture_output=True,
                text=True,
                timeout=TIME_LIMIT,
                preexec_fn=limit_memory,
                cwd=tmp_path,
                env=env,
            )
        except subprocess.TimeoutExpired:
            failures.append(f"{name}: still running after {TIME_LIMIT} s")
            continue
        took = time.monotonic() - started
        said = result.stdout + result.stderr
        if result.returncode != 2 or "Traceback" in said or words not in said:
            failures.append(f"{name}: exit {result.returncode} in {took:.1f} s: {said[-300:]}")
    assert not failures, "\n".join(failures)


def test_every_hostile_job_file_names_its_line():
    # The located ones above say file:line:column; this pins it for the parser's refusals.
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "deep.yaml"
        path.write_text(
            "version: 1\nrequests:\n" + "".join("  " * i + "- \n" for i in range(1, 200))
        )
        result = subprocess.run(
            [sys.executable, "-m", "batchgen", "validate", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2 and f"{path}:66:" in result.stderr
