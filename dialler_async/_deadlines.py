"""The time limit of whole-answer attempts, kept by one ticking loop timer for all of them.

aiohttp's own total timeout costs every request a loop timer (created, pushed on the loop's
heap, cancelled, and later swept off it) and a timer context entered around each of the
request's waits: ~24k instructions a request, more than anything else the SDK added to a bulk
job (``benchmarks/README.md``, "the attempt deadline"). Here an attempt costs a dict insert and
a removal: while attempts are in flight, one timer ticks every :attr:`AttemptDeadlines.tick`
seconds (``timeout / 64``), and an attempt armed :data:`TICKS` or more ticks ago is over its
time. Ticks are never closer than ``tick`` seconds, so an attempt never times out early; it
times out at most two ticks late (plus how late the event loop runs its timers).

The mechanism is :func:`asyncio.timeout`'s (and aiohttp's): an expired attempt's task is
cancelled, and the attempt turns that cancellation into a timeout unless the task was also
cancelled by someone else (then the cancellation goes on). Cancellation counts are kept
balanced with :meth:`asyncio.Task.uncancel`, so structured concurrency around the caller
(``TaskGroup``, ``asyncio.timeout``) sees no cancellation of ours.
"""

from __future__ import annotations

import asyncio
from typing import Final

Task = asyncio.Task[object]

#: Ticks per timeout: an attempt times out at most two ticks (1/32 of the timeout) late.
TICKS: Final = 64
#: The shortest tick (tiny timeouts in tests would otherwise tick without pause).
MIN_TICK: Final = 0.001


class AttemptDeadlines:
    """Deadlines of the attempts in flight on one event loop (one per transport).

    Per attempt, in the task making it: :meth:`arm` before its first wait (None outside a
    task: the caller needs another timeout), :meth:`timed_out` when it raised
    :class:`asyncio.CancelledError`, :meth:`disarm` when it ends however it ends (in a
    ``finally``). A task makes one attempt at a time.
    """

    __slots__ = ("_armed", "_epoch", "_expired", "_ticking", "tick", "timeout")

    def __init__(self, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, not {timeout!r}")
        self.timeout = timeout
        self.tick = max(timeout / TICKS, MIN_TICK)
        self._epoch = 0
        self._ticking = False
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
        if not armed:
            self._ticking = False
            return
        # armed in tick e (at or after tick e's time): TICKS + 1 ticks later is past its time
        overdue = self._epoch - TICKS - 1
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
