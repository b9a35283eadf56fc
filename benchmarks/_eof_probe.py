"""Handlers for ``benchmarks.exit_eof``: on import, connect a probe socket.

The worker that loads this module connects once to the port in
``JOBQUEUE_EOF_PROBE`` and keeps that socket open, so the benchmark can see
when the worker's sockets close after SIGKILL.
"""

from __future__ import annotations

import os
import socket

from benchmarks._latency import HANDLERS as HANDLERS

_probe = socket.create_connection(("127.0.0.1", int(os.environ["JOBQUEUE_EOF_PROBE"])))
_probe.sendall(b"r")
