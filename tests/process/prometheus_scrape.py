"""A real Prometheus server scrapes a real queue's metrics endpoint (``nox -s prometheus``).

Not part of the pytest run: it needs Debian's ``prometheus`` binary, which
the nox session installs when it can (and skips, saying why, when it cannot).
It starts ``jobqueue serve --metrics``, submits jobs, points a Prometheus at
the endpoint with a one-second scrape interval, and asks Prometheus' own
query API until it reports the target up, the submitted count and the
journal's flush count and size (the server runs with a journal), or gives
up after a minute.

    python -m tests.process.prometheus_scrape [PATH_TO_PROMETHEUS]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import trio

from jobqueue import Client
from tests.helpers import PYTHON_M_JOBQUEUE, free_port

JOBS = 7


def query(prometheus: int, promql: str) -> list[Any]:
    url = f"http://127.0.0.1:{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[Any] = body["data"]["result"]
    return result


def main(binary: str) -> int:
    port, metrics, prometheus = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n  - job_name: jobqueue\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{metrics}']\n"
        )
        serve = [
            *PYTHON_M_JOBQUEUE,
            "serve",
            "--port",
            str(port),
            "--metrics",
            f"127.0.0.1:{metrics}",
            "--journal",
            f"{tmp}/journal",
        ]
        prom = [
            binary, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
            f"--web.listen-address=127.0.0.1:{prometheus}",
        ]  # fmt: skip
        with subprocess.Popen(serve, stderr=subprocess.DEVNULL) as server:
            try:
                trio.run(submit, port)
                with subprocess.Popen(prom, stderr=subprocess.DEVNULL) as scraper:
                    try:
                        return check(prometheus)
                    finally:
                        scraper.terminate()
            finally:
                server.terminate()


async def submit(port: int) -> None:
    with trio.fail_after(20):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.1)  # the server process is starting
                continue
            await stream.aclose()
            break
        async with Client.connect("127.0.0.1", port) as client:
            for i in range(JOBS):
                await client.submit("work", i, queue="scraped")


def check(prometheus: int) -> int:
    deadline = time.monotonic() + 60
    last: object = None
    while time.monotonic() < deadline:
        try:
            up = query(prometheus, 'up{job="jobqueue"}')
            pending = query(prometheus, 'jobqueue_jobs{queue="scraped",state="pending"}')
            submitted = query(prometheus, "jobqueue_jobs_submitted_total")
            flushes = query(prometheus, "jobqueue_journal_flush_seconds_count")
            size = query(prometheus, "jobqueue_journal_bytes")
        except OSError as exc:
            last = exc  # Prometheus is starting
        else:
            last = (up, pending, submitted, flushes, size)
            if (
                up and up[0]["value"][1] == "1"
                and pending and pending[0]["value"][1] == str(JOBS)
                and submitted and submitted[0]["value"][1] == str(JOBS)
                and flushes and float(flushes[0]["value"][1]) >= 1
                and size and float(size[0]["value"][1]) > 0
            ):  # fmt: skip
                print(
                    f"prometheus scraped the queue: target up, {JOBS} jobs pending, "
                    f"{flushes[0]['value'][1]} journal flushes, "
                    f"journal {size[0]['value'][1]} bytes"
                )
                return 0
        time.sleep(0.5)  # an external system's scrape interval: nothing to wait on but time
    print(f"prometheus never saw the expected figures; last answer: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    found = sys.argv[1] if len(sys.argv) > 1 else shutil.which("prometheus")
    if found is None:
        sys.exit("no prometheus binary on PATH")
    sys.exit(main(found))
