"""Benchmark: sandbox throughput (target ≥ 1,000 create calls/s) and per-call latency.

    python bench/sandbox.py [--calls 3000] [--clients 8]

The sandbox runs in its own process, as `batchgen sandbox`; the clients are processes too,
each a keep-alive httpx.Client, so the client's own cost doesn't cap the figure. The median
latency of sequential calls shows no Nagle/delayed-ACK stall (which would be ~40 ms).
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
import statistics
import subprocess
import sys
import time

import httpx

KEY = "key_00000000000000000000000000000000"
BODY = {
    "prompt": "A cat walking in the garden",
    "model_id": "2-9",
    "options": {
        "prompt_optimization": True,
        "aspect_ratio": "16:9",
        "resolution": "480p",
        "duration": 5,
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sandbox(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "sandbox", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/_sandbox/stats", timeout=0.5)
            return process
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the sandbox did not start")


def client(args: tuple[str, int]) -> int:
    base_url, calls = args
    ok = 0
    with httpx.Client(base_url=base_url, headers={"Api-Key": KEY}) as c:
        for i in range(calls):
            answer = c.post("/api/task/create", json={**BODY, "prompt": f"{BODY['prompt']} {i}"})
            ok += answer.json()["code"] == 1
    return ok


def measure(calls: int, clients: int) -> tuple[float, float]:
    """(create calls per second, median sequential latency in ms) of one fresh sandbox."""
    port = free_port()
    sandbox = start_sandbox(port)
    base_url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base_url, headers={"Api-Key": KEY}) as c:
            latencies = []
            for _ in range(200):
                started = time.perf_counter()
                c.post("/api/task/create", json=BODY)
                latencies.append(time.perf_counter() - started)
        per_client = calls // clients
        with multiprocessing.Pool(clients) as pool:
            started = time.perf_counter()
            ok = sum(pool.map(client, [(base_url, per_client)] * clients))
            elapsed = time.perf_counter() - started
    finally:
        sandbox.terminate()
        sandbox.wait()
    assert ok == per_client * clients, f"only {ok} calls succeeded"
    return ok / elapsed, statistics.median(latencies) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = [measure(args.calls, args.clients) for _ in range(args.runs)]
    rate = statistics.median(r[0] for r in results)
    latency = statistics.median(r[1] for r in results)
    print(
        f"| sandbox create throughput ({args.clients} client processes, {args.calls:,} calls) | {rate:,.0f} calls/s | ≥ 1,000 |"
    )
    print(
        f"| sandbox create latency, sequential keep-alive | {latency:.2f} ms median | no ~40 ms stall |"
    )


if __name__ == "__main__":
    main()
