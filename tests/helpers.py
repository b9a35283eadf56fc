"""Helpers the tests share, imported as ``from tests.helpers import ...``.

- Waiting: :func:`wait_until` (local state), :func:`stats_when` (the
  server's own view, polled), :func:`settle` (everything in flight served).
- The wire by hand: :class:`RawConnection` and :func:`open_raw_connection`
  (also the ``raw_connection`` fixture), :func:`submit_raw`, :func:`take` and :func:`park` with it;
  :class:`StreamWrapper` to change what a stream does.
- The codec: :func:`feed_both` (a LineDecoder fed whole and byte by byte),
  :func:`decode_line`, :func:`request_error`, :func:`same`, :func:`depth`,
  and :func:`json_values` to generate JSON.
- The pure state: :func:`new_state` (rules by name), :func:`submit`,
  :func:`run`, :func:`refused`, :func:`clone`, :func:`drain` (the order
  jobs come out in), :func:`pending_order`, :func:`ids`, :func:`totals`,
  :func:`counts` and :func:`listed`.
- Processes: :func:`run_cli`, :func:`running_process` (killed and reaped
  afterwards), :func:`serving` (a server in this trio run).
- Exact retry times: :class:`FixedJitter`; a port nobody listens on:
  :func:`free_port`.
- For the blocking and asyncio clients, servers in a background thread:
  :class:`QueueThread` runs a real queue (and a worker) with ``trio.run`` in
  a thread, so a test's own thread or event loop is free to be the client;
  :class:`FakeServer` is a scripted socket server, for replies no real
  server sends, and :class:`DeafServer` one that stops reading.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import strategies as st

from jobqueue import Client, Job, Stats, Worker, serve_queue
from jobqueue._codec import decode_request
from jobqueue._config import DEFAULT_QUEUE, QueueRules
from jobqueue._errors import ProtocolError, RuleError
from jobqueue._framing import EOF, NEED_DATA, LineDecoder
from jobqueue._job import JobRecord, JobState
from jobqueue._json import decode_object, encode
from jobqueue._limits import (
    JOB_STATES,
    MAX_ATTEMPTS,
    MAX_DELAY_SECONDS,
    MAX_LINE_BYTES,
    MAX_LIST_LIMIT,
    MAX_NAME_CHARS,
    MAX_NOTE_BYTES,
    MAX_PRIORITY,
    MAX_QUEUES,
    MAX_WAIT_SECONDS,
)
from jobqueue._requests import (
    CancelJob,
    DeleteJob,
    GetStats,
    GetStatus,
    Heartbeat,
    Hello,
    JobComplete,
    JobFailed,
    ListJobs,
    Progress,
    Request,
    RequestJob,
    RetryJob,
    SubmitJob,
    SubmitJobs,
    WaitJob,
)
from jobqueue._state import QueueState
from jobqueue.testing import RunningQueue

# -- waiting -------------------------------------------------------------------


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Return once ``predicate()`` holds; for local state with no event to wait on.

    Callers bound it with ``fail_after``.
    """
    while True:
        if predicate():
            return
        await trio.sleep(0.002)


def poll_until(check: Callable[[], bool], what: str) -> None:
    """Return once ``check()`` holds, polled from a thread (a process's state, say).

    Raises:
        AssertionError: ``LIMIT`` seconds passed first; the message names ``what``.
    """
    deadline = time.monotonic() + LIMIT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextmanager
