"""The ``eochain`` command line (click lives here only)."""
