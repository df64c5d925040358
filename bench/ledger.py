"""Benchmark: reading a long-lived ledger (SPEC §6.7): `tasks --json` and `status JOB` on a
synthetic ledger of 1,000,000 rows, a 1,000,000-request plan, a no-op rerun of a
200,000-request job whose every request the ledger already holds as submitted, and the first
run of a 1,000,000-request job up to its first send.

    python bench/ledger.py [--rows 1000000] [--runs 3] [--plan 1000000] [--rerun 200000] [--first 1000000]

The ledger holds one big job (all but 10,000 rows) and one small one (10,000 rows): a command
about the small job must not pay for the big one. Memory must stay flat in the ledger's size:
`tasks --json` streams its rows. Each figure is a fresh process's wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from common import write_job
from plan import run_peak

SMALL = 10_000


def write_submitted(
    path: Path, rows: Iterable[tuple[str, str, str, str, dict, int, str, str | None]]
) -> int:
    """Submitted tasks written straight into a ledger made by batchgen's own migrations, each
    linked to its job: (key, job, job file, api base, body, variant, status, label) each.
    Returns how many."""
    from batchgen.ledger import Ledger

    stamp = "2026-11-30T12:00:00.000Z"
    written = 0
    with Ledger(path) as ledger:
        conn = ledger.db.conn
        marks = ledger.sql.marks  # `?, ?` or `%s, %s`, as the engine spells a parameter
        conn.execute("BEGIN")
        rows = iter(rows)
        while batch := list(itertools.islice(rows, 50_000)):
            conn.executemany(
                "INSERT INTO tasks (key, job, api_base, model, prompt, request, variant, state, task_id, submitted_at,"
                " eta_at, attempts, status, updated_at)"
                f" VALUES ({marks(7)}, 'submitted', {marks(3)}, 1, {marks(2)})",
                (
                    (
                        key,
                        job,
                        api_base,
                        body["model_id"],
                        body.get("prompt"),
                        json.dumps(body),
                        variant,
                        f"t{written + i:031x}",
                        stamp,
                        stamp,
                        status,
                        stamp,
                    )
                    for i, (key, job, _, api_base, body, variant, status, _) in enumerate(batch)
                ),
            )
            conn.executemany(
                f"INSERT INTO job_tasks (job, job_file, key, label) VALUES ({marks(4)})",
                ((job, job_file, key, label) for key, job, job_file, _, _, _, _, label in batch),
            )
            written += len(batch)
        conn.execute("COMMIT")
    return written


def build(path: Path, rows: int) -> None:
    """A ledger of `rows` submitted tasks: a small job of the first SMALL, a big one of the rest."""
    body = {
        "model_id": "2-9",
        "options": {
            "prompt_optimization": True,
            "aspect_ratio": "16:9",
            "resolution": "480p",
            "duration": 5,
        },
    }
    job = lambda i: "small" if i < SMALL else "big"  # noqa: E731
    write_submitted(
        path,
        (
            (
                f"{i:064x}",
                job(i),
                f"{job(i)}.yaml",
                "https://api.pixwith.ai",
                {**body, "prompt": f"Shot {i}"},
                0,
                "completed" if i % 3 else "processing",
                None,
            )
            for i in range(rows)
        ),
    )


def build_done(path: Path, job_file: Path, api_base: str) -> int:
    """A ledger in which every request of `job_file` is submitted and linked to its job, as a
    finished run leaves it (the keys are batchgen's own, from the job's expansion)."""
    from batchgen.jobs.spec import load_job
    from batchgen.jobs.validate import ValidatedJob

    validated = ValidatedJob(load_job(str(job_file)), api_base)
    name = validated.job.name
    return write_submitted(
        path,
        (
            (
                r.key,
                name,
                str(job_file),
                validated.api_base,
                r.body,
                r.variant,
                "completed",
                r.label,
            )
            for r in validated.requests()
        ),
    )


def rerun(tmp: Path, requests: int, runs: int) -> None:
    """`batchgen run` of a job whose every request is done: nothing is sent, as a user feels it.

    The ledger is written straight (build_done), without what a run records beside its links,
    so the first rerun plans the job in full, as the first rerun after an edit does; it records
    what the links were made from, and the reruns after it (timed apart) are planned from the
    job's counts (batchgen/unchanged.py)."""
    from common import KEY, sandbox

    job = write_job(tmp, requests, "rerun")
    ledger = tmp / "rerun.db"
    command = ["--ledger", str(ledger), "run", str(job), "--yes"]
    with sandbox() as base_url:
        build_done(ledger, job, base_url)
        os.environ.update(PIXWITH_API_KEY=KEY, PIXWITH_BASE_URL=base_url)  # the child's environment
        full = run_peak(command)
        results = [run_peak(command) for _ in range(runs)]
    seconds = statistics.median(r[0] for r in results)
    print(
        f"| no-op rerun of {requests:,} requests, unchanged | {seconds:.2f} s, {max(r[1] for r in results):.0f} MB peak RSS | ≤ 2 s |"
    )
    print(
        f"| no-op rerun of {requests:,} requests, just edited (planned in full; once) | {full[0]:.2f} s, {full[1]:.0f} MB peak RSS | no goal set |"
    )


