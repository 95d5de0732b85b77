"""How rows travel from the bulk engine's reader to its workers: read slots and a work queue.

Both do what ``asyncio.Semaphore`` and ``asyncio.Queue`` do, minus what the engine does not need
(timeouts, ``join``, size limits on the queue itself), because they run once per row: taking a
free slot or a queued row is an attribute test, not a coroutine. Waiters re-check the state
when they wake (a cancelled waiter takes nothing, and nothing is lost with it).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, TypeVar

T = TypeVar("T")


class ReadSlots:
    """How many rows the reader may have read that no worker has started yet (the bound on
    what a job holds in memory). :meth:`take` waits for one; :meth:`give_back` frees one."""

    __slots__ = ("_waiter", "free")

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiter: asyncio.Future[None] | None = None  # one reader

    async def take(self) -> None:
        while self.free <= 0:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self.free -= 1

    def give_back(self) -> None:
        self.free += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class WorkQueue(Generic[T]):
    """Rows read and not yet taken by a worker, in reading order; unbounded (the reader is
    bounded by :class:`ReadSlots`). Rows leave only from the front, in reading order: a put
    wakes a waiting worker but hands it nothing. (Handed a row, a worker that is not running
    yet would let one already running take the NEXT row first: two rows of one key would then
    start in the wrong order, and an upsert's older row would be the one that stays.)"""

    __slots__ = ("_idle", "rows")

    def __init__(self) -> None:
        #: Queued rows, oldest first. A worker pops one straight from here when there is one
        #: (``rows.popleft() if rows else await queue.get()``): most rows are taken so,
        #: without creating a coroutine.
        self.rows: collections.deque[T] = collections.deque()
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()

    def put(self, row: T) -> None:
        self.rows.append(row)
        if self._idle:
            self._wake()

    def _wake(self) -> None:
        idle = self._idle
        while idle:
            worker = idle.popleft()
            if not worker.done():  # a worker cancelled while waiting takes nothing
                worker.set_result(None)
                return

    async def get(self) -> T:
        rows = self.rows
        while not rows:  # woken, it may find the row taken by a worker that was running
            worker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle.append(worker)
            try:
                await worker
            except asyncio.CancelledError:
                if worker.done() and not worker.cancelled():
                    # Woken just as it was cancelled: the wake-up goes to the next worker
                    # waiting (a row must not sit queued while one idles).
                    if rows:
                        self._wake()
                elif worker in self._idle:
                    self._idle.remove(worker)
                raise
        return rows.popleft()

    def __len__(self) -> int:
        return len(self.rows)
