"""The command line: what a user sees when they get something wrong, and when it works.

Mistakes a user can make are reported as one line starting ``jobqueue:`` on
stderr, with a non-zero exit status and no traceback. Most cases call
``jobqueue._cli.main`` in this process; where the claim is about what a real
process prints (no traceback on its stderr, a clean exit), a subprocess runs
``python -m jobqueue``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import attrs
import pytest
import trio

from jobqueue import (
    Handler,
    Job,
    JobInfo,
    QueueRules,
    ServerConfig,
    Worker,
    __version__,
    _cli,
    _demo,
    _server,
)
from jobqueue._client import Client
from jobqueue._errors import reason
from jobqueue._limits import MAX_LISTED
from jobqueue.testing import open_test_queue
from tests.helpers import (
    JOBQUEUE_SCRIPT,
    PYTHON_M_JOBQUEUE,
    free_port,
    run_cli,
    running_process,
    serving,
    stats_when,
    wait_until,
)

# -- helpers -----------------------------------------------------------------


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


def process_with_stderr(
    argv: Sequence[str], *, cwd: Path | None = None
) -> AbstractAsyncContextManager[trio.Process]:
    """A process whose stderr is a pipe; killed and reaped when the block ends."""
    return running_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)


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


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one subcommand (``serve``, ``worker``, ...)."""
    for action in _cli._parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            parser: argparse.ArgumentParser = action.choices[name]
            return parser
    raise AssertionError("no subcommands")


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
    # ``serve`` imports the server when it runs (a worker never loads it).
    monkeypatch.setattr(_server, "serve_queue", _refuse_to_serve)
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
    "",
    "[]",
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
        # Without a port: the server's default port.
        ("queue.example", ("queue.example", 8080)),
        ("localhost", ("localhost", 8080)),
        ("[::1]", ("::1", 8080)),
    ],
)
def test_good_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert _cli.parse_address(text) == expected


#: The IDNA codec's words for an empty label: 3.13 tells it from a long one.
LABEL_EMPTY = "label empty" if sys.version_info >= (3, 13) else "label empty or too long"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("a" * 64 + ":80", "not a valid host name (label too long)"),
        ("a..b:80", f"not a valid host name ({LABEL_EMPTY})"),
        ("a..b", f"not a valid host name ({LABEL_EMPTY})"),
        # Was host ":" and port 1.
        ("::1", "an IPv6 address goes in brackets, e.g. [::1]:8080"),
        ("fe80::1:9000", "an IPv6 address goes in brackets, e.g. [::1]:8080"),
        # A bracket left open or unmatched: were host ":" port 1, "::1" port 80, "a" port 80.
        ("[::1", "an IPv6 address goes in brackets, e.g. [::1]:8080"),
        ("[::1]]:80", "an IPv6 address goes in brackets, e.g. [::1]:8080"),
        ("a]:80", "an IPv6 address goes in brackets, e.g. [::1]:8080"),
    ],
)
@pytest.mark.parametrize(
    "command", [["submit", "sleep"], ["stats"], ["worker"], ["dashboard"], ["schedule", "list"]]
)
def test_a_host_no_lookup_would_take_is_one_line_error(
    command: list[str], address: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Was UnicodeError from the IDNA codec, or for a worker endless retries.
    assert _cli.main([*command, "--connect", address]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, f"bad address {address!r}: {why}")


def test_a_listen_or_bind_host_no_lookup_would_take_is_one_line_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _cli.main(["dashboard", "--listen", "a..b:80"]) == 2
    assert_one_line_error(
        capsys.readouterr().err,
        f"bad --listen 'a..b:80': not a valid host name ({LABEL_EMPTY})",
    )
    assert _cli.main(["serve", "--host", "a" * 64]) == 2
    assert_one_line_error(
        capsys.readouterr().err,
        f"argument --host: {'a' * 64!r} is not a valid host name (label too long)",
    )


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


@pytest.mark.parametrize("address", ["nohost.invalid:8080", "nohost.invalid"])
def test_a_host_that_does_not_resolve_is_named(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Was "Unknown error -2": os.strerror of a resolver's error code.
    assert _cli.main(["stats", "--connect", address]) == 1
    line = assert_one_line_error(
        capsys.readouterr().err, "cannot connect to the queue at nohost.invalid:8080: "
    )
    assert "the host name did not resolve" in line
    assert "Unknown error" not in line


def test_a_resolver_error_is_reported_as_such() -> None:
    # Whatever the resolver says (no such name, or no answer at all).
    for error in (
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
    ):
        assert reason(error) == f"the host name did not resolve ({error.strerror})"


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


#: Larger than one command-line argument may be on Linux (MAX_ARG_STRLEN, 128 KiB),
#: well within what the server stores (1 MiB - 16 KiB).
LARGE_PAYLOAD = {"blob": "x" * 300_000, "n": [1, 2.5, None]}


async def test_a_large_payload_from_a_file_or_standard_input(tmp_path: Path) -> None:
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(LARGE_PAYLOAD, indent=2))
    async with serving() as (host, port), Client.connect(host, port) as client:
        connect = ("--connect", f"{host}:{port}")
        from_file = await run_cli("submit", "echo", "--payload", f"@{path}", *connect)
        with trio.fail_after(30):
            from_stdin = await trio.run_process(
                [*PYTHON_M_JOBQUEUE, "submit", "echo", "--payload", "-", *connect],
                stdin=json.dumps(LARGE_PAYLOAD).encode(),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        async with running_worker(host, port, {"echo": echo_payload}):
            for result in (from_file, from_stdin):
                assert result.returncode == 0, err_text(result)
                [job_id] = result.stdout.decode().split()
                with trio.fail_after(30):
                    assert (await client.wait(job_id)).result == LARGE_PAYLOAD


async def echo_payload(job: Job) -> Any:
    return job.payload


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read --payload @{path}: No such file or directory"),
        (b"{nope", "--payload @{path} is not valid JSON"),
        (b'"\xff"', "--payload @{path} is not UTF-8"),
        (json.dumps("x" * 1_100_000).encode(), 'bad job: "submit" field "payload" encodes to'),
    ],
)
def test_a_bad_payload_file_is_one_line_error(
    content: bytes | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "payload.json"
    if content is not None:
        path.write_bytes(content)
    # Nothing listens on this port: the payload must be refused before connecting.
    argv = ["submit", "sleep", "--payload", f"@{path}", "--connect", f"127.0.0.1:{free_port()}"]
    assert _cli.main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, message.format(path=path))


