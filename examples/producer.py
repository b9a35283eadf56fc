"""Submit jobs to a running server and wait for their results.

Run a server and a worker first (``jobqueue serve`` and
``python -m examples.worker``), then: python -m examples.producer
"""

from __future__ import annotations

import sys

import trio

from jobqueue import Client, ConnectionLost


async def main(host: str, port: int) -> int:
    async with Client.connect(host, port, name="example-producer") as client:
        sums = [await client.submit("add", {"numbers": list(range(n))}) for n in (10, 100, 1000)]
        words = await client.submit("word_count", {"text": "nothing is lost, nothing runs twice"})
        for job_id in [*sums, words]:
            info = await client.wait(job_id)
            print(f"{job_id}: {info.state} by {info.worker} -> {info.result}")
        return 0


if __name__ == "__main__":
    host, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080").rsplit(":", 1)
    try:
        sys.exit(trio.run(main, host, int(port)))
    except ConnectionLost as exc:
        sys.exit(f"producer: {exc} (start one with: jobqueue serve)")
