"""Shared by the benchmarks: a sandbox in its own process, jobs of N requests, timing."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

# batchgen is measured as a user runs it after `pip install .`, which compiles its modules.
# From an editable install with PYTHONDONTWRITEBYTECODE set (as on some CI machines) every
# process would compile them again from source (~80 ms of each start): let the children write
# and reuse bytecode caches instead.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
KEY = "key_00000000000000000000000000000000"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def sandbox(*options: str) -> Iterator[str]:
    """`batchgen sandbox` in its own process; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "sandbox", "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(f"{base_url}/_sandbox/stats", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield base_url
    finally:
        process.terminate()
        process.wait()


def write_job(folder: Path, requests: int, name: str = "bench") -> Path:
    """A job of `requests` distinct Pro requests (a prompts file × 2 durations)."""
    prompts = folder / f"{name}-prompts.txt"
    prompts.write_text(
        "".join(f"Shot {i}: a cat crosses the garden at dusk\n" for i in range(requests // 2))
    )
    job = folder / f"{name}.yaml"
    job.write_text(
        f"""version: 1
name: {name}
limits: {{max_requests: {requests}}}
defaults:
  model: wan2.2-pro
  options: {{prompt_optimization: true, aspect_ratio: "16:9", resolution: 480p, duration: 5}}
requests:
  - matrix:
      prompt: {{file: {prompts.name}}}
      options.duration: [5, 8]
"""
    )
    return job


def batchgen(*args: str, base_url: str, ledger: Path) -> float:
    """Run the batchgen CLI in a fresh process; its wall time in seconds."""
    env = {"PIXWITH_BASE_URL": base_url, "BATCHGEN_LEDGER": str(ledger)}
    return program("-m", "batchgen", *args, env=env)


def program(*args: str, env: dict[str, str] | None = None) -> float:
    """Run `python *args` in a fresh process (the API key in its environment, with `env`);
    its wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *args],
        env={**os.environ, "PIXWITH_API_KEY": KEY, **(env or {})},
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(
            f"python {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return elapsed


def create_times(base_url: str) -> list[float]:
    return sorted(httpx.get(f"{base_url}/_sandbox/stats").json()["create_times"])
