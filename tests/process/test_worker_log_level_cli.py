"""``jobqueue worker --log-level warning``: no line per completed job, trouble still logged.

The worker logs every job's outcome at INFO (issue 14); a line costs a
busy worker a tenth of its CPU per job (docs/performance.md), so
``--log-level`` lets a deployment keep only warnings and errors.
"""

from __future__ import annotations

import re
import signal
import subprocess

import pytest
import trio

from jobqueue import Client
from tests.helpers import PYTHON_M_JOBQUEUE, running_process, serving

pytestmark = pytest.mark.slow


async def test_at_warning_a_worker_logs_failures_but_not_completions() -> None:
    async with serving() as (host, port):
        worker_argv = [
            *PYTHON_M_JOBQUEUE, "worker", "--connect", f"{host}:{port}",
            "--log-level", "warning",
        ]  # fmt: skip
        async with running_process(
            worker_argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        ) as worker:
            assert worker.stderr is not None
            with trio.fail_after(20):
                async with Client.connect(host, port) as client:
                    done = await client.submit("sleep", {"seconds": 0})
                    failed = await client.submit("sleep", {"seconds": "soon"}, max_attempts=1)
                    assert (await client.wait(done)).state == "completed"
                    assert (await client.wait(failed)).state == "failed"
            worker.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                await worker.wait()
                log = b"".join([chunk async for chunk in worker.stderr]).decode()
    assert f"job {failed} (sleep) failed" in log
    assert "completed" not in log
    assert " INFO " not in log


async def test_at_the_default_level_a_worker_writes_the_text_line_per_job() -> None:
    # The line goes out by ``write_info``'s quick path here (the CLI's own
    # set-up); tests/unit/test_log_format.py holds that path to logging's.
    async with serving() as (host, port):
        worker_argv = [*PYTHON_M_JOBQUEUE, "worker", "--connect", f"{host}:{port}"]
        async with running_process(
            worker_argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        ) as worker:
            assert worker.stderr is not None
            with trio.fail_after(20):
                async with Client.connect(host, port) as client:
                    done = [await client.submit("sleep", {"seconds": 0}) for _ in range(3)]
                    for job_id in done:
                        assert (await client.wait(job_id)).state == "completed"
            worker.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                await worker.wait()
                log = b"".join([chunk async for chunk in worker.stderr]).decode()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    for job_id in done:
        outcome = rf"job {re.escape(job_id)} \(sleep\) completed in \d+\.\d{{3}}s"
        line = rf"{stamp} jobqueue\.worker INFO {outcome}"
        assert re.search(rf"^{line}$", log, re.MULTILINE), log
