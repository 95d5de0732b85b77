"""Attack on the ticking attempt deadlines (commit 32564c1, ``_deadlines.AttemptDeadlines``).

A deadline is a time limit: it must neither come early when the loop's timers fire early
(uvloop rounds a timer to whole milliseconds) nor stretch when they fire late (a loop kept
busy by a slow callback), and a hostile caller (cancellations, outer timeouts, task groups,
slow servers in bulk jobs) must find the account exact and no cancellation left behind.

What is asserted about time is a lower bound, or a bound in loop iterations that load can
only make easier to meet (a blocked iteration is never shorter than its block).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from dialler_async._deadlines import AttemptDeadlines

TIMEOUT = 0.05


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


class _ManualLoop:
    """The two things a tick asks of its loop, with time set by the test (the ticks are
    driven by hand: no timer of the real loop is involved)."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, *args: Any) -> None:
        pass


async def _armed_by_hand(deadlines: AttemptDeadlines) -> asyncio.Task[str]:
    """An attempt in flight whose ticks the test drives (no real tick is scheduled)."""
    deadlines._ticking = True  # the test is the ticker
    task = asyncio.create_task(_attempt(deadlines, 1000.0))
    await asyncio.sleep(0)
    assert len(deadlines) == 1
    return task


# -- time, not ticks ---------------------------------------------------------------------------


async def test_ticks_that_fire_early_do_not_make_a_timeout_early() -> None:
    """uvloop rounds a timer's delay to whole milliseconds: a tick of 1.4 ms fires after 1 ms.
    Counting 65 ticks then made a 90 ms timeout fire after ~65 ms. Here 200 ticks come within
    a fifth of the timeout: the attempt is not over its time."""
    deadlines = AttemptDeadlines(1.0)
    task = await _armed_by_hand(deadlines)
    loop = _ManualLoop()
    for _ in range(200):
        loop.now += 0.001
        deadlines._on_tick(loop)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert not task.done() and task.cancelling() == 0, "timed out after 0.2 s of a 1 s timeout"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_ticks_that_fire_late_do_not_stretch_a_timeout() -> None:
    """A loop blocked by a slow callback runs its timers late: ticks 1 s apart for a 1 s
    timeout. Counting 65 ticks made the attempt wait 65 s; its time is over after two."""
    deadlines = AttemptDeadlines(1.0)
    task = await _armed_by_hand(deadlines)
    loop = _ManualLoop()
    for _ in range(3):
        loop.now += 1.0
        deadlines._on_tick(loop)  # type: ignore[arg-type]
    for _ in range(5):  # the cancellation is delivered, the attempt turns it into a timeout
        await asyncio.sleep(0)
    assert task.done(), "not timed out 3 s into a 1 s timeout"
    assert task.result() == "timed out"
    assert task.cancelling() == 0


async def test_a_busy_loop_does_not_stretch_a_real_deadline() -> None:
    """The same on a real loop: a callback blocks it 10 ms per iteration. A 50 ms deadline is
    over after ~6 such iterations (load only makes each longer); counting 65 ticks, each at
    most one per iteration, took 65 or more."""
    deadlines = AttemptDeadlines(TIMEOUT)
    loop = asyncio.get_running_loop()
    blocks = 0
    done = False

    def busy() -> None:
        nonlocal blocks
        if done:
            return
        time.sleep(0.01)
        blocks += 1
        loop.call_soon(busy)

    started = loop.time()
    task = asyncio.create_task(_attempt(deadlines, 1000.0))
    loop.call_soon(busy)
    try:
        assert await task == "timed out"
    finally:
        done = True
    assert loop.time() - started >= TIMEOUT  # never early
    assert blocks < 30, f"the deadline took {blocks} blocked iterations"
    assert task.cancelling() == 0


def test_never_early_on_uvloop() -> None:
    """On uvloop, timeouts whose tick rounds down (90 ms: 1.4 ms ticks fire after 1 ms) are
    never early by the loop's clock."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        elapsed = []
        for timeout in (0.09, 0.0896):
            deadlines = AttemptDeadlines(timeout)
            for _ in range(3):
                started = loop.time()
                assert await _attempt(deadlines, 1000.0) == "timed out"
                elapsed.append((loop.time() - started) / timeout)
        return elapsed

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        ratios = runner.run(main())
    assert min(ratios) >= 1.0, f"timed out early: {ratios}"
