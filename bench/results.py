"""Benchmark: poll and download throughput against the sandbox, beside bare loops (SPEC §6.7).

    python bench/results.py [--tasks 1000] [--runs 3]

Submits --tasks requests to a sandbox whose tasks end at once, then times
`batchgen poll --all` (get-task calls per second, no rpm ceiling, concurrency 8) and
`batchgen download` (files per second, concurrency 8), each in a fresh process; and beside
each, a bare `httpx.Client` thread pool of 8 making the same calls: get-task for every task
id, and a GET of every result file written to disk as batchgen writes it (a temporary file,
fsync, rename). Goal: batchgen at ≥ 0.9 of the bare loop's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import KEY, batchgen, sandbox, write_job

CONCURRENCY = 8


def bare_poll(base_url: str, task_ids: list[str]) -> float:
    """Seconds for a thread pool to ask get-task of every task id."""
    limits = httpx.Limits(max_connections=CONCURRENCY)
    with httpx.Client(base_url=base_url, headers={"Api-Key": KEY}, limits=limits) as client:

        def one(task_id: str) -> None:
            answer = client.post("/api/task/get", json={"task_id": task_id}).json()
            assert answer["code"] == 1, answer

        started = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(one, task_ids))
        return time.perf_counter() - started


def bare_download(urls: list[str], folder: Path) -> float:
    """Seconds for a thread pool to fetch every URL into `folder` (temporary file, fsync, rename)."""
    folder.mkdir()
    with httpx.Client(limits=httpx.Limits(max_connections=CONCURRENCY)) as client:

        def one(item: tuple[int, str]) -> None:
            i, url = item
            part = folder / f"{i}.mp4.part"
            with client.stream("GET", url) as response, open(part, "wb") as out:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(part, folder / f"{i}.mp4")

        started = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(one, enumerate(urls)))
        return time.perf_counter() - started


def once(tmp: Path, tasks: int) -> tuple[float, float, float, float]:
    """(batchgen poll, bare poll, batchgen download, bare download) in tasks per second."""
    job = write_job(tmp, tasks, "results")
    ledger = tmp / "results.db"
    with sandbox("--time-scale", "0") as base_url:
        batchgen(
            "run",
            str(job),
            "--yes",
            "--rpm",
            "0",
            "--concurrency",
            "16",
            base_url=base_url,
            ledger=ledger,
        )
        with sqlite3.connect(ledger) as db:
            task_ids = [
                row[0] for row in db.execute("SELECT task_id FROM tasks WHERE state = 'submitted'")
            ]
        bare_polled = bare_poll(base_url, task_ids)
        poll = batchgen(
            "poll",
            "results",
            "--all",
            "--rpm",
            "0",
            "--concurrency",
            str(CONCURRENCY),
            base_url=base_url,
            ledger=ledger,
        )
        with sqlite3.connect(ledger) as db:
            urls = [
                url
                for row in db.execute("SELECT result_urls FROM tasks WHERE status = 'completed'")
                for url in json.loads(row[0])
            ]
        bare_downloaded = bare_download(urls, tmp / "bare")
        download = batchgen(
            "download",
            "results",
            "--out",
            str(tmp / "out"),
            "--concurrency",
            str(CONCURRENCY),
            base_url=base_url,
            ledger=ledger,
        )
    return tasks / poll, tasks / bare_polled, len(urls) / download, len(urls) / bare_downloaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = []
        for i in range(args.runs):
            (Path(folder) / str(i)).mkdir()
            results.append(once(Path(folder) / str(i), args.tasks))
    for name, ours, bare, unit in (("poll --all", 0, 1, "tasks"), ("download", 2, 3, "files")):
        rate = statistics.median(r[ours] for r in results)
        bare_rate = statistics.median(r[bare] for r in results)
        ratio = statistics.median(r[ours] / r[bare] for r in results)
        print(
            f"| {name} of {args.tasks:,} {unit} (concurrency {CONCURRENCY}) vs a bare thread loop | {ratio:.2f} ({rate:,.0f} vs {bare_rate:,.0f} {unit}/s) | ≥ 0.9 |"
        )


if __name__ == "__main__":
    main()
