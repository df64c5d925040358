"""A stored key (`batchgen keys set pixwith`, as llm keeps its keys): kept in the user's config
folder, 0600, used by `run` when neither --api-key-file nor PIXWITH_API_KEY gives one, and never
shown in anything batchgen prints."""

from __future__ import annotations

import json
import stat

from helpers import job_text, prompts

from batchgen.providers.pixwith.sandbox import TEST_KEY


def test_a_stored_key_is_used_by_run_and_never_printed(world, write_job, tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHGEN_USER_DIR", str(tmp_path / "config"))
    env = world(time_scale=0)
    stored = env.cli("keys", "set", "pixwith", input=TEST_KEY + "\n")
    assert stored.exit_code == 0, stored.output
    path = tmp_path / "config" / "keys.json"
    assert json.loads(path.read_text()) == {"pixwith": TEST_KEY}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert env.cli("keys", "list").stdout == "pixwith\n"
    assert env.cli("keys", "path").stdout.strip() == str(path)

    job = write_job(job_text(prompts(2)))
    ran = env.cli("run", job, "--yes", "--rpm", "0", env={"PIXWITH_API_KEY": None})
    assert ran.exit_code == 0, ran.output
    assert len(env.sandbox.created()) == 2
    assert all(call.api_key_ok for call in env.sandbox.calls)
    every_output = stored.output + ran.output + env.cli("keys", "list").output
    assert TEST_KEY not in every_output

    assert env.cli("keys", "remove", "pixwith").exit_code == 0
    refused = env.cli("run", job, "--yes", env={"PIXWITH_API_KEY": None})
    assert refused.exit_code == 2 and "batchgen keys set pixwith" in refused.output


def test_a_bad_key_is_not_stored_and_not_shown(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHGEN_USER_DIR", str(tmp_path / "config"))
    secret = "key_with a space inside it"
    result = cli("keys", "set", "pixwith", input=secret + "\n")
    assert result.exit_code == 2 and "whitespace" in result.output
    assert secret not in result.output and "a space" not in result.output
    assert not (tmp_path / "config" / "keys.json").exists()
    assert cli("keys", "set", "nobody", input="x" * 36 + "\n").exit_code == 2
