"""The pure core: events, actions, the job fold, input parsing and pricing.

Nothing here performs I/O, reads a clock or draws randomness (tests/test_purity.py enforces it):
the same events always give the same decisions.
"""
