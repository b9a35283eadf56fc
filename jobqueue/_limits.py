"""Every limit the wire imposes, in one place.

Each bound here keeps one peer from making the server hold, encode or
recurse without end; docs/protocol.md and docs/design.md quote them. The
codec, the state machine, the client and the worker all read them from
here, so a limit changes in one line. The wire's names for job states are
here too, derived from :class:`~jobqueue._job.JobState` so they cannot drift.
"""

from __future__ import annotations

from ._job import FINISHED, JobState

#: Longest line (one message, without its ``\n``) a peer may send: 1 MiB.
#: Long enough for any sensible job payload, short enough that one hostile
#: connection cannot make the server buffer without bound.
MAX_LINE_BYTES = 1 << 20

#: Deepest nesting of arrays/objects accepted in a message. Python's JSON
#: decoder and encoder recurse, so an unbounded depth would let a peer raise
#: RecursionError inside the server.
MAX_DEPTH = 64

#: Room kept in a line for a reply's envelope (ids, names, error text) around
#: a payload or result, so every reply fits in ``MAX_LINE_BYTES`` plus this much.
ENVELOPE_BYTES = 16384

#: Longest a stored payload or result may be: its own compact encoding, as
#: the server re-encodes it, not counting the message around it.
MAX_STORED_BYTES = MAX_LINE_BYTES - ENVELOPE_BYTES

#: Longest error message kept from ``job_failed``, in characters (longer ones
#: are cut: the message is for people, the limit keeps replies bounded).
MAX_ERROR_CHARS = 4096

#: Priorities run from -MAX_PRIORITY to MAX_PRIORITY (higher runs first).
MAX_PRIORITY = 1_000_000

#: Most runs a job may be allowed.
MAX_ATTEMPTS = 1000

#: Longest delay a submit may ask for: one year, in seconds.
MAX_DELAY_SECONDS = 366 * 86400.0

#: Most jobs one ``submit_jobs`` may carry (bounds the reply's list of ids).
MAX_BATCH = 10_000

#: Most queues one ``request_job`` may name.
MAX_QUEUES = 64

#: Most job names one ``hello`` may say its worker runs.
MAX_HANDLER_NAMES = 1000

#: Most jobs one ``request_job`` (or a report's ``fetch``) may take at once.
MAX_FETCH = 1000

#: Longest progress note, encoded.
MAX_NOTE_BYTES = 4096

#: Most jobs one ``list_jobs`` returns.
MAX_LIST_LIMIT = 1000

#: Most entries each of ``stats``' listings carries (queues, job names,
#: worker connections), and most queues the metrics endpoint lists and keeps
#: wait and run histograms for. Peers may use any number of queue and job
#: names, but a reply must fit one line and a scrape must stay small: past
#: this the least busy are left out, and counted.
MAX_LISTED = 1000

#: Most schedules a server keeps. Each firing costs the coordinator a look
#: at every schedule, and ``list_schedules`` answers with all of them.
MAX_SCHEDULES = 1000

#: Every state a job can be in, as the wire names it.
JOB_STATES = tuple(state.value for state in JobState)

#: The states a job never leaves by itself, as the wire names them.
FINISHED_STATES = frozenset(state.value for state in FINISHED)

#: Longest accepted job name (and ``hello`` name), in characters.
MAX_NAME_CHARS = 200

#: Longest wait (``request_job`` / ``wait_job``) a peer may ask for, in seconds.
MAX_WAIT_SECONDS = 3600.0
