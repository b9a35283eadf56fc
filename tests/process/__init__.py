"""Tests that start whole processes: the CLI, real workers and servers, chaos."""
