"""``GET /metrics`` with a journal: flush times and size, read by prometheus_client."""

from __future__ import annotations

from pathlib import Path

import trio

from jobqueue._journal import MAGIC
from jobqueue._metrics import FLUSH_BUCKETS
from tests.queue.test_metrics_endpoint import metered_queue, samples, scrape, value


def on_disk(directory: Path) -> int:
    """Bytes of records in the segments: the zeros written ahead of them are not records."""
    return sum(len(p.read_bytes().rstrip(b"\0")) for p in directory.glob("*.jqj"))


async def test_flush_times_and_size_are_reported(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with metered_queue(journal=str(tmp_path)) as (running, address):
            for i in range(5):
                # fsync="always": each reply leaves once its events are on disk.
                await running.client.submit("work", {"n": i})
            head, text = await scrape(address)
    assert head.startswith(b"HTTP/1.1 200")
    found = samples(text)
    flushes = value(found, "jobqueue_journal_flush_seconds_count")
    assert 1 <= flushes <= 5
    assert 0 < value(found, "jobqueue_journal_flush_seconds_sum") < 10 * flushes
    cumulative = [
        value(found, "jobqueue_journal_flush_seconds_bucket", le=repr(bound))
        for bound in FLUSH_BUCKETS
    ]
    assert cumulative == sorted(cumulative)
    assert value(found, "jobqueue_journal_flush_seconds_bucket", le="+Inf") == flushes
    size = value(found, "jobqueue_journal_bytes")
    # Everything acknowledged was on disk when the scrape was answered.
    assert size == on_disk(tmp_path)
    assert value(found, "jobqueue_journal_written_bytes_total") == size - len(MAGIC)


async def test_without_a_journal_there_are_no_journal_metrics() -> None:
    with trio.fail_after(10):
        async with metered_queue() as (running, address):
            await running.client.submit("work")
            _, text = await scrape(address)
    assert not [name for name, _ in samples(text) if name.startswith("jobqueue_journal")]
