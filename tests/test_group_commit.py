"""Group commit: writes that queue while another commit holds the ledger share the next one,
and each writer returns only once its write is on disk."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from helpers import wait_until

from batchgen.ledger.group_commit import GroupCommit


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "group.db"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    yield path, conn
    conn.close()


def insert(n: int):
    return lambda conn: conn.execute("INSERT INTO t (n) VALUES (?)", (n,)).rowcount


def in_threads(group: GroupCommit, numbers) -> tuple[list[threading.Thread], dict[int, object]]:
    """A thread per number, each writing it; what each write returned (or raised)."""
    results: dict[int, object] = {}

    def one(n: int) -> None:
        try:
            results[n] = group.write(insert(n))
        except Exception as e:
            results[n] = e

    threads = []
    for n in numbers:
        threads.append(threading.Thread(target=one, args=(n,)))
        threads[-1].start()
    return threads, results


def behind_a_commit(group: GroupCommit, lock: threading.RLock, first: int, numbers: list[int]):
    """Write `first` while `lock` is held (its commit is under way, waiting for the lock), then
    `numbers`, which queue behind it; then let the commit go. The threads and their results."""
    with lock:
        threads, results = in_threads(group, [first])
        wait_until(lambda: group._leading and not group._queued)  # it took its group: itself
        more, results_more = in_threads(group, numbers)
        wait_until(lambda: len(group._queued) == len(numbers))
    for thread in threads + more:
        thread.join()
    return {**results, **results_more}


def test_writes_that_queue_behind_a_commit_share_the_next_one(db):
    path, conn = db
    lock = threading.RLock()
    group = GroupCommit(conn, lock)
    results = behind_a_commit(group, lock, 0, [1, 2, 3, 4, 5])
    assert results == {n: 1 for n in range(6)}
    assert group.commits == 2  # the first write's, then one for the five queued behind it
    with sqlite3.connect(path) as other:
        assert [n for (n,) in other.execute("SELECT n FROM t ORDER BY n")] == [0, 1, 2, 3, 4, 5]


def test_a_write_returns_only_once_it_is_committed(db):
    path, conn = db
    group = GroupCommit(conn, threading.RLock())
    seen: list[bool] = []

    def one(n: int) -> None:
        group.write(insert(n))
        with sqlite3.connect(path) as other:  # another connection reads only what is committed
            seen.append(
                other.execute("SELECT count(*) FROM t WHERE n = ?", (n,)).fetchall() == [(1,)]
            )

    threads = [threading.Thread(target=one, args=(n,)) for n in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 200 and all(seen)


def test_a_failing_write_fails_its_whole_group_and_nothing_of_it_is_kept(db):
    path, conn = db
    conn.execute("INSERT INTO t (n) VALUES (3)")
    lock = threading.RLock()
    group = GroupCommit(conn, lock)
    results = behind_a_commit(group, lock, 0, [1, 2, 3])  # 3 is already there
    assert results[0] == 1 and all(
        isinstance(results[n], sqlite3.IntegrityError) for n in (1, 2, 3)
    )
    assert group.commits == 1
    assert [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")] == [0, 3]
    assert group.write(insert(1)) == 1  # the next group is not affected
    assert [n for (n,) in conn.execute("SELECT n FROM t ORDER BY n")] == [0, 1, 3]


def test_a_group_that_cannot_take_the_write_lock_fails_and_writes_nothing(db):
    path, conn = db
    conn.execute("PRAGMA busy_timeout=50")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the ledger
    group = GroupCommit(conn, threading.RLock())
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        group.write(insert(1))
    blocker.execute("ROLLBACK")
    blocker.close()
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
