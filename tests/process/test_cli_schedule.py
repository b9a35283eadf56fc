"""``jobqueue schedule add|list|remove`` in subprocesses against a served queue."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import jobqueue.sync
from jobqueue import Client, _cli, _cli_schedule
from jobqueue._cli import _parser
from jobqueue._cli_schedule import serve_schedules
from jobqueue._schedule_spec import Schedule
from jobqueue._schedule_wire import ScheduleInfo
from jobqueue.testing import run_queue_in_thread
from tests.helpers import free_port, run_cli, serving


async def test_schedule_add_list_remove_against_a_served_queue() -> None:
    async with serving() as (host, port), Client.connect(host, port) as client:
        connect = ("--connect", f"{host}:{port}")

        async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
            return await run_cli("schedule", *args, *connect)

        added = await cli(
            "add", "nightly", "cleanup", "--cron", "0 3 * * *", "--tz", "Europe/Paris"
        )
        assert added.returncode == 0, added.stderr
        assert added.stdout.decode().startswith(
            "nightly  cron 0 3 * * * (Europe/Paris)  -> cleanup  queue=default  next="
        )
        added = await cli("add", "tick", "report", "--every", "3600", "--payload", '{"a": 1}')
        assert added.returncode == 0, added.stderr
        listed = await cli("list", "--json")
        rows = [json.loads(line) for line in listed.stdout.decode().splitlines()]
        assert [(r["name"], r["every"], r["cron"], r["payload"]) for r in rows] == [
            ("nightly", None, "0 3 * * *", None),
            ("tick", 3600, None, {"a": 1}),
        ]
        assert rows[1]["next_fire"] % 3600 == 0
        removed = await cli("remove", "tick")
        assert removed.stdout.decode() == "removed tick\n"
        assert [info.schedule.name for info in await client.list_schedules()] == ["nightly"]
        unknown = await cli("remove", "tick")
        assert unknown.returncode == 1
        assert b"unknown_schedule" in unknown.stderr or b"no schedule 'tick'" in unknown.stderr
        bad = await cli("add", "x", "j", "--cron", "61 * * * *")
        assert bad.returncode == 2
        assert b"61 is not from 0 to 59" in bad.stderr


def test_serve_schedule_options(tmp_path: Path) -> None:
    path = tmp_path / "schedules.json"
    path.write_text(json.dumps([{"name": "f", "job": "j", "cron": "@daily", "payload": [1]}]))
    args = _parser().parse_args(
        [
            "serve",
            "--schedules",
            str(path),
            "--schedule",
            "tick=every 60:report",
            "--schedule",
            "nightly=0 3 * * 1-5 Europe/Paris:cleanup",
        ]
    )
    schedules = serve_schedules(args)
    assert [(s.name, s.job, s.every, s.cron, s.tz, s.payload) for s in schedules] == [
        ("f", "j", None, "@daily", "UTC", [1]),
        ("tick", "report", 60.0, None, "UTC", None),
        ("nightly", "cleanup", None, "0 3 * * 1-5", "Europe/Paris", None),
    ]


@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        (1e300, "1e+300s after the epoch"),  # was OverflowError: timestamp out of range
        (3e11, "300000000000.0s after the epoch"),  # was ValueError: year 11476 is out of range
        (3600.0, "1970-01-01T01:00:00Z"),
    ],
)
def test_a_fire_time_past_any_date_prints_as_a_number(
    moment: float, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A server may hold such a time (an every of 1e300 was accepted): schedule
    # list and add print it rather than failing on every listing.
    info = ScheduleInfo(Schedule("far", "report", None, every=60), moment, moment)
    _cli_schedule._print(info, as_json=False)
    assert capsys.readouterr().out == (
        f"far  every 60s  -> report  queue=default  next={shown}  last={shown}\n"
    )


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("NaN", "--payload is not valid JSON"),  # was a traceback from the encoder
        ("1e999", "--payload is not valid JSON"),
        ("[" * 5000 + "]" * 5000, "--payload is not valid JSON"),  # was RecursionError
        ("{nope", "--payload is not valid JSON"),
    ],
)
def test_schedule_add_checks_its_payload_as_submit_does(
    payload: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on this port: the payload must be refused before connecting.
    argv = ["schedule", "add", "s1", "sleep", "--every", "60", "--payload", payload]
    assert _cli.main([*argv, "--connect", f"127.0.0.1:{free_port()}"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.startswith(f"jobqueue: {message}")
    assert len(captured.err.splitlines()) == 1


def test_schedule_add_reads_its_payload_from_a_file_or_standard_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "payload.json"
    path.write_text('{"from": "file"}')
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"from": "stdin"}')))
    with run_queue_in_thread() as queue:
        connect = ("--connect", f"{queue.host}:{queue.port}")
        for name, spec in (("f", f"@{path}"), ("s", "-")):
            argv = ["schedule", "add", name, "report", "--every", "60", "--payload", spec]
            assert _cli.main([*argv, *connect]) == 0
        with jobqueue.sync.Client.connect(queue.host, queue.port) as client:
            held = {info.schedule.name: info.schedule.payload for info in client.list_schedules()}
    assert held == {"f": {"from": "file"}, "s": {"from": "stdin"}}
