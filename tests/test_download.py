"""Downloads are bounded (size, time, redirects, where they may go) and what they write is safe
to open: the manifest's cells are text."""

from __future__ import annotations

import json
import time

import pytest
from helpers import (
    Loopback,
    job_text,
    prompts,
)

FAST = ("--yes", "--rpm", "60000")


class HostileFiles:
    """A file host on loopback that misbehaves on purpose, path by path."""

    def __init__(self):
        import http.server

        outer = self
        self.hits: list[str] = []
        self.sent = 0  # bytes of body the endless path wrote before the client hung up
        self.headers: list[dict[str, str]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.hits.append(self.path)
                outer.headers.append(dict(self.headers))
                name = self.path.strip("/")
                try:
                    getattr(outer, "serve_" + name.split("?")[0].replace("-", "_"))(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.loopback = Loopback(Handler)
        self.base = self.loopback.base_url

    def close(self):
        self.loopback.close()

    def serve_endless(self, h):  # no length, never ends (6.5 GB)
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        h.end_headers()
        chunk = b"\0" * 65536
        for _ in range(100_000):
            h.wfile.write(chunk)
            self.sent += len(chunk)

    @staticmethod
    def serve_slow(h):  # a byte now and then: never stalls, never ends
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(1000):
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.2)

    @staticmethod
    def serve_huge(h):  # says so up front
        h.send_response(200)
        h.send_header("Content-Length", str(10 << 30))
        h.end_headers()

    @staticmethod
    def redirect(h, status: int, location: str) -> None:
        h.send_response(status)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def serve_loop(self, h):
        self.redirect(h, 302, "/loop")

    def serve_to_private(self, h):
        self.redirect(h, 302, "https://10.1.2.3/internal.mp4")  # refused before any connection

    def serve_to_metadata(self, h):
        self.redirect(h, 301, "https://169.254.169.254/latest/meta-data")

    @staticmethod
    def serve_flaky(h):  # a 503 first, then the file
        if HostileFiles.flaky_done:
            body = b"fine video"
            h.send_response(200)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        else:
            HostileFiles.flaky_done = True
            h.send_response(503)
            h.send_header("Content-Length", "0")
            h.end_headers()

    flaky_done = False


@pytest.fixture
def hostile():
    files = HostileFiles()
    yield files
    files.close()


def fetch(url, tmp_path, *, loopback_api=True, **bounds):
    import httpx

    from batchgen.results.bounds import Bounds
    from batchgen.results.download import Files, fetch_file
    from batchgen.sending.limits import Backoff

    target = tmp_path / "video.mp4"
    files = Files(
        httpx.Timeout(5.0, read=bounds.pop("stall_timeout", 5.0))
    )  # what `download` fetches with
    try:
        result = fetch_file(
            files,
            url,
            target,
            loopback_api=loopback_api,
            bounds=Bounds(backoff=Backoff(base=0, max_attempts=2), **bounds),
        )
    finally:
        files.close()
    return result, target


def test_a_file_host_is_sent_the_agent_and_nothing_of_the_users(hostile, tmp_path):
    result, target = fetch(hostile.base + "/flaky", tmp_path)  # 503, then the file
    assert result == len(b"fine video") and target.read_bytes() == b"fine video"
    for sent in hostile.headers:
        assert sent["User-Agent"].startswith("batchgen/")
        assert not {"Api-Key", "Cookie", "Authorization"} & set(sent)


def test_an_endless_body_stops_at_the_size_cap(hostile, tmp_path):
    result, target = fetch(hostile.base + "/endless", tmp_path, max_file_size=1 << 20)
    assert isinstance(result, str) and "max-file-size" in result
    assert not target.exists() and not list(tmp_path.glob("*.part"))
    assert hostile.sent < 64 << 20  # stopped reading soon after the cap (socket buffers aside)


def test_a_declared_size_over_the_cap_is_not_even_read(hostile, tmp_path):
    result, _ = fetch(hostile.base + "/huge", tmp_path)
    # Refused on its Content-Length: reading the body (none comes) would end in a timeout.
    assert "max-file-size" in result and hostile.hits == ["/huge"]


@pytest.mark.slow
def test_a_trickle_meets_the_per_file_deadline(hostile, tmp_path):
    result, target = fetch(hostile.base + "/slow", tmp_path, deadline=1.0)
    assert "within 1 s" in result and not target.exists()
    assert hostile.hits == ["/slow", "/slow"]  # each attempt stopped at its deadline


def test_redirects_are_bounded_and_each_hop_is_checked(hostile, tmp_path):
    result, _ = fetch(hostile.base + "/loop", tmp_path)
    assert "more than 5 redirects" in result
    assert hostile.hits.count("/loop") == 6
    result, _ = fetch(hostile.base + "/to-private", tmp_path)
    assert "10.1.2.3" in result and "private" in result
    result, _ = fetch(hostile.base + "/to-metadata", tmp_path)
    assert "169.254.169.254" in result


def test_loopback_and_plain_http_only_when_the_api_is_loopback(hostile, tmp_path):
    result, _ = fetch(hostile.base + "/flaky", tmp_path, loopback_api=False)
    assert "only https" in result and hostile.hits == []


def test_a_transient_failure_is_retried_within_the_command(hostile, tmp_path):
    HostileFiles.flaky_done = False
    result, target = fetch(hostile.base + "/flaky", tmp_path)
    assert result == len(b"fine video") and target.read_bytes() == b"fine video"
    assert hostile.hits == ["/flaky", "/flaky"]


def test_download_command_applies_the_bounds_to_what_the_api_said(world, write_job, hostile):
    env = world(time_scale=0)
    job = write_job(job_text(prompts(2), name="hostile"))
    assert env.cli("run", job, *FAST, "--wait").exit_code == 0
    with env.ledger() as ledger:
        ledger.db.conn.execute(
            "UPDATE tasks SET result_urls = ?", [json.dumps([hostile.base + "/endless"])]
        )
    out = env.tmp / "videos"
    result = env.cli("download", job, "--out", out, "--max-file-size", "100000")
    assert result.exit_code == 1 and "max-file-size" in result.output
    assert list(out.glob("*.mp4")) == []
    assert env.cli("download", job, "--out", out, "--max-file-size", "nan").exit_code == 2


def test_manifest_cells_that_look_like_formulas_are_text(world, write_job):
    import csv

    env = world(time_scale=0)
    hostile = ['=HYPERLINK("http://evil","x")', "+1+2", "-cmd", "@SUM(A1)"]
    job = write_job(
        "version: 1\nname: formulas\ndefaults:\n  model: wan2.2-pro\n"
        "  options: {prompt_optimization: true, aspect_ratio: '16:9', resolution: 480p, duration: 5}\n"
        "requests:\n  - matrix: {prompt: " + json.dumps(hostile) + "}\n"
    )
    assert env.cli("run", job, *FAST, "--wait").exit_code == 0
    out = env.tmp / "videos"
    assert env.cli("download", job, "--out", out).exit_code == 0
    with open(out / "manifest.csv", newline="") as f:
        prompts_written = sorted(row["prompt"] for row in csv.DictReader(f))
    assert prompts_written == sorted("'" + p for p in hostile)
