"""Local images: checked in validation, uploaded once per distinct content, known in
identities as sha256:<hex>, and sent as the URL the upload gave. Judged against the sandbox,
which implements pre_url, the presigned form POST (with S3's checks) and serves the image."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from helpers import LITE, png

from batchgen.providers.pixwith.sandbox import TEST_KEY, running

FAST = ("--yes", "--rpm", "0")


JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 100 + b"\xff\xd9"


@pytest.fixture
def images(tmp_path):
    (tmp_path / ".git").mkdir()  # the project
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "cat.png").write_bytes(png(seed=1))
    (tmp_path / "img" / "dog.jpg").write_bytes(JPEG)
    (tmp_path / "img" / "png-named.jpg").write_bytes(png(seed=2))
    return tmp_path


def test_each_distinct_image_is_uploaded_once_and_a_rerun_uploads_and_sends_nothing(
    world, write_job, images
):
    env = world(time_scale=0)
    job = write_job(
        LITE
        + "requests:\n  - matrix: {prompt: [a, b, c]}\n    image_urls: img/cat.png\n  - {prompt: d, image_urls: [{file: img/dog.jpg}]}\n"
    )
    result = env.cli("run", job, *FAST)
    assert result.exit_code == 0, result.output
    assert "images: 2 uploaded, 0 uploaded before" in result.stderr
    assert [c.outcome for c in env.sandbox.calls if c.endpoint == "upload"] == ["stored", "stored"]
    sent = [c.body["image_urls"][0] for c in env.sandbox.created()]
    assert len(set(sent)) == 2 and all("/_sandbox/images/" in url for url in sent)
    assert httpx.get(sent[0]).content in (png(seed=1), JPEG)  # the sandbox serves what was uploaded
    calls = len(env.sandbox.calls)
    again = env.cli("run", job, *FAST)
    assert again.exit_code == 0 and "4 done" in again.output
    assert [c.endpoint for c in env.sandbox.calls[calls:]] == ["credits"]  # no upload, no create


def test_the_same_image_in_two_jobs_is_uploaded_once(world, write_job, images):
    env = world(time_scale=0)
    first = write_job(
        LITE + "requests:\n  - {prompt: one, image_urls: img/cat.png}\n", name="one.yaml"
    )
    second = write_job(
        LITE + "requests:\n  - {prompt: two, image_urls: ./img/../img/cat.png}\n", name="two.yaml"
    )
    env.cli("run", first, *FAST)
    result = env.cli("run", second, *FAST)
    assert "images: 0 uploaded, 1 uploaded before" in result.stderr
    assert len([c for c in env.sandbox.calls if c.endpoint == "upload"]) == 1
    with env.ledger() as ledger:
        rows = ledger.db.conn.execute("SELECT sha256, name, size FROM uploads").fetchall()
    assert [tuple(r) for r in rows] == [
        (hashlib.sha256(png(seed=1)).hexdigest(), "cat.png", len(png(seed=1)))
    ]


def test_a_local_image_stands_as_its_sha256_in_the_identity(cli, write_job, images):
    job = write_job(LITE + "requests:\n  - {prompt: a, image_urls: img/cat.png}\n")
    plan = json.loads(cli("plan", job, "--json").stdout)
    body = plan["requests"][0]["body"]
    assert body["image_urls"] == ["sha256:" + hashlib.sha256(png(seed=1)).hexdigest()]
    document = {"api": plan["api_base"], "body": body, "variant": 0}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert plan["requests"][0]["key"] == hashlib.sha256(canonical.encode()).hexdigest()
    (images / "img" / "copy.png").write_bytes(png(seed=1))  # the same bytes under another name
    renamed = write_job(
        LITE + "requests:\n  - {prompt: a, image_urls: img/copy.png}\n", name="renamed.yaml"
    )
    assert (
        json.loads(cli("plan", renamed, "--json").stdout)["requests"][0]["key"]
        == plan["requests"][0]["key"]
    )


@pytest.mark.parametrize(
    "setup, item, words",
    [
        (lambda d: None, "img/missing.png", "image not found"),
        (
            lambda d: (d / "img" / "notes.jpg").write_text("not an image"),
            "img/notes.jpg",
            "not a JPEG or PNG",
        ),
        (
            lambda d: (d / "img" / "huge.png").write_bytes(png() + b"\0" * 10_000_001),
            "img/huge.png",
            "over the limit",
        ),
        (lambda d: None, "../outside.png", "outside the job's project"),
        (lambda d: (d / "img" / "dir.png").mkdir(), "img/dir.png", "is a directory"),
    ],
)
def test_a_bad_image_is_exit_2_at_its_line(cli, write_job, images, setup, item, words):
    setup(images)
    (images.parent / "outside.png").write_bytes(png())
    job = write_job(
        LITE
        + f"requests:\n  - {{prompt: fine, image_urls: img/cat.png}}\n  - {{prompt: bad, image_urls: {item}}}\n"
    )
    result = cli("validate", job)
    assert (
        result.exit_code == 2
        and "job.yaml:7:31: error: requests[1].images: " in result.stderr
        and words in result.stderr
    ), result.stderr
    assert str(images) + "/img" not in result.stderr  # named as the job wrote it


def test_a_png_named_jpg_is_uploaded_as_a_png_with_a_warning(world, write_job, images):
    env = world(time_scale=0)
    job = write_job(LITE + "requests:\n  - {prompt: a, image_urls: img/png-named.jpg}\n")
    result = env.cli("run", job, *FAST)
    assert result.exit_code == 0
    assert "png-named.jpg holds a PNG: it is uploaded as image/png (png-named.png)" in result.stderr
    pre_url = [c.body for c in env.sandbox.calls if c.endpoint == "pre_url"]
    assert pre_url == [{"image_name": "png-named.png", "content_type": "image/png"}]


def test_a_local_image_in_a_csv_cell(world, write_job, images):
    env = world(time_scale=0)
    job = write_job(
        LITE + "requests:\n  - rows: {file: shots.csv}\n",
        files={"shots.csv": "prompt,image_urls\nfirst,img/cat.png\nsecond,img/dog.jpg\n"},
    )
    assert env.cli("run", job, *FAST).exit_code == 0
    assert len([c for c in env.sandbox.calls if c.endpoint == "upload"]) == 2


def test_an_expired_target_is_asked_for_again(world, write_job, images):
    env = world(time_scale=0, expired_targets=1)
    job = write_job(LITE + "requests:\n  - {prompt: a, image_urls: img/cat.png}\n")
    result = env.cli("run", job, *FAST)
    assert result.exit_code == 0, result.output
    assert [c.outcome for c in env.sandbox.calls if c.endpoint == "upload"] == [
        "Request has expired",
        "stored",
    ]
    assert (
        len([c for c in env.sandbox.calls if c.endpoint == "pre_url"]) == 2
    )  # a fresh target for the retry


def test_a_failing_upload_is_retried_like_a_refused_create(world, write_job, images):
    env = world(time_scale=0, upload_fail_rate=0.5, seed=3)
    job = write_job(
        LITE
        + "requests:\n  - matrix: {prompt: [a, b]}\n    image_urls: img/cat.png\n  - {prompt: c, image_urls: img/dog.jpg}\n"
    )
    result = env.cli("run", job, *FAST)
    uploads = [c.outcome for c in env.sandbox.calls if c.endpoint == "upload"]
    assert "slow down" in uploads and uploads.count("stored") == 2, uploads
    assert result.exit_code == 0 and len(env.sandbox.created()) == 3


def test_nothing_is_created_for_a_request_whose_image_did_not_upload(world, write_job, images):
    env = world(time_scale=0, upload_fail_rate=1.0)
    job = write_job(
        LITE
        + "requests:\n  - {prompt: a, image_urls: img/cat.png}\n  - {prompt: b, image_urls: 'https://cdn.example.com/x.jpg'}\n"
    )
    result = env.cli("run", job, *FAST)
    assert result.exit_code == 1
    assert "1 requests not sent: their image did not upload" in result.stderr
    assert [c.body["prompt"] for c in env.sandbox.created()] == ["b"]
    env.sandbox.config.upload_fail_rate = 0
    assert env.cli("run", job, *FAST).exit_code == 0 and len(env.sandbox.created()) == 2


# -- the sandbox's side ---------------------------------------------------------------------------


def target(client):
    answer = client.post(
        "/api/task/pre_url", json={"image_name": "cat.png", "content_type": "image/png"}
    ).json()
    assert answer["code"] == 1
    return answer["data"]["upload_url"], answer["data"]["image_url"]


@pytest.mark.parametrize(
    "mangle, why",
    [
        (lambda fields: {k: v for k, v in fields.items() if k != "key"}, "every field"),
        (lambda fields: {**fields, "extra": "1"}, "every field"),
        (lambda fields: {**fields, "x-amz-signature": "0" * 64}, "signature"),
    ],
)
def test_the_sandbox_checks_the_form_as_s3_would(mangle, why):
    with (
        running() as sandbox,
        httpx.Client(base_url=sandbox.base_url, headers={"Api-Key": TEST_KEY}) as client,
    ):
        upload, _ = target(client)
        answer = httpx.post(
            upload["url"],
            data=mangle(upload["fields"]),
            files={"file": ("cat.png", png(), "image/png")},
        )
        assert answer.status_code in (400, 403) and why in answer.text


def test_the_sandbox_refuses_a_key_on_the_form_a_wrong_type_and_unknown_images():
    with (
        running() as sandbox,
        httpx.Client(base_url=sandbox.base_url, headers={"Api-Key": TEST_KEY}) as client,
    ):
        upload, image_url = target(client)
        with_key = httpx.post(
            upload["url"],
            data=upload["fields"],
            files={"file": ("cat.png", png(), "image/png")},
            headers={"Api-Key": TEST_KEY},
        )
        assert with_key.status_code == 400 and "API key" in with_key.text
        wrong = httpx.post(
            upload["url"], data=upload["fields"], files={"file": ("cat.png", JPEG, "image/png")}
        )
        assert wrong.status_code == 400 and "Content-Type" in wrong.text
        body = {
            "prompt": "a",
            "model_id": "2-8",
            "image_urls": [image_url],
            "options": {"prompt_optimization": True, "aspect_ratio": "16:9", "resolution": "720p"},
        }
        refused = client.post("/api/task/create", json=body).json()
        assert refused == {"code": 0, "message": "Invalid image url"}  # never uploaded
        assert (
            httpx.post(
                upload["url"],
                data=upload["fields"],
                files={"file": ("cat.png", png(), "image/png")},
            ).status_code
            == 204
        )
        assert client.post("/api/task/create", json=body).json()["code"] == 1
        bad = client.post(
            "/api/task/pre_url", json={"image_name": "cat.gif", "content_type": "image/gif"}
        ).json()
        assert bad == {"code": 0, "message": "Invalid image format"}


def test_an_image_changed_after_validation_is_not_uploaded(world, images, tmp_path):
    from batchgen.jobs.images import read_image
    from batchgen.ledger import Ledger
    from batchgen.providers.pixwith.client import PixwithApi
    from batchgen.sending.uploads import upload_all

    env = world(time_scale=0)
    image = read_image(images / "img" / "cat.png", images)
    (images / "img" / "cat.png").write_bytes(png(seed=9))  # edited between validation and sending
    with Ledger(tmp_path / "l.db") as ledger, PixwithApi(env.sandbox.base_url, TEST_KEY) as api:
        urls, report = upload_all(ledger, api, [image], upload_base=env.sandbox.base_url)
    assert urls == {} and "changed since the job was validated" in report.failed[image.sha256]
    assert [c for c in env.sandbox.calls if c.endpoint in ("pre_url", "upload")] == []
