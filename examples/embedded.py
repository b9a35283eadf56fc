"""Server, worker and client in one trio program.

Run: python examples/embedded.py
"""

from __future__ import annotations

import trio

from jobqueue import Client, Job, Worker, serve_queue


async def shout(job: Job) -> str:
    """A handler: gets the job, returns a JSON-serialisable result."""
    await trio.sleep(0.1)  # pretend to work
    return str(job.payload).upper()


async def main() -> None:
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_queue, 0)  # port 0: any free port
        worker = Worker(host, port, handlers={"shout": shout}, concurrency=4)
        await nursery.start(worker.run)

        async with Client.connect(host, port) as client:
            job_ids = [await client.submit("shout", word) for word in ["hello", "job", "queue"]]
            for job_id in job_ids:
                info = await client.wait(job_id)  # the server tells us when it ends
                print(job_id, info.state, info.result)
            print((await client.stats()).totals)

        nursery.cancel_scope.cancel()  # stop the worker and the server


if __name__ == "__main__":
    trio.run(main)