def test_a_bad_payload_on_standard_input_is_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"[1, 2")))
    argv = ["submit", "sleep", "--payload", "-", "--connect", f"127.0.0.1:{free_port()}"]
    assert _cli.main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, "--payload - is not valid JSON")


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
    async with serving() as (host, port), Client.connect(host, port) as client:
        connect = ("--connect", f"{host}:{port}")
        pending = await client.submit("sleep", {"seconds": 0})
        results = {
            argv: await run_cli(*argv, *connect)
            for argv in (
                ("status", "no-such-job"),
                ("cancel", "no-such-job"),
                ("retry", "no-such-job"),
                ("delete", "no-such-job"),
                ("retry", pending),
                ("delete", pending),
            )
        }
        info = await client.status(pending)
    for argv, starts in [
        (("status", "no-such-job"), "unknown_job: no job 'no-such-job'"),
        (("cancel", "no-such-job"), "unknown_job: no job 'no-such-job'"),
        (("retry", "no-such-job"), "unknown_job: no job 'no-such-job'"),
        (("delete", "no-such-job"), "unknown_job: no job 'no-such-job'"),
        (("retry", pending), f"not_failed: only failed jobs can be requeued; {pending!r}"),
        (("delete", pending), f"not_finished: job {pending!r} is pending"),
    ]:
        result = results[argv]
        assert result.returncode == 1, argv
        assert result.stdout == b"", argv
        assert_one_line_error(result.stderr.decode(), starts)
    # Neither refusal touched the job.
    assert (info.state, info.attempt) == ("pending", 0)


@pytest.mark.parametrize(
    ("option", "starts"),
    [
        pytest.param(
            ("x" * 300,),
            'bad job: "submit" field "name" is longer than 200 characters',
            id="long-name",
        ),
        pytest.param(
            ("sleep", "--priority", "1000001"),
            'bad job: "submit" field "priority" must be',
            id="priority",
        ),
        pytest.param(
            ("sleep", "--delay", "-1"), 'bad job: "submit" field "delay" must be', id="delay"
        ),
        pytest.param(
            ("sleep", "--delay", "nan"),
            # Was "must be a number, not a number".
            'bad job: "submit" field "delay" must be a finite number, not nan',
            id="nan-delay",
        ),
        pytest.param(
            ("sleep", "--max-attempts", "1001"),
            'bad job: "submit" field "max_attempts" must be from 1 to 1000',
            id="max-attempts",
        ),
    ],
)
async def test_a_job_the_server_would_refuse_is_a_usage_error(
    option: tuple[str, ...], starts: str
) -> None:
    # submit checks its options by the server's own rules before it connects:
    # nothing reaches the queue, and the mistake is the user's (exit 2).
    async with serving() as (host, port), Client.connect(host, port) as client:
        result = await run_cli("submit", *option, "--count", "2", "--connect", f"{host}:{port}")
        stats = await client.stats()
    assert result.returncode == 2
    assert result.stdout == b""
    assert_one_line_error(result.stderr.decode(), starts)
    assert stats.totals["submitted"] == 0


