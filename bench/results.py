"""Benchmark: poll and download throughput against the sandbox.

    python bench/results.py [--tasks 1000] [--runs 3]

Submits --tasks requests to a sandbox whose tasks end at once, then times
`batchgen poll --all` (get-task calls per second, no rpm ceiling, concurrency 8) and
`batchgen download` (files per second, concurrency 8), each in a fresh process.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from common import batchgen, sandbox, write_job


def once(tmp: Path, tasks: int) -> tuple[float, float]:
    job = write_job(tmp, tasks, "results")
    ledger = tmp / "results.db"
    with sandbox("--time-scale", "0") as base_url:
        batchgen("run", str(job), "--yes", "--rpm", "0", "--concurrency", "16", base_url=base_url, ledger=ledger)
        poll = batchgen("poll", "results", "--all", "--rpm", "0", "--concurrency", "8", base_url=base_url, ledger=ledger)
        download = batchgen("download", "results", "--out", str(tmp / "out"), "--concurrency", "8", base_url=base_url, ledger=ledger)
    return tasks / poll, tasks / download


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
    poll = statistics.median(r[0] for r in results)
    download = statistics.median(r[1] for r in results)
    print(f"| poll --all of {args.tasks:,} tasks (concurrency 8, no rpm ceiling) | {poll:,.0f} tasks/s | none set |")
    print(f"| download of {args.tasks:,} files (concurrency 8) | {download:,.0f} files/s | none set |")


if __name__ == "__main__":
    main()
