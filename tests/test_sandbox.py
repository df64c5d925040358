"""The sandbox: the API's endpoints and rules over loopback HTTP, and every fault switch."""

from __future__ import annotations

import contextlib
import email.utils
import os
import subprocess
import sys
import time

import httpx
import jsonschema
import pytest
from helpers import job_text, prompts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.ledger import Ledger
from batchgen.providers.pixwith import models as pixwith_models
from batchgen.providers.pixwith.sandbox import TEST_KEY, SandboxConfig, parse_task_id, running

HEADERS = {"Content-Type": "application/json", "Api-Key": TEST_KEY}

# The two examples of the provider's docs.
PRO_TEXT_TO_VIDEO = {
    "prompt": "A cat walking in the garden",
    "model_id": "2-9",
    "options": {
        "prompt_optimization": True,
        "aspect_ratio": "16:9",
        "resolution": "480p",
        "duration": 5,
    },
}
FAST_WITH_IMAGE = {
    "prompt": "The cat turns to look at the camera",
    "model_id": "2-10",
    "image_urls": ["https://cdn.pixwith.ai/images/cf0ddb5ad6a0f0c85ab4d1dceb9fd89c_0.jpeg"],
    "options": {
        "prompt_optimization": True,
        "aspect_ratio": "9:16",
        "resolution": "720p",
        "duration": 5,
    },
}
LITE = {
    "prompt": "The cat blinks",
    "model_id": "2-8",
    "image_urls": ["https://example.com/cat.jpg"],
    "options": {"prompt_optimization": False, "aspect_ratio": "16:9", "resolution": "720p"},
}


@pytest.fixture
def serve():
    """Start a sandbox with the given settings; returns (sandbox, a client pointed at it)."""
    with httpx.Client(headers=HEADERS, timeout=5) as client, contextlib.ExitStack() as stack:

        def start(**settings):
            sandbox = stack.enter_context(running(SandboxConfig(**settings)))
            client.base_url = sandbox.base_url
            return sandbox, client

        yield start


def create(client, body, **kwargs):
    return client.post("/api/task/create", json=body, **kwargs)


def get(client, task_id):
    return client.post("/api/task/get", json={"task_id": task_id})


def test_the_documented_examples_create_tasks(serve):
    sandbox, client = serve()
    for body in (PRO_TEXT_TO_VIDEO, FAST_WITH_IMAGE, LITE):
        answer = create(client, body).json()
        assert answer["code"] == 1 and answer["message"] == "success"
        assert parse_task_id(answer["data"]["task_id"]) is not None
        assert (
            isinstance(answer["data"]["estimated_time"], int)
            and answer["data"]["estimated_time"] > 0
        )
    assert list(sandbox.created_per_body().values()) == [1, 1, 1]


BROKEN_RULES = [
    ({**LITE, "options": {**LITE["options"], "duration": 5}}, "options.duration", "fixed duration"),
    (
        {**LITE, "options": {**LITE["options"], "resolution": "480p"}},
        "options.resolution",
        "only renders 720p",
    ),
    ({k: v for k, v in LITE.items() if k != "image_urls"}, "image_urls", "exactly 1 image"),
    (
        {**LITE, "image_urls": ["https://e.com/a.jpg", "https://e.com/b.jpg"]},
        "image_urls",
        "exactly 1 image",
    ),
    (
        {**PRO_TEXT_TO_VIDEO, "options": {**PRO_TEXT_TO_VIDEO["options"], "duration": None}},
        "options.duration",
        "",
    ),
    (
        {
            **PRO_TEXT_TO_VIDEO,
            "options": {k: v for k, v in PRO_TEXT_TO_VIDEO["options"].items() if k != "duration"},
        },
        "options.duration",
        "5 or 8",
    ),
    ({**FAST_WITH_IMAGE, "image_urls": ["https://e.com/a.jpg"] * 3}, "image_urls", "1 or 2"),
    (
        {**PRO_TEXT_TO_VIDEO, "options": {**PRO_TEXT_TO_VIDEO["options"], "aspect_ratio": "4:3"}},
        "options.aspect_ratio",
        "16:9",
    ),
    (
        {**PRO_TEXT_TO_VIDEO, "options": {**PRO_TEXT_TO_VIDEO["options"], "duration": 6}},
        "options.duration",
        "5 or 8",
    ),
    ({**PRO_TEXT_TO_VIDEO, "model_id": "2-11"}, "model_id", "2-8"),
    ({**PRO_TEXT_TO_VIDEO, "seed": 3}, "seed", "not a known field"),
    ({k: v for k, v in PRO_TEXT_TO_VIDEO.items() if k != "prompt"}, "prompt", "required"),
    (
        {
            **PRO_TEXT_TO_VIDEO,
            "options": {
                k: v for k, v in PRO_TEXT_TO_VIDEO["options"].items() if k != "prompt_optimization"
            },
        },
        "options.prompt_optimization",
        "required",
    ),
]