# -- the job lifecycle commands against a served queue -----------------------------


def status_dict(info: JobInfo) -> dict[str, Any]:
    """``info`` as the CLI prints it: the wire object without its type."""
    wire = info.to_wire()
    del wire["type"]
    return wire


@asynccontextmanager
async def running_worker(
    host: str, port: int, handlers: dict[str, Handler] | None = None, **options: Any
) -> AsyncIterator[Worker]:
    """An in-process Worker on the queue for the block (stopped afterwards)."""
    async with trio.open_nursery() as nursery:
        worker = Worker(host, port, handlers=handlers or {}, name="w", **options)
        await nursery.start(worker.run)
        yield worker
        nursery.cancel_scope.cancel()


async def test_submit_options_reach_the_queue() -> None:
    async with serving() as (host, port), Client.connect(host, port) as client:
        connect = ("--connect", f"{host}:{port}")
        options = ("--queue", "nightly", "--priority", "7", "--delay", "600",
                   "--max-attempts", "2", "--key", "report")  # fmt: skip
        first = await run_cli("submit", "sleep", "--payload", '{"seconds": 0}', *options, *connect)
        # The same key again: the same job, nothing added.
        again = await run_cli("submit", "sleep", *options, *connect)
        batch = await run_cli("submit", "sleep", "--count", "2", "--key", "part", *connect)
        batch_again = await run_cli("submit", "sleep", "--count", "2", "--key", "part", *connect)
        for result in (first, again, batch, batch_again):
            assert result.returncode == 0, err_text(result)
        [job_id] = first.stdout.decode().split()
        info = await client.status(job_id)
        stats = await client.stats()
    assert again.stdout == first.stdout
    assert batch_again.stdout == batch.stdout
    assert len(set(batch.stdout.decode().split()) | {job_id}) == 3
    assert (info.state, info.queue, info.priority, info.max_attempts) == (
        "scheduled",
        "nightly",
        7,
        2,
    )
    assert stats.totals["submitted"] == 3
    assert stats.queues == {
        "nightly": {"pending": 0, "scheduled": 1, "running": 0},
        "default": {"pending": 2, "scheduled": 0, "running": 0},
    }


def err_text(result: subprocess.CompletedProcess[bytes]) -> str:
    return result.stderr.decode(errors="replace")


async def test_list_retry_cancel_and_delete_against_a_served_queue() -> None:
    bad = {"seconds": -1}  # the built-in sleep handler raises ValueError
    async with serving() as (host, port), Client.connect(host, port) as client:
        connect = ("--connect", f"{host}:{port}")

        async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
            result = await run_cli(*args, *connect)
            assert result.returncode == 0, (args, err_text(result))
            return result

        with trio.fail_after(10):
            async with running_worker(host, port, queues=("default", "other")):
                first = await client.submit("sleep", bad, max_attempts=1)
                second = await client.submit("sleep", bad, queue="other", max_attempts=1)
                done = await client.submit("sleep", {"seconds": 0})
                dead = [await client.wait(job_id) for job_id in (first, second)]
                assert (await client.wait(done)).state == "completed"

        message = 'sleep needs a payload like {"seconds": 1.5} (0 to 86400 seconds)'
        listed = await cli("list")
        assert listed.stdout.decode().splitlines() == [
            f"{first}  sleep  queue=default  attempt=1  ValueError: {message}",
            f"{second}  sleep  queue=other  attempt=1  ValueError: {message}",
        ]
        assert listed.stderr == b""
        as_json = await cli("list", "--state", "failed", "--queue", "other", "--json")
        assert [json.loads(line) for line in as_json.stdout.decode().splitlines()] == [
            status_dict(dead[1])
        ]
        limited = await cli("list", "--limit", "1")
        assert limited.stdout.decode().splitlines() == [listed.stdout.decode().splitlines()[0]]
        assert err_text(limited) == "(more than 1; use --limit to see more)\n"
        assert (await cli("list", "--state", "running")).stdout == b""

        # retry: back in line (no worker now), with a fresh budget.
        retried = await cli("retry", first)
        # Revived: not finished any more, so no finishing time.
        assert json.loads(retried.stdout) == {
            **{k: v for k, v in status_dict(dead[0]).items() if k != "finished_at"},
            "state": "pending",
            "attempts_spent": 0,  # a fresh budget
        }
        pending = await cli("list", "--state", "pending", "--json")
        assert [json.loads(line)["job_id"] for line in pending.stdout.decode().splitlines()] == [
            first
        ]
        # cancel: it will never run.
        cancelled = await cli("cancel", first)
        assert json.loads(cancelled.stdout)["state"] == "cancelled"
        assert (await client.status(first)).state == "cancelled"
        # delete: forgotten.
        for job_id in (first, second):
            deleted = await cli("delete", job_id)
            assert deleted.stdout.decode() == f"deleted {job_id}\n"
        assert (await cli("list")).stdout == b""
        gone = await run_cli("status", second, *connect)
        finished = await run_cli("cancel", done, *connect)
        stats = await client.stats()
    assert gone.returncode == 1
    assert_one_line_error(err_text(gone), f"unknown_job: no job {second!r}")
    assert finished.returncode == 1
    assert_one_line_error(
        err_text(finished), f"already_finished: job {done!r} is already completed"
    )
    assert stats.jobs == {
        "pending": 0, "scheduled": 0, "running": 0, "completed": 1, "failed": 0, "cancelled": 0,
    }  # fmt: skip


