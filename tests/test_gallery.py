"""The gallery page: structure, escaping, and a real headless browser loading it from file://."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from helpers import PRO_DEFAULTS

HOSTILE = '<script>alert("x")</script> & a "cat"'


def job_with_a_hostile_prompt() -> str:
    return (
        "version: 1\nname: gallery\n"
        + PRO_DEFAULTS
        + "requests:\n  - matrix:\n"
        + f"      prompt: [{json.dumps(HOSTILE)}, A cat asleep, A cat on a skateboard]\n"
        + "      model: [wan2.2-pro, wan2.2-fast]\n"
    )


class Page(HTMLParser):
    """The parts of the page the tests look at."""

    def __init__(self, text: str):
        super().__init__()
        self.videos: list[str] = []
        self.figures: list[dict] = []
        self.scripts = 0
        self.external: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "video":
            self.videos.append(attrs["src"])
        if tag == "figure":
            self.figures.append(attrs)
        if tag == "script":
            self.scripts += 1
        for name in ("src", "href"):
            if attrs.get(name, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[name])


@pytest.fixture
def gallery_run(world, write_job, monkeypatch):
    """A sandbox run where some tasks fail, downloaded and rendered in one command."""
    env = world(time_scale=0, fail_fraction=0.3, seed=4)
    job = write_job(job_with_a_hostile_prompt())
    monkeypatch.chdir(env.tmp)
    result = env.cli("run", job, "--yes", "--rpm", "0", "--wait", "--download", "--gallery")
    assert result.exit_code in (0, 1), result.output
    folder = env.outputs("gallery")
    assert f"gallery: {folder.relative_to(env.tmp)}/index.html" in result.output
    return env, folder


def test_the_page_shows_every_file_and_every_task(gallery_run):
    env, folder = gallery_run
    text = (folder / "index.html").read_text()
    page = Page(text)
    files = sorted(p.name for p in folder.glob("*.mp4"))
    assert sorted(page.videos) == files  # every file, linked relatively
    assert page.external == [] and page.scripts == 1  # self-contained: no CDN, one inline script
    rows = env.rows()
    assert len(page.figures) == len(rows) == 6
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed, "the seed should fail some tasks"
    assert sum("failed" in f["class"] for f in page.figures) == len(failed)  # shown, not hidden
    for row in failed:
        assert row["task_id"] in text


def test_every_prompt_is_text_never_html(gallery_run):
    _, folder = gallery_run
    text = (folder / "index.html").read_text()
    assert HOSTILE not in text
    # (the templates' escaping spells a quote &#34;, as markupsafe does)
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; a &#34;cat&#34;" in text
    assert text.count("<script>") == 1


def test_rows_are_prompts_and_columns_what_varies(gallery_run):
    _, folder = gallery_run
    text = (folder / "index.html").read_text()
    header = re.search(r"<thead>(.*?)</thead>", text, re.S).group(1)
    assert ">prompt \\ model<" in header  # the legend names the fields once
    assert ">wan2.2-pro<" in header and ">wan2.2-fast<" in header  # each header only its value
    assert text.count("<tr><th scope=row>") == 3


def test_rows_and_cols_can_be_chosen(gallery_run):
    env, folder = gallery_run
    result = env.cli("gallery", "gallery", "--rows", "model", "--cols", "prompt")
    assert result.exit_code == 0
    text = (folder / "index.html").read_text()
    assert text.count("<tr><th scope=row>") == 2
    bad = env.cli("gallery", "gallery", "--rows", "modle")
    assert bad.exit_code == 2 and "did you mean 'model'?" in bad.output


def test_a_big_job_is_paged_into_files_each_showing_its_own_tiles(gallery_run, monkeypatch):
    """A page shows at most PAGE_TILES tiles, so a job of any size is written a page at a time:
    index.html, page-2.html, … linked to each other, every task on exactly one of them in the
    order sent, each saying what the whole job is. A shorter gallery written later removes the pages it no
    longer has."""
    from batchgen.web import pages

    env, folder = gallery_run
    monkeypatch.setattr(pages, "PAGE_TILES", 4)
    assert env.cli("gallery", "gallery").exit_code == 0
    first, second = (folder / "index.html").read_text(), (folder / "page-2.html").read_text()
    assert not (folder / "page-3.html").exists()
    shown = [[f["data-key"] for f in Page(text).figures] for text in (first, second)]
    assert [len(keys) for keys in shown] == [4, 2]
    assert sorted(shown[0] + shown[1]) == sorted(r["key"] for r in env.rows())
    in_order = [r["key"] for r in env.rows()]  # as `tasks` lists them: the order sent
    assert [set(keys) for keys in shown] == [set(in_order[:4]), set(in_order[4:])]
    assert 'href="page-2.html" rel=next' in first and "page 1 of 2, tiles 1–4 of 6" in first
    assert 'href="index.html" rel=prev' in second and "tiles 5–6 of 6" in second
    summary = re.search(r'<span id="summary">(.*?)</span>', first).group(1)
    assert summary == re.search(r'<span id="summary">(.*?)</span>', second).group(1)
    assert sum(int(n) for n in re.findall(r"(\d+) (?:completed|failed)", summary)) == 6
    monkeypatch.setattr(pages, "PAGE_TILES", 500)
    assert env.cli("gallery", "gallery").exit_code == 0
    assert (
        not (folder / "page-2.html").exists()
        and "rel=next" not in (folder / "index.html").read_text()
    )


def chromium() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


def test_the_page_loads_in_a_real_browser_with_every_video_playable(gallery_run, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium where it can)")
    _, folder = gallery_run
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--autoplay-policy=no-user-gesture-required",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (folder / "index.html").resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # headless Chromium logs every console message this way
    durations = re.findall(r'<video[^>]*data-duration="([0-9.]+)"', result.stdout)
    videos = re.findall(r"<video", result.stdout)
    assert videos and len(durations) == len(videos), "a video did not load its metadata"
    assert all(float(d) > 0 for d in durations)
    assert 'data-error="1"' not in result.stdout
