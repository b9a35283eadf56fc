"""The dashboard's defaults that its command line shows before anything runs.

Apart from :mod:`jobqueue._dashboard` so that building the command line (as
``jobqueue worker`` does too) loads neither the dashboard nor its HTTP server.
"""

from __future__ import annotations

#: Where the dashboard listens unless told: this machine only.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081
#: Seconds between two rounds of questions to the queue.
POLL_INTERVAL = 1.0
#: Shortest login token accepted: shorter ones can be guessed.
MIN_TOKEN_CHARS = 16