async def test_cancel_stops_a_running_handler() -> None:
    started, stopped = trio.Event(), trio.Event()

    async def forever(job: Job) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            stopped.set()

    async with serving() as (host, port), Client.connect(host, port) as client:
        async with running_worker(host, port, {"forever": forever}) as worker:
            job_id = await client.submit("forever")
            with trio.fail_after(10):
                await started.wait()
                result = await run_cli("cancel", job_id, "--connect", f"{host}:{port}")
                await stopped.wait()
            assert result.returncode == 0, err_text(result)
            # Stopped, counted and not reported: the worker had no report to make.
            with trio.fail_after(10):
                await wait_until(lambda: worker.statistics().cancelled == 1)
            statistics = worker.statistics()
        info = await client.status(job_id)
    assert json.loads(result.stdout) == status_dict(info)
    assert (info.state, info.attempt, info.worker) == ("cancelled", 1, "w")
    assert (statistics.completed, statistics.failed, statistics.lost) == (0, 0, 0)


def process_with_pipes(argv: Sequence[str]) -> AbstractAsyncContextManager[trio.Process]:
    """A process whose stdout and stderr are pipes; killed and reaped when the block ends."""
    return running_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def test_stats_watch_refreshes_until_interrupted() -> None:
    async with serving() as (host, port), Client.connect(host, port) as client:
        argv = [
            *PYTHON_M_JOBQUEUE, "stats", "--watch", "--interval", "0.05",
            "--connect", f"{host}:{port}",
        ]  # fmt: skip
        async with process_with_pipes(argv) as watcher:
            assert watcher.stdout is not None
            assert watcher.stderr is not None
            seen = bytearray()
            with trio.fail_after(20):
                await read_until(watcher.stdout, r"connections \d+  waiting workers 0\n", seen)
                # A change on the server shows in a later refresh.
                await client.submit("sleep", {"seconds": 0}, queue="watched")
                text = await read_until(watcher.stdout, "queue watched: pending 1", seen)
            interruptible = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
            watcher.send_signal(signal.SIGINT if interruptible else signal.SIGKILL)
            with trio.fail_after(10):
                await watcher.wait()
                errors = b"".join([chunk async for chunk in watcher.stderr])
    blocks = text.split("jobs:   ")[1:]
    assert len(blocks) >= 2, text
    assert blocks[0].startswith("pending 0  scheduled 0  running 0")
    assert "queue watched: pending 1  scheduled 0  running 0" in blocks[-1]
    assert "\x1b" not in text  # not a terminal: no cursor movement, one block after another
    if interruptible:
        assert watcher.returncode == 130
        assert errors == b"", errors.decode(errors="replace")


async def test_stats_show_the_journal(tmp_path: Path) -> None:
    async with open_test_queue(journal=str(tmp_path), fsync="interval") as queue:
        await queue.client.submit("sleep")
        host, port = queue.address
        human = await run_cli("stats", "--connect", f"{host}:{port}")
        raw = await run_cli("stats", "--json", "--connect", f"{host}:{port}")
    assert human.returncode == 0, err_text(human)
    shown = json.loads(raw.stdout)["journal"]
    assert (shown["fsync"], shown["failing"], shown["error"]) == ("interval", False, None)
    assert shown["bytes"] > 0
    line = human.stdout.decode().splitlines()[3]
    assert line == f"journal: fsync interval  bytes {shown['bytes']}  compactions 0", line


