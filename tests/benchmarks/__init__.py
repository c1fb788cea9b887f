"""Benchmarks, run with `python -m tests.benchmarks [name ...]` (not collected by pytest).

Each prints its figures beside a baseline measured in the same run, as a ratio.
"""
