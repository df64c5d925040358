"""One identity per API, however its base URL is spelled; a base URL that cannot be one is
refused before anything is sent."""

from __future__ import annotations

import json

import pytest
from helpers import (
    job_text,
    prompts,
)

from batchgen.ledger import Ledger

FAST = ("--yes", "--rpm", "60000")


def test_spellings_of_one_base_url_are_one_api(world, write_job):
    env = world()
    job = write_job(job_text(prompts(3)))
    host, port = env.sandbox.base_url.rsplit(":", 1)
    spellings = [
        env.sandbox.base_url,
        f"HTTP://127.0.0.1:{port}/",
        f"http://127.0.0.1:{port}/api/..",
        f"http://127.0.0.1:{port}/./",
    ]
    for spelling in spellings:
        result = env.cli("run", job, *FAST, "--base-url", spelling)
        assert result.exit_code == 0, (spelling, result.output)
    assert len(env.sandbox.created()) == 3
    assert {r["api_base"] for r in env.rows()} == {env.sandbox.base_url}


@pytest.mark.parametrize("suffix", ["?x=1", "#frag", "?"])
def test_a_base_url_with_a_query_or_fragment_is_refused(world, write_job, suffix):
    env = world()
    job = write_job(job_text(prompts(1)))
    result = env.cli("run", job, *FAST, "--base-url", env.sandbox.base_url + "/" + suffix)
    assert result.exit_code == 2 and "base URL" in result.stderr
    assert env.sandbox.calls == []


def test_user_info_in_a_base_url_is_refused_without_echoing_it(world, write_job):
    env = world()
    job = write_job(job_text(prompts(1)))
    secret_url = env.sandbox.base_url.replace("http://", "http://me:hunter2secret@")
    result = env.cli("run", job, *FAST, "--base-url", secret_url)
    assert result.exit_code == 2 and "hunter2secret" not in result.output
    assert env.sandbox.calls == []


def test_old_ledgers_keep_their_keys_through_the_migration(tmp_path):
    import hashlib

    from batchgen.ledger.connections import SQLITE
    from batchgen.ledger.migrations import canonical_api_base  # m002

    path = tmp_path / "old.db"
    with Ledger(path) as ledger:
        body = {"prompt": "a", "model_id": "2-9", "options": {}}
        for api_base in ("HTTP://127.0.0.1:9/", "https://api.pixwith.ai"):
            document = {"api": api_base, "body": body, "variant": 0}
            key = hashlib.sha256(
                json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest()
            ledger.db.conn.execute(
                "INSERT INTO tasks (key, job, api_base, request, variant, state, attempts) VALUES (?, 'j', ?, ?, 0, 'submitted', 1)",
                [key, api_base, json.dumps(body)],
            )
        before = {r["key"]: r["api_base"] for r in ledger.tasks.rows()}
        canonical_api_base(ledger.db.conn, SQLITE)
        assert {
            r["key"]: r["api_base"] for r in ledger.tasks.rows()
        } == before  # keys made from a spelling keep it
