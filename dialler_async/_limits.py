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
import contextvars
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from ._adaptive import AdaptiveLimit, Signal
from ._own_delay import LoopLag, OwnWait

Clock = Callable[[], float]
_NEVER = -math.inf
Sleep = Callable[[float], Awaitable[None]]


def _positive_finite(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive, finite number, not {value!r}")


def check_rate(name: str, value: float | None) -> float | None:
    """``value`` if it is None or a positive, finite rate; else a ValueError naming ``name``."""
    if value is not None:
        _positive_finite(name, value)
    return value


def check_concurrency(name: str, value: int | None) -> int | None:
    """``value`` if it is None or a positive integer; else a ValueError naming ``name``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


def _validate_rate(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    check_rate(attribute.name, value)


def _validate_positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    _positive_finite(attribute.name, value)


@attrs.frozen(kw_only=True)
class Limits:
    """The client's limits, shared by every call it makes (single calls and bulk jobs alike).

    * ``max_concurrency``: requests in flight at once; also sizes the connection pool.
    * ``max_per_second``: request starts in any one-second window (None: no rate limit).
    * ``adaptive``: on 429, halve the rate and pause every caller for ``Retry-After``; then
      raise the rate again step by step (by ``recovery`` of the ceiling per second) up to
      ``max_per_second`` (or, without one, up to the rate seen when the first 429 came).
    * ``min_per_second``: the rate never drops below this. Default: 1/s, or ``max_per_second``
      when that is lower (a configured 0.5/s is never raised by a 429).
    * ``jitter_margin``: starts are spaced this fraction further apart than ``1/rate`` (1%), so
      the server sees at most ``max_per_second`` arrivals in any second despite network jitter.
    * ``adaptive_concurrency``: the number of requests in flight moves between
      ``min_concurrency`` and ``max_concurrency`` (still the hard ceiling) with the server's
      latency: it grows while answers come as fast as without load and is cut when a queue
      builds up inside the server or it answers with a timeout, 5xx or 429 (``_adaptive.py``).
    * ``min_concurrency``: the floor of the adaptive limit (default 1).
    * ``probe_interval``: seconds between re-measurements of the server's no-load latency
      (the adaptive limit drops to the floor for a few requests).

    Every value is checked here, at construction, with a message naming it.
    """

    max_concurrency: int = attrs.field(default=16)
    max_per_second: float | None = attrs.field(default=None, validator=_validate_rate)
    adaptive: bool = True
    min_per_second: float | None = attrs.field(default=None, validator=_validate_rate)
    recovery: float = attrs.field(default=0.1, validator=_validate_positive)
    jitter_margin: float = attrs.field(default=0.01)
    adaptive_concurrency: bool = False
    min_concurrency: int = attrs.field(default=1)
    probe_interval: float = attrs.field(default=30.0, validator=_validate_positive)

    def __attrs_post_init__(self) -> None:
        check_concurrency("max_concurrency", self.max_concurrency)
        check_concurrency("min_concurrency", self.min_concurrency)
        if self.min_concurrency > self.max_concurrency:
            raise ValueError(
                f"min_concurrency ({self.min_concurrency}) must not exceed "
                f"max_concurrency ({self.max_concurrency})"
            )
        margin = self.jitter_margin
        if not (isinstance(margin, int | float) and math.isfinite(margin) and 0 <= margin < 1):
            raise ValueError(f"jitter_margin must be within [0, 1), not {margin!r}")
        if (
            self.min_per_second is not None
            and self.max_per_second is not None
            and self.min_per_second > self.max_per_second
        ):
            raise ValueError(
                f"min_per_second ({self.min_per_second}) must not exceed "
                f"max_per_second ({self.max_per_second})"
            )

    @property
    def floor(self) -> float:
        """The lowest rate a 429 may cut to (see ``min_per_second``)."""
        if self.min_per_second is not None:
            return self.min_per_second
        return min(1.0, self.max_per_second) if self.max_per_second is not None else 1.0


#: Where an adaptive concurrency limit starts once the baseline has been measured at the floor
#: (within the floor and ceiling); slow start doubles it per window until a queue shows.
INITIAL_ADAPTIVE_LIMIT = 4

#: The rate limiter of the bulk job the current task works for (``rate=``), if any. Every HTTP
#: attempt made in that task (first tries, retries, reconciliation lookups) passes it.
JOB_LIMITER: contextvars.ContextVar[RateLimiter | None] = contextvars.ContextVar(
    "dialler_async_job_limiter", default=None
)


class RateLimiter:
    """Spaces acquisitions at least ``1/rate`` seconds apart; ``rate=None`` lets all through.

    ``margin`` stretches the spacing a little (0.01: starts 1% further apart than ``1/rate``)
    so that network jitter cannot squeeze ``rate + 1`` arrivals into a server's one-second
    window. ``pause_until(t)`` holds every caller until clock time ``t`` (Retry-After for
    everyone). The clock and sleep are injectable so tests run without real waiting.

    Waiters form one FIFO queue (as in aiolimiter): only the head sleeps, and it re-reads the
    rate and the pause each time it wakes, so a rate cut or a pause set while callers wait
    applies to all of them from that moment on. A cancelled waiter takes nothing.
    """

    __slots__ = ("_clock", "_interval", "_last", "_paused_until", "_sleep", "_stretch", "_waiters")

    def __init__(
        self,
        rate: float | None,
        *,
        margin: float = 0.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        check_rate("rate", rate)
        self._clock = clock
        self._sleep = sleep
        self._stretch = 1.0 + margin
        self._interval = 0.0 if rate is None else self._stretch / rate
        self._last = -float("inf")
        self._paused_until = -float("inf")
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def rate(self) -> float | None:
        return None if self._interval == 0.0 else self._stretch / self._interval

    @rate.setter
    def rate(self, value: float | None) -> None:
        check_rate("rate", value)
        self._interval = 0.0 if value is None else self._stretch / value

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def pause_until(self, when: float) -> None:
        self._paused_until = max(self._paused_until, when)

    def _slot(self) -> float:
        """The earliest time the next start may happen, from the rate and pause in force now."""
        return max(self._last + self._interval, self._paused_until)

    def try_acquire(self) -> bool:
        """Take a start now if one is free (nobody queued, rate and pause allow it)."""
        if self._waiters:
            return False
        if not self._interval:  # no rate limit: only a pause can hold a start back
            paused = self._paused_until
            return paused == _NEVER or paused <= self._clock()
        now = self._clock()
        if self._slot() <= now:
            self._last = now
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        me: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(me)
        try:
            if self._waiters[0] is not me:
                await me  # the waiter ahead hands the head position over when it leaves
            while (wait := self._slot() - self._clock()) > 0:
                await self._sleep(wait)
            now, planned = self._clock(), self._slot()
            # Woken a little late: keep the schedule rather than drift below the rate.
            self._last = planned if now - planned < self._interval else now
        finally:
            self._waiters.remove(me)
            if self._waiters and not self._waiters[0].done():
                self._waiters[0].set_result(None)


class ConcurrencyGate:
    """At most ``limit`` holders at once, where ``limit`` may change while callers wait.

    Waiters form one FIFO queue. A slot is handed to the head waiter only while fewer than the
    limit *now in force* are held: a cut applies from that moment (nobody else is admitted until
    enough holders have left) and a raise admits waiters at once. A cancelled waiter takes
    nothing; a slot handed to it just as it was cancelled goes to the next one.
    """

    __slots__ = ("_limit", "_waiters", "held")

    def __init__(self, limit: int) -> None:
        check_concurrency("limit", limit)
        self._limit = limit
        self.held = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        check_concurrency("limit", value)
        self._limit = value
        self._wake()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        if not self._waiters and self.held < self._limit:
            self.held += 1
            return
        me: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(me)
        try:
            await me
        except BaseException:
            if me.done() and not me.cancelled():
                self.release()  # handed a slot as we were cancelled: pass it on
            elif me in self._waiters:
                self._waiters.remove(me)
            raise

    def release(self) -> None:
        self.held -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.held < self._limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.held += 1
                waiter.set_result(None)


class Governor:
    """One per client (and one more per bulk job with its own overrides): concurrency + rate.

    Counts starts, 429s and the current adaptive rate for progress reports. With
    ``Limits(adaptive_concurrency=True)`` the concurrency gate's limit follows an
    :class:`~dialler_async._adaptive.AdaptiveLimit` fed by every finished request.
    """

    __slots__ = (
        "_ceiling",
        "_gate",
        "_lag",
        "_last_probe",
        "_last_raise",
        "_next_cut",
        "_own_wait",
        "_recent",
        "_throttled_since",
        "adaptive",
        "clock",
        "limiter",
        "limits",
        "sending",
        "throttled",
    )

    def __init__(
        self, limits: Limits, *, clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.adaptive: AdaptiveLimit | None = None
        if limits.adaptive_concurrency:
            self.adaptive = AdaptiveLimit(
                floor=limits.min_concurrency,
                ceiling=limits.max_concurrency,
                initial=INITIAL_ADAPTIVE_LIMIT,
                probe_interval=limits.probe_interval,
                clock=clock,
            )
        self._gate = ConcurrencyGate(
            self.adaptive.limit if self.adaptive is not None else limits.max_concurrency
        )
        #: Requests past both gates and not yet answered (at the server, as far as we know).
        self.sending = 0
        # Our own stalls are taken out of round trips only on the loop's clock: a test's fake
        # clock does not stall.
        self._lag = (
            LoopLag(lambda: self.sending > 0 or self._gate.held > 0)
            if self.adaptive is not None and clock is time.monotonic
            else None
        )
        self._own_wait = OwnWait() if self._lag is not None else None
        self.limiter = RateLimiter(
            limits.max_per_second, margin=limits.jitter_margin, clock=clock, sleep=sleep
        )
        self._ceiling = limits.max_per_second
        self._last_raise = 0.0
        self._next_cut = -float("inf")
        self._recent = _RecentStarts(clock)
        self._throttled_since: float | None = None
        self._last_probe = -float("inf")
        self.throttled = 0

    @property
    def concurrency_limit(self) -> int:
        """Requests allowed in flight now (``max_concurrency`` unless adaptive)."""
        return self._gate.limit

    @property
    def baseline_rtt(self) -> float | None:
        """The adaptive limit's no-load round trip in seconds (None: not adaptive or unknown)."""
        return self.adaptive.baseline if self.adaptive is not None else None

    @property
    def rate(self) -> float | None:
        """The rate in force now (lower than configured while recovering from 429s)."""
        return self.limiter.rate

    def try_acquire(self) -> float | None:
        """Take a concurrency slot and a rate slot if both are free now, without waiting: the
        clock time the request starts, or None (then :meth:`acquire`; also while 429s are
        coming in, so the caller checks :meth:`throttle_storm` first). Pair with
        :meth:`release`."""
        gate = self._gate
        if gate._waiters or gate.held >= gate._limit or self._throttled_since is not None:
            return None
        gate.held += 1
        if not self.limiter.try_acquire():
            gate.release()
            return None
        return self._started()

    def _started(self) -> float:
        now = self.clock()
        self._recent.times.append(now)
        self.sending += 1
        if self._lag is not None:
            self._lag.start()
        return now

    async def acquire(self) -> float:
        """Wait for a concurrency slot and a rate slot; returns the clock time the request
        starts. Pair with :meth:`release`."""
        await self._gate.acquire()
        # A free start is taken without creating a coroutine (the common case).
        if not self.limiter.try_acquire():
            try:
                await self.limiter.acquire()
            except BaseException:
                self._gate.release()
                raise
        return self._started()

    def release(self, started: float | None = None, signal: Signal = Signal.NEUTRAL) -> None:
        """The request admitted at ``started`` is over; ``signal`` is what its end tells the
        adaptive limit (a streamed answer tells nothing: its length, not the server's queue,
        sets its duration). The new limit is in force before the freed slot is handed on."""
        self.sending -= 1
        adaptive = self.adaptive
        if adaptive is not None and started is not None and signal is not Signal.NEUTRAL:
            rtt: float | None = None
            if signal is Signal.OK:
                rtt = self.clock() - started
                if self._lag is not None and self._own_wait is not None:
                    # never more than half: both are estimates
                    ours = max(self._lag.value, self._own_wait(adaptive.limit))
                    rtt = max(rtt / 2.0, rtt - ours)
            adaptive.on_sample(started, rtt, rtt is None, self.sending)
            self._gate.limit = adaptive.limit
        gate = self._gate
        gate.held -= 1  # gate.release(), inline: once per request
        if gate._waiters:
            gate._wake()

    def throttle_storm(self, deadline: float | None, probe_every: float) -> float | None:
        """How long the server has answered nothing but 429, when that exceeds ``deadline``
        and this request is not the probe (one request per ``probe_every`` seconds still goes
        out, so the client notices when the storm ends); else None: send the request."""
        since = self._throttled_since
        if since is None or deadline is None:
            return None
        now = self.clock()
        lasted = now - since
        if lasted <= deadline:
            return None
        if now - self._last_probe >= probe_every:
            self._last_probe = now
            return None
        return lasted

    def on_throttled(self, retry_after: float | None) -> None:
        """A 429 arrived: pause everyone for ``retry_after`` and (adaptive) halve the rate.

        ``retry_after`` must already be capped by the caller (a pause longer than the retry
        policy's ``max_retry_after`` is never applied: that call fails instead).

        One cut per batch in flight: requests already sent at the old rate answer 429 too, and
        that is the same signal, not a new one. So no further cut until ``max_concurrency``
        requests could have started at the new rate (at most a second).
        """
        self.throttled += 1
        now = self.clock()
        if self._throttled_since is None:
            self._throttled_since = now
        if retry_after:
            self.limiter.pause_until(now + retry_after)
        if not self.limits.adaptive or now < self._next_cut:
            return
        current = self.limiter.rate
        if current is None:
            current = max(self._recent.per_second(), self.limits.floor)
            self._ceiling = current
        cut = max(self.limits.floor, current / 2.0)
        self.limiter.rate = cut
        self._next_cut = now + min(1.0, self.limits.max_concurrency / cut)
        self._last_raise = now

    def on_success(self) -> None:
        """Recover a cut rate step by step, at most one step per second."""
        self._throttled_since = None
        if self._ceiling is None:  # no rate to recover (the common case: checked first)
            return
        current = self.limiter.rate
        if current is None or current >= self._ceiling:
            return
        now = self.clock()
        if now - self._last_raise >= 1.0:
            self._last_raise = now
            self.limiter.rate = min(self._ceiling, current + self._ceiling * self.limits.recovery)


class _RecentStarts:
    """The start rate over the last few dozen starts: what to cut from when no rate is set."""

    __slots__ = ("_clock", "times")

    def __init__(self, clock: Clock, size: int = 64) -> None:
        self._clock = clock
        #: The last starts' clock times (the governor appends to it).
        self.times: collections.deque[float] = collections.deque(maxlen=size)

    def per_second(self) -> float:
        if len(self.times) < 2:
            return 0.0
        span = self._clock() - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else float(len(self.times))
