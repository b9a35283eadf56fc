"""``jobqueue submit`` warns, in one line on stderr, when no connected worker runs the name."""

from __future__ import annotations

import trio
import trio.lowlevel

from jobqueue import Client, Worker
from tests.helpers import run_cli, serving, stats_when


async def test_submit_warns_when_no_connected_worker_runs_the_name() -> None:
    async with serving() as (host, port), Client.connect(host, port) as client:
        connect = ("--connect", f"{host}:{port}")
        # No worker at all.
        result = await run_cli("submit", "thumbnail", *connect)
        assert result.returncode == 0
        assert len(result.stdout.decode().split()) == 1  # the job id, as always
        lines = result.stderr.decode().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("jobqueue: warning: no connected worker runs jobs named")
        assert "'thumbnail'" in lines[0]

        async def sleep_only(job: object) -> None:
            await trio.lowlevel.checkpoint()  # pragma: no cover

        worker = Worker(host, port, handlers={"resize": sleep_only}, name="old")
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.run)
            await stats_when(client, lambda s: s.waiting_workers == 1)
            # A worker that runs other names only: still a warning.
            result = await run_cli("submit", "thumbnail", *connect)
            assert result.returncode == 0
            assert "no connected worker runs jobs named 'thumbnail'" in result.stderr.decode()
            # A name it runs (a built-in counts): no warning.
            for name in ("resize", "sleep"):
                result = await run_cli("submit", name, "--payload", '{"seconds": 0}', *connect)
                assert result.returncode == 0
                assert result.stderr == b"", result.stderr
            nursery.cancel_scope.cancel()
        stats = await client.stats()
        assert stats.names["thumbnail"] == {"pending": 2, "workers": 0}
        text = await run_cli("stats", *connect)
        assert "name thumbnail: pending 2, no connected worker runs it" in text.stdout.decode()
