"""Every error this package raises or sends, and the wire's error codes.

Two families live here. The public one, :class:`JobQueueError` and its
subclasses, is what a program using :class:`~jobqueue.Client` or
:class:`~jobqueue.Worker` catches. The internal one, :class:`Refusal`, is how
the codec (:class:`ProtocolError`) and the queue's rules (:class:`RuleError`)
say "no" to one request; the connection handler is the one door that turns a
refusal into an ``error`` reply, and a client turns that reply back into a
:class:`RequestError` with the same code.

The codes are named constants so that a typo is a NameError, not a reply
that no client recognises; docs/protocol.md §6 says when each is sent.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._replies import JobInfo

# The request was malformed (codec).
BAD_JSON: Final = "bad_json"
BAD_REQUEST: Final = "bad_request"
UNKNOWN_TYPE: Final = "unknown_type"
MESSAGE_TOO_LARGE: Final = "message_too_large"
INCOMPLETE_MESSAGE: Final = "incomplete_message"

# The queue's rules refused a well-formed request (state).
UNKNOWN_JOB: Final = "unknown_job"
NOT_LEASED: Final = "not_leased"
ALREADY_FINISHED: Final = "already_finished"
NOT_FAILED: Final = "not_failed"
NOT_FINISHED: Final = "not_finished"
QUEUE_FULL: Final = "queue_full"
UNKNOWN_SCHEDULE: Final = "unknown_schedule"
TOO_MANY_SCHEDULES: Final = "too_many_schedules"

# The server cannot make a change durable: its journal cannot be written.
JOURNAL_UNAVAILABLE: Final = "journal_unavailable"

# Farewells: the server sends one of these, then closes the connection.
TOO_MANY_CONNECTIONS: Final = "too_many_connections"
HANDSHAKE_TIMEOUT: Final = "handshake_timeout"
UNAUTHORIZED: Final = "unauthorized"
IDLE_TIMEOUT: Final = "idle_timeout"
#: The server met an error it did not expect (a bug) while serving the
#: connection: it logged it and closed that connection, and only that one.
INTERNAL_ERROR: Final = "internal_error"

#: The codes after which the server closes the connection itself: the
#: connection is then as unusable as a lost one.
FAREWELL_CODES: Final = frozenset(
    {IDLE_TIMEOUT, HANDSHAKE_TIMEOUT, UNAUTHORIZED, TOO_MANY_CONNECTIONS, INTERNAL_ERROR}
)

#: The codes that tell a worker its lease on a job is gone: whatever it was
#: doing for that job will not be accepted.
LEASE_GONE_CODES: Final = frozenset({NOT_LEASED, UNKNOWN_JOB})


class JobQueueError(Exception):
    """Base class for the errors this package raises to its users."""


class ConnectionLost(JobQueueError):
    """The server could not be reached, or the connection to it broke.

    A request that was in flight when this was raised may or may not have
    been applied by the server.
    """


class RequestNotSent(ConnectionLost):
    """The connection broke before the whole request was sent.

    The server cannot have read it (a request is applied only once its
    final newline arrives), so sending it again on a new connection is safe.
    """


class RequestError(JobQueueError):
    """The server answered a request with an ``error`` reply.

    Attributes:
        code: The stable snake_case error code (e.g. ``"unknown_job"``).
        message: The server's explanation.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Refusal(Exception):
    """One request cannot be served; becomes the ``error`` reply to it.

    Args:
        code: Stable snake_case error code, one of this module's constants.
        message: What went wrong, phrased so a person can act on it.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ProtocolError(Refusal):
    """A peer broke the protocol: bad framing, bad JSON, or a bad message."""


class RuleError(Refusal):
    """The queue's rules refuse a well-formed request (e.g. ``not_leased``).

    Raised by the pure state machine, which leaves its state exactly as it
    was; it knows nothing of the wire, only the code and the message.
    """


class RequestTimeout(JobQueueError, TimeoutError):
    """A call's ``timeout`` passed before its answer came.

    For :meth:`~jobqueue.sync.Client.wait` this means the job had not
    finished; ``info`` is its state when the wait gave up. For any other
    call it means the server did not answer in time, and (as with
    :class:`~jobqueue.ConnectionLost`) the request may or may not have been
    applied. It is a :class:`TimeoutError` too, so code that bounds calls
    with the standard library's timeouts catches it where it expects to.

    Attributes:
        info: The job's last known state (``wait`` only), else ``None``.
    """

    def __init__(self, message: str, info: JobInfo | None = None) -> None:
        super().__init__(message)
        self.info = info


class ClientClosed(JobQueueError, RuntimeError):
    """A call was made on a client that was closed: a bug in the caller.

    Not a :class:`~jobqueue.ConnectionLost`: retrying cannot help, so code
    that retries on a lost connection must not loop on this.
    """


def reason(exc: BaseException) -> str:
    """The most specific human reason behind ``exc`` ("Connection refused")."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate rejected: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, UnicodeError):
        # Raised by the IDNA encoding every resolver call applies to a host
        # name: a label empty or over 63 characters. The codec's words are
        # wrapped in 3.10 and 3.11, bare in 3.12, and from 3.13 the error is a
        # UnicodeEncodeError whose reason is the words ("label empty").
        if isinstance(exc, UnicodeEncodeError):
            return f"not a valid host name ({exc.reason})"
        why = str(exc).removeprefix("encoding with 'idna' codec failed (").removesuffix(")")
        return f"not a valid host name ({why.removeprefix('UnicodeError: ')})"
    if isinstance(exc, socket.gaierror):
        # Its errno is a resolver code, which os.strerror calls "Unknown error -2".
        return f"the host name did not resolve ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # trio's own text repeats the address
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    cause = exc.__cause__
    # trio.open_tcp_stream raises OSError("all attempts ... failed") caused by
    # an ExceptionGroup of the per-address errors: report the first of those.
    inner = getattr(cause, "exceptions", None)
    if inner:
        return reason(inner[0])
    if cause is not None:
        return reason(cause)
    return str(exc) or type(exc).__name__
