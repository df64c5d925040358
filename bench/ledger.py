"""Benchmark: reading a long-lived ledger (SPEC §6.7): `tasks --json` and `status JOB` on a
synthetic ledger of 1,000,000 rows, and a 1,000,000-request plan.

    python bench/ledger.py [--rows 1000000] [--runs 3]

The ledger holds one big job (all but 10,000 rows) and one small one (10,000 rows): a command
about the small job must not pay for the big one. Memory must stay flat in the ledger's size:
`tasks --json` streams its rows. Each figure is a fresh process's wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import write_job
from plan import run_peak

SMALL = 10_000


def build(path: Path, rows: int) -> None:
    """A ledger of `rows` submitted tasks (created by batchgen's own migrations)."""
    from batchgen.ledger import Ledger

    body = {"model_id": "2-9", "options": {"prompt_optimization": True, "aspect_ratio": "16:9", "resolution": "480p", "duration": 5}}
    with Ledger(path) as ledger:
        conn = ledger.db.conn
        stamp = "2026-11-30T12:00:00.000Z"
        conn.execute("BEGIN")
        for start in range(0, rows, 50_000):
            batch = range(start, min(rows, start + 50_000))
            job = lambda i: "small" if i < SMALL else "big"  # noqa: E731
            conn.executemany(
                "INSERT INTO tasks (key, job, api_base, model_id, prompt, request, variant, state, task_id, submitted_at,"
                " eta_at, attempts, status, updated_at) VALUES (?, ?, 'https://api.pixwith.ai', '2-9', ?, ?, 0, 'submitted',"
                " ?, ?, ?, 1, ?, ?)",
                (
                    (f"{i:064x}", job(i), f"Shot {i}", json.dumps({**body, "prompt": f"Shot {i}"}), f"t{i:031x}", stamp, stamp,
                     "completed" if i % 3 else "processing", stamp)
                    for i in batch
                ),
            )
            conn.executemany("INSERT INTO job_tasks (job, job_file, key) VALUES (?, ?, ?)", ((job(i), f"{job(i)}.yaml", f"{i:064x}") for i in batch))
        conn.execute("COMMIT")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--plan", type=int, default=1_000_000, help="requests in the plan benchmark (0: skip it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "big.db"
        started = time.perf_counter()
        build(ledger, args.rows)
        print(f"(built a {args.rows:,}-row ledger in {time.perf_counter() - started:.0f} s)", flush=True)
        for what, arguments, goal in (
            ("status of a 10,000-row job", ["status", "small"], "flat in the ledger's size"),
            (f"status of a {args.rows - SMALL:,}-row job", ["status", "big"], "flat in memory"),
            (f"tasks --json of all {args.rows:,} rows", ["tasks", "--json"], "memory flat in the ledger's size"),
        ):
            results = [run_peak(["--ledger", str(ledger), *arguments]) for _ in range(args.runs)]
            seconds = statistics.median(r[0] for r in results)
            print(f"| {what} (1M-row ledger) | {seconds:.2f} s, {max(r[1] for r in results):.0f} MB peak RSS | {goal} |", flush=True)
        if args.plan:
            job = write_job(Path(tmp), args.plan, "plan1m")
            results = [run_peak(["plan", str(job)]) for _ in range(args.runs)]
            seconds = statistics.median(r[0] for r in results)
            print(f"| plan of {args.plan:,} requests (a prompts file) | {seconds:.2f} s, {max(r[1] for r in results):.0f} MB peak RSS | ≤ 8 s, ≤ 250 MB |")


if __name__ == "__main__":
    main()
