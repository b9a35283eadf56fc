"""Fault-injection drivers too long for the default test run (see ``chaos``)."""
