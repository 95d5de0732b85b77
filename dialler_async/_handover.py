"""The bounded, closable channel through which a bulk job hands results to its consumer.

``asyncio.Queue`` cannot say "the consumer has gone" (3.13's ``shutdown`` is not in 3.11), and
its putters can overtake each other, which would reorder an ordered stream. Here putters are
served strictly in arrival order, a closed channel drops what it is given (the job has already
accounted for it) and releases every waiting putter, and an ended channel tells the consumer so.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, TypeVar

T = TypeVar("T")


class Handover(Generic[T]):
    """One producer side (many tasks), one consumer."""

    __slots__ = ("_closed", "_ended", "_getter", "_items", "_putters", "_reserved", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: collections.deque[T] = collections.deque()
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._reserved = 0  # places promised to woken putters that have not yet run
        self._getter: asyncio.Future[None] | None = None
        self._closed = False
        self._ended = False

    @property
    def closed(self) -> bool:
        """The consumer has gone: nothing put is delivered any more."""
        return self._closed

    async def put(self, item: T) -> None:
        """Hand ``item`` over, waiting (in turn) for room; returns at once once closed."""
        if self._closed:
            return
        if self._putters or len(self._items) + self._reserved >= self._size:
            turn = asyncio.get_running_loop().create_future()
            self._putters.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._reserved -= 1
                    self._wake_putter()  # our place goes to the next in line
                else:
                    self._putters.remove(turn)
                raise
            self._reserved -= 1
            if self._closed:
                return
        self._items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def get(self) -> T | None:
        """The next item, or None once the producers ended and everything was taken."""
        while not self._items:
            if self._ended or self._closed:
                return None
            if self._getter is not None and not self._getter.done():
                # A second waiting consumer would overwrite the first one's wake-up, leaving
                # it waiting for ever.
                raise RuntimeError("a bulk stream can be iterated by one task at a time")
            self._getter = asyncio.get_running_loop().create_future()
            await self._getter
        item = self._items.popleft()
        self._wake_putter()
        return item

    def _wake_putter(self) -> None:
        while self._putters and len(self._items) + self._reserved < self._size:
            turn = self._putters.popleft()
            if not turn.done():
                self._reserved += 1
                turn.set_result(None)

    def end(self) -> None:
        """No more items will come."""
        self._ended = True
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def close(self) -> None:
        """The consumer has gone: drop what is queued and release every putter."""
        self._closed = True
        self._items.clear()
        while self._putters:
            turn = self._putters.popleft()
            if not turn.done():
                self._reserved += 1
                turn.set_result(None)
        self.end()
