"""What a command prints: the console (console.py), progress and summaries while and after
sending (progress.py), and the reports of plans, problems, status, runs and tasks (reports.py).
"""
