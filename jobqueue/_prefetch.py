"""How many jobs a worker slot asks for at once: a fixed number, or ``"auto"``.

A fixed ``prefetch=K`` takes up to K jobs every round trip, whatever they
are: good for a backlog of short jobs, bad for long ones, which then wait
unstarted in a slot while other workers idle (the classic prefetch trap).
``prefetch="auto"`` decides batch by batch, from what the last one showed:

- a batch that filled its request means more jobs were waiting: ask for
  twice as many next time, up to :data:`AUTO_CAP`, and no more than would
  fit in :data:`AUTO_BUDGET` at the pace the batch ran (so jobs of 15 ms
  are taken one at a time, not two that would overrun the budget);
- a batch that took longer than :data:`AUTO_BUDGET` seconds to run means
  the jobs are not short: ask for half as many (one, after a single long
  job);
- a batch smaller than asked means the backlog is gone: ask for what it
  brought or half as many, whichever is more (at least two, so the next
  backlog is noticed; halving, not dropping, keeps a backlog that comes in
  bursts, such as ``submit_many``'s, in large batches).

The policy is pure (no trio, no clock): the engine feeds it each batch's size
and run time and sends the fetch it returns. The engine also cuts a batch
short once it has run for the budget (``_Engine.watch_batches``): it gives
back the jobs not started and reports those finished, so neither a job taken
with a long one nor a result is held for the long one's whole run.
"""

from __future__ import annotations

import functools
from typing import Literal

import attrs

from ._requests import RequestJob

#: The most jobs ``prefetch="auto"`` asks for at once.
AUTO_CAP = 64
#: Seconds of work a batch may take before ``prefetch="auto"`` asks for fewer.
AUTO_BUDGET = 0.02

#: A worker's ``prefetch``: jobs per round trip, or adaptive.
PrefetchSetting = int | Literal["auto"]


@functools.lru_cache(maxsize=64)
def fetch_request(poll_wait: float, queues: tuple[str, ...], ask: int, wait: bool) -> RequestJob:
    """The ``request_job`` asking for ``ask`` jobs, waiting ``poll_wait`` for one if ``wait``.

    Cached: every slot of a worker sends the same few objects, and the codec
    finds a fetch's text by identity far faster than by hash
    (``_codec._fetch_text``). ``ask`` 1 is the plain request (``job_assigned``).
    """
    return RequestJob(wait=poll_wait if wait else 0.0, queues=queues, max=ask if ask > 1 else None)


def job_requests(
    poll_wait: float, queues: tuple[str, ...], prefetch: int
) -> tuple[RequestJob, RequestJob]:
    """For a fixed ``prefetch``: the request a slot sends when it holds nothing, and its fetch.

    With one job a batch, each report asks for the next job with the same
    wait, so a job costs one request, not two; the reply is the next job,
    or ``no_job`` after ``poll_wait``, as for a ``request_job``. With more, a
    batch's reports are pipelined, and a refused one must be failed at once,
    before its lease runs out: a waiting fetch would hold that retry back.
    So the fetch takes what there is, and an idle slot then blocks in
    ``request_job``.
    """
    request = fetch_request(poll_wait, queues, prefetch, True)
    if prefetch == 1:
        return request, request
    return request, fetch_request(poll_wait, queues, prefetch, False)


@attrs.define
class AutoPrefetch:
    """The adaptive batch size of one slot (see the module docstring)."""

    #: How many jobs the next request asks for.
    ask: int = 1

    def ran(self, taken: int, seconds: float) -> int:
        """Account for a batch of ``taken`` jobs that ran in ``seconds``; the next ask."""
        if seconds > AUTO_BUDGET:
            self.ask = max(1, taken // 2)
        elif taken >= self.ask:
            grown = min(AUTO_CAP, 2 * self.ask)
            if seconds > 0.0:  # no more than the budget holds at this batch's pace
                # (never below what just fit: the float quotient can fall short)
                grown = min(grown, max(taken, int(AUTO_BUDGET * taken / seconds)))
            self.ask = grown
        else:
            self.ask = max(2, taken, self.ask // 2)
        return self.ask
