"""Recovery: answers kept in the journal replayed, rows of runs that are gone made in_doubt,
and what cannot be written rescued to the journal."""

from __future__ import annotations

import json

from ..times import timestamp
from . import journal
from .claims import _insert_entry, _set, _submitted
from .store import Store


class Recovery:
    """Making the ledger whole after a run that ended badly."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def abandon_in_flight(self, run_id: int, reason: str) -> int:
        """This run's `sending` rows become `in_doubt` (it is exiting without their answers)."""
        q = self.store.sql.mark
        with self.store.transaction() as conn:
            cursor = conn.execute(
                f"UPDATE tasks SET state = 'in_doubt', error = {q}, updated_at = {q} WHERE state = 'sending' AND run_id = {q}",
                (reason, timestamp(), run_id),
            )
            return int(cursor.rowcount)

    def abandon_one(self, key: str, run_id: int, reason: str) -> None:
        """One of this run's `sending` rows becomes `in_doubt` (and no one else's)."""
        q = self.store.sql.mark
        with self.store.transaction() as conn:
            conn.execute(
                f"UPDATE tasks SET state = 'in_doubt', error = {q}, updated_at = {q} WHERE key = {q} AND state = 'sending' AND run_id = {q}",
                (reason, timestamp(), key, run_id),
            )

    def recover(self) -> int:
        """Rows left `sending` by a run that is gone (crashed, killed) become `in_doubt`, and
        the run's own row is closed (`close_gone_runs`).

        Their request may have gone out, so they are not resent without --resubmit-in-doubt.
        A run is gone when nothing holds it (`Store.hold_run`: a lock, see backend.py): rows of a run still going
        in another process, in whatever PID namespace, are left alone.
        """
        recovered = self._recover_sending()
        self.close_gone_runs()
        return recovered

    def close_gone_runs(self) -> int:
        """The `runs` rows of runs that ended without recording their end (killed, their
        machine or the ledger's server gone) get one: an end time, no exit code, and why. Left
        open, each would read as a run still going, overlapping every later one (so no price
        would ever be learned again). A live run's row is never touched: its hold is taken in
        the row's own transaction (`Runs.begin`)."""
        q = self.store.sql.mark
        if not self.store._query("SELECT 1 FROM runs WHERE ended_at IS NULL LIMIT 1"):
            return 0  # the usual case: one cheap look, no write lock
        closed = 0
        with self.store.transaction() as conn:
            for (run,) in conn.execute("SELECT id FROM runs WHERE ended_at IS NULL").fetchall():
                if self.store.run_is_alive(run):
                    continue
                conn.execute(
                    f"UPDATE runs SET ended_at = {q}, counts = {q} WHERE id = {q} AND ended_at IS NULL",
                    (
                        timestamp(),
                        json.dumps(
                            {"gone": "the run ended without recording its end (killed or crashed)"}
                        ),
                        run,
                    ),
                )
                closed += 1
        return closed

    def _recover_sending(self) -> int:
        q = self.store.sql.mark
        runs = [
            row[0]
            for row in self.store._query(
                "SELECT DISTINCT run_id FROM tasks WHERE state = 'sending'"
            )
        ]
        gone = [run for run in runs if run is None or not self.store.run_is_alive(run)]
        if not gone:
            return 0
        recovered = 0
        with self.store.transaction() as conn:
            for run in gone:
                # `run_id IS ?` and the state in the WHERE: a row another run reclaimed
                # since the check belongs to that run now, and is not touched.
                cursor = conn.execute(
                    "UPDATE tasks SET state = 'in_doubt', error = 'found sending after its run ended"
                    f" (crash or kill): it may or may not have been created', updated_at = {q}"
                    f" WHERE state = 'sending' AND run_id {self.store.sql.same} {q}",
                    (timestamp(), run),
                )
                recovered += cursor.rowcount
        return recovered

    def replay_journal(self) -> int:
        """Record the answers a run kept in the journal because the ledger could not take them."""
        q = self.store.sql.mark
        # Moved aside first: a run in trouble may append to the journal meanwhile, and its
        # lines go to a new journal, for the next command, rather than into one being replayed.
        taken = journal.take(self.store.path)
        entries = list(journal.read(taken))
        if not entries:
            journal.discard(taken)
            return 0
        with self.store.transaction() as conn:
            for entry in entries:
                row = conn.execute(
                    f"SELECT state, task_id FROM tasks WHERE key = {q}", (entry["key"],)
                ).fetchone()
                if row is not None and row["state"] == "submitted" and row["task_id"]:
                    continue  # recorded after all (or replayed before a crash)
                if not entry.get(
                    "task_id"
                ):  # rescued as in_doubt: maybe created, never resent silently
                    if row is None:
                        _insert_entry(conn, entry, "in_doubt")
                    elif row["state"] in ("sending", "failed"):
                        _set(
                            conn,
                            entry["key"],
                            {
                                "state": "in_doubt",
                                "error": entry.get("error") or "in doubt in a ledger that was lost",
                            },
                        )
                    continue
                if row is None:  # the ledger was replaced: the row is rebuilt from the entry
                    _insert_entry(conn, entry, "sending")
                _set(
                    conn,
                    entry["key"],
                    _submitted(
                        entry["task_id"],
                        entry.get("estimated_time"),
                        entry.get("received_at"),
                        entry.get("handle"),
                    ),
                )
        journal.discard(taken)  # only once committed: until then they are replayed again
        return len(entries)

    def rescue_to_journal(self) -> int:
        """Copy every row that holds money (a task id, or a request in doubt) from the open
        ledger file into the journal. For a run whose ledger was deleted or replaced: the file
        it still has open is the only record left of what was paid for."""
        rows = self.store._query(
            "SELECT t.*, (SELECT j.job_file FROM job_tasks j WHERE j.key = t.key LIMIT 1) AS job_file FROM tasks t"
            " WHERE t.task_id IS NOT NULL OR t.state IN ('in_doubt', 'sending')"
        )
        entries = [
            {
                "key": row["key"],
                "task_id": row["task_id"],
                "handle": row["task_handle"],
                "estimated_time": row["estimated_time"],
                "received_at": row["submitted_at"],
                "job": row["job"],
                "job_file": row["job_file"],
                "api_base": row["api_base"],
                "variant": row["variant"],
                "body": json.loads(row["request"]),
                "model": row["model"],
                "provider": row["provider"],
                "run_id": row["run_id"],
                "state": "submitted" if row["task_id"] else "in_doubt",
                "error": row["error"] or "in doubt when its ledger was lost",
            }
            for row in rows
        ]
        if entries:
            journal.append(self.store.path, *entries)
        return len(entries)
