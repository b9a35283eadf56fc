"""The command line: what a user sees when they get something wrong, and when it works.

Mistakes a user can make are reported as one line starting ``jobqueue:`` on
stderr, with a non-zero exit status and no traceback. Most cases call
``jobqueue._cli.main`` in this process; where the claim is about what a real
process prints (no traceback on its stderr, a clean exit), a subprocess runs
``python -m jobqueue``.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import pytest
import trio

from jobqueue import __version__, _cli
from jobqueue._client import Client
from jobqueue._server import serve_queue

PYTHON_M_JOBQUEUE = (sys.executable, "-m", "jobqueue")
#: The console script installed next to this interpreter. Unlike ``python -m``,
#: it does not put the current directory on ``sys.path`` by itself.
JOBQUEUE_SCRIPT = str(Path(sys.executable).parent / "jobqueue")


# -- helpers -----------------------------------------------------------------


def free_port() -> int:
    """A port nothing was listening on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def assert_one_line_error(stderr: str, starts: str) -> str:
    """``stderr`` is exactly one line, ``jobqueue: ...`` starting with ``starts``."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("jobqueue: "), stderr
    assert lines[0].startswith(f"jobqueue: {starts}"), stderr
    return lines[0]


def run_cli_sync(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m jobqueue ARGS`` in a subprocess, for tests that are not async."""
    return subprocess.run(
        [*PYTHON_M_JOBQUEUE, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,
    )


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m jobqueue ARGS`` in a subprocess, from inside a trio test."""
    with trio.fail_after(30):
        return await trio.run_process(
            [*PYTHON_M_JOBQUEUE, *args], capture_stdout=True, capture_stderr=True, check=False
        )


@asynccontextmanager
async def serving(*, lease_timeout: float = 60.0) -> AsyncIterator[tuple[str, int]]:
    """A queue server in this trio run, on a free loopback port, for the block."""
    async with trio.open_nursery() as nursery:
        address: tuple[str, int] = await nursery.start(
            partial(serve_queue, 0, host="127.0.0.1", lease_timeout=lease_timeout)
        )
        yield address
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def process_with_stderr(
    argv: Sequence[str], *, cwd: Path | None = None
) -> AsyncIterator[trio.Process]:
    """A process whose stderr is a pipe; killed and reaped when the block ends."""
    process = await trio.lowlevel.open_process(
        list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd
    )
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            assert process.stderr is not None
            await process.stderr.aclose()


async def read_until(
    stream: trio.abc.ReceiveStream, pattern: str, buffer: bytearray, *, count: int = 1
) -> str:
    """Read into ``buffer`` until ``pattern`` matches ``count`` times; return the text."""
    while len(re.findall(pattern, buffer.decode(errors="replace"))) < count:
        data = await stream.receive_some()
        assert data, f"stream closed before {pattern!r}:\n{buffer.decode(errors='replace')}"
        buffer += data
    return buffer.decode(errors="replace")


async def fail_if_it_exits(process: trio.Process) -> NoReturn:
    """Raise as soon as ``process`` exits; run it next to a wait that needs the process."""
    await process.wait()
    stderr: bytes | bytearray = b""
    if process.stderr is not None:
        stderr = await process.stderr.receive_some()
    raise AssertionError(f"exited with {process.returncode}: {stderr.decode(errors='replace')}")


def exit_status(argv: Sequence[str]) -> int:
    """``main(argv)``'s exit status, whether returned or raised by argparse."""
    try:
        return _cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    assert isinstance(code, int)
    return code


def _refuse_to_start(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError(f"a worker started although the command line was bad: {args}")


async def _refuse_to_serve(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError(f"a server started although the command line was bad: {args}")


@pytest.fixture(autouse=True)
def _isolate_main(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep ``main``'s process-wide effects (logging, ``sys.path``) inside each test.

    Also: in-process, a command that wrongly got past validation would run a
    server or a worker for ever, so those are replaced by stubs that fail.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(sys, "path", sys.path[:])
    monkeypatch.setattr(_cli, "Worker", _refuse_to_start)
    monkeypatch.setattr(_cli, "serve_queue", _refuse_to_serve)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


# -- --version ---------------------------------------------------------------


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_status(["--version"]) == 0
    assert capsys.readouterr().out == f"jobqueue {__version__}\n"


def test_console_script_runs() -> None:
    result = subprocess.run(
        [JOBQUEUE_SCRIPT, "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout == f"jobqueue {__version__}\n"


# -- bad addresses -------------------------------------------------------------

BAD_ADDRESSES = [
    "nonsense",
    "host:notaport",
    ":80",
    "127.0.0.1:",
    "127.0.0.1:0",
    "127.0.0.1:65536",
    "127.0.0.1:-1",
    "127.0.0.1: 80",
    "[]:80",
]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
@pytest.mark.parametrize(
    "command", [["submit", "sleep"], ["status", "job-1"], ["stats"], ["worker"]]
)
def test_bad_address_is_one_line_error(
    command: list[str], address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli.main([*command, "--connect", address]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = assert_one_line_error(captured.err, "bad address")
    assert repr(address) in line
    assert "HOST:PORT" in line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost:1", ("localhost", 1)),
        ("example.com:65535", ("example.com", 65535)),
        ("[::1]:9000", ("::1", 9000)),
    ],
)
def test_good_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert _cli.parse_address(text) == expected


# -- no server listening -------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["submit", "sleep"], ["submit", "sleep", "--wait"], ["status", "x-1"], ["stats"]]
)
def test_no_server_is_one_line_error_in_a_real_process(command: list[str]) -> None:
    port = free_port()
    result = run_cli_sync(*command, "--connect", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stdout == ""
    line = assert_one_line_error(result.stderr, f"cannot connect to the queue at 127.0.0.1:{port}")
    assert "refused" in line.lower()


@pytest.mark.slow
async def test_worker_without_a_server_keeps_retrying() -> None:
    # By design a worker outlives its server: it logs and retries, backing off.
    port = free_port()
    argv = [*PYTHON_M_JOBQUEUE, "worker", "--connect", f"127.0.0.1:{port}"]
    async with process_with_stderr(argv) as process:
        assert process.stderr is not None
        seen = bytearray()
        with trio.fail_after(20):
            text = await read_until(process.stderr, r"retrying in [\d.]+s\n", seen, count=2)
        assert process.returncode is None, "the worker gave up"
    delays = [float(d) for d in re.findall(r"retrying in ([\d.]+)s", text)]
    assert delays[1] > delays[0], text
    assert f"cannot connect to the queue at 127.0.0.1:{port}" in text
    assert "WARNING" in text
    assert "Traceback" not in text


# -- bad payloads -------------------------------------------------------------

BAD_PAYLOADS = [
    "{",
    "[1,]",
    "'single quotes'",
    "",
    "NaN",
    "Infinity",
    "-Infinity",
    '{"seconds": NaN}',
    "[Infinity]",
    "1 2",
    "9" * 5000,  # more digits than Python converts
]


@pytest.mark.parametrize("payload", BAD_PAYLOADS)
def test_bad_payload_is_one_line_error(payload: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing listens on this port: the payload must be refused before connecting.
    port = free_port()
    argv = ["submit", "sleep", f"--payload={payload}", "--connect", f"127.0.0.1:{port}"]
    assert _cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, "--payload is not valid JSON")


def test_nan_payload_is_one_line_error_in_a_real_process() -> None:
    result = run_cli_sync("submit", "sleep", "--payload", "NaN", "--connect", "127.0.0.1:9")
    assert result.returncode == 2
    assert result.stdout == ""
    line = assert_one_line_error(result.stderr, "--payload is not valid JSON")
    assert "NaN" in line


def test_deeply_nested_payload_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    payload = "[" * 5000 + "]" * 5000
    port = free_port()
    assert (
        _cli.main(["submit", "sleep", "--payload", payload, "--connect", f"127.0.0.1:{port}"]) == 2
    )
    assert_one_line_error(capsys.readouterr().err, "--payload")


@pytest.mark.parametrize("payload", ["1e999", '{"seconds": -1e999}'])
async def test_out_of_range_float_payload_is_one_line_error(payload: str) -> None:
    async with serving() as (host, port), Client.connect(host, port) as client:
        result = await run_cli(
            "submit", "sleep", f"--payload={payload}", "--connect", f"{host}:{port}"
        )
        stats = await client.stats()
    assert stats.totals["submitted"] == 0
    assert result.returncode != 0
    assert_one_line_error(result.stderr.decode(), "--payload")


# -- errors the server reports ----------------------------------------------------


async def test_server_errors_are_one_line() -> None:
    async with serving() as (host, port):
        connect = ("--connect", f"{host}:{port}")
        unknown = await run_cli("status", "no-such-job", *connect)
        long_name = await run_cli("submit", "x" * 300, *connect)
    assert unknown.returncode == 1
    assert unknown.stdout == b""
    assert_one_line_error(unknown.stderr.decode(), "unknown_job: no job 'no-such-job'")
    assert long_name.returncode == 1
    assert long_name.stdout == b""
    assert_one_line_error(long_name.stderr.decode(), "bad_request: ")


# -- --handlers ---------------------------------------------------------------

HANDLERS_MODULE = """\
import trio

async def shout(job):
    await trio.sleep(0)
    return {"shouted": job.payload["text"].upper(), "attempt": job.attempt}

HANDLERS = {"shout": shout}
NOT_A_MAPPING = [shout]
NOT_CALLABLE = {"shout": "shout"}
NOT_STR_KEYS = {1: shout}
"""


@pytest.fixture
def handlers_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory (the cwd) holding handler modules; forgotten after the test."""
    (tmp_path / "jq_test_handlers.py").write_text(HANDLERS_MODULE)
    (tmp_path / "jq_test_broken_import.py").write_text("import jq_no_such_dependency\n")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in [name for name in sys.modules if name.startswith("jq_test_")]:
        del sys.modules[name]


@pytest.mark.parametrize(
    ("spec", "starts"),
    [
        ("jq_test_missing_module:HANDLERS", "cannot import 'jq_test_missing_module'"),
        ("jq_test_broken_import:HANDLERS", "cannot import 'jq_test_broken_import'"),
        ("jq_test_handlers:NOPE", "module 'jq_test_handlers' has no attribute 'NOPE'"),
        ("jq_test_handlers:NOT_A_MAPPING", "jq_test_handlers:NOT_A_MAPPING must be a mapping"),
        ("jq_test_handlers:NOT_CALLABLE", "jq_test_handlers:NOT_CALLABLE must be a mapping"),
        ("jq_test_handlers:NOT_STR_KEYS", "jq_test_handlers:NOT_STR_KEYS must be a mapping"),
        ("jq_test_handlers:trio", "jq_test_handlers:trio must be a mapping"),
        ("jq_test_handlers", "bad --handlers 'jq_test_handlers'"),
        (":HANDLERS", "bad --handlers ':HANDLERS'"),
        ("jq_test_handlers:", "bad --handlers 'jq_test_handlers:'"),
    ],
)
def test_bad_handlers_is_one_line_error(
    spec: str, starts: str, handlers_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    argv = ["worker", "--handlers", spec, "--connect", f"127.0.0.1:{port}"]
    assert _cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, starts)


def test_load_handlers_finds_modules_in_the_current_directory(handlers_dir: Path) -> None:
    handlers = _cli.load_handlers("jq_test_handlers:HANDLERS")
    assert list(handlers) == ["shout"]
    assert handlers["shout"].__module__ == "jq_test_handlers"


def test_missing_handlers_module_is_one_line_error_in_a_real_process(tmp_path: Path) -> None:
    result = run_cli_sync(
        "worker", "--handlers", "jq_test_nowhere:HANDLERS", "--connect", "127.0.0.1:9", cwd=tmp_path
    )
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "cannot import 'jq_test_nowhere' for --handlers")


@pytest.mark.slow
async def test_worker_runs_handlers_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "jq_test_handlers.py").write_text(HANDLERS_MODULE)
    async with serving() as (host, port), Client.connect(host, port) as client:
        # The console script, not `python -m`: only load_handlers puts the
        # current directory on sys.path there.
        argv = [
            JOBQUEUE_SCRIPT, "worker", "--connect", f"{host}:{port}",
            "--handlers", "jq_test_handlers:HANDLERS", "--name", "custom",
        ]  # fmt: skip
        async with (
            process_with_stderr(argv, cwd=tmp_path) as worker,
            trio.open_nursery() as nursery,
        ):
            # A worker that exits (say, it could not import the handlers) fails
            # the test at once instead of leaving the waits below to time out.
            nursery.start_soon(fail_if_it_exits, worker)
            shout = await client.submit("shout", {"text": "hello"})
            sleep = await client.submit("sleep", {"seconds": 0})
            unknown = await client.submit("whisper", {"text": "hello"})
            with trio.fail_after(30):
                shouted = await client.wait(shout)
                slept = await client.wait(sleep)
                not_handled = await client.wait(unknown)
            nursery.cancel_scope.cancel()
    assert (shouted.state, shouted.worker) == ("completed", "custom")
    assert shouted.result == {"shouted": "HELLO", "attempt": 1}
    # Added to the built-in handlers, not instead of them.
    assert (slept.state, slept.result) == ("completed", {"slept": 0})
    assert not_handled.state == "failed"
    assert not_handled.error is not None
    assert "'whisper'" in not_handled.error["message"]


# -- serve ----------------------------------------------------------------------


def test_serve_on_a_port_in_use_is_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli_sync("serve", "--port", str(port))
    assert result.returncode == 1
    assert result.stdout == ""
    line = assert_one_line_error(result.stderr, f"cannot listen on 127.0.0.1:{port}")
    assert "in use" in line


def test_serve_on_an_unknown_host_is_one_line_error() -> None:
    result = run_cli_sync("serve", "--host", "no-such-host.invalid", "--port", "0")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "cannot listen on no-such-host.invalid:0")


def test_negative_retention_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["serve", "--port", "0", "--retention", "-1"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--retention must be 0 or more")


@pytest.mark.parametrize("port", ["65536", "70000", "-1"])
def test_serve_rejects_a_port_out_of_range(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    # serve_queue is a stub here (see _isolate_main): if main calls it, the
    # port got through, and the stub's AssertionError is caught below.
    try:
        status = exit_status(["serve", "--port", port])
    except AssertionError as exc:
        pytest.fail(f"serve started with --port {port}: {exc}")
    assert status == 2
    assert port in capsys.readouterr().err


# -- argparse's own errors ------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["worker", "--concurrency", "0"], "--concurrency: must be at least 1, not 0"),
        (["submit", "sleep", "--count", "0"], "--count: must be at least 1, not 0"),
        (["submit", "sleep", "--count", "many"], "--count"),
        (["serve", "--lease-timeout", "0"], "--lease-timeout: must be a positive number"),
        (["serve", "--lease-timeout", "nan"], "--lease-timeout: must be a positive number"),
        (["serve", "--lease-timeout", "inf"], "--lease-timeout: must be a positive number"),
        (["serve", "--port", "eighty"], "--port"),
        (["no-such-command"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usage_errors_exit_2_without_traceback(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse's format (a usage line, then "error: ..."), not jobqueue's own.
    with pytest.raises(SystemExit) as exc_info:
        _cli.main(argv)
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in err.splitlines()[-1]


# -- Ctrl-C ---------------------------------------------------------------------

needs_sigint = pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
    reason="SIGINT is ignored in this environment, so child processes would ignore it too",
)


@needs_sigint
async def test_ctrl_c_stops_serve_cleanly() -> None:
    port = free_port()
    async with process_with_stderr([*PYTHON_M_JOBQUEUE, "serve", "--port", str(port)]) as server:
        assert server.stderr is not None
        seen = bytearray()
        with trio.fail_after(20):
            await read_until(server.stderr, "queue listening on", seen)
        server.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            await server.wait()
            async for data in server.stderr:
                seen += data
    assert "Traceback" not in seen.decode(), seen.decode()
    assert server.returncode == 130


@needs_sigint
@pytest.mark.slow
async def test_ctrl_c_stops_a_worker_cleanly() -> None:
    async with serving() as (host, port):
        argv = [*PYTHON_M_JOBQUEUE, "worker", "--connect", f"{host}:{port}"]
        async with process_with_stderr(argv) as worker:
            assert worker.stderr is not None
            seen = bytearray()
            with trio.fail_after(20):
                await read_until(worker.stderr, r"worker \S+ connected", seen)
            worker.send_signal(signal.SIGINT)
            with trio.fail_after(10):
                await worker.wait()
                async for data in worker.stderr:
                    seen += data
    assert "Traceback" not in seen.decode(), seen.decode()
    assert worker.returncode == 130


# -- demo -------------------------------------------------------------------------


@pytest.mark.slow
async def test_demo_runs_end_to_end() -> None:
    argv = [
        *PYTHON_M_JOBQUEUE, "demo", "--jobs", "8", "--workers", "3", "--concurrency", "1",
        "--seed", "1",
    ]  # fmt: skip
    with trio.fail_after(60):
        result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, out + err
    assert "Traceback" not in err, err
    assert "every job completed" in out.splitlines()
    killed = re.search(r"killed (worker-\d) \(pid \d+\) with SIGKILL while it ran (\S+)", out)
    assert killed, out
    victim, job_id = killed.groups()
    retried = re.search(
        rf"job {re.escape(job_id)}: lost when {victim} was killed, "
        r"then completed on attempt 2 by (worker-\d)",
        out,
    )
    assert retried, out
    assert retried.group(1) != victim
    assert re.search(r"jobs submitted +8\n", out), out
    assert re.search(r"jobs completed +8\n", out), out
    assert re.search(rf"workers killed +1 \({victim}\)", out), out
