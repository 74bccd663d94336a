"""Benchmarks: run with `make bench` (see the README); they print figures, they never assert times."""
