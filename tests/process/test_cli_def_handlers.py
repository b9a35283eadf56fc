"""``jobqueue worker --handlers`` runs ``def`` handlers as well as ``async def`` ones (issue 13).

Before, a plain ``def`` handler ran, then failed with ``object dict can't be
used in 'await' expression``, so its side effects repeated once per attempt.
A real ``jobqueue worker`` process, as a user starts it.
"""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import trio

from jobqueue.testing import open_test_queue

pytestmark = pytest.mark.slow

#: The console script installed next to this interpreter.
JOBQUEUE_SCRIPT = str(Path(sys.executable).parent / "jobqueue")

HANDLERS = """\
import os

from jobqueue import in_process

def record(job):
    # A side effect per run: the test counts the lines.
    with open(job.payload["log"], "a") as f:
        f.write(f"attempt {job.attempt}\\n")
    return {"recorded": job.payload["text"], "pid": os.getpid()}

async def shout(job):
    return job.payload["text"].upper()

@in_process
def crunch(job):
    return {"sum": sum(range(job.payload["n"])), "pid": os.getpid()}

HANDLERS = {"record": record, "shout": shout, "crunch": crunch}
"""


async def test_worker_runs_a_def_handler_once_and_completes(tmp_path: Path) -> None:
    (tmp_path / "jq_cli_def_handlers.py").write_text(HANDLERS)
    log = tmp_path / "runs.log"
    async with open_test_queue() as queue, trio.open_nursery() as nursery:
        host, port = queue.address
        argv = [
            JOBQUEUE_SCRIPT, "worker", "--connect", f"{host}:{port}",
            "--handlers", "jq_cli_def_handlers:HANDLERS", "--name", "cli-def",
        ]  # fmt: skip
        run = partial(trio.run_process, argv, cwd=tmp_path, stdout=subprocess.DEVNULL, check=False)
        worker = await nursery.start(run)
        client = queue.client
        record = await client.submit("record", {"log": str(log), "text": "hi"}, max_attempts=3)
        shout = await client.submit("shout", {"text": "hi"})
        wanted = [record, shout]
        if _have_extra():
            wanted.append(await client.submit("crunch", {"n": 1000}))
        with trio.fail_after(60):
            done = [await client.wait(job_id) for job_id in wanted]
        assert worker.returncode is None, "the worker exited"
        nursery.cancel_scope.cancel()
    recorded, shouted, *crunched = done
    assert (recorded.state, recorded.attempt, recorded.worker) == ("completed", 1, "cli-def")
    assert recorded.result["recorded"] == "hi"
    assert log.read_text() == "attempt 1\n"  # ran once
    assert (shouted.state, shouted.result) == ("completed", "HI")
    for info in crunched:
        assert (info.state, info.result["sum"]) == ("completed", sum(range(1000)))
        assert info.result["pid"] != recorded.result["pid"]


def _have_extra() -> bool:
    try:
        import trio_parallel  # noqa: F401
    except ImportError:
        return False
    return True
