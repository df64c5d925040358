"""Benchmark: `batchgen validate` of a job file of 100,000 explicit entries (target: ≤ 5 s).

    python bench/validate.py [--entries 100000] [--runs 3]

Each entry is written out in the YAML (no matrix, no prompts file): the parser, the marks,
both validation steps and the expansion are all exercised. A fresh process each time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from plan import run_peak


def write_explicit(folder: Path, entries: int) -> Path:
    job = folder / "explicit.yaml"
    lines = [
        "version: 1",
        f"limits: {{max_requests: {entries}}}",
        "defaults:",
        "  model: wan2.2-pro",
        "  options: {prompt_optimization: true, aspect_ratio: 16:9, resolution: 480p, duration: 5}",
        "requests:",
        *(f"  - prompt: Shot {i}, a cat crosses the garden at dusk" for i in range(entries)),
    ]
    job.write_text("\n".join(lines) + "\n")
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        job = write_explicit(Path(tmp), args.entries)
        results = [run_peak(["validate", str(job)]) for _ in range(args.runs)]
    seconds = statistics.median(r[0] for r in results)
    peak = max(r[1] for r in results)
    print(
        f"| validate of {args.entries:,} explicit entries | {seconds:.2f} s, {peak:.0f} MB peak RSS | ≤ 5 s |"
    )


if __name__ == "__main__":
    main()
