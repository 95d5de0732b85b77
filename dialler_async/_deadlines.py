"""The time limit of whole-answer attempts, kept by one ticking loop timer for all of them.

aiohttp's own total timeout costs every request a loop timer (created, pushed on the loop's
heap, cancelled, and later swept off it) and a timer context entered around each of the
request's waits: ~24k instructions a request, more than anything else the SDK added to a bulk
job (``benchmarks/README.md``, "the attempt deadline"). Here an attempt costs a dict insert and
a removal: while attempts are in flight, one timer ticks every :attr:`AttemptDeadlines.tick`
seconds (``timeout / 64``), and each tick notes the loop's time. An attempt is known by the
tick it was armed after, so it started before the next tick: once that next tick is
``timeout`` in the past (by the loop's clock), so is the attempt's start. Timeouts are thus
never early by the loop's clock, and at most about two ticks late plus how late the loop runs
its timers, however early or late the ticks themselves come (uvloop rounds a timer to whole
milliseconds; a loop kept busy runs them late: counting ticks instead made a 90 ms timeout
fire after ~70 ms on uvloop, and a 50 ms one after over a second on a busy loop). An attempt
whose answer arrived while a callback blocked the loop past its deadline may time out all the
same: the first tick after the block runs before the attempt resumes, and times it out if a
tick had run since it was armed (aiohttp's own timeout always did).

The mechanism is :func:`asyncio.timeout`'s (and aiohttp's): an expired attempt's task is
cancelled, and the attempt turns that cancellation into a timeout unless the task was also
cancelled by someone else (then the cancellation goes on). Cancellation counts are kept
balanced with :meth:`asyncio.Task.uncancel`, so structured concurrency around the caller
(``TaskGroup``, ``asyncio.timeout``) sees no cancellation of ours.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Final

Task = asyncio.Task[object]

#: Ticks per timeout: an attempt times out about two ticks (1/32 of the timeout) late.
TICKS: Final = 64
#: The shortest tick (tiny timeouts in tests would otherwise tick without pause).
MIN_TICK: Final = 0.001


class AttemptDeadlines:
    """Deadlines of the attempts in flight on one event loop (one per transport).

    Per attempt, in the task making it: :meth:`arm` before its first wait (None outside a
    task, where aiohttp cannot send a request either), :meth:`timed_out` when it raised
    :class:`asyncio.CancelledError`, :meth:`disarm` when it ends however it ends (in a
    ``finally``). A task makes one attempt at a time.
    """

    __slots__ = (
        "_armed",
        "_epoch",
        "_expired",
        "_overdue",
        "_ticking",
        "_ticks",
        "tick",
        "timeout",
    )

    def __init__(self, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, not {timeout!r}")
        self.timeout = timeout
        self.tick = max(timeout / TICKS, MIN_TICK)
        self._epoch = 0
        self._ticking = False
        #: (loop time, epoch) of the ticks of the last ``timeout`` seconds, oldest first
        self._ticks: collections.deque[tuple[float, int]] = collections.deque()
        #: attempts armed in this epoch or before are over their time
        self._overdue = -1
        #: task -> (the tick it was armed in, its pending cancellations then: an attempt made
        #: while the task is being cancelled already must not take that for its timeout)
        self._armed: dict[Task, tuple[int, int]] = {}
        #: tasks cancelled for their time limit whose attempt has not yet claimed it
        self._expired: set[Task] = set()

    def arm(self) -> Task | None:
        task = asyncio.current_task()
        if task is None:
            return None
        self._armed[task] = (self._epoch, task.cancelling())
        if not self._ticking:
            self._ticking = True
            loop = task.get_loop()
            loop.call_at(loop.time() + self.tick, self._on_tick, loop)
        return task

    def _on_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._epoch += 1
        armed = self._armed
        ticks = self._ticks
        if not armed:
            self._ticking = False
            ticks.clear()  # an attempt armed from now on is in a later epoch than them all
            return
        now = loop.time()
        ticks.append((now, self._epoch))
        # Armed in epoch e: before tick e + 1 ran. Once tick e + 1 is ``timeout`` in the
        # past, every attempt of epoch e is over its time (by time, not by counting ticks:
        # ticks come early on uvloop, late on a busy loop).
        cutoff = now - self.timeout
        while ticks and ticks[0][0] <= cutoff:
            self._overdue = ticks.popleft()[1] - 1
        overdue = self._overdue
        for task, (epoch, _) in list(armed.items()):
            if epoch <= overdue and task not in self._expired and not task.done():
                self._expired.add(task)
                task.cancel("dialler_async: the attempt's time limit passed")
        loop.call_at(loop.time() + self.tick, self._on_tick, loop)

    def timed_out(self, task: Task) -> bool:
        """Whether the :class:`asyncio.CancelledError` the attempt raised is its time limit
        (then it is taken back: raise a timeout instead), not a cancellation of the task."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        cancelling = self._armed[task][1]
        return task.uncancel() <= cancelling

    def disarm(self, task: Task) -> None:
        del self._armed[task]
        expired = self._expired
        if expired and task in expired:
            # Cancelled for its time limit, but the attempt ended otherwise (the cancellation
            # was absorbed below us): take the cancellation back all the same.
            expired.discard(task)
            task.uncancel()

    def __len__(self) -> int:
        """Attempts armed now (for tests)."""
        return len(self._armed)
