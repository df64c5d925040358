"""The `batchgen` command (and `python -m batchgen`): the command line, run as a process."""

import atexit
import gc

from .cli import main


def command() -> None:
    """Run the command line; the process ends when it returns."""
    # What is imported by now lives as long as the process: freeze it out of the garbage
    # collector's sight, so the full collections a big run triggers do not walk it again and
    # again (~0.1 s of a no-op rerun of 200,000 requests: BENCHMARKS.md). And at exit, skip
    # Python's last collection over everything the process still holds (~30 ms of every
    # command): what needs closing (ledgers, clients, files) is closed by its `with` block.
    gc.freeze()
    atexit.register(gc.freeze)
    main(prog_name="batchgen")


if __name__ == "__main__":
    command()
