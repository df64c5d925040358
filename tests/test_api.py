"""What each outcome of a call means (httpx.MockTransport as the server)."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest
from helpers import CountingServer, job_text, prompts

from batchgen.errors import UsageError
from batchgen.providers import Kind
from batchgen.providers.keys import check_api_key, redact
from batchgen.providers.pixwith.answers import classify
from batchgen.providers.pixwith.client import PixwithApi
from batchgen.sending.http_transport import parse_retry_after
from batchgen.urls import check_api_base as check_base_url

FAST = ("--yes", "--rpm", "60000")

BODY = {"prompt": "a", "model_id": "2-9", "options": {}}


def api_answering(handler) -> PixwithApi:
    return PixwithApi(
        "https://api.pixwith.ai", "key_secret", transport=httpx.MockTransport(handler)
    )


def answer(status=200, json=None, content=None, headers=None):
    def handler(request):
        return httpx.Response(status, json=json, content=content, headers=headers)

    return handler


def raising(error):
    def handler(request):
        raise error("boom", request=request)

    return handler


OK = {"code": 1, "message": "success", "data": {"task_id": "d425", "estimated_time": 150}}


def test_success_carries_the_task_id_and_eta():
    seen = {}

    def handler(request):
        seen.update(request.headers)
        seen["url"] = str(request.url)
        return httpx.Response(200, json=OK)

    outcome = api_answering(handler).create(BODY)
    assert (outcome.kind, outcome.task_id, outcome.estimated_time) == (Kind.OK, "d425", 150)
    assert seen["api-key"] == "key_secret" and seen["content-type"] == "application/json"
    assert seen["url"] == "https://api.pixwith.ai/api/task/create"


@pytest.mark.parametrize(
    "handler, kind",
    [
        (answer(429, {"code": 0}), Kind.RETRY),
        (answer(503, content=b"busy"), Kind.RETRY),
        (raising(httpx.ConnectError), Kind.RETRY),
        (raising(httpx.ConnectTimeout), Kind.RETRY),
        (raising(httpx.PoolTimeout), Kind.RETRY),
        (raising(httpx.ReadTimeout), Kind.IN_DOUBT),
        (raising(httpx.ReadError), Kind.IN_DOUBT),
        (raising(httpx.WriteError), Kind.IN_DOUBT),
        (raising(httpx.RemoteProtocolError), Kind.IN_DOUBT),
        (answer(500, content=b"oops"), Kind.IN_DOUBT),
        (answer(502, content=b"bad gateway"), Kind.IN_DOUBT),
        (answer(504, content=b""), Kind.IN_DOUBT),
        (answer(401, {"code": 2}), Kind.AUTH),
        (answer(403, content=b"no"), Kind.AUTH),
        (answer(200, {"code": 2, "message": "Invalid API key provided"}), Kind.AUTH),
        (answer(200, {"code": 0, "message": "Credits not enough"}), Kind.NO_CREDIT),
        (answer(200, {"code": 0, "message": "Invalid API KEY"}), Kind.AUTH),
        (
            answer(
                200,
                {
                    "code": 2,
                    "message": "Invalid API key. Get a valid API key at https://pixwith.ai/api",
                },
            ),
            Kind.AUTH,
        ),
        (answer(200, {"code": 0, "message": "prompt violates the content policy"}), Kind.REJECTED),
        (answer(400, content=b"bad request"), Kind.REJECTED),
    ],
)
def test_every_outcome_is_classified(handler, kind):
    assert api_answering(handler).create(BODY).kind is kind


MALFORMED = [
    answer(200, content=b"<html>gateway</html>"),
    answer(200, content=b""),
    answer(200, json=[1, 2]),
    answer(200, json={"code": 1}),
    answer(200, json={"code": 1, "data": {}}),
    answer(200, json={"code": 1, "data": {"task_id": ""}}),
    answer(200, json={"code": 1, "data": {"task_id": 42}}),
    answer(200, json={"code": 1, "data": "d425"}),
    answer(200, content=b"{" + b" " * (2 << 20) + b"}"),  # 2 MiB
    answer(201, json={"code": "1", "data": {"task_id": "x"}}),
]


@pytest.mark.parametrize("handler", MALFORMED)
def test_an_answer_that_is_not_the_documented_json_is_never_a_success(handler):
    outcome = api_answering(handler).create(BODY)
    assert outcome.kind is not Kind.OK and outcome.task_id is None


def test_a_strange_eta_keeps_the_task():
    outcome = api_answering(
        answer(200, {"code": 1, "data": {"task_id": "t", "estimated_time": "soon"}})
    ).create(BODY)
    assert outcome.kind is Kind.OK and outcome.estimated_time is None


def test_only_429_and_503_ask_everyone_to_slow_down():
    assert (
        api_answering(answer(429, {"code": 0}, headers={"Retry-After": "3"})).create(BODY).throttled
    )
    assert api_answering(answer(503)).create(BODY).throttled
    assert not api_answering(raising(httpx.ConnectError)).create(BODY).throttled
    assert not api_answering(answer(500)).create(BODY).throttled


def test_get_task_errors_are_always_retryable():
    assert api_answering(raising(httpx.ReadTimeout)).get("t").kind is Kind.RETRY
    assert api_answering(answer(500)).get("t").kind is Kind.RETRY


def test_the_key_is_scrubbed_from_messages():
    outcome = api_answering(
        answer(200, {"code": 0, "message": "key key_secret is suspended"})
    ).create(BODY)
    assert "key_secret" not in outcome.message and "<api key>" in outcome.message


def test_retry_after_in_both_forms():
    assert parse_retry_after("7") == 7
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(later) <= 31
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert (
        parse_retry_after("²") is None and parse_retry_after("٣") is None
    )  # digits to str.isdigit, not to float()


@pytest.mark.parametrize(
    "url",
    ["https://api.pixwith.ai", "http://127.0.0.1:8000", "http://localhost:1/", "http://[::1]:5"],
)
def test_allowed_base_urls(url):
    assert check_base_url(url) == url.rstrip("/")


@pytest.mark.parametrize("url", ["http://api.pixwith.ai", "ftp://x", "api.pixwith.ai"])
def test_refused_base_urls(url):
    with pytest.raises(UsageError):
        check_base_url(url)


# -- classification by what the API documents, not by words ---------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "Prompt contains forbidden content",  # was "the API refused the key" (exit 3)
        "Image resolution insufficient",  # was "out of credit"
        "Invalid image format",
        "Invalid image url",
        "Your balance of ideas is low; quota of patience exceeded",
        "unauthorized content",
    ],
)
def test_any_other_code_0_is_that_requests_rejection(message):
    outcome = classify(200, None, json_bytes({"code": 0, "message": message}), creating=True)
    assert outcome.kind is Kind.REJECTED and message in outcome.message


def json_bytes(value) -> bytes:
    import json

    return json.dumps(value).encode()


@pytest.mark.parametrize("eta", [1e308, float("inf"), float("nan"), -5, 10**400, 31 * 24 * 3600])
def test_an_out_of_range_estimated_time_is_recorded_as_unknown(eta):
    raw = b'{"code": 1, "data": {"task_id": "t1", "estimated_time": %s}}' % (
        b"NaN" if eta != eta else b"Infinity" if eta == float("inf") else str(eta).encode()
    )
    outcome = classify(200, None, raw, creating=True)
    assert outcome.kind is Kind.OK and outcome.task_id == "t1" and outcome.estimated_time is None


# -- the key --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["key_abc\n", "key_abc\r", "\tkey_abc", "key abc", "kéy_abc", "key_\x00"]
)
def test_a_key_that_cannot_be_sent_is_refused_without_showing_it(key):
    with pytest.raises(UsageError) as caught:
        check_api_key(key, "PIXWITH_API_KEY")
    assert "key_abc" not in str(caught.value) and "PIXWITH_API_KEY" in str(caught.value)


def test_redaction_covers_every_form_of_the_key():
    key = "key_a'b\\c d/+"
    forms = [key, repr(key), repr(key.encode()), "key_a%27b%5Cc%20d%2F%2B", "key_a%27b%5Cc+d%2F%2B"]
    for form in forms:
        assert "key_a" not in redact(f"error: {form} refused", key), form


def test_calls_carry_the_key_type_and_agent_and_nothing_else_of_a_browsers():
    seen = []
    with api_answering(lambda request: seen.append(request) or httpx.Response(200, json=OK)) as api:
        api.create(BODY)
        api.get("d425")
    create, get = seen
    assert str(create.url) == "https://api.pixwith.ai/api/task/create"
    assert str(get.url) == "https://api.pixwith.ai/api/task/get"
    assert (
        create.headers["Api-Key"] == "key_secret"
        and create.headers["Content-Type"] == "application/json"
    )
    assert (
        create.headers["User-Agent"].startswith("batchgen/")
        and create.headers["Host"] == "api.pixwith.ai"
    )
    assert "cookie" not in create.headers
    assert (
        create.extensions["timeout"]["read"] == 60.0
    )  # the long read timeout: see api.DEFAULT_TIMEOUT


class CreditsServer(CountingServer):
    """An API on loopback that answers every call with a balance of 7; it notes the paths asked
    and counts the connections made to it, and can hold its answers until told."""

    def __init__(self):
        import threading

        self.asked: list[str] = []
        self.release = threading.Event()
        self.release.set()
        self.arrived = threading.Event()  # set once a call reached the server
        super().__init__()

    def answer(self, handler):
        import json

        self.asked.append(handler.path)
        handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        self.arrived.set()
        self.release.wait(10)
        body = json.dumps({"code": 1, "message": "ok", "data": {"credits": 7}}).encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self):
        self.release.set()
        super().close()


@pytest.fixture
def counting(monkeypatch):
    for name in (
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ):
        monkeypatch.delenv(
            name, raising=False
        )  # calls go straight to the server unless a test sets one
    server = CreditsServer()
    yield server
    server.close()


def test_a_proxy_set_in_the_environment_carries_the_calls(counting, monkeypatch):
    """Calls skip httpx.Client's per-call work, but not the user's proxy: with HTTP_PROXY set
    they go through a client, which sends them to the proxy."""
    monkeypatch.setenv("HTTP_PROXY", counting.base_url)  # the server plays the proxy
    with PixwithApi("http://api.pixwith.invalid", "key_secret") as api:
        assert api.balance().credits == 7
    assert counting.asked == [
        "http://api.pixwith.invalid/api/task/get_credits"
    ]  # a proxy is asked for the absolute URL


def test_calls_reuse_connections_and_never_open_more_than_the_limit(counting):
    """Each call has a connection of its own while it is out, given back when its answer is
    read: threads that come and go (a poll's rounds) reuse them, and never exceed the limit."""
    from concurrent.futures import ThreadPoolExecutor

    with PixwithApi(counting.base_url, "key_secret", max_connections=3) as api:
        for _round in range(4):  # a new pool of threads each round, as poll makes
            with ThreadPoolExecutor(6) as pool:
                assert [b.credits for b in pool.map(lambda _: api.balance(), range(12))] == [7] * 12
        assert counting.connections <= 3
        api.balance()
    assert counting.connections <= 3


def test_a_call_that_finds_every_connection_lent_waits_then_is_not_sent(counting):
    import threading

    counting.release.clear()  # the first call's answer is held
    with PixwithApi(
        counting.base_url, "key_secret", max_connections=1, timeout=httpx.Timeout(5.0, pool=0.3)
    ) as api:
        first = threading.Thread(target=api.balance)
        first.start()
        assert counting.arrived.wait(10)  # the first call holds the one connection
        started = time.monotonic()
        balance = api.balance()  # the one connection is out
        # Not sent (a held answer would have given 7), after the pool's wait, never before it.
        assert (
            balance.credits is None and balance.kind is Kind.RETRY and "not sent" in balance.problem
        )
        assert time.monotonic() - started >= 0.25
        counting.release.set()
        first.join()
        assert api.balance().credits == 7  # given back once its answer was read
    assert counting.connections == 1


# -- a refusal the API documents ------------------------------------------------------------------


def test_a_moderation_refusal_is_a_rejection_and_the_batch_goes_on(world, write_job):
    env = world(reject_rate=0.3, reject_message="Prompt contains forbidden content", seed=2)
    job = write_job(job_text(prompts(20)))
    result = env.cli("run", job, *FAST, "--concurrency", "1")
    assert result.exit_code == 1, result.output  # not 3: the key was not refused
    assert "refused the key" not in result.output and "out of credit" not in result.output
    states = [r["state"] for r in env.rows()]
    assert len(states) == 20 and "rejected" in states and "failed" not in states
    assert states.count("submitted") == len(env.sandbox.created())
    again = env.cli("run", job, *FAST)  # the rejected ones are not sent again first
    assert again.exit_code == 1 and len(env.sandbox.created()) == states.count("submitted")
