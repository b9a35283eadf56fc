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
    assert value(found, "jobqueue_journal_failing") == 0
    assert value(found, "jobqueue_journal_compaction_seconds_count") == 0


async def test_compactions_are_counted_and_timed(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with metered_queue(journal=str(tmp_path)) as (running, address):
            # About 300 KiB of records: past the 256 KiB at which it compacts.
            batch = [{"name": "work", "payload": "x" * 1000}] * 50
            for _ in range(6):
                await running.client.submit_many(batch)
            # The compaction runs in the flusher after the flush that
            # crossed the line, and nothing tells a client when it is done:
            # scrape until it says so, as an operator would.
            count = "jobqueue_journal_compaction_seconds_count"
            while not value(found := samples((await scrape(address))[1]), count):  # noqa: ASYNC110
                await trio.sleep(0.01)
    assert value(found, "jobqueue_journal_compaction_seconds_count") == 1
    assert 0 < value(found, "jobqueue_journal_compaction_seconds_sum") < 30


async def test_without_a_journal_there_are_no_journal_metrics() -> None:
    with trio.fail_after(10):
        async with metered_queue() as (running, address):
            await running.client.submit("work")
            _, text = await scrape(address)
    assert not [name for name, _ in samples(text) if name.startswith("jobqueue_journal")]