async def test_stats_say_how_many_queues_they_leave_out() -> None:
    async with open_test_queue() as queue:
        jobs = [{"name": "work", "queue": f"q{n:04d}"} for n in range(MAX_LISTED + 3)]
        for start in range(0, len(jobs), 500):
            await queue.client.submit_many(jobs[start : start + 500])
        host, port = queue.address
        human = await run_cli("stats", "--connect", f"{host}:{port}")
    assert human.returncode == 0, err_text(human)
    lines = human.stdout.decode().splitlines()
    assert sum(line.startswith("queue q") for line in lines) == MAX_LISTED
    assert lines[-1] == "(3 more queues not listed: the server lists the busiest)"


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
            # The worker has no handler for it: it is never handed the job.
            unknown = await client.submit("whisper", {"text": "hello"}, max_attempts=1)
            with trio.fail_after(30):
                shouted = await client.wait(shout)
                slept = await client.wait(sleep)
            not_handled = await client.status(unknown)
            nursery.cancel_scope.cancel()
    assert (shouted.state, shouted.worker) == ("completed", "custom")
    assert shouted.result == {"shouted": "HELLO", "attempt": 1}
    # Added to the built-in handlers, not instead of them.
    assert (slept.state, slept.result) == ("completed", {"slept": 0})
    assert (not_handled.state, not_handled.attempt) == ("pending", 0)


