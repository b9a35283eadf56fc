"""The link's turn: first come, first served; a cancelled waiter gives up its place."""

from __future__ import annotations

import trio
import trio.testing

from jobqueue._link import _Turn


async def test_turns_go_in_order_and_skip_a_cancelled_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    turn = _Turn()
    order: list[str] = []

    async def use(name: str, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            if not turn.take():
                await turn.wait()
            order.append(name)
            await trio.sleep(1)
            turn.release()

    assert turn.take()  # free: taken at once, without a checkpoint
    async with trio.open_nursery() as nursery:
        await nursery.start(use, "a")
        gone = await nursery.start(use, "b")
        await nursery.start(use, "c")
        await trio.testing.wait_all_tasks_blocked()
        gone.cancel()
        assert turn.held
        turn.release()
    assert order == ["a", "c"]
    assert not turn.held
