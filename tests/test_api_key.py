"""The API key is checked before it is sent and appears nowhere: not in output, not in errors."""

from __future__ import annotations

import pytest
from helpers import (
    job_text,
    prompts,
)

from batchgen.providers.pixwith.sandbox import TEST_KEY

FAST = ("--yes", "--rpm", "60000")


@pytest.mark.parametrize(
    "bad", [TEST_KEY + "\n", TEST_KEY + "\r", "\t" + TEST_KEY, TEST_KEY[:-1] + "é"]
)
def test_a_key_with_whitespace_or_non_ascii_is_refused_and_shown_nowhere(world, write_job, bad):
    env = world()
    job = write_job(job_text(prompts(2)))
    result = env.cli("run", job, *FAST, env={"PIXWITH_API_KEY": bad})
    assert result.exit_code == 2, result.output
    assert TEST_KEY[4:] not in result.output and "PIXWITH_API_KEY" in result.output
    assert env.sandbox.calls == []
    for path in env.tmp.rglob("*"):
        if path.is_file():
            assert TEST_KEY[4:].encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    "content", [b"\x7fELF\x02\x01\x01" + bytes(range(256)), b"", b"k\xc3\xa9y_0123456789"]
)
def test_a_key_file_that_is_no_key_is_refused_without_a_traceback(world, write_job, content):
    env = world()
    key_file = env.tmp / "key.bin"
    key_file.write_bytes(content)
    result = env.cli(
        "run",
        write_job(job_text(prompts(1))),
        *FAST,
        "--api-key-file",
        key_file,
        env={"PIXWITH_API_KEY": None},
    )
    assert result.exit_code == 2 and "--api-key-file" in result.output
    assert env.sandbox.calls == []
