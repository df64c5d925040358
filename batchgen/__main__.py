"""The `batchgen` command (and `python -m batchgen`): the command line, run as a process."""

import atexit
import gc
import sys

EXIT_INTERRUPTED = (
    130  # as errors.EXIT_INTERRUPTED; not imported, since importing is what may be cut short
)


def command() -> None:
    """Run the command line; the process ends when it returns."""
    try:
        # Imported here, not at the top: the console script imports this module first, and a
        # Ctrl-C in the half second the imports take would otherwise print a traceback.
        from .cli import main

        # What is imported by now lives as long as the process: freeze it out of the garbage
        # collector's sight, so the full collections a big run triggers do not walk it again
        # and again (~0.1 s of a no-op rerun of 200,000 requests: BENCHMARKS.md). And at exit,
        # skip Python's last collection over everything the process still holds (~30 ms of
        # every command): what needs closing (ledgers, clients, files) is closed by its `with`.
        gc.freeze()
        atexit.register(gc.freeze)
        main(prog_name="batchgen")
    except KeyboardInterrupt:  # before the command's own handling began: nothing was sent
        sys.stderr.write("\ninterrupted\n")
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    command()
