"""A WSGI app that submits a job per request and shows its result; standard library only.

Run a server and a worker first (``jobqueue serve`` and
``jobqueue worker --handlers examples.handlers:HANDLERS``), then:

    python -m examples.wsgi_app 127.0.0.1:8080 8000
    curl 'http://127.0.0.1:8000/?numbers=1,2,3'

Any threaded WSGI server works the same way (gunicorn --threads, Django,
Flask): one ``jobqueue.sync.Client`` for the process, shared by every thread.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIServer, make_server

from jobqueue import JobQueueError
from jobqueue.sync import Client

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def make_app(client: Client) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The app: ``GET /?numbers=1,2,3`` runs an ``add`` job and answers with its result."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        try:
            numbers = [float(n) for n in query.get("numbers", ["1,2,3"])[0].split(",")]
            job_id = client.submit("add", {"numbers": numbers})
            info = client.wait(job_id, timeout=10)
        except ValueError:
            status, body = "400 Bad Request", {"error": "numbers must be like 1,2,3"}
        except JobQueueError as exc:  # the queue is down, the job took too long, ...
            status, body = "503 Service Unavailable", {"error": str(exc)}
        else:
            status, body = "200 OK", {"job": job_id, "state": info.state, "result": info.result}
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    return app


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def main(queue: str, port: int) -> None:
    host, queue_port = queue.rsplit(":", 1)
    with (
        Client.connect(host, int(queue_port), name="wsgi-app") as client,
        make_server("127.0.0.1", port, make_app(client), ThreadingWSGIServer) as server,
    ):
        print(f"serving on http://127.0.0.1:{server.server_port}/", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8080",
        int(sys.argv[2] if len(sys.argv) > 2 else 8000),
    )
