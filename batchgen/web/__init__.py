"""The pages a browser shows: the gallery a run writes beside its videos, the review page, and
the small server that serves the review page on loopback.

tiles.py reads what to show from the ledger (plain data), pages.py lays it out through the
Jinja2 templates of `templates/` (autoescaped) with the CSS and script of `static/` inlined,
and review_server.py serves the live page and records the marks made on it.
"""
