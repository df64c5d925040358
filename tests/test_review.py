"""The review loop: marks in the `reviews` table, the live review page and its
guards, the gallery showing the marks, and `promote` writing the winners as a new job."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3

import httpx
import pytest
import yaml

from batchgen.web import review_server as review

FAST = ("--yes", "--rpm", "0")

# Drafts: three shots of a templated prompt with labels and meta, and a fox from a local image.
DRAFTS = """\
version: 1
name: drafts
limits: {rpm: 60}
defaults:
  model: wan2.2-fast
  options: {prompt_optimization: true, aspect_ratio: "16:9", resolution: 480p, duration: 5}
requests:
  - matrix:
      vars.shot: [s1, s2, s3]
    prompt: "A {{ animal }} crosses the garden, shot {{ shot }}"
    vars: {animal: cat}
    id: "{{ shot }}-{{ model }}"
    meta: {scene: garden}
  - prompt: A fox in the snow
    id: fox
    image_urls: [images/fox.png]
    options: {aspect_ratio: "9:16"}
"""

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201ab6b1b8a0000000049454e44ae426082"
)


@pytest.fixture
def drafts(world, write_job, monkeypatch):
    """The drafts job run on the sandbox, waited for and downloaded: (env, job file)."""
    env = world(time_scale=0)
    (env.tmp / ".git").mkdir()  # a project in git, as a user's is: its root holds the images
    (env.tmp / "images").mkdir()
    (env.tmp / "images" / "fox.png").write_bytes(PNG)
    job = write_job(DRAFTS, name="drafts.yaml")
    monkeypatch.chdir(env.tmp)
    result = env.cli("run", job, *FAST, "--wait", "--download")
    assert result.exit_code == 0, result.output
    return env, job


def keys_by_label(env) -> dict[str, str]:
    with env.ledger() as ledger:
        return {row["label"]: row["key"] for row in ledger.tasks.rows("drafts")}


# -- the reviews table ----------------------------------------------------------------------------


def test_a_mark_sets_only_the_fields_given_and_only_for_the_jobs_requests(drafts):
    env, _ = drafts
    keys = keys_by_label(env)
    with env.ledger() as ledger:
        ledger.reviews.record("drafts", keys["s1-wan2.2-fast"], {"pick": 1})
        ledger.reviews.record("drafts", keys["s1-wan2.2-fast"], {"rating": 4, "note": "nice light"})
        after = ledger.reviews.of("drafts")[keys["s1-wan2.2-fast"]]
        assert (after["pick"], after["rating"], after["note"]) == (1, 4, "nice light")
        ledger.reviews.record("drafts", keys["s1-wan2.2-fast"], {"pick": None})
        assert ledger.reviews.of("drafts")[keys["s1-wan2.2-fast"]]["pick"] is None
        with pytest.raises(KeyError):
            ledger.reviews.record("drafts", "0" * 64, {"pick": 1})
        with pytest.raises(KeyError):
            ledger.reviews.record("another-job", keys["fox"], {"pick": 1})


# -- the review page ------------------------------------------------------------------------------


@pytest.fixture
def served(drafts, monkeypatch):
    """The review page of the drafts, served on a free port: (env, base URL, token)."""
    env, _ = drafts
    monkeypatch.setattr(review, "WRITE_TIMEOUT", 0.3)
    session = review.open_session(env.ledger_path, "drafts", env.outputs("drafts"))
    with session.ledger, review.serving(session) as server:
        yield env, server.url, session.token


def post(url: str, token: str, body: dict, **headers) -> httpx.Response:
    return httpx.post(url + "api/review", json=body, headers={"X-Batchgen-Token": token, **headers})


def test_the_page_shows_every_request_with_controls_and_the_token(served):
    env, url, token = served
    page = httpx.get(url)
    assert page.status_code == 200 and f'content="{token}"' in page.text
    assert page.text.count("<figure") == 4 and page.text.count("class=pick") == 4
    assert "A cat crosses the garden, shot s2" in page.text  # the rendered prompt
    # The local image by its file's name, not the upload URL (dead once the sandbox stops).
    assert "fox.png" in page.text and "/_sandbox/uploads/" not in page.text
    tiles = httpx.get(url + "api/tiles", headers={"X-Batchgen-Token": token}).json()
    assert {t["outcome"] for t in tiles["tiles"]} == {"completed"} and len(tiles["tiles"]) == 4
    assert all(
        "/media/" in t["media_html"] for t in tiles["tiles"]
    )  # the downloaded files, through the server


def test_the_page_is_served_a_page_of_tiles_at_a_time(served, monkeypatch):
    """Each page (`?page=N`) reads and shows its own tiles only, and follows only them."""
    from batchgen.web import pages

    env, url, token = served
    monkeypatch.setattr(pages, "PAGE_TILES", 3)
    first, second = httpx.get(url), httpx.get(url + "?page=2")
    assert first.text.count("<figure") == 3 and second.text.count("<figure") == 1
    assert 'href="/?page=2" rel=next' in first.text and 'href="/" rel=prev' in second.text
    keys = set(re.findall(r'data-key="([0-9a-f]{64})"', first.text + second.text))
    assert keys == set(keys_by_label(env).values())
    followed = httpx.get(url + "api/tiles?page=2", headers={"X-Batchgen-Token": token}).json()
    assert [t["key"] for t in followed["tiles"]] == re.findall(
        r'data-key="([0-9a-f]{64})"', second.text
    )
    assert followed["summary"] == "4 completed"  # of the whole job
    for beyond in ("?page=3", "?page=0", "?page=two", "?page=1&page=2"):
        assert httpx.get(url + beyond).status_code == 404, beyond


def test_a_mark_from_the_page_lands_in_the_reviews_table(served):
    env, url, token = served
    key = keys_by_label(env)["s2-wan2.2-fast"]
    answer = post(url, token, {"key": key, "pick": 1, "rating": 5, "note": "the winner"})
    assert answer.status_code == 200 and answer.json()["review"] == {
        "pick": 1,
        "rating": 5,
        "note": "the winner",
    }
    with env.ledger() as ledger:
        row = ledger.reviews.of("drafts")[key]
    assert (row["pick"], row["rating"], row["note"]) == (1, 5, "the winner")
    tiles = httpx.get(url + "api/tiles", headers={"X-Batchgen-Token": token}).json()
    assert "1 picked" in tiles["summary"]


def test_the_page_refuses_what_it_did_not_hand_out(served):
    env, url, token = served
    key = keys_by_label(env)["fox"]
    stale = post(url, "an-earlier-sessions-token", {"key": key, "pick": 1})
    assert stale.status_code == 403 and "reload" in stale.json()["error"]
    assert httpx.get(url + "api/tiles").status_code == 403  # no token, no tiles
    rebound = httpx.get(url, headers={"Host": "attacker.example:80"})
    assert rebound.status_code == 421 and token not in rebound.text
    form = httpx.post(
        url + "api/review", data={"key": key, "pick": "1"}, headers={"X-Batchgen-Token": token}
    )
    assert form.status_code == 415  # only JSON, which another site's form cannot send
    unknown = post(url, token, {"key": "f" * 64, "pick": 1})
    assert (
        unknown.status_code == 404
        and "not a request of the job 'drafts'" in unknown.json()["error"]
    )
    for bad in (
        {"pick": 2},
        {"pick": True},
        {"rating": 6},
        {"rating": 2.5},
        {"note": "x" * 2001},
        {"colour": "red"},
        {},
    ):
        answer = post(url, token, {"key": key, **bad})
        assert answer.status_code == 400, bad
    with env.ledger() as ledger:
        assert ledger.reviews.of("drafts") == {}  # nothing refused was written


def raw_post(
    url: str, token: str, body: bytes, *, length: str | None = None, then: bytes = b""
) -> bytes:
    """POST over a socket of our own (httpx would not send a body this wrong), then `then` on
    the same connection; everything the server answered until it closed or went quiet."""
    import socket

    host, port = url.split("//", 1)[1].rstrip("/").split(":")
    request = (
        (
            f"POST /api/review HTTP/1.1\r\nHost: {host}:{port}\r\nX-Batchgen-Token: {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body) if length is None else length}\r\n\r\n"
        ).encode()
        + body
        + then
    )
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        with contextlib.suppress(TimeoutError):
            while chunk := conn.recv(65536):
                answer += chunk
    return answer


@pytest.mark.parametrize(
    "body, length, why",
    [
        (b'{"key": "x", "note": "\\ud800"}', None, b"not Unicode"),
        (b"[" * 8000 + b"]" * 8000, None, b"nested too deep"),
        (b'{"key": "x", "pick": 1}', "twelve", b"Content-Length"),
    ],
)
def test_a_body_the_server_cannot_take_gets_a_400(served, body, length, why):
    env, url, token = served
    answer = raw_post(url, token, body, length=length)
    assert answer.startswith(b"HTTP/1.1 400 ") and why in answer, answer[:300]


def test_a_refused_post_closes_its_connection_so_its_body_is_never_read_as_a_request(served):
    """The body of a refused POST is left unread: read as the next request on a kept-alive
    connection, it would be a request the page never made."""
    env, url, token = served
    key = keys_by_label(env)["fox"]
    smuggled = (
        f"POST /api/review HTTP/1.1\r\nHost: {url.split('//')[1].rstrip('/')}\r\nX-Batchgen-Token: {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 26\r\n\r\n"
    ).encode()
    inner = json.dumps({"key": key, "pick": 1}).encode()
    too_big = smuggled + inner  # declared as a body far over the limit: refused unread
    answer = raw_post(url, token, too_big, length=str(review.MAX_BODY + 1))
    assert answer.startswith(b"HTTP/1.1 413 ") and answer.count(b"HTTP/1.1 ") == 1, answer[:400]
    assert b"Connection: close" in answer
    with env.ledger() as ledger:
        assert ledger.reviews.of("drafts") == {}


def test_the_page_keeps_working_while_a_run_holds_the_ledger(served):
    env, url, token = served
    key = keys_by_label(env)["fox"]
    blocker = sqlite3.connect(env.ledger_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # as a run's claim does, held for long
    try:
        assert httpx.get(url).status_code == 200  # reading never waits (WAL)
        assert httpx.get(url + "api/tiles", headers={"X-Batchgen-Token": token}).status_code == 200
        busy = post(url, token, {"key": key, "pick": 1})
        assert busy.status_code == 503 and "try again" in busy.json()["error"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert post(url, token, {"key": key, "pick": 1}).status_code == 200


def test_videos_are_served_with_ranges_and_only_the_jobs_own(served):
    env, url, token = served
    key = keys_by_label(env)["fox"]
    whole = httpx.get(f"{url}media/{key}/0")
    assert (
        whole.status_code == 200
        and whole.headers["content-type"] == "video/mp4"
        and len(whole.content) > 100
    )
    part = httpx.get(f"{url}media/{key}/0", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == whole.content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(whole.content)}"
    assert httpx.get(f"{url}media/{key}/1").status_code == 404
    assert httpx.get(f"{url}media/{'0' * 64}/0").status_code == 404
    assert httpx.get(f"{url}media/../../batchgen.db").status_code == 404


# -- the static gallery shows the marks -----------------------------------------------------------


def test_the_gallery_shows_marks_short_headers_and_each_videos_shape(drafts):
    env, _ = drafts
    keys = keys_by_label(env)
    with env.ledger() as ledger:
        ledger.reviews.record("drafts", keys["s1-wan2.2-fast"], {"pick": 1, "rating": 3})
        ledger.reviews.record("drafts", keys["s3-wan2.2-fast"], {"pick": 0, "note": "blurry"})
    assert env.cli("gallery", "drafts").exit_code == 0
    text = (env.outputs("drafts") / "index.html").read_text()
    assert (
        len(re.findall(r'<figure[^>]*data-pick="1"', text)) == 1
        and len(re.findall(r'<figure[^>]*data-pick="0"', text)) == 1
    )
    assert "<b class=picked>picked</b>" in text and "★★★☆☆" in text and "blurry" in text
    assert 'id="picked-only"' in text
    assert "--aspect: 9 / 16" in text and "--aspect: 16 / 9" in text  # the fox asked for portrait
    assert "options.aspect_ratio" not in re.sub(
        r"<script>.*?</script>", "", text, flags=re.S
    )  # headers: values, not paths


def test_a_sparse_grid_is_laid_out_as_rows_of_cards_without_empty_cells(
    world, write_job, monkeypatch
):
    env = world(time_scale=0)
    monkeypatch.chdir(env.tmp)
    # Six prompts, each sent to one of six option combinations: a 6x6 table would be 30/36 empty.
    entries = "".join(
        f"  - {{prompt: p{i}, options: {{aspect_ratio: '{a}', duration: {d}, resolution: {r}}}}}\n"
        for i, (a, d, r) in enumerate(
            [(a, d, r) for a in ("16:9", "9:16") for d in (5, 8) for r in ("480p", "720p")][:6]
        )
    )
    job = write_job(
        "version: 1\nname: sparse\ndefaults: {model: wan2.2-pro, options: {prompt_optimization: true}}\nrequests:\n"
        + entries
    )
    assert env.cli("run", job, *FAST, "--wait", "--download", "--gallery").exit_code == 0
    text = (env.outputs("sparse") / "index.html").read_text()
    assert "<table>" not in text and text.count("<section class=row>") == 6
    assert text.count("<figure") == 6 and "<td></td>" not in text


# -- promote --------------------------------------------------------------------------------------


def pick(env, *labels: str, rating: int | None = None) -> None:
    keys = keys_by_label(env)
    with env.ledger() as ledger:
        for label in labels:
            ledger.reviews.record(
                "drafts", keys[label], {"pick": 1, **({"rating": rating} if rating else {})}
            )


def test_promote_writes_the_picked_requests_with_their_templates_and_the_overrides(drafts):
    env, job = drafts
    pick(env, "s2-wan2.2-fast", "fox", rating=4)
    out = env.tmp / "promoted" / "best.yaml"
    result = env.cli(
        "promote",
        job,
        "--picked",
        "--set",
        "model=wan2.2-pro",
        "--set",
        "options.resolution=720p",
        "--set",
        "options.duration=8",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    assert "2 requests" in result.output
    text = out.read_text()
    assert text.startswith("# Promoted by `batchgen promote`") and "from job 'drafts'" in text
    assert (
        '--set "model=wan2.2-pro" --set "options.resolution=720p" --set "options.duration=8"'
        in text
    )
    data = yaml.safe_load(text)
    assert data["limits"] == {"rpm": 60}
    shot, fox = data["requests"]
    assert (
        shot["prompt"] == "A {{ animal }} crosses the garden, shot {{ shot }}"
    )  # the template, not its rendering
    assert (
        shot["vars"] == {"animal": "cat", "shot": "s2"} and shot["id"] == "{{ shot }}-{{ model }}"
    )
    assert shot["meta"] == {"scene": "garden"} and shot["model"] == "wan2.2-pro"
    assert shot["options"] == {
        "prompt_optimization": True,
        "aspect_ratio": "16:9",
        "resolution": "720p",
        "duration": 8,
    }
    assert fox["images"] == ["../images/fox.png"]  # the same file, from the new job's folder
    assert fox["options"]["aspect_ratio"] == "9:16" and fox["id"] == "fox"
    # The promoted job is a job like any other: the winners, at full quality, labelled anew.
    plan = json.loads(env.cli("plan", out, "--json").stdout)
    assert plan["counts"]["new"] == 2
    assert {
        (r["body"]["model_id"], r["body"]["options"]["duration"]) for r in plan["requests"]
    } == {("2-9", 8)}
    assert env.cli("run", out, *FAST, "--wait").exit_code == 0
    with env.ledger() as ledger:
        labels = sorted(row["label"] for row in ledger.tasks.rows("best"))
    assert labels == ["fox", "s2-wan2.2-pro"]


def test_promote_by_rating_and_picked_variants_become_repeat(world, write_job, monkeypatch):
    env = world(time_scale=0)
    monkeypatch.chdir(env.tmp)
    job = write_job(
        "version: 1\nname: drafts\ndefaults: {model: wan2.2-fast, options: {prompt_optimization: true, aspect_ratio: '16:9', resolution: 480p, duration: 5}}\n"
        "requests:\n  - {prompt: a cat, id: cat, repeat: 3}\n  - {prompt: a dog, id: dog}\n",
        name="drafts.yaml",
    )
    assert env.cli("run", job, *FAST, "--wait").exit_code == 0
    with env.ledger() as ledger:
        rows = {
            r["label"]: r["key"] for r in ledger.tasks.rows("drafts")
        }  # cat, cat-v1, cat-v2 (repeats numbered)
        for label in ("cat", "cat-v2"):
            ledger.reviews.record("drafts", rows[label], {"rating": 5})
        ledger.reviews.record("drafts", rows["cat-v1"], {"rating": 2})
        ledger.reviews.record("drafts", rows["dog"], {"rating": 3})
    out = env.tmp / "best.yaml"
    assert (
        env.cli(
            "promote", "drafts", "--rating-at-least", "4", "--set", "options.duration=8", "-o", out
        ).exit_code
        == 0
    )
    (entry,) = yaml.safe_load(out.read_text())["requests"]
    assert (
        entry["repeat"] == 2 and entry["id"] == "cat-{{ variant }}"
    )  # two variants kept, each its own id
    assert json.loads(env.cli("plan", out, "--json").stdout)["counts"]["new"] == 2


def test_promote_never_writes_over_its_job_file_and_over_another_file_only_with_force(drafts):
    env, job = drafts
    pick(env, "s1-wan2.2-fast")
    draft = job.read_text()
    onto_itself = env.cli("promote", job, "--picked", "-o", job, "--force")
    assert onto_itself.exit_code == 2 and "is the job file being promoted" in onto_itself.output
    assert job.read_text() == draft
    other = env.tmp / "best.yaml"
    other.write_text("# my notes\n")
    refused = env.cli("promote", job, "--picked", "-o", other)
    assert (
        refused.exit_code == 2
        and "best.yaml exists" in refused.output
        and "--force" in refused.output
    )
    assert other.read_text() == "# my notes\n"
    assert env.cli("promote", job, "--picked", "-o", other, "--force").exit_code == 0
    assert other.read_text().startswith("# Promoted by")


def test_an_override_cannot_add_lines_to_the_promoted_file(drafts):
    env, job = drafts
    pick(env, "s1-wan2.2-fast")
    out = env.tmp / "best.yaml"
    result = env.cli("promote", job, "--picked", "--set", "meta.note=a\nname: evil", "-o", out)
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(out.read_text())
    assert "name" not in data and data["requests"][0]["meta"]["note"] == "a\nname: evil"
    assert all(line.startswith("#") for line in out.read_text().splitlines()[:3])


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\r", "\x0b"])
def test_no_line_separator_unicode_knows_ends_the_header_comment(drafts, separator):
    """`--set` and a job file's name went into the header comment as they were: a U+2028 or
    U+2029 ended the comment for the YAML reader, and a top-level `prices:` with a price of 0
    (which let a spend cap through) appeared, invisibly."""
    env, job = drafts
    pick(env, "s1-wan2.2-fast")
    named = job.with_name(f"drafts{separator}prices: [{{model: wan2.2-pro, credits: 0}}].yaml")
    named.write_text(job.read_text())
    assert env.cli("run", named, "--yes", "--rpm", "0").exit_code in (0, 1)
    out = env.tmp / "best.yaml"
    planted = f"meta.note=a{separator}prices: [{{model: wan2.2-pro, credits: 0}}]"
    result = env.cli("promote", "drafts", "--picked", "--set", planted, "-o", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    data = yaml.safe_load(text)
    assert "prices" not in data, text
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert separator not in "".join(header) and len(header) >= 3


def test_promote_carries_the_prices_only_while_they_still_price_the_requests(drafts):
    env, job = drafts
    job.write_text(
        job.read_text().replace(
            "requests:\n", "prices:\n  - {model: wan2.2-fast, credits: 10}\nrequests:\n", 1
        )
    )
    pick(env, "s1-wan2.2-fast")
    same = env.tmp / "same.yaml"
    assert env.cli("promote", job, "--picked", "--set", "meta.take=2", "-o", same).exit_code == 0
    assert yaml.safe_load(same.read_text())["prices"] == [{"model": "wan2.2-fast", "credits": 10}]
    pro = env.tmp / "pro.yaml"
    assert (
        env.cli("promote", job, "--picked", "--set", "model=wan2.2-pro", "-o", pro).exit_code == 0
    )
    assert (
        "prices" not in yaml.safe_load(pro.read_text()) and "prices: not carried" in pro.read_text()
    )


def test_promote_with_nothing_picked_says_so(drafts):
    env, job = drafts
    result = env.cli("promote", job, "--picked", "-o", env.tmp / "best.yaml")
    assert result.exit_code == 1
    assert (
        "nothing in job 'drafts' is picked" in result.output
        and "batchgen review drafts" in result.output
    )
    assert not (env.tmp / "best.yaml").exists()


def test_promote_refuses_an_unknown_field_and_a_value_the_model_refuses(drafts):
    env, job = drafts
    pick(env, "s1-wan2.2-fast", "fox")
    out = env.tmp / "best.yaml"
    typo = env.cli("promote", job, "--picked", "--set", "options.resolutoin=720p", "-o", out)
    assert typo.exit_code == 2 and "unknown field 'options.resolutoin'" in typo.output
    assert "did you mean 'options.resolution'?" in typo.output
    refused = env.cli("promote", job, "--picked", "--set", "options.resolution=1080p", "-o", out)
    assert refused.exit_code == 2
    assert "best.yaml (not written)" in refused.output and "request 'fox'" in refused.output
    # An entry made by a template is named as it was filled in, not by its template.
    assert "request 's1-wan2.2-fast', 'A cat crosses the garden, shot s1'" in refused.output
    assert "{{" not in refused.output
    assert (
        "takes resolution 480p or 720p" in refused.output and "1080p is taken by" in refused.output
    )
    assert not out.exists() and not list(env.tmp.glob("best.yaml*"))
    neither = env.cli("promote", job, "-o", out)
    assert neither.exit_code == 2 and "--picked, --rating-at-least N, or both" in neither.output


def test_the_review_command_serves_until_stopped(drafts):
    env, job = drafts
    process = env.popen("review", "drafts", "--no-open")
    try:
        line = process.stdout.readline()
        found = re.fullmatch(r"serving (http://127\.0\.0\.1:\d+/)\n", line)
        assert found, line
        assert "<figure" in httpx.get(found.group(1)).text
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_review_of_a_job_the_ledger_does_not_know_is_exit_2(drafts):
    env, _ = drafts
    result = env.cli("review", "no-such-job", "--no-open")
    assert result.exit_code == 2 and "no job file or job named 'no-such-job'" in result.output


# -- in a real browser ----------------------------------------------------------------------------


def chromium() -> str | None:
    import shutil

    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


@pytest.mark.slow
def test_in_a_browser_pick_two_rate_and_note_then_promote_them(drafts):
    browser_path = chromium()
    if browser_path is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium where it can)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright (a test extra) is not installed"
    )
    env, job = drafts
    keys = keys_by_label(env)
    process = env.popen("review", "drafts", "--no-open")
    try:
        url = re.fullmatch(r"serving (\S+)\n", process.stdout.readline()).group(1)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=browser_path,
                args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"],
            )
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.goto(url)
            first, second = (
                f'figure[data-key="{keys[label]}"]' for label in ("s1-wan2.2-fast", "fox")
            )
            page.click(f"{first} button.pick")
            page.click(f"{second} button.pick")
            page.click(f'{second} button.star[data-rating="4"]')
            page.fill(f"{first} textarea.note", "keep the light")
            page.click("h1")  # leaving the note saves it
            page.wait_for_selector(f'{first}[data-pick="1"]')
            page.wait_for_selector(f'{second}[data-pick="1"][data-rating="4"]')
            page.check("#picked-only")
            assert page.locator("figure:not(.hidden)").count() == 2
            page.fill("#filter", "light")  # the note is searchable too
            assert page.locator("figure:not(.hidden)").count() == 1
            videos = page.eval_on_selector_all("video", "vs => vs.map(v => v.readyState)")
            assert videos and all(state >= 1 for state in videos), (
                videos
            )  # each video loads through the server
            browser.close()
        assert console == [], console
    finally:
        process.terminate()
        process.wait(timeout=10)
    for _ in range(50):  # the note's save is the page's last request
        with env.ledger() as ledger:
            marks = ledger.reviews.of("drafts")
        if marks.get(keys["s1-wan2.2-fast"], {}).get("note"):
            break
        import time

        time.sleep(0.1)
    assert {k: (m["pick"], m["rating"], m["note"]) for k, m in marks.items()} == {
        keys["s1-wan2.2-fast"]: (1, None, "keep the light"),
        keys["fox"]: (1, 4, None),
    }
    out = env.tmp / "winners.yaml"
    result = env.cli(
        "promote",
        job,
        "--picked",
        "--set",
        "model=wan2.2-pro",
        "--set",
        "options.duration=8",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    promoted = yaml.safe_load(out.read_text())["requests"]
    assert [entry.get("vars", {}).get("shot") or entry["id"] for entry in promoted] == ["s1", "fox"]
    assert {entry["model"] for entry in promoted} == {"wan2.2-pro"}
