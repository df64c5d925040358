"""Sending: what a run would send (plan), the sending itself under its limits (submit, limits,
budget: the pace, the retries, the spend cap), local images uploaded first (uploads), the
HTTP transport the providers' clients use (http_transport), and a run's settings and report
(run_report)."""
