"""Benchmarks: each `python -m benchmarks.NAME` prints a table and writes JSON + PNG under benchmarks/results/."""
