"""The dashboard's access rules, pure: Host names, origins, CSRF tokens, logins, sessions."""

from __future__ import annotations

import pytest

from jobqueue._dashboard_gate import (
    MAX_LOGIN_FAILURES,
    SESSION_SECONDS,
    Gate,
    Refused,
)
from jobqueue._http import Request

TOKEN = "a-login-token-long-enough"


def request(**headers: str) -> Request:
    return Request("POST", "/", "", {k.lower().replace("_", "-"): v for k, v in headers.items()})


def refusal(call: object, *args: object) -> tuple[int, str]:
    with pytest.raises(Refused) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.status, caught.value.code


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:8081", "127.9.9.9", "localhost:8081", "LOCALHOST", "[::1]:8081", "[::1]"],
)
def test_loopback_names_pass(host: str) -> None:
    Gate(None, loopback=True).check_host(request(host=host))


@pytest.mark.parametrize(
    "host",
    ["evil.example", "evil.example:8081", "127.0.0.1.evil.example", "localhost.evil", "10.0.0.1"],
)
def test_other_names_are_refused_on_loopback(host: str) -> None:
    gate = Gate(None, loopback=True)
    assert refusal(gate.check_host, request(host=host)) == (403, "bad_host")
    Gate(TOKEN, loopback=False).check_host(request(host=host))  # the login guards instead


def test_no_host_is_refused_on_loopback() -> None:
    assert refusal(Gate(None, loopback=True).check_host, request()) == (400, "no_host")


def test_actions_need_the_csrf_token_and_the_same_origin() -> None:
    gate = Gate(None, loopback=True)
    token = gate.csrf_token(request(), now=0.0)
    assert token is not None
    assert len(token) >= 32
    same = {"host": "127.0.0.1:8081", "x_csrf_token": token}
    gate.check_action(request(**same), now=0.0)
    gate.check_action(request(**same, origin="http://127.0.0.1:8081"), now=0.0)
    gate.check_action(request(**same, sec_fetch_site="same-origin"), now=0.0)
    for bad in (
        request(host="127.0.0.1:8081"),
        request(host="127.0.0.1:8081", x_csrf_token=token[:-1]),
    ):
        assert refusal(gate.check_action, bad, 0.0) == (403, "bad_csrf_token")
    for bad in (
        request(**same, origin="http://127.0.0.1:9999"),
        request(**same, origin="null"),
        request(**same, sec_fetch_site="cross-site"),
        request(**same, sec_fetch_site="same-site"),
    ):
        assert refusal(gate.check_action, bad, 0.0) == (403, "cross_site")


def test_a_session_lasts_until_it_expires_or_logs_out() -> None:
    gate = Gate(TOKEN, loopback=False)
    assert gate.csrf_token(request(), now=0.0) is None
    cookie = gate.login(request(), TOKEN, now=100.0)
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    sent = request(cookie="other=1; " + cookie.partition(";")[0])
    token = gate.csrf_token(sent, now=100.0)
    assert token is not None
    gate.check_action(request(cookie=cookie.partition(";")[0], x_csrf_token=token), now=101.0)
    assert gate.csrf_token(sent, now=100.0 + SESSION_SECONDS) is None
    again = request(cookie=gate.login(request(), TOKEN, now=200.0).partition(";")[0])
    assert gate.csrf_token(again, now=201.0) is not None
    assert "Max-Age=0" in gate.logout(again)
    assert gate.csrf_token(again, now=202.0) is None
    assert refusal(gate.check_action, again, 203.0) == (401, "login_required")


def test_failed_logins_are_limited_per_minute() -> None:
    gate = Gate(TOKEN, loopback=False)
    for i in range(MAX_LOGIN_FAILURES):
        assert refusal(gate.login, request(), "guess", float(i)) == (401, "bad_login")
    assert refusal(gate.login, request(), TOKEN, 30.0) == (429, "too_many_logins")
    # A minute after the first failure, one more try is allowed.
    assert gate.login(request(), TOKEN, 60.5)


def test_without_a_login_token_no_login_succeeds() -> None:
    gate = Gate(None, loopback=True)
    assert refusal(gate.login, request(), "", 0.0) == (401, "bad_login")
