"""Benchmarks against peers, each run as `python -m bench.NAME` from the repository root."""
