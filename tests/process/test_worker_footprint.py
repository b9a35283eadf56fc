"""What a worker process loads: only the worker's part of the package.

A killed worker's sockets close only after the kernel has freed its memory,
so the server learns of the death, and hands the worker's jobs to another,
later the more the process loaded (docs/performance.md, "Failover"). These
run a fresh interpreter, as a ``jobqueue worker`` process starts, and look
at ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import jobqueue

#: Parts of the package a worker never uses.
NOT_FOR_WORKERS = (
    "jobqueue._client",
    "jobqueue._server",
    "jobqueue._coordinator",
    "jobqueue._state",
    "jobqueue._store",
    "jobqueue._journal",
    "jobqueue._dashboard",
    "jobqueue._http",
    "jobqueue._metrics",
    "jobqueue._demo",
)


def loaded_after(code: str) -> set[str]:
    """The ``jobqueue`` modules a fresh interpreter holds after running ``code``."""
    report = "import json, sys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {name for name in json.loads(out) if name.startswith("jobqueue")}


def test_the_worker_command_line_loads_no_server_client_or_dashboard() -> None:
    # What `python -m jobqueue worker --handlers app:HANDLERS` does before it
    # connects: build the command line, then import a handler module, which
    # takes its names from the package.
    loaded = loaded_after(
        "from jobqueue import _cli\n"
        "args = _cli._parser().parse_args(['worker', '--concurrency', '2'])\n"
        "assert args.command is _cli._worker\n"
        "from jobqueue import Handler, Job, JobCancelled, Worker, in_process\n"
    )
    assert "jobqueue._worker" in loaded
    assert loaded.isdisjoint(NOT_FOR_WORKERS), sorted(loaded & set(NOT_FOR_WORKERS))


def test_a_public_name_loads_its_module_on_first_use() -> None:
    assert "jobqueue._server" not in loaded_after("import jobqueue")
    assert "jobqueue._server" in loaded_after("import jobqueue\njobqueue.serve_queue")


@pytest.mark.parametrize("name", jobqueue.__all__)
def test_every_public_name_is_there(name: str) -> None:
    assert name in dir(jobqueue)
    assert getattr(jobqueue, name) is not None


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = jobqueue.nothing_here