def first(tmp: Path, requests: int, runs: int) -> None:
    """The part of a job's first run before anything is sent (`--limit 0`): validation, plan,
    the new ledger, linking every request, the balance read. It holds the requests to send as
    keys and prices (plan.ToSend), not as requests."""
    from common import KEY, sandbox

    job = write_job(tmp, requests, "first")
    results = []
    with sandbox() as base_url:
        os.environ.update(PIXWITH_API_KEY=KEY, PIXWITH_BASE_URL=base_url)
        for i in range(runs):
            results.append(
                run_peak(
                    [
                        "--ledger",
                        str(tmp / f"first{i}.db"),
                        "run",
                        str(job),
                        "--yes",
                        "--limit",
                        "0",
                    ]
                )
            )
    seconds = statistics.median(r[0] for r in results)
    print(
        f"| first run of {requests:,} requests up to the first send (--limit 0) | {seconds:.2f} s, {max(r[1] for r in results):.0f} MB peak RSS | no goal set |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--plan", type=int, default=1_000_000, help="requests in the plan benchmark (0: skip it)"
    )
    parser.add_argument(
        "--rerun",
        type=int,
        default=200_000,
        help="requests in the no-op rerun benchmark (0: skip it)",
    )
    parser.add_argument(
        "--first",
        type=int,
        default=1_000_000,
        help="requests in the first-run benchmark (0: skip it)",
    )
    parser.add_argument(
        "--postgres",
        help="also push the ledger to a new database of this server and read it there (issue 46)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.rerun:
            rerun(Path(tmp), args.rerun, args.runs)
        if args.first:
            first(Path(tmp), args.first, args.runs)
        if args.plan:
            job = write_job(Path(tmp), args.plan, "plan1m")
            results = [run_peak(["plan", str(job)]) for _ in range(args.runs)]
            seconds = statistics.median(r[0] for r in results)
            print(
                f"| plan of {args.plan:,} requests (a prompts file) | {seconds:.2f} s, {max(r[1] for r in results):.0f} MB peak RSS | ≤ 6 s, ≤ 200 MB |"
            )
        if not args.rows:
            return
        ledger = Path(tmp) / "big.db"
        started = time.perf_counter()
        build(ledger, args.rows)
        print(
            f"(built a {args.rows:,}-row ledger in {time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        locations = [("SQLite", str(ledger))]
        if args.postgres:
            locations.append(("PostgreSQL", pushed(ledger, args.postgres, Path(tmp))))
        for backend, location in locations:
            reads(backend, location, args.rows, args.runs)


def pushed(ledger: Path, url: str, tmp: Path) -> str:
    """`ledger` copied into a new database of the server `url` names (`batchgen ledger push`)."""
    import subprocess
    import sys

    import psycopg

    name = f"batchgen_bench_{time.monotonic_ns()}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    server = url.rsplit("/", 1)[0] + f"/{name}"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "batchgen", "ledger", "push", str(ledger), "--to", server],
        check=True,
        capture_output=True,
        env={**os.environ, "XDG_STATE_HOME": str(tmp / "state")},
    )
    print(f"(pushed it to PostgreSQL in {time.perf_counter() - started:.0f} s)", flush=True)
    return server


def reads(backend: str, location: str, rows: int, runs: int) -> None:
    """The read commands' time and peak memory on one ledger."""
    for what, arguments, goal in (
        ("status of a 10,000-row job", ["status", "small"], "flat in the ledger's size"),
        (f"status of a {rows - SMALL:,}-row job", ["status", "big"], "flat in memory"),
        (
            f"tasks --json of all {rows:,} rows",
            ["tasks", "--json"],
            "memory flat in the ledger's size",
        ),
        (
            f"tasks --csv of all {rows:,} rows",
            ["tasks", "--csv"],
            "memory flat in the ledger's size",
        ),
        (f"tasks of all {rows:,} rows", ["tasks"], "memory flat in the ledger's size"),
        ("runs", ["runs"], "memory flat in the ledger's size"),
    ):
        results = [run_peak(["--ledger", location, *arguments]) for _ in range(runs)]
        seconds = statistics.median(r[0] for r in results)
        print(
            f"| {what} ({rows:,}-row ledger, {backend}) | {seconds:.2f} s, {max(r[1] for r in results):.0f} MB peak RSS | {goal} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
