"""``python -m examples.worker``, run as the README says, stopped with Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from jobqueue.sync import Client
from tests import helpers as support

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_example_worker_drains_on_ctrl_c_and_exits_0(signum: signal.Signals) -> None:
    with support.QueueThread(worker=False) as queue:
        host, port = queue.address
        with (
            Client.connect(host, port) as client,
            subprocess.Popen(
                [sys.executable, "-m", "examples.worker", f"{host}:{port}"],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                # Ctrl-C reaches the example as it would from a terminal, even
                # when this test runs where SIGINT is ignored.
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            ) as worker,
        ):
            try:
                support.poll_until(
                    lambda: client.stats().waiting_workers == 4, "the worker's 4 slots"
                )
                job_id = client.submit("word_count", {"text": "nothing is lost"})
                support.poll_until(
                    lambda: client.status(job_id).state == "running", "the job to start"
                )
                worker.send_signal(signum)
                output, _ = worker.communicate(timeout=support.LIMIT)
            finally:
                if worker.poll() is None:
                    worker.kill()
            assert worker.returncode == 0, output
            assert "Traceback" not in output, output
            assert "drained: 1 job(s) finished during the drain" in output
            info = client.status(job_id)  # finished before the worker exited
    assert (info.state, info.result) == ("completed", {"words": 3, "attempt": 1})
