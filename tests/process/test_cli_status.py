"""``jobqueue status``: a person's view of one job, its times and, when asked, its payload."""

from __future__ import annotations

import json
import re
import sys

import pytest
import trio

from jobqueue import Client, _cli
from jobqueue.testing import run_queue_in_thread
from tests.helpers import run_cli, serving


async def test_status_shows_the_times_and_the_payload_when_asked() -> None:
    async with serving() as (host, port), Client.connect(host, port) as client:
        connect = ("--connect", f"{host}:{port}")
        with trio.fail_after(20):
            job_id = await client.submit("resize", {"width": 640}, delay=3600)
            plain, with_payload, as_json = [
                await run_cli("status", job_id, *extra, *connect)
                for extra in ((), ("--payload",), ("--json", "--payload"))
            ]
    for result in (plain, with_payload, as_json):
        assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in plain.stdout.decode().splitlines())
    assert lines["job"] == job_id
    assert lines["state"] == "scheduled (not run yet)"
    assert lines["submitted"].endswith(" ago)")
    assert re.search(r"\(in (59 min \d+ s|1 h 0 min 0 s)\)$", lines["due"]), lines["due"]
    assert "payload" not in lines
    shown = dict(line.split(None, 1) for line in with_payload.stdout.decode().splitlines())
    assert shown["payload"] == '{"width": 640}'
    wire = json.loads(as_json.stdout)
    assert wire["payload"] == {"width": 640}
    assert wire["run_at"] - wire["submitted_at"] == 3600


def test_text_output_escapes_a_lone_surrogate(capsys: pytest.CaptureFixture[str]) -> None:
    # JSON's "\ud800" escape decodes to a lone surrogate, which UTF-8 cannot
    # encode: status and list crashed in print (--json escapes it already).
    with run_queue_in_thread() as queue:
        connect = ("--connect", f"{queue.host}:{queue.port}")
        payload = ("--payload", '{"text": "caf\\u00e9 \\ud800"}', "--delay", "600")
        assert _cli.main(["submit", "resize-\ud800", *payload, *connect]) == 0
        captured = capsys.readouterr()
        job_id = captured.out.strip()
        assert "'resize-\\ud800'" in captured.err  # the warning: no worker runs it
        assert _cli.main(["status", job_id, "--payload", *connect]) == 0
        shown = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
        # Escaped only where it cannot be written: the é stays as it is.
        assert shown["payload"] == '{"text": "café \\ud800"}'
        assert shown["name"] == "resize-\\ud800"
        assert _cli.main(["list", "--state", "scheduled", *connect]) == 0
        assert capsys.readouterr().out.startswith(f"{job_id}  resize-\\ud800  queue=default")
    # The streams are left as they were found.
    assert sys.stdout.errors == "strict"
