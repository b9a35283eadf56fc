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

from typing import Final

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

# Farewells: the server sends one of these, then closes the connection.
TOO_MANY_CONNECTIONS: Final = "too_many_connections"
HANDSHAKE_TIMEOUT: Final = "handshake_timeout"
UNAUTHORIZED: Final = "unauthorized"
IDLE_TIMEOUT: Final = "idle_timeout"

#: The codes after which the server closes the connection itself: the
#: connection is then as unusable as a lost one.
FAREWELL_CODES: Final = frozenset(
    {IDLE_TIMEOUT, HANDSHAKE_TIMEOUT, UNAUTHORIZED, TOO_MANY_CONNECTIONS}
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
