"""The emulator's capacity model: a server that works on at most K requests at once.

A real dialler server does not answer 429 when it is busy; it queues, and every request waits
its turn. :class:`Capacity` is that queue: ``capacity`` requests are in service (each holds a
slot for ``service_time`` plus the work itself), the others wait first come, first served, so
latency grows with the queue. Beyond ``queue_limit`` waiting requests a new one is refused
(503), as a server whose accept queue is full would.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from dialler_async._limits import ConcurrencyGate

__all__ = ["Capacity"]


class Capacity:
    """The service slots: the client's own FIFO :class:`ConcurrencyGate`, its limit read from
    the configuration. ``capacity()`` is read at every admission, so a change while the
    emulator runs applies at once: a cut lets the requests in service finish and admits no one
    until fewer than the new capacity are busy; a raise admits waiters at once (:meth:`wake`).
    """

    __slots__ = ("_capacity", "_gate")

    def __init__(self, capacity: Callable[[], int | None]) -> None:
        self._capacity = capacity
        self._gate = ConcurrencyGate(sys.maxsize)  # the configured limit is read at each entry

    def _limit(self) -> int:
        capacity = self._capacity()
        return sys.maxsize if capacity is None else capacity

    @property
    def busy(self) -> int:
        return self._gate.held

    @property
    def queued(self) -> int:
        return self._gate.waiting

    async def enter(self) -> None:
        """Wait for a service slot; pair with :meth:`leave`."""
        self.wake()
        await self._gate.acquire()

    def leave(self) -> None:
        self._gate.release()

    def wake(self) -> None:
        """Take the configured capacity now, handing free slots to waiters in arrival order."""
        limit = self._limit()
        if limit != self._gate.limit:
            self._gate.limit = limit
