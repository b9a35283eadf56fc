"""prefetch="auto": the batch size a slot asks for, from what its last batch showed."""

from __future__ import annotations

from jobqueue._prefetch import AUTO_BUDGET, AUTO_CAP, AutoPrefetch, fetch_request, job_requests

SHORT = AUTO_BUDGET / 10
LONG = AUTO_BUDGET * 2


def asks(batches: list[tuple[int, float]]) -> list[int]:
    """The asks after each (jobs taken, seconds) batch, starting from a new slot's."""
    policy = AutoPrefetch()
    return [policy.ran(taken, seconds) for taken, seconds in batches]


def test_a_new_slot_asks_for_one_job() -> None:
    assert AutoPrefetch().ask == 1


def test_full_batches_of_short_jobs_double_the_ask_up_to_the_cap() -> None:
    taken, expected = 1, []
    batches = []
    for _ in range(9):
        batches.append((taken, SHORT))
        taken = min(2 * taken, AUTO_CAP)
        expected.append(taken)
    assert asks(batches) == expected
    assert expected[-1] == AUTO_CAP == 64


def test_a_batch_over_the_budget_halves_the_ask() -> None:
    grown = [(1, SHORT), (2, SHORT), (4, SHORT), (8, SHORT)]  # asks 2, 4, 8, 16
    assert asks([*grown, (16, LONG)]) == [2, 4, 8, 16, 8]
    # One long job: back to one job a request, the plain request_job.
    assert asks([(1, SHORT), (1, LONG)]) == [2, 1]
    assert asks([(1, LONG)]) == [1]


def test_a_full_batch_grows_the_ask_only_as_far_as_the_budget_holds_at_its_pace() -> None:
    # One job of 15 ms fills its request, but two would overrun 20 ms: the
    # ask stays one (it used to go to two, then back to one after the cut).
    assert asks([(1, 0.015), (1, 0.015)]) == [1, 1]
    # Four jobs in 16 ms: five fit, not eight.
    assert asks([(1, 0.001), (2, 0.002), (4, 0.016)]) == [2, 4, 5]
    # Jobs that get shorter let it grow again.
    assert asks([(1, 0.015), (1, 0.001), (2, 0.002)]) == [1, 2, 4]
    # A full batch that took exactly the budget keeps its ask: 29 jobs in
    # 20 ms, where 0.02 * 29 / 0.02 comes out a hair under 29 in floats.
    grown = [(1, SHORT), (2, SHORT), (4, SHORT), (8, SHORT), (16, SHORT), (29, SHORT)]
    assert asks([*grown, (29, AUTO_BUDGET)])[-2:] == [29, 29]


def test_a_batch_smaller_than_asked_lowers_the_ask_gently() -> None:
    grown = [(1, SHORT), (2, SHORT), (4, SHORT), (8, SHORT), (16, SHORT)]  # asks ... 32
    # The backlog ran out: ask for what came or half the ask, whichever is more.
    assert asks([*grown, (3, SHORT)])[-1] == 16
    assert asks([*grown, (20, SHORT)])[-1] == 20
    # Never below two while jobs are short, so the next backlog is seen.
    assert asks([(1, SHORT), (1, SHORT), (1, SHORT)]) == [2, 2, 2]


def test_fetch_requests_are_shared_and_say_what_they_ask() -> None:
    plain = fetch_request(30.0, ("default",), 1, True)
    assert (plain.wait, plain.max) == (30.0, None)
    batch = fetch_request(30.0, ("default",), 8, False)
    assert (batch.wait, batch.max) == (0.0, 8)
    # The same object each time: the codec finds a fetch's text by identity.
    assert fetch_request(30.0, ("default",), 8, False) is batch


def test_a_fixed_prefetch_waits_in_its_request_and_in_a_single_jobs_fetch_only() -> None:
    request, fetch = job_requests(30.0, ("default",), 1)
    assert fetch is request
    assert (request.wait, request.max) == (30.0, None)
    request, fetch = job_requests(30.0, ("default",), 4)
    assert (request.wait, request.max) == (30.0, 4)
    assert (fetch.wait, fetch.max) == (0.0, 4)
