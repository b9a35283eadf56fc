"""``stats`` on a server whose peers use many queue or job names.

Queue and job names are the peers' choice, so a careless producer (one
that puts an id in a name) can leave any number of them. The reply must
still fit one line, or every ``jobqueue stats``, ``jobqueue submit`` and
dashboard would lose its connection: each listing keeps the busiest
entries and ``unlisted`` counts the rest.
"""

from __future__ import annotations

from typing import Any

import trio

from jobqueue import Client
from jobqueue._limits import MAX_LISTED, MAX_NAME_CHARS
from jobqueue._routing import unserved_warning
from jobqueue.testing import open_memory_queue


async def submit_all(client: Client, jobs: list[dict[str, Any]]) -> None:
    for start in range(0, len(jobs), 500):
        await client.submit_many(jobs[start : start + 500])


async def test_stats_list_the_busiest_queues_and_count_the_rest() -> None:
    with trio.fail_after(60):
        async with open_memory_queue() as queue:
            client = queue.client
            await submit_all(client, [{"name": "work", "queue": "busy"}] * 3)
            quiet = [f"q{n:05d}" for n in range(MAX_LISTED + 4)]
            await submit_all(client, [{"name": "work", "queue": name} for name in quiet])
            stats = await client.stats()
    assert len(stats.queues) == MAX_LISTED
    assert stats.queues["busy"] == {"pending": 3, "scheduled": 0, "running": 0}
    # Among equally busy queues the names that sort first are kept.
    assert set(stats.queues) == {"busy", *quiet[: MAX_LISTED - 1]}
    assert stats.unlisted == {"queues": 5}
    assert stats.jobs["pending"] == 3 + len(quiet)  # the counts still cover every job


async def test_stats_fit_one_line_however_long_the_job_names() -> None:
    # Each name encodes to the most a name can: every character escaped.
    # Two thousand of them make a listing of 2.3 MB, past what a client reads.
    long_names = [f"{n:06d}" + "\x01" * (MAX_NAME_CHARS - 6) for n in range(2000)]
    with trio.fail_after(60):
        async with open_memory_queue() as queue:
            client = queue.client
            await submit_all(client, [{"name": "wanted"}] * 2)
            await submit_all(client, [{"name": name} for name in long_names])
            stats = await client.stats()
    assert stats.names["wanted"] == {"pending": 2, "workers": 0}  # the busiest
    assert 100 < len(stats.names) < MAX_LISTED
    assert stats.unlisted == {"names": 2001 - len(stats.names)}
    # A name left out cannot be told from one nobody runs: no false warning.
    assert unserved_warning(long_names[-1], stats) is None
    assert unserved_warning("wanted", stats) is not None


async def test_stats_without_a_cut_listing_say_nothing_of_unlisted() -> None:
    with trio.fail_after(10):
        async with open_memory_queue() as queue:
            await queue.client.submit("work", queue="a")
            stats = await queue.client.stats()
    assert stats.queues == {"a": {"pending": 1, "scheduled": 0, "running": 0}}
    assert stats.unlisted == {}
    assert "unlisted" not in stats.to_wire()