@pytest.mark.slow
async def test_worker_queues_and_job_timeout_in_a_real_process() -> None:
    async with serving() as (host, port), Client.connect(host, port) as client:
        argv = [
            *PYTHON_M_JOBQUEUE, "worker", "--connect", f"{host}:{port}", "--name", "picky",
            "--queues", "fast, slow", "--job-timeout", "0.5",
        ]  # fmt: skip
        async with (
            process_with_stderr(argv) as worker,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(fail_if_it_exits, worker)
            with trio.fail_after(30):
                await stats_when(client, lambda stats: stats.waiting_workers == 1)
                entry = (await client.stats()).workers
                elsewhere = await client.submit("sleep", {"seconds": 0})
                # Before the submit: the worker may start the job before its reply is read.
                started = trio.current_time()
                hung = await client.submit("sleep", {"seconds": 60}, queue="slow", max_attempts=1)
                quick = await client.submit("sleep", {"seconds": 0}, queue="fast")
                timed_out = await client.wait(hung)
                took = trio.current_time() - started
                done = await client.wait(quick)
            left = await client.status(elsewhere)
            nursery.cancel_scope.cancel()
    assert entry == [{"name": "picky", "jobs": [], "waiting": True, "queues": ["fast", "slow"]}]
    assert (timed_out.state, timed_out.worker) == ("failed", "picky")
    assert timed_out.error == {
        "type": "TimeoutError",
        "message": "handler ran longer than job_timeout=0.5s",
    }
    assert 0.5 <= took < 5, took
    assert (done.state, done.worker) == ("completed", "picky")
    assert (left.state, left.attempt) == ("pending", 0)


@pytest.mark.slow
async def test_worker_prefetch_in_a_real_process() -> None:
    async with serving() as (host, port), Client.connect(host, port) as client:
        argv = [
            *PYTHON_M_JOBQUEUE, "worker", "--connect", f"{host}:{port}", "--name", "greedy",
            "--prefetch", "4",
        ]  # fmt: skip
        async with process_with_stderr(argv) as worker, trio.open_nursery() as nursery:
            nursery.start_soon(fail_if_it_exits, worker)
            with trio.fail_after(30):
                await stats_when(client, lambda stats: stats.waiting_workers == 1)
                ids = await client.submit_many([{"name": "sleep", "payload": {"seconds": 0.5}}] * 4)
                # One slot holds all four at once: one running, three taken ahead.
                await stats_when(
                    client, lambda stats: [len(w["jobs"]) for w in stats.workers] == [4]
                )
                done = [await client.wait(job_id) for job_id in ids]
            nursery.cancel_scope.cancel()
    assert [(info.state, info.worker) for info in done] == [("completed", "greedy")] * 4


@pytest.mark.slow
async def test_worker_auto_prefetch_in_a_real_process() -> None:
    # "auto" is the default: no --prefetch.
    async with serving() as (host, port), Client.connect(host, port) as client:
        ids = await client.submit_many([{"name": "sleep", "payload": {"seconds": 0}}] * 300)
        argv = [
            *PYTHON_M_JOBQUEUE, "worker", "--connect", f"{host}:{port}", "--name", "auto",
            "--concurrency", "2",
        ]  # fmt: skip
        async with process_with_stderr(argv) as worker, trio.open_nursery() as nursery:
            nursery.start_soon(fail_if_it_exits, worker)
            with trio.fail_after(30):
                done = [await client.wait(job_id) for job_id in ids]
            nursery.cancel_scope.cancel()
    assert {(info.state, info.worker, info.attempt) for info in done} == {("completed", "auto", 1)}


# -- TLS, token and limits, all from the command line ------------------------------


@pytest.mark.slow
async def test_tls_token_and_max_pending_in_real_processes(tmp_path: Path) -> None:
    import trustme  # the throwaway CA of the TLS tests

    ca = trustme.CA()
    server_pem = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    port = free_port()
    address = f"127.0.0.1:{port}"
    token_env = {**os.environ, _cli.TOKEN_ENV: "s3cret"}

    async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        with trio.fail_after(30):
            result = await trio.run_process(
                [*PYTHON_M_JOBQUEUE, *args],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=token_env if env is None else env,
            )
        return result.returncode, result.stdout.decode(), result.stderr.decode()

    serve = [
        *PYTHON_M_JOBQUEUE, "serve", "--port", str(port), "--tls-cert", str(server_pem),
        "--token", "s3cret", "--max-pending", "2",
    ]  # fmt: skip
    async with process_with_stderr(serve) as server:
        assert server.stderr is not None
        with trio.fail_after(30):
            await read_until(server.stderr, "queue listening on .* with TLS", bytearray())
        tls = ("--connect", address, "--tls-ca", str(ca_pem))

        # The token comes from the environment; the certificate is checked.
        status, out, err = await cli("submit", "sleep", "--payload", '{"seconds": 0}', *tls)
        assert status == 0, err
        job_id = out.strip()
        # Two waiting jobs is the limit: a third is refused, and says why.
        zero = ("--payload", '{"seconds": 0}')
        assert (await cli("submit", "sleep", "--count", "2", *zero, *tls))[0] == 1
        status, _, err = await cli("submit", "sleep", *zero, *tls)
        assert status == 0, err
        status, _, err = await cli("submit", "sleep", *zero, *tls)
        assert status == 1
        assert_one_line_error(err, "queue_full: the queue holds its limit of 2 waiting jobs")

        # Without the token, or without TLS, or trusting another CA: refused.
        status, _, err = await cli("stats", *tls, env=dict(os.environ))
        assert status == 1
        assert_one_line_error(err, "unauthorized: wrong or missing token")
        status, _, err = await cli("stats", "--connect", address)
        assert status == 1
        assert "if the server uses TLS, connect with TLS" in assert_one_line_error(err, "")
        other_ca = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other_ca))
        status, _, err = await cli("stats", "--connect", address, "--tls-ca", str(other_ca))
        assert status == 1
        assert_one_line_error(err, f"TLS handshake with the queue at {address} failed")
        assert "certificate rejected" in err

        # A worker with TLS and the token runs the job.
        worker = [*PYTHON_M_JOBQUEUE, "worker", *tls]
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                process = await nursery.start(
                    partial(
                        trio.run_process,
                        worker,
                        env=token_env,
                        check=False,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                # Two jobs still wait, the limit: until the worker has taken
                # them, a third would be refused (the worker process may well
                # connect after this test's next command on a busy machine). It
                # is another process: there is no event to wait on, so poll.
                while "pending 0 " not in (await cli("stats", *tls))[1]:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                status, out, err = await cli("submit", "sleep", "--wait", *zero, *tls)
                assert status == 0, err
                assert json.loads(out)["state"] == "completed"
                status, out, err = await cli("status", job_id, "--json", *tls)
                assert json.loads(out)["state"] == "completed", err
                process.kill()


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


def test_serve_on_a_host_name_only_trio_refuses_is_one_line_error() -> None:
    # The stdlib's IDNA 2003 takes a snowman; trio's IDNA 2008 does not.
    result = run_cli_sync("serve", "--host", "\N{SNOWMAN}.example", "--port", "0")
    assert result.returncode == 1
    assert_one_line_error(
        result.stderr, "cannot listen on \N{SNOWMAN}.example:0: not a valid host name (Codepoint"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--tls-key", "key.pem"], "--tls-key needs --tls-cert"),
        (["serve", "--tls-cert", "/no/such/cert.pem"], "cannot load --tls-cert/--tls-key"),
        (["stats", "--tls-ca", "/no/such/ca.pem"], "cannot use --tls-ca '/no/such/ca.pem'"),
    ],
)
def test_guard_options_are_checked(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_status(argv) == 2
    assert message in assert_one_line_error(capsys.readouterr().err, "")


def test_an_empty_token_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["serve", "--token", ""]) == 2
    assert_one_line_error(capsys.readouterr().err, "--token must not be empty")


@pytest.fixture
def served_configs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, ServerConfig]]:
    """What ``main(["serve", ...])`` would serve: port, host and config, per call."""
    calls: list[tuple[int, str, ServerConfig]] = []

    async def record(port: int, *, host: str, config: ServerConfig) -> None:
        calls.append((port, host, config))

    monkeypatch.setattr(_server, "serve_queue", record)
    monkeypatch.delenv(_cli.TOKEN_ENV, raising=False)
    return calls


