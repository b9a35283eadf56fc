"""``jobqueue dashboard`` as a user runs it: what it refuses, and what it says at start."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import trio

from tests.helpers import PYTHON_M_JOBQUEUE, free_port, run_cli, running_process, serving

TOKEN = "a-login-token-long-enough"

pytestmark = pytest.mark.slow


async def test_beyond_loopback_without_a_login_token_it_refuses_to_start() -> None:
    async with serving() as (host, port):
        done = await run_cli("dashboard", "--connect", f"{host}:{port}", "--listen", "0.0.0.0:0")
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.startswith("jobqueue: the dashboard bound to 0.0.0.0 needs a login token"), err
    assert "--login-token or $JOBQUEUE_DASHBOARD_TOKEN" in err


async def test_a_short_login_token_is_a_usage_error() -> None:
    done = await run_cli("dashboard", "--login-token", "short")
    assert done.returncode == 2
    assert b"--login-token is too short" in done.stderr


async def test_without_h11_the_error_names_the_extra() -> None:
    script = (
        "import sys; sys.modules['h11'] = None; from jobqueue._cli import main; "
        "sys.exit(main(['dashboard']))"
    )
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-c", script], capture_stderr=True, check=False
        )
    assert done.returncode == 1
    assert b"pip install 'jobqueue[dashboard]'" in done.stderr


async def test_it_says_at_start_that_login_is_required() -> None:
    dashboard_port = free_port()
    listen = f"127.0.0.1:{dashboard_port}"
    async with serving() as (host, port):
        argv = [*PYTHON_M_JOBQUEUE, "dashboard", "--connect", f"{host}:{port}"]
        argv += ["--listen", listen, "--login-token", TOKEN]
        async with running_process(argv, stderr=subprocess.PIPE) as process:
            said = await _said_at_start(process)
            assert f"dashboard at http://{listen}/ (login required".encode() in said
            stream = await trio.open_tcp_stream("127.0.0.1", dashboard_port)
            async with stream:
                await stream.send_all(
                    b"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                reply = b""
                with trio.fail_after(10):
                    while chunk := await stream.receive_some(4096):
                        reply += chunk
            assert reply.startswith(b"HTTP/1.1 401 ")


async def test_a_bad_listen_address_is_a_usage_error_naming_the_option() -> None:
    done = await run_cli("dashboard", "--listen", "127.0.0.1:port")
    assert done.returncode == 2
    assert b"bad --listen '127.0.0.1:port': expected HOST:PORT or HOST" in done.stderr


async def test_a_listen_host_only_trio_refuses_is_one_line_error() -> None:
    # The stdlib's IDNA 2003 takes a snowman, so --listen does; trio's IDNA 2008 does not.
    async with serving() as (host, port):
        listen = "\N{SNOWMAN}.example:0"
        done = await run_cli("dashboard", "--connect", f"{host}:{port}", "--listen", listen)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.startswith(f"jobqueue: cannot listen on {listen}: not a valid host name ("), err
    assert len(err.splitlines()) == 1, err


async def test_sigterm_is_logged_as_the_dashboards_own() -> None:
    # The line was logged under jobqueue.server, as if a queue server stopped.
    async with serving() as (host, port):
        argv = [*PYTHON_M_JOBQUEUE, "dashboard", "--connect", f"{host}:{port}"]
        argv += ["--listen", f"127.0.0.1:{free_port()}"]
        async with running_process(argv, stderr=subprocess.PIPE) as process:
            assert process.stderr is not None
            said = await _said_at_start(process)
            with trio.fail_after(30):
                process.send_signal(signal.SIGTERM)
                while chunk := await process.stderr.receive_some(4096):
                    said += chunk
                await process.wait()
    lines = [line for line in said.decode().splitlines() if "SIGTERM received" in line]
    assert len(lines) == 1, said
    assert "jobqueue.dashboard" in lines[0]
    assert "jobqueue.server" not in lines[0]


async def _said_at_start(process: trio.Process) -> bytes:
    """What the dashboard wrote to standard error up to its "dashboard at" line."""
    assert process.stderr is not None
    said = b""
    with trio.fail_after(30):
        while b"dashboard at" not in said:
            chunk = await process.stderr.receive_some(4096)
            assert chunk, said
            said += chunk
    return said
