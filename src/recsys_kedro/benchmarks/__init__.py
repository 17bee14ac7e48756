"""Benchmarks: scripts that print figures (run with ``python -m``), not timed tests."""
