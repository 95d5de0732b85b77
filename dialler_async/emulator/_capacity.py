"""The emulator's capacity model: a server that works on at most K requests at once.

A real dialler server does not answer 429 when it is busy; it queues, and every request waits
its turn. :class:`Capacity` is that queue: ``capacity`` requests are in service (each holds a
slot for ``service_time`` plus the work itself), the others wait first come, first served, so
latency grows with the queue. Beyond ``queue_limit`` waiting requests a new one is refused
(503), as a server whose accept queue is full would.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

__all__ = ["Capacity"]


class Capacity:
    """The service slots. ``capacity()`` is read at every admission, so a change while the
    emulator runs applies at once: a cut lets the requests in service finish and admits no one
    until fewer than the new capacity are busy; a raise admits waiters at once (:meth:`wake`).
    """

    __slots__ = ("_capacity", "_waiters", "busy")

    def __init__(self, capacity: Callable[[], int | None]) -> None:
        self._capacity = capacity
        self.busy = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def _free(self) -> bool:
        capacity = self._capacity()
        return capacity is None or self.busy < capacity

    async def enter(self) -> None:
        """Wait for a service slot; pair with :meth:`leave`."""
        if not self._waiters and self._free():
            self.busy += 1
            return
        me: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(me)
        try:
            await me
        except BaseException:
            if me.done() and not me.cancelled():
                self.leave()  # handed a slot as the client went away: pass it on
            elif me in self._waiters:
                self._waiters.remove(me)
            raise

    def leave(self) -> None:
        self.busy -= 1
        self.wake()

    def wake(self) -> None:
        """Hand free slots to waiters, first come first served."""
        while self._waiters and self._free():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.busy += 1
                waiter.set_result(None)
