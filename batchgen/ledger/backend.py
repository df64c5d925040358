"""The seam between the ledger and its database engine: one protocol, two implementations.

`Store` (store.py) holds what every ledger does the same way: the one lock its statements run
under, transactions, group commit. What depends on where the ledger lives is a `Backend`:
sqlite_file.py (the default: one file in the project, nothing to install) and postgres.py (a
ledger a team shares, `--ledger postgresql://…`). Both keep the same tables, columns and
guarantees; a backend says how.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from .connections import Connection, Dialect


class RunHold(Protocol):
    """What tells other processes a run is still going, held from its start to its end."""

    def release(self) -> None: ...


class Backend(Protocol):
    dialect: Dialect
    location: str  # as the user gives it, and as `BATCHGEN_LEDGER` takes it
    shown: str  # as messages name it: a URL without its password
    local: Path  # this machine's own files for the ledger are named from it (the journal)
    conn: Connection
    # Whether a write of one statement may commit on its own, without the write lock that
    # `BEGIN IMMEDIATE` takes (SQLite's statements take it anyway).
    single_statement_commits: bool
    # Whether a process quitting at once (a second signal) may still write its last words
    # (its calls in flight made in_doubt) within `Store.quitting`'s wait. Not where the
    # database may be the very thing that stopped answering (a server).
    touch_on_quit: bool

    def check_same(self) -> None:
        """Raise `LedgerUnsound` if the ledger is no longer the one opened."""

    def quick_check(self) -> None:
        """Raise `LedgerUnsound` if the engine finds the ledger corrupt."""

    def integrity(self) -> str:
        """The engine's full check: "ok" when sound."""

    def columns(self, table: str) -> list[str]:
        """The table's public columns, in order."""

    def size_hint(self) -> int:
        """About how many rows `tasks` has (cheap: not a count)."""

    def set_patience(self, seconds: float) -> None:
        """From now on a statement waits at most `seconds` for another process's lock."""

    def streaming_cursor(self) -> Any:
        """A cursor for a read as big as the ledger: its rows are fetched a batch at a time,
        never held whole by this process (close it when done)."""

    # Whether processes on other machines can share one pace through this ledger
    # (`next_slot`): a server's ledger can; a file's processes pace each alone.
    shares_pace: bool

    def next_slot(self, account: str, spacing: float) -> float:
        """Take `account`'s next slot, `spacing` seconds after the one before it (or now):
        the seconds from now until it starts."""

    def long_calls(self) -> AbstractContextManager[None]:
        """Calls made inside may rightly take minutes (a big job's links, a ledger's copy):
        not taken for a server that stopped answering."""

    def hold_run(self, run_id: int) -> RunHold:
        """Show run `run_id` as going until released, or until this process or its
        connection dies."""

    def is_alive(self, run_id: int) -> bool:
        """Whether run `run_id` is still going, in any process on any machine."""

    def sync_run_ids(self) -> None:
        """After runs were written with their ids (a copied ledger): the next run's id
        follows the largest."""

    def close(self) -> None: ...
