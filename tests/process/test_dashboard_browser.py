"""The dashboard in a real browser: headless Chromium, driven by Selenium.

A queue runs in a thread with a worker, ``jobqueue dashboard`` runs as a
process of its own (as a user starts it), and Chromium loads the page. The
test sees a job it submits appear, sees a job fail into the dead-letter set,
clicks its Retry button and sees it run to completion, all by waiting on
what the page shows. It saves screenshots for people to look at: in
``$JOBQUEUE_SCREENSHOT_DIR`` when set (``nox -s browser`` sets it), else in
the test's temporary directory.

Selenium drives Debian's ``chromium`` through Debian's ``chromedriver``,
built from the same source, so driver and browser always match and nothing
is downloaded. Without them (or without Selenium) the test is skipped,
saying how to get them; with ``JOBQUEUE_BROWSER_TEST=required`` (as in
``nox -s browser``) it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import jobqueue.sync
from jobqueue import Job
from jobqueue.testing import run_queue_in_thread
from tests.helpers import free_port

REQUIRED = os.environ.get("JOBQUEUE_BROWSER_TEST") == "required"
HOW = (
    "run `nox -s browser`, which installs them "
    "(apt-get install chromium chromium-driver; pip install 'jobqueue[browser]')"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1100",
]
#: Longest any page condition may take to come true.
PAGE_TIMEOUT = 30.0


def _missing(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (JOBQUEUE_BROWSER_TEST=required)")
    pytest.skip(f"{reason}: {HOW}", allow_module_level=True)


try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    _missing("Selenium is not installed")
if CHROMIUM is None or CHROMEDRIVER is None:
    _missing("Debian's chromium and chromium-driver are not installed")

pytestmark = pytest.mark.slow


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("JOBQUEUE_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def dashboard_up(url: str, process: subprocess.Popen[bytes]) -> None:
    """Return once the dashboard answers (it logs its address when it listens)."""
    assert process.stderr is not None
    for line in process.stderr:
        if b"dashboard at" in line:
            break
    else:
        raise AssertionError(f"the dashboard exited with {process.wait()} before listening")
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200


def test_page_shows_jobs_and_retry_runs_a_dead_letter(browser: Any, screenshots: Path) -> None:
    fixed = threading.Event()
    release = threading.Event()

    async def resize(job: Job) -> str:
        await job.report_progress(0.4, note={"stage": "thumbnails"})
        await trio.to_thread.run_sync(release.wait, PAGE_TIMEOUT)
        return "resized"

    def charge(job: Job) -> str:
        if not fixed.is_set():
            raise ConnectionError("payment gateway unreachable")
        return "charged"

    # Room for 70 waiting jobs: the page warns once 56 wait (80 %).
    with run_queue_in_thread(max_pending=70) as queue:
        queue.start_worker(
            {"resize": resize, "charge": charge},
            concurrency=2,
            name="worker-1",
            queues=("default", "billing"),
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        argv = [sys.executable, "-m", "jobqueue", "dashboard", "--interval", "0.2"]
        argv += ["--connect", f"{queue.host}:{queue.port}", "--listen", f"127.0.0.1:{port}"]
        process = subprocess.Popen(argv, stderr=subprocess.PIPE)
        try:
            dashboard_up(url, process)
            with jobqueue.sync.Client.connect(queue.host, queue.port) as client:
                run_page(browser, url, client, fixed, screenshots)
        finally:
            release.set()
            process.terminate()
            process.wait(10)
            assert process.stderr is not None
            process.stderr.close()


def run_page(
    browser: Any, url: str, client: Any, fixed: threading.Event, screenshots: Path
) -> None:
    # The page redraws a section when its data changes: an element found
    # a moment ago may be gone, so each wait looks again until it holds.
    wait = WebDriverWait(browser, PAGE_TIMEOUT, ignored_exceptions=[StaleElementReferenceException])
    browser.get(url)
    wait.until(lambda d: d.find_element(By.ID, "connection").text == "live")

    # A job no worker takes (queue "reports") appears in the pending list.
    pending_id = client.submit("report", {"month": "2026-11"}, queue="reports")
    wait.until(
        lambda d: d.find_elements(By.CSS_SELECTOR, f'#pending tr[data-job-id="{pending_id}"]')
    )
    # A running job shows under its worker with its progress.
    running_id = client.submit("resize", {"image": "cat.png"})
    wait.until(
        lambda d: d.find_elements(
            By.CSS_SELECTOR, f'[data-worker="worker-1"] [data-job-id="{running_id}"] progress'
        )
    )
    # A job that fails for good lands in the dead-letter set.
    failed_id = client.submit("charge", {"order": 1042}, queue="billing", max_attempts=1)
    row = f'#failed tr[data-job-id="{failed_id}"]'
    wait.until(lambda d: "payment gateway unreachable" in d.find_element(By.CSS_SELECTOR, row).text)
    browser.save_screenshot(str(screenshots / "dashboard.png"))

    # Retry it from the page, now that it can succeed: it runs and completes.
    fixed.set()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, f"{row} button.retry").click() or True)
    wait.until(lambda d: d.find_element(By.ID, "detail-id").text == failed_id)
    wait.until(lambda d: d.find_element(By.ID, "detail-state").text == "completed")
    # The detail shows what the job was given.
    assert '"order": 1042' in browser.find_element(By.ID, "detail-fields").text
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, row))
    assert client.status(failed_id).state == "completed"
    browser.save_screenshot(str(screenshots / "dashboard-retried.png"))

    # Nothing is near a bound yet: no warning.
    assert not browser.find_element(By.ID, "limits").is_displayed()

    # Past the 50 busiest queues, the table says how many more there are,
    # and the chart of all queues still counts their jobs.
    client.submit_many([{"name": "report", "queue": f"tenant-{n:02d}"} for n in range(60)])
    more = "#queues tr.unlisted"
    shown = "and 12 more queues with fewer jobs, not shown"
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, more).text == shown)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#queues tr[data-queue]")) == 50
    wait.until(lambda d: "top of the scale 61" in d.find_element(By.ID, "chart").text)
    # 61 of the 70 waiting jobs the queue takes: the page warns of queue_full.
    warning = "Waiting jobs: 61 of 70 (87%). At the limit, new submits are refused with queue_full."
    wait.until(lambda d: d.find_element(By.ID, "limits").text == warning)
    browser.save_screenshot(str(screenshots / "dashboard-many-queues.png"))
