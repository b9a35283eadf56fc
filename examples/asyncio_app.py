"""An asyncio HTTP server that submits a job per request and shows its result.

Standard library only (``asyncio.start_server``, a deliberately tiny HTTP
reader); in FastAPI or aiohttp the job-queue part is the same three lines.
Run a server and a worker first (``jobqueue serve`` and
``jobqueue worker --handlers examples.handlers:HANDLERS``), then:

    python -m examples.asyncio_app 127.0.0.1:8080 8000
    curl 'http://127.0.0.1:8000/?numbers=1,2,3'
"""

from __future__ import annotations

import asyncio
import json
import sys
from urllib.parse import parse_qs, urlsplit

from jobqueue import JobQueueError
from jobqueue.asyncio import Client


async def answer(client: Client, target: str) -> tuple[str, dict[str, object]]:
    """``GET /?numbers=1,2,3``: run an ``add`` job and return its result."""
    query = parse_qs(urlsplit(target).query)
    try:
        numbers = [float(n) for n in query.get("numbers", ["1,2,3"])[0].split(",")]
        job_id = await client.submit("add", {"numbers": numbers})
        info = await client.wait(job_id, timeout=10)
    except ValueError:
        return "400 Bad Request", {"error": "numbers must be like 1,2,3"}
    except JobQueueError as exc:  # the queue is down, the job took too long, ...
        return "503 Service Unavailable", {"error": str(exc)}
    return "200 OK", {"job": job_id, "state": info.state, "result": info.result}


async def handle(
    client: Client, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        request_line = await asyncio.wait_for(reader.readline(), 10)
        while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
            pass  # headers: not needed here
        parts = request_line.decode("latin-1").split()
        status, body = await answer(client, parts[1] if len(parts) > 1 else "/")
        data = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()
    except (OSError, asyncio.TimeoutError):
        pass  # the browser went away
    finally:
        writer.close()


async def main(queue: str, port: int) -> None:
    host, queue_port = queue.rsplit(":", 1)
    async with Client.connect(host, int(queue_port), name="asyncio-app") as client:
        server = await asyncio.start_server(lambda r, w: handle(client, r, w), "127.0.0.1", port)
        async with server:
            print(f"serving on http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", flush=True)
            await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080",
            int(sys.argv[2] if len(sys.argv) > 2 else 8000),
        )
    )
