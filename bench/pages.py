"""Benchmark: the review page and the gallery of a big job (issue goal: first byte ≤ 0.5 s and
memory flat at any size).

    python bench/pages.py [--tasks 100000 300000] [--runs 3]

For each size, a ledger whose one job has that many completed tasks (written straight by
batchgen's migrations, as bench/ledger.py does). Then:

- `batchgen review JOB --no-open` in its own process: the seconds from asking for its page to
  the page's first byte, and the server's peak resident memory once it has served it;
- `batchgen gallery JOB`: the wall time of the whole command and its peak resident memory
  (every page written: a page of tiles at a time).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from ledger import write_submitted
from plan import run_peak

BODY = {
    "model_id": "2-9",
    "options": {"aspect_ratio": "16:9", "resolution": "480p", "duration": 5},
}


def build(path: Path, tasks: int) -> None:
    """`tasks` completed tasks of the job `shots`, across three models' worth of prompts."""
    write_submitted(
        path,
        (
            (
                f"{i:064x}",
                "shots",
                "shots.yaml",
                "https://api.pixwith.ai",
                {**BODY, "model_id": ("2-9", "2-10", "2-11")[i % 3], "prompt": f"Shot {i // 3}"},
                0,
                "completed",
                None,
            )
            for i in range(tasks)
        ),
    )
    with sqlite3.connect(path) as conn:  # each with its video's URL, as a poll leaves it
        conn.execute(
            "UPDATE tasks SET result_urls = json_array('https://cdn.example/' || key || '.mp4')"
        )


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def first_byte(ledger: Path, out: Path) -> tuple[float, float]:
    """(seconds to the review page's first byte, the server's peak RSS in MB)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "batchgen", "--ledger", str(ledger), "review", "shots"]
        + ["--no-open", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "serving http://127.0.0.1:PORT/"
        url = line.split()[-1]
        started = time.perf_counter()
        took = None
        with httpx.stream("GET", url, timeout=120) as response:
            for _ in response.iter_raw():
                took = took or time.perf_counter() - started
        assert response.status_code == 200 and took is not None, response.status_code
        return took, peak_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="*", default=[100_000, 300_000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for tasks in args.tasks:
            ledger = Path(folder) / f"{tasks}.db"
            build(ledger, tasks)
            out = Path(folder) / f"out{tasks}"
            out.mkdir()
            served = [first_byte(ledger, out) for _ in range(args.runs)]
            seconds = statistics.median(s for s, _ in served)
            print(
                f"| review page of {tasks:,} tasks: first byte | {seconds:.2f} s,"
                f" {max(m for _, m in served):.0f} MB peak RSS | ≤ 0.5 s, flat |",
                flush=True,
            )
            written = [
                run_peak(["--ledger", str(ledger), "gallery", "shots", "--out", str(out)])
                for _ in range(args.runs)
            ]
            pages = len(list(out.glob("*.html")))
            print(
                f"| gallery of {tasks:,} tasks ({pages} pages) | "
                f"{statistics.median(s for s, _ in written):.1f} s,"
                f" {max(m for _, m in written):.0f} MB peak RSS | memory flat |",
                flush=True,
            )


if __name__ == "__main__":
    main()
