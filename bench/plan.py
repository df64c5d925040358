"""Benchmark: validate + plan of a 100,000-request job (target: < 3 s, < 300 MB peak RSS).

    python bench/plan.py [--requests 100000] [--runs 3]

Runs `batchgen plan` in a child process (so start-up is counted, as a user feels it) and
reports the median wall time and the peak resident memory of the child.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import write_job


def run_once(job: Path, extra: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `batchgen plan` in a fresh process."""
    return run_peak(["plan", str(job), *extra])


def run_peak(arguments: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `batchgen ARGUMENTS` in a fresh process."""
    code = (
        "import resource, subprocess, sys, time;"
        "t = time.perf_counter();"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL);"
        "dt = time.perf_counter() - t;"
        "assert r.returncode == 0, r.returncode;"
        "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "-m", "batchgen", *arguments],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--json", action="store_true", help="time `plan --json` (every request printed)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        job = write_job(
            Path(tmp), args.requests
        )  # every request distinct, most of each body shared
        extra = ["--json"] if args.json else []
        results = [run_once(job, extra) for _ in range(args.runs)]
    seconds = statistics.median(r[0] for r in results)
    peak = max(r[1] for r in results)
    mode = "plan --json" if args.json else "plan"
    print(
        f"| {mode} of {args.requests:,} requests (both validation steps) | {seconds:.2f} s, {peak:.0f} MB peak RSS | < 3 s, < 300 MB |"
    )


if __name__ == "__main__":
    main()