def on_client_log(text: str, callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` for each ``jobqueue.client`` log line containing ``text``, in the block."""

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                callback()

    spy = Spy()
    logger = logging.getLogger("jobqueue.client")
    logger.addHandler(spy)
    try:
        yield
    finally:
        logger.removeHandler(spy)


async def stats_when(client: Client, predicate: Callable[[Stats], bool]) -> Stats:
    """Return the server's stats once ``predicate`` holds for them.

    Only for conditions the server alone can see (a close noticed, a request
    parked); callers bound it with ``fail_after``.
    """
    while True:
        stats = await client.stats()
        if predicate(stats):
            return stats
        await trio.sleep(0.002)


async def settle() -> None:
    """Let every message in flight arrive and be served (no virtual time passes)."""
    await trio.testing.wait_all_tasks_blocked()


# -- the wire by hand ----------------------------------------------------------


class RawConnection:
    """One connection speaking the wire protocol by hand: bytes and dicts, no Client."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        # Replies are ours to read, so no line limit worth enforcing here.
        self._decoder = LineDecoder(max_line=1 << 26)

    async def send_raw(self, data: bytes) -> None:
        """Send bytes exactly as given."""
        await self.stream.send_all(data)

    async def send_line(self, line: bytes) -> None:
        """Send one line, adding its newline."""
        await self.stream.send_all(line + b"\n")

    async def send(self, message: dict[str, Any]) -> None:
        """Send one message without reading its reply (for pipelining or blocking)."""
        await self.stream.send_all(encode(message))

    async def read_reply(self) -> dict[str, Any]:
        """Read the next reply line, however it arrives.

        Raises:
            EOFError: the server closed the connection first.
        """
        while True:
            line = self._decoder.next_line()
            if line is NEED_DATA:
                self._decoder.receive_data(await self.stream.receive_some(65536))
            elif line is EOF:
                raise EOFError("the server closed the connection")
            else:
                return decode_object(line)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one message and return its reply."""
        await self.send(message)
        return await self.read_reply()

    async def aclose(self) -> None:
        """Close abruptly: whatever is in flight is abandoned."""
        await trio.aclose_forcefully(self.stream)


#: ``async with raw_connection(queue_or_address) as conn: ...``
RawOpener = Callable[[RunningQueue | tuple[str, int]], AbstractAsyncContextManager[RawConnection]]


@asynccontextmanager
async def open_raw_connection(
    target: RunningQueue | tuple[str, int],
) -> AsyncIterator[RawConnection]:
    """A raw connection to a queue: TCP to an address, or a RunningQueue's own transport."""
    if isinstance(target, RunningQueue) and target.connector is not None:
        stream = await target.connector()
    else:
        host, port = target.address if isinstance(target, RunningQueue) else target
        stream = await trio.open_tcp_stream(host, port)
    conn = RawConnection(stream)
    try:
        yield conn
    finally:
        await conn.aclose()


async def park(client: Client, conn: RawConnection, *, wait: float, waiting: int) -> None:
    """Send ``request_job`` with ``wait`` on ``conn``; return once the server has parked it."""
    await conn.send({"type": "request_job", "wait": wait})
    await stats_when(client, lambda s: s.waiting_workers == waiting)


async def submit_raw(conn: RawConnection, name: str = "job", payload: Any = None) -> str:
    """Send ``submit_job``; return the new job's id."""
    reply = await conn.request({"type": "submit_job", "name": name, "payload": payload})
    assert reply["type"] == "job_submitted", reply
    job_id = reply["job_id"]
    assert isinstance(job_id, str)
    return job_id


async def take(conn: RawConnection, *queues: str, **fields: Any) -> dict[str, Any]:
    """Send ``request_job`` (from ``queues``, with ``fields``); return its ``job_assigned``."""
    request: dict[str, Any] = {"type": "request_job", **fields}
    if queues:
        request["queues"] = list(queues)
    reply = await conn.request(request)
    assert reply["type"] == "job_assigned", reply
    return reply


class StreamWrapper(trio.abc.Stream):
    """A stream that passes everything to ``inner``; subclasses change what they must."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- the codec, fed by hand ------------------------------------------------------


# What a feed produced, in order: a line (bytes), or ("error", code). A feed
# always ends with "EOF".
Output = bytes | tuple[str, str]


def drain_decoder(decoder: LineDecoder, out: list[Output | str], limit: int) -> None:
    """Pull lines until the decoder wants more data or reports EOF.

    Every line or error uses up at least one byte, so more than ``limit``
    (bytes fed + 1) outputs means the decoder is stuck repeating itself.
    """
    while True:
        assert len(out) <= limit
        try:
            item = decoder.next_line()
        except ProtocolError as exc:
            out.append(("error", exc.code))
            continue
        if item is NEED_DATA:
            return
        if item is EOF:
            out.append("EOF")
            return
        assert isinstance(item, bytes)
        out.append(item)


def feed(chunks: Iterable[bytes], *, max_line: int = MAX_LINE_BYTES) -> list[Output | str]:
    """Feed ``chunks`` then EOF; everything the decoder handed out."""
    decoder = LineDecoder(max_line)
    out: list[Output | str] = []
    fed = 0
    for chunk in chunks:
        decoder.receive_data(chunk)
        fed += len(chunk)
        drain_decoder(decoder, out, fed + 1)
    decoder.receive_data(b"")
    drain_decoder(decoder, out, fed + 1)
    assert out[-1] == "EOF"
    # EOF is sticky: asking again changes nothing.
    assert decoder.next_line() is EOF
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def feed_both(data: bytes, *, max_line: int = MAX_LINE_BYTES) -> list[Output | str]:
    """Feed ``data`` whole and one byte at a time; both must agree."""
    whole = feed([data] if data else [], max_line=max_line)
    assert feed(bytewise(data), max_line=max_line) == whole
    return whole


def decode_line(line: bytes) -> Request:
    """Decode ``line`` as a request after passing it through a LineDecoder both ways."""
    lines = feed_both(line + b"\n")
    assert lines == [line, "EOF"]
    return decode_request(line)


def request_error(line: bytes) -> ProtocolError:
    lines = feed_both(line + b"\n")
    assert lines == [line, "EOF"]
    with pytest.raises(ProtocolError) as info:
        decode_request(line)
    return info.value


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON types all the way down (True is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def depth(value: Any) -> int:
    """Nesting depth of arrays and objects in ``value`` (a scalar is 0)."""
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | text,
        lambda children: (
            st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5)
        ),
        max_leaves=25,
    )


# Any code point, lone surrogates included.
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
plain_text = st.text(max_size=12)


#: One valid request of each kind and shape, for round trips.
REQUESTS: list[Request] = [
    Hello(),
    Hello(name="worker-1"),
    Hello(name=""),
    Hello(name="h" * MAX_NAME_CHARS),
    SubmitJob(name="resize"),
    SubmitJob(name="n" * MAX_NAME_CHARS, payload={"a": [1, 2.5, None, True, False, "s"], "b": {}}),
    SubmitJob(name="é✓😀", payload="\U0001f600 \u2028 \x00"),
    SubmitJob(name="x", payload=[]),
    SubmitJob(name="x", payload=-(2**70)),
    RequestJob(),
    RequestJob(wait=0.5),
    RequestJob(wait=2.5),
    RequestJob(wait=MAX_WAIT_SECONDS),
    JobComplete(job_id="1"),
    JobComplete(job_id="abc-7", attempt=3, result={"ok": [1, None]}),
    JobComplete(job_id="1", attempt=1, result=0.1),
    JobFailed(job_id="1", error_type="ValueError", error_message="boom"),
    JobFailed(job_id="j", error_type="", error_message="", attempt=2),
    Heartbeat(job_id="1"),
    Heartbeat(job_id="1", attempt=7),
    GetStatus(job_id="r9"),
    WaitJob(job_id="1"),
    WaitJob(job_id="1", wait=0.0),
    WaitJob(job_id="1", wait=12.5),
    GetStats(),
    # Submit options.
    SubmitJob(name="x", queue="mail", priority=7, max_attempts=3, delay=2.5, key="order-1"),
    SubmitJob(name="x", priority=-MAX_PRIORITY, max_attempts=1, run_at=1.7e9),
    SubmitJob(
        name="x",
        queue="q" * MAX_NAME_CHARS,
        priority=MAX_PRIORITY,
        max_attempts=MAX_ATTEMPTS,
        delay=MAX_DELAY_SECONDS,
        key="k" * MAX_NAME_CHARS,
    ),
    SubmitJob(name="x", run_at=-5.0),
    SubmitJob(name="x", delay=1e-9),
    SubmitJobs(jobs=(SubmitJob(name="one"),)),
    SubmitJobs(
        jobs=(
            SubmitJob(name="a", payload=[1]),
            SubmitJob(name="b", queue="q", priority=-1, max_attempts=2, delay=1.0, key="k"),
            SubmitJob(name="c", run_at=10.0),
        )
    ),
    RequestJob(queues=("mail",)),
    RequestJob(wait=5.0, queues=("a", "default", "b")),
    RequestJob(queues=tuple(f"q{i}" for i in range(MAX_QUEUES))),
    RequestJob(queues=("q" * MAX_NAME_CHARS, "a")),
    Progress(job_id="1"),
    Progress(job_id="1", attempt=2, progress=0.5, note={"stage": "upload", "n": [1, 2]}),
    Progress(job_id="1", progress=0.0),
    Progress(job_id="1", progress=-3.0, note=""),
    Progress(job_id="1", note="n" * (MAX_NOTE_BYTES - 100)),
    CancelJob("1"),
    RetryJob("r-2"),
    DeleteJob("x" * 300),
    ListJobs(state="failed"),
    ListJobs(state="pending", queue="mail", limit=MAX_LIST_LIMIT),
    ListJobs(state="cancelled", limit=1),
    *(ListJobs(state=state) for state in JOB_STATES),
]


# -- the pure state, driven by hand ----------------------------------------------


#: The fields of QueueRules, which new_state takes by name.
RULE_NAMES = {field.name for field in attrs.fields(QueueRules)}


def new_state(**kwargs: Any) -> QueueState:
    """A ``QueueState`` with the rules named in ``kwargs`` and its other arguments."""
    rules = {name: kwargs.pop(name) for name in RULE_NAMES & kwargs.keys()}
    return QueueState(rules=QueueRules(**rules), **kwargs)


def refused(code: str, call: Callable[..., object], *args: Any) -> RuleError:
    """Call ``call(*args)``, which must refuse with ``code``; return the error."""
    with pytest.raises(RuleError) as info:
        call(*args)
    assert info.value.code == code
    return info.value


def ids(jobs: list[JobRecord]) -> list[str]:
    """The jobs' ids, in order."""
    return [job.id for job in jobs]


def submit(q: QueueState, now: float = 0.0, name: str = "n", **options: Any) -> JobRecord:
    """Submit a new job and return it (it must be new)."""
    job, new = q.submit(name, None, now, **options)
    assert new
    return job


def run(q: QueueState, job: JobRecord, worker: Hashable, now: float, **kw: Any) -> JobRecord:
    """Assign, expecting ``job`` to come out."""
    assigned = q.assign(worker, now, **kw)
    assert assigned is job
    return assigned


def clone(q: QueueState) -> QueueState:
    """A deep copy of ``q`` that reports no events (pickled: much faster than deepcopy)."""
    on_event, q.on_event = q.on_event, None
    try:
        copied = pickle.loads(pickle.dumps(q))
    finally:
        q.on_event = on_event
    assert isinstance(copied, QueueState)
    return copied


def drain(q: QueueState, queues: list[str]) -> list[str]:
    """The order a copy of ``q`` hands out its pending jobs in ``queues``."""
    copied = clone(q)
    order = []
    while (job := copied.assign(object(), math.inf, queues=queues)) is not None:
        order.append(job.id)
    return order


#: Every job state's name.
STATES = [state.value for state in JobState]
#: ``QueueState.totals`` with nothing counted yet.
ZERO_TOTALS = {
    "submitted": 0,
    "completed": 0,
    "failed": 0,
    "cancelled": 0,
    "retried": 0,
    "reassigned": 0,
    "expired": 0,
}


def totals(**nonzero: int) -> dict[str, int]:
    """The totals dict with the given counters set and the rest zero."""
    assert set(nonzero) <= set(ZERO_TOTALS)
    return {**ZERO_TOTALS, **nonzero}


def counts(**nonzero: int) -> dict[str, int]:
    """The counts dict with the given states set and the rest zero."""
    assert set(nonzero) <= set(STATES)
    return {state: nonzero.get(state, 0) for state in STATES}


def pending_order(q: QueueState) -> list[str]:
    """Ids of the pending jobs, in every queue, in the order ``assign`` hands them out.

    Found by draining a copy, serving every queue in use, so ``q`` is left alone.
    """
    copied = clone(q)
    queues = [*copied.queue_counts(), DEFAULT_QUEUE]
    order = []
    while (job := copied.assign(object(), math.inf, queues=queues)) is not None:
        order.append(job.id)
    return order


def listed(q: QueueState) -> dict[str, list[str]]:
    """``list_jobs`` for every state, unlimited."""
    return {
        state.value: [job.id for job in q.list_jobs(state, None, 1 << 30)[0]] for state in JobState
    }


def not_leased(call: Callable[..., object], *args: Any) -> None:
    """``call(*args)`` must refuse with ``not_leased``."""
    refused("not_leased", call, *args)


def unknown_job(call: Callable[..., object], *args: Any) -> None:
    """``call(*args)`` must refuse with ``unknown_job``."""
    refused("unknown_job", call, *args)


# -- processes -----------------------------------------------------------------

#: ``python -m jobqueue``, with this interpreter.
PYTHON_M_JOBQUEUE = (sys.executable, "-m", "jobqueue")
#: The console script installed next to this interpreter. Unlike ``python -m``,
#: it does not put the current directory on ``sys.path`` by itself.
JOBQUEUE_SCRIPT = str(Path(sys.executable).parent / "jobqueue")


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``python -m jobqueue ARGS`` in a subprocess to completion, capturing its output."""
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


async def wait_until_accepting(port: int, process: trio.Process) -> None:
    """Until something accepts TCP connections on 127.0.0.1:``port``.

    A separate process cannot tell us when it is listening, so this polls;
    it fails fast if ``process`` exits (the port was taken, say), and after
    a minute if it never listens.
    """
    with trio.fail_after(60):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"the server process exited ({process.returncode})")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)  # polling another process's start-up
            else:
                await stream.aclose()
                return


@asynccontextmanager
async def running_process(argv: Sequence[str], **options: Any) -> AsyncIterator[trio.Process]:
    """``argv`` as a process for the block; killed, reaped and its pipes closed afterwards.

    ``options`` are :func:`trio.lowlevel.open_process`'s (``stdout``, ``cwd``, ...).
    """
    process = await trio.lowlevel.open_process(list(argv), **options)
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    await pipe.aclose()


# -- odds and ends -------------------------------------------------------------


class FixedJitter(random.Random):
    """Retry jitter that is always ``fraction`` of the way through its range.

    Assign it to ``RunningQueue.state.rng`` for exact retry times.
    """

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.fraction


# -- servers in a thread, for the blocking and asyncio clients -----------------------


#: Seconds any thread start or stop may take before the test fails.
LIMIT = 10.0


async def echo(job: Job) -> Any:
    return job.payload


async def fail(job: Job) -> Any:
    raise RuntimeError(f"failed on purpose: {job.payload}")


async def add(job: Job) -> Any:
    return sum(job.payload["numbers"])


HANDLERS = {"echo": echo, "fail": fail, "add": add}


class QueueThread:
    """A queue server, with one echo/fail worker, on ``127.0.0.1`` in a thread.

    ``with QueueThread() as queue:`` then ``queue.address``; ``port`` picks
    the port (a restart on the same one), 0 a free one.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        worker: bool = True,
        worker_ssl_context: ssl.SSLContext | None = None,
        **options: Any,
    ) -> None:
        self._port = port
        self._worker = worker
        self._worker_ssl = worker_ssl_context
        self._options = options
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._scope: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._error: BaseException | None = None
        self.address = ("127.0.0.1", 0)

    def __enter__(self) -> QueueThread:
        self._thread.start()
        if not self._ready.wait(LIMIT) or self._error is not None:
            raise RuntimeError(f"the queue did not start: {self._error!r}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server: every connection to it is closed at once."""
        if self._thread.is_alive():
            assert self._scope is not None
            assert self._token is not None
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
            self._thread.join(LIMIT)
            assert not self._thread.is_alive(), "the queue thread did not stop"
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        with trio.CancelScope() as self._scope:
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                self.address = await nursery.start(
                    lambda task_status: serve_queue(
                        self._port, host="127.0.0.1", task_status=task_status, **self._options
                    )
                )
                if self._worker:
                    worker = Worker(
                        *self.address,
                        handlers=HANDLERS,
                        concurrency=8,
                        token=self._options.get("token"),
                        ssl_context=self._worker_ssl,
                    )
                    await nursery.start(worker.run)
                self._ready.set()


class FakeServer:
    """A socket server that answers ``hello`` properly, then as ``answer`` says.

    ``answer(connection_number, request_line)`` returns the bytes to send
    back (``b""``: nothing). Each connection is served by its own thread.
    """

    WELCOME = b'{"type":"hello","server":"fake","version":"0","lease_timeout":30}\n'

    def __init__(self, answer: Callable[[int, bytes], bytes]) -> None:
        self._answer = answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # to see _closing soon
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self.requests: list[bytes] = []
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    @property
    def connections(self) -> int:
        """How many connections it has accepted so far."""
        return len(self._threads)

    def __enter__(self) -> FakeServer:
        self._accepting.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        self._listener.close()
        for thread in [self._accepting, *self._threads]:
            thread.join(LIMIT)

    def _accept(self) -> None:
        number = 0
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn, number), daemon=True)
            self._threads.append(thread)
            thread.start()
            number += 1

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(0.1)
        buffer = b""
        with conn:
            while not self._closing.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self.requests.append(line)
                    reply = self.WELCOME if b'"hello"' in line else self._answer(number, line)
                    if reply:
                        conn.sendall(reply)


class DeafServer(FakeServer):
    """A socket server that answers ``hello``, then never reads another byte.

    As a hung server does, or one that stopped reading a connection with 64
    requests in flight (protocol §3.1): what a client sends then piles up in
    the sockets' buffers until they are full and its writes wait.
    ``receive_buffer`` (bytes) makes its side of each connection's buffers
    small, so that they fill sooner.
    """

    def __init__(self, *, receive_buffer: int | None = None) -> None:
        super().__init__(lambda _number, _line: b"")
        if receive_buffer is not None:
            # Accepted connections inherit it; set before any arrives.
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(LIMIT)
        line = b""
        with conn:
            try:
                while not line.endswith(b"\n"):  # byte by byte: read nothing after it
                    line += conn.recv(1) or b"\n"
                conn.sendall(self.WELCOME)
            except OSError:
                return
            self.requests.append(line.rstrip(b"\n"))
            self._closing.wait()


def status_of(line: bytes) -> bytes:
    """A ``job_status`` reply for the job a request line names (``"job_id":"a"`` → ``a``)."""
    job_id = line.split(b'"job_id":"', 1)[1].split(b'"', 1)[0]
    return (
        b'{"type":"job_status","job_id":"%s","name":"n","state":"pending","attempt":0}\n' % job_id
    )


def late_for_a(number: int, line: bytes) -> bytes:
    """An ``answer``: every status in order, but job ``a``'s half a second late."""
    if b'"job_id":"a"' in line:
        time.sleep(0.5)
    return status_of(line)


def free_port() -> int:
    """A loopback port nothing was listening on a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def scripted(*replies: bytes) -> Callable[[int, bytes], bytes]:
    """An ``answer`` giving each request after ``hello`` the next of ``replies``."""
    queue: list[bytes] = list(replies)
    return lambda _number, _line: queue.pop(0) if queue else b""


def run_threads(target: Callable[[int], None], count: int) -> Sequence[BaseException]:
    """Run ``target(i)`` in ``count`` threads at once; return what they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def one(index: int) -> None:
        try:
            start.wait(LIMIT)
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LIMIT * 3)
        assert not thread.is_alive(), "a client thread hung"
    return errors


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client context trusting it."""
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@contextmanager
def example_app(module: str, queue: tuple[str, int]) -> Iterator[Callable[[str], Any]]:
    """Run ``python -m examples.<module> HOST:PORT 0`` as a user would; yield a GET function.

    The function takes a path (``"/?numbers=1,2"``) and returns the decoded JSON answer.
    """
    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "-m", f"examples.{module}", f"{queue[0]}:{queue[1]}", "0"]
    with subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True) as app:
        try:
            assert app.stdout is not None
            line = app.stdout.readline()  # "serving on http://127.0.0.1:PORT/", once it is
            assert line.startswith("serving on "), f"the app did not start: {line!r}"
            base = line.split()[-1].rstrip("/")

            def get(path: str) -> Any:
                try:
                    with urllib.request.urlopen(base + path, timeout=LIMIT) as response:
                        return json.load(response)
                except urllib.error.HTTPError as exc:
                    return {"status": exc.code, **json.load(exc)}

            yield get
        finally:
            app.terminate()
            app.wait(LIMIT)
