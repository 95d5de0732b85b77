"""The client's own share of a round trip, measured so the adaptive limit can take it out.

A round trip the adaptive limit sees is the server's queue and service plus what this client
added: waiting for a shared CPU (:class:`LoopLag`) and handling the answers that arrived before
this one (:class:`OwnWait`). Both read as a queue in the server unless taken out; see
``_adaptive.py``'s module docstring for what each fixed.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable
from typing import Final

Clock = Callable[[], float]


class LoopLag:
    """How late this event loop has been running its timers lately: our own stalls.

    On a loaded machine the client process waits for a CPU, and every answer that arrives
    meanwhile is seen late; to the rule that looks like a queue in the server. A timer every
    :attr:`TICK` seconds measures how late it fires (an exponential average, :attr:`value`), so
    that much can be taken out of each round trip. It runs only while ``busy()`` says requests
    are in flight, and stops itself otherwise.
    """

    TICK: Final = 0.01

    __slots__ = ("_busy", "_expected", "_running", "value")

    def __init__(self, busy: Callable[[], bool]) -> None:
        self._busy = busy
        self._running = False
        self._expected = 0.0
        self.value = 0.0

    def start(self) -> None:
        """Start measuring (call from the loop, when a request is admitted)."""
        if self._running:
            return
        loop = asyncio.get_running_loop()
        self._running = True
        self._expected = loop.time() + self.TICK
        loop.call_at(self._expected, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        self.value += 0.25 * (max(0.0, now - self._expected) - self.value)
        if self._busy():
            self._expected = now + self.TICK
            loop.call_at(self._expected, self._tick, loop)
        else:
            self._running = False


class OwnWait:
    """How long the answer being released waited for this client to handle the ones before it.

    A server that serves K at once answers in waves, and the client handles a wave one answer
    after another: the last of N waited for N - 1 others, a wait that grows with the requests
    in flight and reads as a queue in the server (it held the limit under the capacity of a
    server serving 8 at once). :class:`LoopLag` does not see it: timers rarely fall due inside
    a wave, answers always do.

    Call once per released answer with the limit in force. The thread's CPU clock says whether
    the loop was busy throughout since the previous release (it used at least :attr:`BUSY` of
    the wall time): then this answer waited from the wave's first release to the previous one;
    otherwise the loop was idle meanwhile, this answer starts a wave and waited for nobody.
    With ``limit`` requests in flight at most ``limit - 1`` answers can have been ready before
    this one, so only that many releases back count: a client busy without a pause (a slow
    callback, a saturated CPU) does not make its waves, and the waits, grow without end. The
    first answer's own handling and a process preempted by the machine count as no wait, so
    the estimate errs low (toward a smaller limit).
    """

    BUSY: Final = 0.8

    __slots__ = ("_cpu", "_last_cpu", "_last_wall", "_wall", "_wave")

    def __init__(self, *, wall: Clock = time.monotonic, cpu: Clock = time.thread_time) -> None:
        self._wall = wall
        self._cpu = cpu
        self._last_wall = -math.inf
        self._last_cpu = cpu()
        self._wave: collections.deque[float] = collections.deque()

    def __call__(self, limit: int) -> float:
        wall, cpu = self._wall(), self._cpu()
        wave = self._wave
        if cpu - self._last_cpu < self.BUSY * (wall - self._last_wall):
            wave.clear()
        while wave and len(wave) >= limit:
            wave.popleft()
        wait = wave[-1] - wave[0] if wave else 0.0
        wave.append(wall)
        self._last_wall, self._last_cpu = wall, cpu
        return wait
