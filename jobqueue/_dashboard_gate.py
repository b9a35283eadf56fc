"""Who may use the dashboard, and which requests are the page's own.

Pure and synchronous (``now`` passed in), like the queue's state machine,
so each rule is tested without a server. The model (docs/dashboard.md):

- **Loopback, no login token**: anyone on this machine may use it, as they
  may run ``jobqueue`` commands. A web page from elsewhere, open in a
  browser on this machine, must not: the ``Host`` header must name a
  loopback address (a DNS-rebinding page sends its own name), and actions
  need the page's CSRF token, which only a same-origin page can read.
- **With a login token** (required when bound elsewhere): a page or API
  call needs a session, obtained by posting the token to ``/login``. The
  session cookie is ``HttpOnly`` and ``SameSite=Strict``, so another
  site's page neither reads it nor has the browser send it.
- **Every action** (``POST``) also needs the session's CSRF token in the
  ``X-CSRF-Token`` header, and is refused when the browser says it comes
  from another origin (``Origin``, ``Sec-Fetch-Site``). A custom header
  makes a cross-origin request need a CORS preflight, which the dashboard
  never grants: it sends no CORS headers at all.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections import deque

import attrs

from ._dashboard_defaults import MIN_TOKEN_CHARS as MIN_TOKEN_CHARS
from ._http import Request

#: The session cookie's name.
SESSION_COOKIE = "jobqueue_dashboard"
#: How long a login lasts, in seconds.
SESSION_SECONDS = 12 * 3600.0
#: Sessions kept at once; past that the oldest is forgotten.
MAX_SESSIONS = 1000
#: Failed logins allowed per minute (all clients together); more get 429.
MAX_LOGIN_FAILURES = 10
#: The header that carries the CSRF token.
CSRF_HEADER = "X-CSRF-Token"


class Refused(Exception):
    """A request the gate refuses: its HTTP status, a stable code and a message."""

    def __init__(
        self, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


@attrs.frozen
class _Session:
    csrf: str
    expires: float


@attrs.define(eq=False)
class Gate:
    """The dashboard's access rules and its sessions.

    Attributes:
        login_token: The token ``/login`` accepts; ``None``: no login.
        loopback: Whether the dashboard listens on loopback only (then the
            ``Host`` header must name loopback).
    """

    login_token: str | None
    loopback: bool
    _sessions: dict[str, _Session] = attrs.field(factory=dict, init=False)
    _page_csrf: str = attrs.field(factory=lambda: secrets.token_urlsafe(32), init=False)
    _failures: deque[float] = attrs.field(factory=deque, init=False)

    @property
    def login_required(self) -> bool:
        """Whether requests need a session."""
        return self.login_token is not None

    def check_host(self, request: Request) -> None:
        """Refuse a request whose ``Host`` is not loopback, when listening on loopback.

        Raises:
            Refused: 400 without a ``Host``; 403 for another name.
        """
        if not self.loopback:
            return
        host = request.header("host")
        if host is None:
            raise Refused(400, "no_host", "a Host header is required")
        if not _names_loopback(host):
            raise Refused(
                403,
                "bad_host",
                f"this dashboard answers to loopback addresses only, not {host!r}",
            )

    def csrf_token(self, request: Request, now: float) -> str | None:
        """The CSRF token of the request's session, or ``None`` when it has none.

        Without a login, every page of this process shares one token.
        """
        if self.login_token is None:
            return self._page_csrf
        session_id = _cookie(request, SESSION_COOKIE)
        if session_id is None:
            return None
        session = self._sessions.get(session_id)
        if session is None or session.expires <= now:
            self._sessions.pop(session_id, None)
            return None
        return session.csrf

    def check_action(self, request: Request, now: float) -> None:
        """Refuse a ``POST`` that is not the page's own.

        Raises:
            Refused: 401 without a session; 403 from another origin or
                without the right CSRF token.
        """
        self.check_origin(request)
        expected = self.csrf_token(request, now)
        if expected is None:
            raise Refused(401, "login_required", "log in first")
        given = request.header(CSRF_HEADER) or ""
        if not secrets.compare_digest(given.encode(), expected.encode()):
            raise Refused(403, "bad_csrf_token", f"missing or wrong {CSRF_HEADER} header")

    def check_origin(self, request: Request) -> None:
        """Refuse a request a browser says comes from another origin.

        A request with neither header (not from a browser) passes: the
        CSRF token still guards actions.

        Raises:
            Refused: 403.
        """
        site = request.header("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise Refused(403, "cross_site", f"cross-site request refused ({site})")
        origin = request.header("origin")
        if origin is None:
            return
        host = (request.header("host") or "").lower()
        if origin.lower() not in (f"http://{host}", f"https://{host}"):
            raise Refused(403, "cross_site", f"request from origin {origin!r} refused")

    def login(self, request: Request, token: str, now: float) -> str:
        """Start a session for a correct ``token``; return its ``Set-Cookie`` value.

        Raises:
            Refused: 403 from another origin; 429 after too many failures
                this minute; 401 for a wrong token (or when no login is set).
        """
        self.check_origin(request)
        while self._failures and self._failures[0] <= now - 60.0:
            self._failures.popleft()
        if len(self._failures) >= MAX_LOGIN_FAILURES:
            raise Refused(429, "too_many_logins", "too many failed logins; wait a minute")
        if self.login_token is None or not secrets.compare_digest(
            token.encode(), self.login_token.encode()
        ):
            self._failures.append(now)
            raise Refused(401, "bad_login", "wrong login token")
        self._forget_expired(now)
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = _Session(secrets.token_urlsafe(32), now + SESSION_SECONDS)
        return (
            f"{SESSION_COOKIE}={session_id}; Path=/; HttpOnly; SameSite=Strict; "
            f"Max-Age={int(SESSION_SECONDS)}"
        )

    def logout(self, request: Request) -> str:
        """End the request's session; return the ``Set-Cookie`` value that clears it."""
        session_id = _cookie(request, SESSION_COOKIE)
        if session_id is not None:
            self._sessions.pop(session_id, None)
        return f"{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"

    def _forget_expired(self, now: float) -> None:
        for session_id in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[session_id]


def _cookie(request: Request, name: str) -> str | None:
    header = request.header("cookie")
    if header is None:
        return None
    for part in header.replace(",", ";").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


def _names_loopback(host: str) -> bool:
    """Whether a ``Host`` header's name is a loopback name or address."""
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name = host.rpartition(":")[0] if ":" in host else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
