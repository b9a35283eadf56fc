"""CPU per job in the coordinator alone: no sockets, no tasks, no scheduler.

Drives ``Coordinator.handle`` synchronously with the default shape's traffic:
a producer's ``submit_job`` and the assigned worker's ``job_complete`` that
fetches its next job, eight workers parked. Steadier than an end-to-end run
on a shared machine, so it can tell apart changes of a few microseconds.

    python -m benchmarks.coordinator_micro [--jobs 40000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import math
import time

import trio

from jobqueue._commands import Batch, Connected, Connection, Outgoing
from jobqueue._config import QueueRules
from jobqueue._coordinator import Coordinator
from jobqueue._replies import JobAssigned
from jobqueue._requests import JobComplete, RequestJob, SubmitJob
from jobqueue._state import QueueState


def one_round(jobs: int) -> float:
    """Microseconds of coordinator time per job (the driver's own work included)."""
    coordinator = Coordinator(QueueState(rules=QueueRules(lease_timeout=30.0)))
    send, producer_replies = trio.open_memory_channel[list[Outgoing] | None](math.inf)
    producer = Connection(1, "producer", send)
    coordinator.handle(Connected(producer), 0.0)
    fetch = RequestJob(wait=30.0)
    workers: dict[int, trio.MemoryReceiveChannel[list[Outgoing] | None]] = {}
    for index in range(8):
        send, receive = trio.open_memory_channel[list[Outgoing] | None](math.inf)
        worker = Connection(10 + index, "worker", send)
        workers[worker.id] = receive
        coordinator.handle(Connected(worker), 0.0)
        coordinator.handle(Batch(worker, [fetch]), 0.0)
    now = 1.0
    start = time.perf_counter()
    for _ in range(jobs):
        now += 1e-4
        # Workers are fed longest-waiting first: this one gets the job.
        worker = next(iter(coordinator._parking.idle.values())).conn
        coordinator.handle(Batch(producer, [SubmitJob("noop", None)]), now)
        coordinator.next_deadline()
        producer_replies.receive_nowait()
        replies = workers[worker.id].receive_nowait()
        assert replies is not None
        assigned = replies[0]
        assert isinstance(assigned, JobAssigned)
        complete = JobComplete(assigned.job_id, assigned.attempt, None, fetch)
        coordinator.handle(Batch(worker, [complete]), now)
        coordinator.next_deadline()
    return (time.perf_counter() - start) / jobs * 1e6


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.rounds):
        print(f"coordinator: {one_round(args.jobs):.1f} us per job")
