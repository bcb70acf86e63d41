"""Observing a run: Prometheus metrics, the ledger, the cost report and file_sd targets."""