def test_serve_options_build_the_config(
    served_configs: list[tuple[int, str, ServerConfig]],
) -> None:
    assert _cli.main(["serve"]) == 0
    assert served_configs.pop() == (8080, "127.0.0.1", ServerConfig())
    argv = ["serve", "--port", "0", "--host", "::1", "--lease-timeout", "2.5"]
    argv += ["--retention", "7", "--max-attempts", "3", "--retry-delay", "0.5"]
    argv += ["--max-retry-delay", "9", "--max-pending", "0", "--max-connections", "4"]
    argv += ["--handshake-timeout", "2", "--idle-timeout", "60", "--token", "s3cret"]
    argv += ["--retention-bytes", "0", "--max-payload-bytes", "1000"]
    assert _cli.main(argv) == 0
    rules = QueueRules(
        lease_timeout=2.5,
        finished_retention=7,
        finished_retention_bytes=None,  # --retention-bytes 0: no limit
        max_payload_bytes=1000,
        max_attempts=3,
        retry_delay=0.5,
        max_retry_delay=9,
        max_pending=None,  # --max-pending 0: no limit
    )
    config = ServerConfig(
        rules=rules, max_connections=4, handshake_timeout=2, idle_timeout=60, token="s3cret"
    )
    assert served_configs.pop() == (0, "::1", config)


