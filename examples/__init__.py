"""Runnable examples; run them from the repository root (see README.md)."""
