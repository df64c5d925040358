"""Results: tasks followed to their end (poll) and their videos downloaded within bounds
(download, bounds)."""
