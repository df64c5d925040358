"""The use cases the command line calls, each a whole command's work between parsing and
printing: a run (run), its plan (plan), following a job (follow: poll, download, gallery, the
--on-done command), money (spend: balance, prices, the cap's checks), promote, init, and what
every command works with (session: the console, the API target, the ledger opened, signals)."""
