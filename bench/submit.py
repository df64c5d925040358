"""Benchmark: the submitter against the sandbox (SPEC §4 targets).

    python bench/submit.py [--runs 3] [--only rate|overhead|rerun]

(a) rate accuracy: 200 requests at --rpm 600, achieved rate / ceiling (target ≥ 0.97,
    and never above it in any 60 s window, from the sandbox's timestamps);
(b) overhead: 2,000 requests, 50 ms sandbox latency, concurrency 16, no rpm ceiling, as a
    ratio to the better of two bare loops doing the same calls: asyncio + httpx.AsyncClient,
    and httpx.Client in a thread pool (target ≤ 1.15);
(c) a no-op rerun of a 20,000-request job (target < 3 s);
(d) latency (SPEC §6.7; `--only latency`, not part of the default set): 2,000 requests at concurrency 4, 16 and 64, against a sandbox answering
    at once (0 ms) and after 50 ms, each as a ratio to the better bare loop run beside it
    (targets: ≤ 1.2 at 0 ms, ≤ 1.05 at 50 ms); and to that loop as a program of its own
    (bench/bare.py), which pays a process's start-up and exit as batchgen does.
Each figure is the median of --runs runs; batchgen runs as a user runs it, a fresh process.

(e) in-process (`--only in-process`, not part of the default set): the same 2,000 requests sent
    by batchgen's Submission (ledger, claims, commits, retries and all) inside this process,
    beside the bare thread pool, so neither pays a process's start-up. This is not a goal's
    figure: it tells how much of (d) is the sending itself and how much the command around it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bare import BODY, LOOPS, bare_async, bare_threads
from common import KEY, batchgen, create_times, program, sandbox, write_job


def rate(tmp: Path) -> tuple[float, bool]:
    job = write_job(tmp, 200, "rate")
    with sandbox() as base_url:
        batchgen(
            "run",
            str(job),
            "--yes",
            "--rpm",
            "600",
            "--concurrency",
            "8",
            base_url=base_url,
            ledger=tmp / "rate.db",
        )
        times = create_times(base_url)
    achieved = (len(times) - 1) / (times[-1] - times[0]) * 60
    within = all(
        sum(1 for t in times[i:] if t - start < 60) <= 600 for i, start in enumerate(times)
    )
    return achieved / 600, within


def send_all(tmp: Path, base_url: str, n: int, concurrency: int) -> float:
    """Seconds for `batchgen run` of a new job of n requests, no rpm ceiling."""
    job = write_job(tmp, n, f"send-{time.monotonic_ns()}")
    return batchgen(
        "run",
        str(job),
        "--yes",
        "--rpm",
        "0",
        "--concurrency",
        str(concurrency),
        base_url=base_url,
        ledger=tmp / f"{job.stem}.db",
    )


def overhead(
    tmp: Path, n: int = 2000, concurrency: int = 16, latency_ms: int = 50
) -> tuple[float, float, float]:
    with sandbox("--latency-ms", str(latency_ms)) as base_url:
        ours = send_all(tmp, base_url, n, concurrency)
        best = min(
            bare_async(base_url, KEY, n, concurrency), bare_threads(base_url, KEY, n, concurrency)
        )
    return ours / best, ours, best


def latency(
    tmp: Path, n: int, concurrency: int, latency_ms: int
) -> tuple[float, float, float, float, float]:
    """`overhead`, and beside it the better bare loop again as a program of its own (bare.py):
    (ratio, batchgen s, bare loop s, ratio to the program, program s)."""
    with sandbox("--latency-ms", str(latency_ms)) as base_url:
        ours = send_all(tmp, base_url, n, concurrency)
        timed = {kind: loop(base_url, KEY, n, concurrency) for kind, loop in LOOPS.items()}
        kind = min(timed, key=timed.__getitem__)
        alone = program(
            str(Path(__file__).with_name("bare.py")),
            kind,
            base_url,
            str(n),
            str(concurrency),
            f"{kind} program",
        )
    return ours / timed[kind], ours, timed[kind], ours / alone, alone


def in_process(tmp: Path, n: int, concurrency: int, latency_ms: int) -> tuple[float, float, float]:
    """(batchgen's Submission, bare thread pool) seconds for n requests, both in this process."""
    from batchgen.jobs.expand import Origin, Request, identity
    from batchgen.ledger import Ledger
    from batchgen.providers.pixwith.client import PixwithApi
    from batchgen.sending.run_report import RunSettings
    from batchgen.sending.submit import Submission

    tag = f"in-process-{time.monotonic_ns()}"
    requests = [
        Request(identity("bench", body, 0), 0, body, Origin(0))
        for body in ({**BODY, "prompt": f"{tag} {i}"} for i in range(n))
    ]
    with sandbox("--latency-ms", str(latency_ms)) as base_url:
        bare = bare_threads(base_url, KEY, n, concurrency)
        with (
            Ledger(tmp / f"{tag}.db") as ledger,
            PixwithApi(base_url, KEY, max_connections=concurrency) as api,
        ):
            run_id = ledger.runs.start("bench", "bench.yaml", base_url, {})
            submission = Submission(
                ledger,
                api,
                RunSettings(rpm=None, concurrency=concurrency),
                job="bench",
                api_base=base_url,
                run_id=run_id,
            )
            started = time.perf_counter()
            report = submission.run(requests)
            ours = time.perf_counter() - started
    assert report.outcomes["submitted"] == n, report.outcomes
    return ours / bare, ours, bare


def rerun(tmp: Path) -> float:
    job = write_job(tmp, 20_000, "rerun")
    ledger = tmp / "rerun.db"
    with sandbox() as base_url:
        batchgen(
            "run",
            str(job),
            "--yes",
            "--rpm",
            "0",
            "--concurrency",
            "32",
            base_url=base_url,
            ledger=ledger,
        )
        return batchgen("run", str(job), "--yes", base_url=base_url, ledger=ledger)


def postgres_vs_sqlite(
    tmp: Path, url: str, n: int = 2000, concurrency: int = 16
) -> tuple[float, float, float]:
    """(ratio, seconds on PostgreSQL, seconds on SQLite): one new job of `n` requests sent to
    a sandbox answering at once, on a new database of the server `url` names and on a SQLite
    file, one after the other in the same minute (SPEC §8, issue 46: goal ≤ 1.2)."""
    import itertools

    import psycopg

    name = f"batchgen_bench_{time.monotonic_ns()}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            server = url.rsplit("/", 1)[0] + f"/{name}"
            with sandbox() as base_url:
                job = write_job(tmp, n, f"pg-{next(itertools.count())}-{time.monotonic_ns()}")
                flags = ("--yes", "--rpm", "0", "--concurrency", str(concurrency))
                on_server = program(
                    "-m",
                    "batchgen",
                    "run",
                    str(job),
                    *flags,
                    env={
                        "PIXWITH_BASE_URL": base_url,
                        "BATCHGEN_LEDGER": server,
                        "XDG_STATE_HOME": str(tmp / "state"),
                    },
                )
                on_file = send_all(tmp, base_url, n, concurrency)
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return on_server / on_file, on_server, on_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--only", choices=["rate", "overhead", "rerun", "latency", "in-process", "postgres"]
    )
    parser.add_argument(
        "--postgres", help="for --only postgres: a server's URL (a database is made on it per run)"
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="*", default=[4, 16, 64], help="for latency"
    )
    parser.add_argument("--latency-ms", type=int, nargs="*", default=[0, 50], help="for latency")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if args.only in (None, "rate"):
            results = [
                rate(tmp / str(i)) for i in range(args.runs) if (tmp / str(i)).mkdir() is None
            ]
            ratio = statistics.median(r[0] for r in results)
            print(
                f"| rate at --rpm 600 (200 requests) | {ratio:.3f} of the ceiling; never above: {all(r[1] for r in results)} | ≥ 0.97 |"
            )
        if args.only in (None, "overhead"):
            results = [overhead(tmp) for _ in range(args.runs)]
            median = statistics.median(results)
            print(
                f"| overhead vs best bare loop (2,000 × 50 ms, concurrency 16) | {median[0]:.3f}× ({median[1]:.2f} s vs {median[2]:.2f} s) | ≤ 1.15 |"
            )
        if args.only == "latency":  # the scale section, run on its own (BENCHMARKS.md, Reproduce)
            for ms in args.latency_ms:
                for concurrency in args.concurrency:
                    results = [latency(tmp, 2000, concurrency, ms) for _ in range(args.runs)]
                    median = sorted(results)[len(results) // 2]
                    alone = sorted(results, key=lambda r: r[3])[len(results) // 2]
                    goal = "≤ 1.2" if ms == 0 else "≤ 1.05"
                    print(
                        f"| 2,000 requests, {ms} ms, concurrency {concurrency}, vs best bare loop | {median[0]:.2f}× ({median[1]:.2f} s vs {median[2]:.2f} s);"
                        f" vs it as a program: {alone[3]:.2f}× ({alone[1]:.2f} s vs {alone[4]:.2f} s) | {goal} |",
                        flush=True,
                    )
        if args.only == "postgres":
            if not args.postgres:
                raise SystemExit(
                    "--only postgres needs --postgres URL (a server to make databases on)"
                )
            results = [postgres_vs_sqlite(tmp, args.postgres) for _ in range(args.runs)]
            median = sorted(results)[len(results) // 2]
            print(
                f"| 2,000 requests, 0 ms, concurrency 16, a PostgreSQL ledger vs a SQLite one | {median[0]:.2f}× ({median[1]:.2f} s vs {median[2]:.2f} s) | ≤ 1.2 |"
            )
        if args.only == "in-process":
            for ms in args.latency_ms:
                for concurrency in args.concurrency:
                    results = [in_process(tmp, 2000, concurrency, ms) for _ in range(args.runs)]
                    median = sorted(results)[len(results) // 2]
                    print(
                        f"| 2,000 requests, {ms} ms, concurrency {concurrency}, in-process vs the bare thread pool | {median[0]:.2f}× ({median[1]:.2f} s vs {median[2]:.2f} s) | (diagnostic) |",
                        flush=True,
                    )
        if args.only in (None, "rerun"):
            seconds = statistics.median(
                rerun(tmp / f"r{i}") for i in range(args.runs) if (tmp / f"r{i}").mkdir() is None
            )
            print(f"| no-op rerun of 20,000 requests | {seconds:.2f} s | < 3 s |")


if __name__ == "__main__":
    main()