def test_every_server_option_has_a_flag() -> None:
    # A new field of either record is a new serve option without touching the CLI.
    dests = {action.dest for action in command_parser("serve")._actions}
    offered = {
        field.name
        for record in (QueueRules, ServerConfig)
        for field in attrs.fields(record)
        if field.metadata.get("cli", True)
    }
    # The others are built from options of the CLI's own.
    assert {"rules", "token", "ssl_context", "max_line_bytes", "schedules"} == {
        field.name for field in attrs.fields(ServerConfig)
    } - offered
    assert offered <= dests


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
        (["serve", "--lease-timeout", "nan"], "--lease-timeout: must be a finite number"),
        (["serve", "--lease-timeout", "inf"], "--lease-timeout: must be a finite number"),
        (["serve", "--lease-timeout", "soon"], "--lease-timeout: expected a number, not 'soon'"),
        (["serve", "--port", "eighty"], "--port"),
        (["serve", "--max-attempts", "0"], "--max-attempts: must be at least 1, not 0"),
        (["serve", "--max-attempts", "1001"], "--max-attempts: must be at most 1000, not 1001"),
        (["serve", "--retry-delay", "0"], "--retry-delay: must be a positive number"),
        (["serve", "--max-connections", "0"], "--max-connections: must be at least 1"),
        (["serve", "--idle-timeout", "0"], "--idle-timeout: must be a positive number"),
        (["serve", "--handshake-timeout", "inf"], "--handshake-timeout: must be a finite"),
        (["serve", "--max-retry-delay", "inf"], "--max-retry-delay: must be a finite number"),
        (["serve", "--retention", "-1"], "--retention: must be at least 0, not -1"),
        (["serve", "--retention", "all"], "--retention: expected a whole number, not 'all'"),
        (["serve", "--max-pending", "-1"], "--max-pending: must be at least 1, not -1 (or 0: no"),
        (["serve", "--lease-timeout", "0"], "--lease-timeout: must be a positive number, not 0 "),
        (["serve", "--bogus"], "unrecognized arguments: --bogus"),
        (["stats", "-v", "--bogus"], "unrecognized arguments: --bogus"),
        (["submit", "sleep", "--max-attempts", "0"], "--max-attempts: must be at least 1"),
        (["submit", "sleep", "--priority", "high"], "--priority"),
        (["submit", "sleep", "--delay", "soon"], "--delay"),
        (["worker", "--job-timeout", "0"], "--job-timeout: must be a positive number"),
        (["worker", "--prefetch", "0"], "--prefetch: must be at least 1, not 0"),
        (["worker", "--prefetch", "1001"], "--prefetch: must be at most 1000, not 1001"),
        (["worker", "--prefetch", "some"], "--prefetch: expected a whole number or auto, not"),
        (["list", "--state", "lost"], "--state: invalid choice: 'lost'"),
        (["list", "--limit", "0"], "--limit: must be at least 1, not 0"),
        (["stats", "--watch", "--interval", "0"], "--interval: must be a positive number"),
        (["cancel"], "the following arguments are required: JOB_ID"),
        (["retry"], "the following arguments are required: JOB_ID"),
        (["delete"], "the following arguments are required: JOB_ID"),
        # An empty id: refused here, as submit refuses an empty job name, not
        # by the server (exit 1, and only once a server answers).
        (["status", ""], "argument JOB_ID: must not be empty"),
        (["cancel", ""], "argument JOB_ID: must not be empty"),
        (["retry", ""], "argument JOB_ID: must not be empty"),
        (["delete", ""], "argument JOB_ID: must not be empty"),
        (["schedule", "remove", ""], "argument NAME: must not be empty"),
        (["no-such-command"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usage_errors_exit_2_without_traceback(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # argparse's own errors too are one "jobqueue: ..." line, as README promises.
    assert exit_status(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = assert_one_line_error(captured.err, "")
    assert message in line
    assert line.endswith("--help')")  # where to look next


def test_argparse_errors_are_one_line_in_a_real_process() -> None:
    result = run_cli_sync("serve", "--no-such-option")
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_line_error(result.stderr, "unrecognized arguments: --no-such-option")
    result = run_cli_sync("serve", "--max-connections", "0")
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "argument --max-connections: must be at least 1, not 0")


@pytest.mark.parametrize("argv", [["-v", "serve"], ["serve", "-v"], ["serve", "--verbose"]])
def test_verbose_before_or_after_the_command(argv: list[str]) -> None:
    assert _cli._parser().parse_args(argv).verbose is True


@pytest.mark.parametrize("argv", [["serve"], ["stats"], ["status", "x-1"]])
def test_not_verbose_by_default(argv: list[str]) -> None:
    assert _cli._parser().parse_args(argv).verbose is False


@pytest.mark.parametrize(
    ("argv", "prefetch"),
    [([], "auto"), (["--prefetch", "auto"], "auto"), (["--prefetch", "1"], 1)],
)
def test_worker_prefetch_is_auto_by_default(argv: list[str], prefetch: object) -> None:
    assert _cli._parser().parse_args(["worker", *argv]).prefetch == prefetch


COMMANDS = ["serve", "worker", "submit", "status", "cancel", "retry", "delete", "list"]
COMMANDS += ["stats", "demo"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_help_shows_its_default(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(_cli.TOKEN_ENV, "hunter2-secret")
    parser = command_parser(name)
    options = [
        action
        for action in parser._actions
        if action.option_strings and action.dest not in ("help", "version")
    ]
    assert options
    for action in options:
        assert action.help, action.option_strings
        shown = parser._get_formatter()._get_help_string(action)
        assert shown is not None
        assert "(default: " in shown, action.option_strings
    with pytest.raises(SystemExit):
        _cli.main([name, "--help"])
    text = capsys.readouterr().out
    # The token's default is the secret in the environment: never printed.
    assert "hunter2-secret" not in text
    assert "(default: $JOBQUEUE_TOKEN" in text or name == "demo"


def test_serve_help_shows_the_records_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # undo the wrapping
    assert "how long a silent worker keeps a job (default: 30.0)" in text
    assert "--retention N finished jobs remembered for status (default: 100000)" in text
    assert "0: no limit (default: 1000000)" in text
    assert "--max-connections N connections open at once (default: 1024)" in text
    assert "(default: never)" in text


@pytest.mark.parametrize("queues", ["", ",", " , ,"])
def test_worker_needs_a_queue(queues: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Worker is a stub here (see _isolate_main): reaching it fails the test.
    assert _cli.main(["worker", "--queues", queues, "--connect", "127.0.0.1:9"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--queues needs at least one queue name")


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
async def test_ctrl_c_drains_a_worker_and_it_exits_0() -> None:
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
    assert "draining" in seen.decode(), seen.decode()
    assert worker.returncode == 0


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


def test_demo_with_one_worker_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It killed its only worker, then waited for ever for someone to run the jobs.
    monkeypatch.setattr(_demo, "run_demo", _refuse_to_start)
    assert _cli.main(["demo", "--workers", "1"]) == 2
    assert_one_line_error(capsys.readouterr().err, "demo --workers must be at least 2: ")
    # Killing the server instead needs no second worker.
    monkeypatch.setattr(_demo, "run_demo", lambda args: 0)
    assert _cli.main(["demo", "--workers", "1", "--crash-server"]) == 0
