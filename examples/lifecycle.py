"""The job lifecycle in one trio program: retries, results, a delay, priorities,
a named queue and cancelling a running job.

Run: python examples/lifecycle.py      (takes about 2 seconds)
"""

from __future__ import annotations

import logging
import time
from functools import partial

import trio

from jobqueue import Client, Job, Worker, serve_queue

START = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - START:4.1f}s] {text}")


async def flaky(job: Job) -> str:
    """Fails on its first two tries, then succeeds: the server retries it for us.

    ``attempts_spent`` counts tries against ``max_attempts``; ``attempt``
    would also count a run a worker gave back unstarted. ``last_attempt``
    says a failure now would not be retried.
    """
    last = " (its last allowed)" if job.last_attempt else ""
    if job.attempts_spent < 3:
        say(f"  flaky: attempt {job.attempts_spent}{last} raises")
        raise ConnectionError(f"upstream unavailable (attempt {job.attempts_spent})")
    say(f"  flaky: attempt {job.attempts_spent}{last} succeeds")
    return f"done on attempt {job.attempts_spent}"


async def report(job: Job) -> float:
    """A delayed job: returns how long after it was submitted it ran."""
    submitted: float = job.payload["submitted"]
    return round(time.monotonic() - submitted, 2)


class Slow:
    """A long job that reports progress, and notices when it is cancelled."""

    def __init__(self) -> None:
        self.running = trio.Event()
        self.stopped = trio.Event()
        self.steps = 0

    async def __call__(self, job: Job) -> str:
        self.running.set()
        try:
            for step in range(1, 301):  # 30 seconds if nobody stops it
                self.steps = step
                await job.report_progress(step / 300, {"step": step})
                await trio.sleep(0.1)
        except trio.Cancelled:
            say(f"  slow: cancelled at step {self.steps}; the worker stopped the handler")
            self.stopped.set()
            raise
        return "finished"


async def main() -> None:
    # The worker logs every handler failure with its traceback; the flaky
    # handler's failures are expected here, so keep the output short.
    logging.getLogger("jobqueue.worker").setLevel(logging.CRITICAL)
    slow = Slow()
    priorities = [0, 5, 0, 10, 5]
    ran_in_order: list[str] = []
    all_ran = trio.Event()

    async def ordered(job: Job) -> None:
        ran_in_order.append(job.payload)
        if len(ran_in_order) == len(priorities):
            all_ran.set()

    async with trio.open_nursery() as nursery:
        # A short retry backoff so the example runs fast: the first retry waits
        # 0.1-0.2 s, the second 0.2-0.4 s (the defaults are 1 s doubling to 300 s).
        host, port = await nursery.start(partial(serve_queue, 0, retry_delay=0.2))
        # This worker serves the "default" queue only.
        worker = Worker(
            host, port, handlers={"flaky": flaky, "report": report, "slow": slow}, concurrency=3
        )
        await nursery.start(worker.run)

        async with Client.connect(host, port, name="lifecycle-example") as client:
            say("1. retries: a handler that fails twice, then succeeds")
            job_id = await client.submit("flaky", max_attempts=3)
            info = await client.wait(job_id)  # retries do not end the wait
            say(f"   {info.state} on attempt {info.attempt}: result {info.result!r}")
            assert info.error is not None
            say(f"   the last failure is kept: {info.error['type']}: {info.error['message']}")

            say("2. a delayed job: submitted now, may not run for 1 second")
            job_id = await client.submit("report", {"submitted": time.monotonic()}, delay=1.0)
            say(f"   right after submitting it is {(await client.status(job_id)).state}")
            info = await client.wait(job_id)
            say(f"   {info.state}; it ran {info.result} s after it was submitted")

            say("3. priorities, in the named queue 'ordered' (no worker serves it yet)")
            jobs = [
                {"name": "ordered", "payload": f"#{n} priority {p}", "priority": p}
                for n, p in enumerate(priorities, 1)
            ]
            await client.submit_many({**job, "queue": "ordered"} for job in jobs)  # all or nothing
            waiting = await client.list_jobs("pending", queue="ordered")
            say(f"   {len(waiting.jobs)} pending in 'ordered': the default worker leaves them")
            ordered_worker = Worker(
                host,
                port,
                handlers={"ordered": ordered},
                queues=("ordered",),
                name="ordered-1",
            )
            await nursery.start(ordered_worker.run)
            with trio.fail_after(5):
                await all_ran.wait()
            say("   a worker for 'ordered' ran them highest priority first, then oldest first:")
            for label in ran_in_order:
                say(f"     {label}")

            say("4. cancelling a running job")
            job_id = await client.submit("slow")
            await slow.running.wait()
            await trio.sleep(0.35)
            status = await client.status(job_id)
            assert status.progress is not None  # reported by the handler
            say(f"   {status.state}, progress {status.progress:.1%}, note {status.note}")
            cancelled_at = time.monotonic()
            info = await client.cancel(job_id)  # the state flips at once ...
            say(f"   cancel_job answered: {info.state}")
            with trio.fail_after(2):
                await slow.stopped.wait()  # ... and the worker is told at once
            took = (time.monotonic() - cancelled_at) * 1000
            say(f"   the handler stopped {took:.0f} ms after the cancel; nothing was reported")

            stats = await client.stats()
            say(f"server totals: {stats.totals}")
            counts = worker.statistics()
            say(
                f"default worker: {counts.completed} completed, {counts.failed} failed attempts,"
                f" {counts.cancelled} cancelled"
            )

        nursery.cancel_scope.cancel()  # stop the workers and the server


if __name__ == "__main__":
    trio.run(main)
