"""Benchmark: poll and download throughput against the sandbox, beside bare loops (SPEC §6.7).

    python bench/results.py [--tasks 1000] [--runs 3]

Submits --tasks requests to a sandbox whose tasks end at once, then times
`batchgen poll --all` (get-task calls per second, no rpm ceiling, concurrency 8) and
`batchgen download` (files per second, concurrency 8), each in a fresh process; and beside
each, a bare `httpx.Client` thread pool of 8 making the same calls: get-task for every task
id, and a GET of every result file written to disk as batchgen writes it (a temporary file,
fsync, rename), timed inside this process and, the yardstick decided for speed, as a program
of its own (bench/bare.py), timed whole as batchgen is. Goal: batchgen at ≥ 1.0 of the bare
loop's rate.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
from pathlib import Path

from bare import bare_download, bare_poll
from common import KEY, batchgen, program, sandbox, write_job

CONCURRENCY = 8
BARE = str(Path(__file__).with_name("bare.py"))


def once(tmp: Path, tasks: int) -> tuple[float, ...]:
    """Rates in tasks (files) per second: batchgen poll, the bare poll loop timed inside this
    process, that loop as a program of its own; the same three for download."""
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
        bare_polled = bare_poll(base_url, KEY, task_ids, CONCURRENCY)
        (tmp / "task_ids.txt").write_text("\n".join(task_ids))
        polled_alone = program(BARE, "poll", base_url, str(tmp / "task_ids.txt"), str(CONCURRENCY))
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
        bare_downloaded = bare_download(urls, tmp / "bare", CONCURRENCY)
        (tmp / "urls.txt").write_text("\n".join(urls))
        downloaded_alone = program(
            BARE, "download", str(tmp / "alone"), str(tmp / "urls.txt"), str(CONCURRENCY)
        )
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
    files = len(urls)
    return (
        *(tasks / seconds for seconds in (poll, bare_polled, polled_alone)),
        *(files / seconds for seconds in (download, bare_downloaded, downloaded_alone)),
    )


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
    for name, at, unit in (("poll --all", 0, "tasks"), ("download", 3, "files")):
        rate, bare_rate, alone_rate = (
            statistics.median(r[at + k] for r in results) for k in range(3)
        )
        ratio = statistics.median(r[at] / r[at + 1] for r in results)
        as_program = statistics.median(r[at] / r[at + 2] for r in results)
        print(
            f"| {name} of {args.tasks:,} {unit} (concurrency {CONCURRENCY}) vs a bare thread loop"
            f" | {ratio:.2f} ({rate:,.0f} vs {bare_rate:,.0f} {unit}/s); as a program {as_program:.2f}"
            f" ({alone_rate:,.0f} {unit}/s) | ≥ 1.0 |"
        )


if __name__ == "__main__":
    main()