@pytest.mark.parametrize("body, field, words", BROKEN_RULES)
def test_each_broken_rule_gets_code_0_naming_the_field(serve, body, field, words):
    sandbox, client = serve()
    answer = create(client, body).json()
    assert answer["code"] == 0
    assert f"{field}:" in answer["message"] and words in answer["message"]
    assert sandbox.created() == []


def test_a_task_moves_from_processing_to_completed_and_its_video_downloads(serve):
    sandbox, client = serve(time_scale=0.002)  # 240 s → 0.48 s
    task_id = create(client, PRO_TEXT_TO_VIDEO).json()["data"]["task_id"]
    first = get(client, task_id).json()["data"]
    assert first["status"] == 1 and first["result_urls"] == []
    time.sleep(0.6)
    done = get(client, task_id).json()["data"]
    assert done["status"] == 2
    (url,) = done["result_urls"]
    video = httpx.get(url)
    assert video.status_code == 200 and video.headers["Content-Type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"  # an MP4 file's first box


def test_a_fraction_of_tasks_fail(serve):
    sandbox, client = serve(time_scale=0, fail_fraction=1.0)
    task_id = create(client, PRO_TEXT_TO_VIDEO).json()["data"]["task_id"]
    data = get(client, task_id).json()["data"]
    assert data["status"] == 3 and data["result_urls"] == []


def test_a_later_sandbox_answers_for_tasks_an_earlier_one_created(serve):
    _, client = serve(time_scale=0)
    task_id = create(client, PRO_TEXT_TO_VIDEO).json()["data"]["task_id"]
    with running(SandboxConfig()) as other:
        answer = httpx.post(
            f"{other.base_url}/api/task/get", json={"task_id": task_id}, headers=HEADERS
        ).json()
    assert answer["data"]["status"] == 2


def test_unknown_and_forged_task_ids_are_not_found(serve):
    _, client = serve()
    task_id = create(client, PRO_TEXT_TO_VIDEO).json()["data"]["task_id"]
    forged = task_id[:20] + ("0" if task_id[20] != "0" else "1") + task_id[21:]
    for bad in ("nope", forged, 42):
        answer = get(client, bad).json()
        assert answer["code"] == 0 and "not found" in answer["message"]


def test_keys(serve):
    sandbox, client = serve(keys=(TEST_KEY, "key_mine"))
    refused = create(client, PRO_TEXT_TO_VIDEO, headers={"Api-Key": "key_wrong"}).json()
    assert refused["code"] == 2 and refused["message"].startswith("Invalid API key")
    assert create(client, PRO_TEXT_TO_VIDEO, headers={"Api-Key": "key_mine"}).json()["code"] == 1
    assert len(sandbox.created()) == 1


def test_malformed_calls_get_sensible_answers(serve):
    _, client = serve()
    wrong_type = client.post(
        "/api/task/create", content=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert wrong_type.status_code == 415 and wrong_type.json()["code"] == 0
    bad_json = client.post("/api/task/create", content=b"{nope")
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["message"]
    assert client.post("/api/task/list", json={}).status_code == 404
    assert client.get("/api/task/create").status_code == 405
    not_object = create(client, ["a list"]).json()
    assert not_object["code"] == 0 and "JSON object" in not_object["message"]


# -- faults ---------------------------------------------------------------------------------------


def retry_after_seconds(value: str) -> float:
    if value.isdigit():
        return float(value)
    return email.utils.parsedate_to_datetime(value).timestamp() - time.time()


@pytest.mark.parametrize("status", [429, 503])
def test_random_refusals_carry_retry_after_and_create_nothing(serve, status):
    sandbox, client = serve(**{f"rate_{status}": 1.0}, retry_after=2)
    forms = set()
    for _ in range(12):
        answer = create(client, PRO_TEXT_TO_VIDEO)
        assert answer.status_code == status
        value = answer.headers["Retry-After"]
        forms.add(value.isdigit())
        assert 0 < retry_after_seconds(value) <= 3
    assert forms == {True, False}  # both the seconds and the HTTP-date form
    assert sandbox.created() == []


def test_random_500_creates_nothing(serve):
    sandbox, client = serve(rate_500=1.0)
    assert create(client, PRO_TEXT_TO_VIDEO).status_code == 500
    assert sandbox.created() == []


def test_a_dropped_connection_creates_nothing(serve):
    sandbox, client = serve(drop_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        create(client, PRO_TEXT_TO_VIDEO)
    assert sandbox.created() == [] and sandbox.calls[0].outcome == "dropped"


def test_a_lost_answer_still_created_the_task(serve):
    sandbox, client = serve(lose_answer_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        create(client, PRO_TEXT_TO_VIDEO)
    assert len(sandbox.created()) == 1


def test_a_slow_answer_provokes_a_read_timeout_after_creating(serve):
    sandbox, client = serve(slow_rate=1.0, slow_seconds=1.0)
    with pytest.raises(httpx.ReadTimeout):
        create(client, PRO_TEXT_TO_VIDEO, timeout=httpx.Timeout(5, read=0.2))
    assert len(sandbox.created()) == 1


def test_the_rpm_limit_answers_429_with_the_wait(serve):
    sandbox, client = serve(rpm_limit=3)
    assert [create(client, PRO_TEXT_TO_VIDEO).status_code for _ in range(4)] == [200, 200, 200, 429]
    refused = create(client, PRO_TEXT_TO_VIDEO)
    assert 55 <= int(refused.headers["Retry-After"]) <= 60
    assert len(sandbox.created()) == 3


def test_latency_is_added_to_every_answer(serve):
    _, client = serve(latency_ms=150)
    started = time.monotonic()
    create(client, PRO_TEXT_TO_VIDEO)
    assert time.monotonic() - started >= 0.15


def test_credit_runs_out(serve):
    sandbox, client = serve(credits=20)
    assert create(client, PRO_TEXT_TO_VIDEO).json()["code"] == 1
    answer = create(client, FAST_WITH_IMAGE).json()
    assert answer["code"] == 0 and answer["message"] == "Credits not enough"  # as documented


def test_a_cut_download_is_incomplete(serve):
    _, client = serve(time_scale=0, cut_download_rate=1.0)
    task_id = create(client, PRO_TEXT_TO_VIDEO).json()["data"]["task_id"]
    (url,) = get(client, task_id).json()["data"]["result_urls"]
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url)


def test_rejections_create_nothing(serve):
    sandbox, client = serve(reject_rate=1.0)
    answer = create(client, PRO_TEXT_TO_VIDEO).json()
    assert answer["code"] == 0 and "moderation" in answer["message"]
    assert sandbox.created() == []


def test_faults_are_reproducible_from_the_seed():
    def outcomes(seed):
        with running(SandboxConfig(seed=seed, rate_429=0.3, rate_500=0.2)) as sandbox:
            with httpx.Client(base_url=sandbox.base_url, headers=HEADERS) as client:
                return [create(client, PRO_TEXT_TO_VIDEO).status_code for _ in range(30)]

    assert outcomes(7) == outcomes(7)
    assert outcomes(7) != outcomes(8)


def test_stats_endpoint_reports_the_record(serve):
    sandbox, client = serve()
    create(client, PRO_TEXT_TO_VIDEO)
    create(client, PRO_TEXT_TO_VIDEO)
    stats = client.get("/_sandbox/stats").json()
    assert stats["create_calls"] == 2 and stats["created"] == 2
    assert stats["bodies_created_more_than_once"] == 1
    assert stats["config"]["keys"] == 1  # how many keys, never the keys themselves
    assert len(client.get("/_sandbox/calls").json()) == 2


# -- one source of truth --------------------------------------------------------------------------

urls = st.sampled_from(["https://e.com/a.jpg", "http://e.com/b.png", "not a url", ""])
# Every model of the catalogue, every option any of them takes, with values from the union of
# their sets and a few no model takes: the sandbox and the schema must judge each body alike.
REQUEST_DEFS = pixwith_models.load("request.schema.json")["$defs"]
bodies = st.fixed_dictionaries(
    {},
    optional={
        "prompt": st.one_of(st.text(max_size=5), st.integers()),
        "model_id": st.sampled_from([*REQUEST_DEFS["model_id"]["enum"], "3-14", 9]),
        "image_urls": st.one_of(st.lists(urls, max_size=3), urls),
        "options": st.fixed_dictionaries(
            {},
            optional={
                "prompt_optimization": st.one_of(st.booleans(), st.just(1)),
                "aspect_ratio": st.sampled_from(
                    [*REQUEST_DEFS["aspect_ratio"]["enum"], "Portrait"]
                ),
                "resolution": st.sampled_from([*REQUEST_DEFS["resolution"]["enum"], "2160p"]),
                "duration": st.one_of(
                    st.sampled_from([*REQUEST_DEFS["duration"]["enum"], 15, 5.0]),
                    st.none(),
                    st.just(True),
                ),
                "num_outputs": st.sampled_from([1, 2, 4, 5, "2"]),
                "sound": st.one_of(st.booleans(), st.just("yes")),
                "fix_camera": st.booleans(),
                "fps": st.just(24),
            },
        ),
        "extra": st.just(1),
    },
)


@pytest.fixture(scope="module")
def shared_client():
    with running() as sandbox, httpx.Client(base_url=sandbox.base_url, headers=HEADERS) as client:
        yield client


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_the_sandbox_accepts_exactly_what_the_request_schema_accepts(shared_client, body):
    # A plain jsonschema check, without the memo the sandbox (and validate) use.
    expected = jsonschema.Draft202012Validator(pixwith_models.load("request.schema.json")).is_valid(
        body
    )
    assert (create(shared_client, body).json()["code"] == 1) == expected


# -- two sandboxes at once ------------------------------------------------------------------------


@pytest.mark.slow
def test_two_sandbox_runs_at_once_each_have_their_own_and_keys_stay_the_same(tmp_path, write_job):
    job = write_job(job_text(prompts(3)))
    other = write_job(job_text(prompts(3, tag="other")), name="other.yaml")
    env = {**os.environ, "BATCHGEN_LEDGER": str(tmp_path / "ledger.db"), "BATCHGEN_TESTING": "1"}
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batchgen",
                "run",
                str(j),
                "--sandbox",
                "--yes",
                "--wait",
                "--rpm",
                "0",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for j in (job, other)
    ]
    for process in runs:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, out + err
    again = subprocess.run(
        [sys.executable, "-m", "batchgen", "run", str(job), "--sandbox", "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and "3 done" in again.stdout  # same identities from a new sandbox
    with Ledger(tmp_path / "ledger.db") as ledger:
        assert {r["api_base"] for r in ledger.tasks.rows()} == {"http://127.0.0.1:47878"}


def _mp4_shape(data: bytes) -> tuple[int, int, float]:
    """(width, height, seconds) of an MP4, read from its tkhd and mvhd boxes."""
    import struct

    def boxes(buf: bytes):
        at = 0
        while at < len(buf):
            size, kind = struct.unpack_from(">I4s", buf, at)
            yield kind, buf[at + 8 : at + size]
            at += size

    moov = dict(boxes(data))[b"moov"]
    inside = dict(boxes(moov))
    scale, duration = struct.unpack_from(">II", inside[b"mvhd"], 12)
    tkhd = dict(boxes(inside[b"trak"]))[b"tkhd"]
    width, height = struct.unpack_from(">II", tkhd, 76)  # 16.16 fixed point, version 0
    return width >> 16, height >> 16, duration / scale


@pytest.mark.parametrize(
    "aspect, seconds, shape",
    [("9:16", 8, (90, 160, 8.0)), ("16:9", 5, (160, 90, 5.0)), ("1:1", 10, (120, 120, 10.0))],
)
def test_a_rehearsal_clip_has_the_aspect_ratio_and_duration_asked_for(
    world, write_job, aspect, seconds, shape
):
    """The sandbox's videos were all 16:9, 2 s, 160x90, whatever the request: a gallery
    rehearsal did not look like the real batch."""
    env = world(time_scale=0)
    model = "wan2.2-pro" if aspect != "1:1" else "kling2.5"
    job = write_job(
        "version: 1\nrequests:\n"
        f"  - {{prompt: A shot, model: {model}, options: {{prompt_optimization: true,"
        f" aspect_ratio: '{aspect}', duration: {seconds}"
        + (", resolution: 480p" if model == "wan2.2-pro" else "")
        + "}}\n"
    )
    result = env.cli("run", job, "--yes", "--rpm", "0", "--wait", "--download")
    assert result.exit_code == 0, result.output
    (video,) = env.outputs("job").glob("*.mp4")
    assert _mp4_shape(video.read_bytes()) == shape
