"""http_transport.OneConnectionEach as downloads use it: connections reused, never more than the
limit, and not tied to one host; and the one TLS context a process loads. (PixwithApi's use of it is
in test_api.py.)"""

from __future__ import annotations

import ssl
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers import CountingServer

from batchgen.providers.pixwith.client import PixwithApi
from batchgen.results.download import Files, fetch_file
from batchgen.sending import http_transport


class FileHost(CountingServer):
    """A file host on loopback serving `/<name>.mp4` as b"video <name>"; it counts the
    connections made to it."""

    def answer(self, handler):
        body = b"video " + handler.path.strip("/").removesuffix(".mp4").encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


@pytest.fixture
def hosts():
    made = [FileHost(), FileHost()]
    yield made
    for host in made:
        host.close()


def test_downloads_reuse_their_connections_and_never_open_more_than_the_concurrency(
    hosts, tmp_path
):
    host = hosts[0]
    files = Files(httpx.Timeout(5.0), max_connections=3)
    try:
        for batch in range(3):  # a new pool of threads each time, as each `download` makes
            with ThreadPoolExecutor(6) as pool:
                sizes = list(
                    pool.map(
                        lambda i, batch=batch: fetch_file(
                            files,
                            f"{host.base_url}/{batch}-{i}.mp4",
                            tmp_path / f"{batch}-{i}.mp4",
                            loopback_api=True,
                        ),
                        range(20),
                    )
                )
            assert sizes == [len(f"video {batch}-{i}") for i in range(20)]
    finally:
        files.close()
    assert 1 <= host.connections <= 3
    assert (tmp_path / "2-19.mp4").read_bytes() == b"video 2-19"


def test_one_connection_serves_files_from_two_hosts_in_turn(hosts, tmp_path):
    """Result URLs may point at more than one host (a CDN and its fallback): a connection
    last used for one host is closed and opened again to the other."""
    files = Files(httpx.Timeout(5.0), max_connections=1)
    try:
        for i in range(4):
            host = hosts[i % 2]
            assert fetch_file(
                files, f"{host.base_url}/{i}.mp4", tmp_path / f"{i}.mp4", loopback_api=True
            ) == len(f"video {i}")
    finally:
        files.close()
    assert [host.connections for host in hosts] == [2, 2]


def test_a_process_loads_its_tls_context_once_for_api_calls_and_downloads(
    hosts, tmp_path, monkeypatch
):
    """Loading the CA bundle takes ~20 ms; a run that calls the API and downloads loads it
    once, and `prepare_tls` has it loaded before the first call needs it."""
    made = []
    monkeypatch.setattr(http_transport, "_tls", None)
    monkeypatch.setattr(
        httpx, "create_ssl_context", lambda: made.append(1) or ssl.create_default_context()
    )
    http_transport.prepare_tls()
    host = hosts[0]
    with PixwithApi(host.base_url, "key_00000000000000000000000000000000") as api:
        api.balance()  # FileHost answers anything; only the connection matters here
    files = Files(httpx.Timeout(5.0), max_connections=2)
    try:
        assert fetch_file(
            files, f"{host.base_url}/a.mp4", tmp_path / "a.mp4", loopback_api=True
        ) == len("video a")
    finally:
        files.close()
    assert made == [1]
