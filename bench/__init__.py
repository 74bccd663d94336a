"""Benchmarks: run with `make bench` (see docs/BENCHMARKS.md); they print figures, they never assert times."""
