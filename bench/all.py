"""Run every benchmark and print one markdown table (the medians of --runs runs each).

    python bench/all.py [--runs 3] [--write BENCHMARKS.md]

With --write, the table replaces the one in that file, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).parent
SCRIPTS = ["plan.py", "validate.py", "submit.py", "results.py", "sandbox.py"]
START, END = "<!-- table -->", "<!-- /table -->"


def run(script: str, runs: int) -> list[str]:
    print(f"running {script} ...", file=sys.stderr, flush=True)
    out = subprocess.run(
        [sys.executable, str(HERE / script), "--runs", str(runs)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if line.startswith("| ")]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        )
        cpu = model
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    started = time.monotonic()
    rows = [row for script in SCRIPTS for row in run(script, args.runs)]
    table = "\n".join(
        [f"| benchmark | measured (median of {args.runs}) | target |", "|---|---|---|", *rows]
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"{START}\nMeasured {stamp} on {machine()}; took {time.monotonic() - started:.0f} s.\n\n{table}\n{END}"
    print(block)
    if args.write:
        text = (
            args.write.read_text() if args.write.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
        )
        args.write.write_text(
            re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
        )


if __name__ == "__main__":
    main()
