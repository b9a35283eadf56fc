"""The jobqueue test suite, in layers: ``unit``, ``queue`` and ``process``."""
