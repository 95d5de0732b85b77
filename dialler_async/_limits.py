"""How hard we may push the server: a concurrency cap plus a start-rate limit that adapts to 429s.

Why not aiolimiter: its leaky bucket starts empty, so up to ``max_rate`` requests pass at once
and the first second can see twice the configured rate; it cannot change its rate in place (we
cut it on 429 and let it recover) and it reads the loop's clock, which tests cannot drive.
:class:`RateLimiter` spaces starts ``1/rate`` apart (GCRA), so any one-second window holds at
most ``rate + 1`` starts, from the very first request on.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

import attrs

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@attrs.frozen(kw_only=True)
class Limits:
    """The client's limits, shared by every call it makes (single calls and bulk jobs alike).

    * ``max_concurrency``: requests in flight at once; also sizes the connection pool.
    * ``max_per_second``: request starts in any one-second window (None: no rate limit).
    * ``adaptive``: on 429, halve the rate and pause every caller for ``Retry-After``; then
      raise the rate again step by step (by ``recovery`` of the ceiling per second) up to
      ``max_per_second`` (or, without one, up to the rate seen when the first 429 came).
    * ``min_per_second``: the rate never drops below this.
    * ``jitter_margin``: starts are spaced this fraction further apart than ``1/rate`` (1%), so
      the server sees at most ``max_per_second`` arrivals in any second despite network jitter.
    """

    max_concurrency: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    max_per_second: float | None = attrs.field(default=None)
    adaptive: bool = True
    min_per_second: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    recovery: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    jitter_margin: float = attrs.field(default=0.01, validator=attrs.validators.ge(0))

    @max_per_second.validator
    def _check_rate(self, attribute: attrs.Attribute[float | None], value: float | None) -> None:
        if value is not None and value <= 0:
            raise ValueError("max_per_second must be positive or None")


class RateLimiter:
    """Spaces acquisitions at least ``1/rate`` seconds apart; ``rate=None`` lets all through.

    ``margin`` stretches the spacing a little (0.01: starts 1% further apart than ``1/rate``)
    so that network jitter cannot squeeze ``rate + 1`` arrivals into a server's one-second
    window. ``pause_until(t)`` holds every caller until clock time ``t`` (Retry-After for
    everyone). The clock and sleep are injectable so tests run without real waiting.
    """

    __slots__ = ("_clock", "_interval", "_next", "_paused_until", "_sleep", "_stretch")

    def __init__(
        self,
        rate: float | None,
        *,
        margin: float = 0.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._stretch = 1.0 + margin
        self._interval = 0.0 if rate is None else self._stretch / rate
        self._next = -float("inf")
        self._paused_until = -float("inf")

    @property
    def rate(self) -> float | None:
        return None if self._interval == 0.0 else self._stretch / self._interval

    @rate.setter
    def rate(self, value: float | None) -> None:
        self._interval = 0.0 if value is None else self._stretch / value

    def pause_until(self, when: float) -> None:
        self._paused_until = max(self._paused_until, when)

    async def acquire(self) -> None:
        if self._interval == 0.0 and self._paused_until == -float("inf"):
            return
        now = self._clock()
        slot = max(now, self._next, self._paused_until)
        if self._interval:
            self._next = slot + self._interval
        if slot > now:
            try:
                await self._sleep(slot - now)
            except asyncio.CancelledError:
                # Give the slot back if nobody queued behind it, so cancelling costs no capacity.
                if self._interval and self._next == slot + self._interval:
                    self._next = slot
                raise


class Governor:
    """One per client (and one more per bulk job with its own overrides): concurrency + rate.

    Counts starts, 429s and the current adaptive rate for progress reports.
    """

    __slots__ = (
        "_ceiling",
        "_last_raise",
        "_next_cut",
        "_recent",
        "_semaphore",
        "clock",
        "limiter",
        "limits",
        "throttled",
    )

    def __init__(
        self, limits: Limits, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.limits = limits
        self.clock = clock
        self._semaphore = asyncio.Semaphore(limits.max_concurrency)
        self.limiter = RateLimiter(
            limits.max_per_second, margin=limits.jitter_margin, clock=clock, sleep=sleep
        )
        self._ceiling = limits.max_per_second
        self._last_raise = 0.0
        self._next_cut = -float("inf")
        self._recent = _RecentStarts(clock)
        self.throttled = 0

    @property
    def rate(self) -> float | None:
        """The rate in force now (lower than configured while recovering from 429s)."""
        return self.limiter.rate

    async def acquire(self) -> None:
        """Wait for a concurrency slot and a rate slot; pair with :meth:`release`."""
        await self._semaphore.acquire()
        try:
            await self.limiter.acquire()
        except BaseException:
            self._semaphore.release()
            raise
        self._recent.add()

    def release(self) -> None:
        self._semaphore.release()

    def on_throttled(self, retry_after: float | None) -> None:
        """A 429 arrived: pause everyone for ``retry_after`` and (adaptive) halve the rate.

        One cut per batch in flight: requests already sent at the old rate answer 429 too, and
        that is the same signal, not a new one. So no further cut until ``max_concurrency``
        requests could have started at the new rate (at most a second).
        """
        self.throttled += 1
        now = self.clock()
        if retry_after:
            self.limiter.pause_until(now + retry_after)
        if not self.limits.adaptive or now < self._next_cut:
            return
        current = self.limiter.rate
        if current is None:
            current = max(self._recent.per_second(), self.limits.min_per_second)
            self._ceiling = current
        cut = max(self.limits.min_per_second, current / 2.0)
        self.limiter.rate = cut
        self._next_cut = now + min(1.0, self.limits.max_concurrency / cut)
        self._last_raise = now

    def on_success(self) -> None:
        """Recover a cut rate step by step, at most one step per second."""
        current = self.limiter.rate
        if current is None or self._ceiling is None or current >= self._ceiling:
            return
        now = self.clock()
        if now - self._last_raise >= 1.0:
            self._last_raise = now
            self.limiter.rate = min(self._ceiling, current + self._ceiling * self.limits.recovery)


class _RecentStarts:
    """The start rate over the last few dozen starts: what to cut from when no rate is set."""

    __slots__ = ("_clock", "_times")

    def __init__(self, clock: Clock, size: int = 64) -> None:
        self._clock = clock
        self._times: collections.deque[float] = collections.deque(maxlen=size)

    def add(self) -> None:
        self._times.append(self._clock())

    def per_second(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._clock() - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else float(len(self._times))
