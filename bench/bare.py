"""The yardstick: bare loops making the creates batchgen makes, with nothing around them.

    python bench/bare.py threads|async BASE_URL REQUESTS CONCURRENCY TAG
    python bench/bare.py poll BASE_URL TASK_IDS_FILE CONCURRENCY
    python bench/bare.py download FOLDER URLS_FILE CONCURRENCY

Two loops: httpx.Client in a thread pool, and asyncio with httpx.AsyncClient. `bench/submit.py`
times them inside its own process (the client made, httpx imported: only the calls are timed),
and, to compare like with like, the better of them as a program of its own, a fresh process
timed whole as batchgen is: start-up, `import httpx`, the client, the calls, the exit. As a
program the key comes from PIXWITH_API_KEY, and nothing else is imported.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

BODY = {
    "model_id": "2-9",
    "options": {
        "prompt_optimization": True,
        "aspect_ratio": "16:9",
        "resolution": "480p",
        "duration": 5,
    },
}


def bare_threads(base_url: str, key: str, n: int, concurrency: int, tag: str = "thread") -> float:
    """Seconds for n creates from a thread pool sharing one httpx.Client."""
    limits = httpx.Limits(max_connections=concurrency)
    with httpx.Client(base_url=base_url, headers={"Api-Key": key}, limits=limits) as client:

        def one(i: int) -> None:
            r = client.post("/api/task/create", json={**BODY, "prompt": f"{tag} {i}"})
            assert r.json()["code"] == 1

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(n)))
        return time.perf_counter() - started


def bare_async(base_url: str, key: str, n: int, concurrency: int, tag: str = "async") -> float:
    """Seconds for n creates from asyncio tasks sharing one httpx.AsyncClient."""

    async def main() -> None:
        limit = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=base_url, headers={"Api-Key": key}, limits=limits
        ) as client:

            async def one(i: int) -> None:
                async with limit:
                    r = await client.post("/api/task/create", json={**BODY, "prompt": f"{tag} {i}"})
                    assert r.json()["code"] == 1

            await asyncio.gather(*(one(i) for i in range(n)))

    started = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - started


def bare_poll(base_url: str, key: str, task_ids: list[str], concurrency: int) -> float:
    """Seconds for a thread pool to ask get-task of every task id."""
    limits = httpx.Limits(max_connections=concurrency)
    with httpx.Client(base_url=base_url, headers={"Api-Key": key}, limits=limits) as client:

        def one(task_id: str) -> None:
            answer = client.post("/api/task/get", json={"task_id": task_id}).json()
            assert answer["code"] == 1, answer

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, task_ids))
        return time.perf_counter() - started


def bare_download(urls: list[str], folder: Path, concurrency: int) -> float:
    """Seconds for a thread pool to fetch every URL into `folder` (temporary file, fsync, rename)."""
    folder.mkdir()
    with httpx.Client(limits=httpx.Limits(max_connections=concurrency)) as client:

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
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, enumerate(urls)))
        return time.perf_counter() - started


LOOPS = {"threads": bare_threads, "async": bare_async}

if __name__ == "__main__":
    kind, *rest = sys.argv[1:]
    if kind == "poll":  # poll BASE_URL IDS_FILE CONCURRENCY
        base_url, ids, concurrency = rest
        task_ids = Path(ids).read_text().split()
        bare_poll(base_url, os.environ["PIXWITH_API_KEY"], task_ids, int(concurrency))
    elif kind == "download":  # download FOLDER URLS_FILE CONCURRENCY
        folder, urls, concurrency = rest
        bare_download(Path(urls).read_text().split(), Path(folder), int(concurrency))
    else:
        base_url, n, concurrency, tag = rest
        LOOPS[kind](base_url, os.environ["PIXWITH_API_KEY"], int(n), int(concurrency), tag)
