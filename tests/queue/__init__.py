"""The queue over memory streams and real TCP, inside the test's own trio run."""
