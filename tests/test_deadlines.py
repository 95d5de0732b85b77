"""The attempt deadlines (one loop timer per batch of attempts): timeouts never early, never lost,
and cancellation counts balanced whichever way an attempt ends.

Real timers with deadlines of a few milliseconds: what is asserted is order (a deadline never
fires early, a cancellation is never mistaken for one), which a loaded machine cannot break.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiohttp import web

from dialler_async import DiallerClient, RequestTimeoutError, RetryPolicy
from dialler_async._deadlines import AttemptDeadlines

from .conftest import serving

TIMEOUT = 0.02


async def _attempt(deadlines: AttemptDeadlines, waits: float) -> str:
    """An attempt as the transport makes one: 'done', 'timed out', or CancelledError."""
    task = deadlines.arm()
    assert task is not None
    try:
        await asyncio.sleep(waits)
    except asyncio.CancelledError:
        if deadlines.timed_out(task):
            return "timed out"
        raise
    finally:
        deadlines.disarm(task)
    return "done"


def _pass_the_deadlines(deadlines: AttemptDeadlines) -> None:
    """Every attempt armed so far is past its time: the next tick cancels them."""
    # A tick after every attempt armed so far, one timeout ago (deadlines are kept by time).
    deadlines._epoch += 1
    deadlines._ticks.appendleft((float("-inf"), deadlines._epoch))
    deadlines._on_tick(asyncio.get_running_loop())
    assert deadlines._expired, "the deadline passed for no attempt"


async def test_an_attempt_past_its_deadline_times_out_and_leaves_no_cancellation() -> None:
    deadlines = AttemptDeadlines(TIMEOUT)
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(_attempt(deadlines, 10.0))
    assert await task == "timed out"
    assert loop.time() - started >= TIMEOUT  # never early
    assert task.cancelling() == 0
    assert len(deadlines) == 0


async def test_an_attempt_that_ends_in_time_is_not_touched() -> None:
    deadlines = AttemptDeadlines(TIMEOUT)
    task = asyncio.create_task(_attempt(deadlines, 0))
    assert await task == "done"
    assert len(deadlines) == 0
    await asyncio.sleep(3 * TIMEOUT)  # the ticker finds nobody, and stops
    assert not deadlines._ticking
    assert task.cancelling() == 0


async def test_many_attempts_share_one_timer() -> None:
    deadlines = AttemptDeadlines(10.0)
    loop = asyncio.get_running_loop()
    answered = asyncio.Event()

    async def attempt() -> None:
        task = deadlines.arm()
        assert task is not None
        try:
            await answered.wait()  # no timer of its own
        finally:
            deadlines.disarm(task)

    before = len(loop._scheduled)  # type: ignore[attr-defined]
    tasks = [asyncio.create_task(attempt()) for _ in range(200)]
    await asyncio.sleep(0)
    assert len(deadlines) == 200
    assert len(loop._scheduled) - before == 1  # type: ignore[attr-defined]
    answered.set()
    await asyncio.gather(*tasks)
    assert len(deadlines) == 0


async def test_a_cancel_of_the_task_beats_its_deadline() -> None:
    """The task is cancelled by its owner in the same loop turn as the deadline passes: the
    cancellation is the owner's, and stays pending (it is not turned into a timeout)."""
    deadlines = AttemptDeadlines(TIMEOUT)
    task = asyncio.create_task(_attempt(deadlines, 10.0))
    await asyncio.sleep(0)
    _pass_the_deadlines(deadlines)  # the deadline passes ...
    task.cancel()  # ... and the owner cancels
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelling() == 1  # the owner's, left for it to see


async def test_a_deadline_absorbed_below_the_attempt_is_taken_back() -> None:
    """A library under the attempt swallows the cancellation and returns: the attempt ends
    normally, and the task carries no cancellation of ours."""
    deadlines = AttemptDeadlines(TIMEOUT)

    async def absorbing() -> int:
        task = deadlines.arm()
        assert task is not None
        try:
            with contextlib.suppress(asyncio.CancelledError):  # a badly behaved library
                await asyncio.sleep(10.0)
            return task.cancelling()
        finally:
            deadlines.disarm(task)

    task = asyncio.create_task(absorbing())
    assert await task == 1  # inside the attempt the cancellation was still counted
    assert task.cancelling() == 0
    await asyncio.sleep(0)  # and nothing is left to be delivered later
    assert not task.cancelled()


async def test_an_attempt_during_cleanup_still_times_out() -> None:
    """The task is already being cancelled (an attempt made while cleaning up): its deadline
    is still a timeout, and the owner's cancellation stays counted."""
    deadlines = AttemptDeadlines(TIMEOUT)
    seen: list[object] = []

    async def cleaning_up() -> None:
        try:
            await asyncio.sleep(10.0)
        except asyncio.CancelledError:
            seen.append(await _attempt(deadlines, 10.0))
            seen.append(asyncio.current_task().cancelling())  # type: ignore[union-attr]
            raise

    task = asyncio.create_task(cleaning_up())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["timed out", 1]


async def test_an_outer_timeout_still_works_around_armed_attempts() -> None:
    deadlines = AttemptDeadlines(10.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT):
            await _attempt(deadlines, 10.0)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert len(deadlines) == 0


async def test_outside_a_task_nothing_is_armed() -> None:
    deadlines = AttemptDeadlines(TIMEOUT)
    got: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(lambda: got.set_result(deadlines.arm()))
    assert await got is None


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan")])
def test_a_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        AttemptDeadlines(timeout)


async def test_over_http_a_slow_answer_is_a_timeout_and_the_client_goes_on() -> None:
    """The whole path: the server answers later than the timeout; the attempt raises our
    timeout error, the task is not left cancelled, and the next request works."""
    slow = [True]

    async def answer(request: web.Request) -> web.StreamResponse:
        if slow.pop(0):
            await asyncio.sleep(1.0)
        record = {"ID": 1, "Name": "Ann", "PhoneNumber1": "+49301", "DiallerCampaignsID": 5}
        return web.json_response({"records": [record], "count": 1, "status": 200})

    async with (
        serving(answer) as base_url,
        DiallerClient(base_url, 7, "tok", retry=RetryPolicy.never(), timeout=0.05) as c,
    ):
        with pytest.raises(RequestTimeoutError):
            await c.get_contact(1)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        assert len(c.transport.deadlines) == 0
        slow.append(False)
        assert (await c.get_contact(1)).id == 1
