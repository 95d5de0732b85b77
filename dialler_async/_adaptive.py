"""Adaptive concurrency: find how many requests the server can take at once, from its latency.

The rule is TCP Vegas as Netflix's concurrency-limits ``VegasLimit`` applies it to RPC: with
``limit`` requests in flight, a round trip ``rtt`` and a no-load round trip ``baseline``, about
``limit * (1 - baseline / rtt)`` of them are queued inside the server. The rule keeps that
queue at a small target (:func:`target_queue`): under it the limit grows, over it the limit
goes to the estimated capacity plus the target. A timeout, 5xx or 429 is a congestion signal
of its own and cuts by a fixed factor. Beside the mean, a *tail guard* counts the answers that
waited inside the server for a request ahead of them, which the mean cannot tell from the
client's own work: too many in a window trim the limit by one and hold it there a while.

Where we differ, and why:

* One decision per *window*, and a window counts only requests that started after the last
  change, so a cut is judged by the requests it governs (TCP Vegas decides once per round trip
  for the same reason) and one burst of slow answers cannot cut twice.
* A window is at least :data:`MIN_WINDOW` answers and twice the limit: one round trip of a
  few requests is too noisy for a target this tight (the benchmark's windows of one round
  trip read anywhere from 0.88 to 1.16 times the baseline with no queue at all).
* The window's round trip is the *mean of its faster nine tenths*. A standing queue in
  the server delays every request, while our own stalls (a client process waiting for a shared
  CPU, a garbage collection) delay the answers that arrive during them; dropping the slowest
  tenth drops the worst of the second. It was a quarter, which hid exactly the queue the
  target is about: at a server serving four with five in flight, the one request waiting is
  the slowest of five. The mean is what TCP Vegas's queue estimate assumes
  (Little's law) and what concurrency-limits' default window takes. A low quantile is not
  enough: a server that serves K at once answers in waves (K answers after one service time,
  the next K after two), so while fewer than 4K are in flight the lower quartile only ever
  sees the first wave, reads "no queue" and lets the limit climb to four times the capacity
  (``tests/test_adaptive.py``, the recorded waves). The minimum (TCP Vegas) has the same flaw
  worse; the plain median counts our stalls as the server's queue on a loaded client machine.
* One target instead of Vegas's band (``alpha`` to grow under, ``beta`` to cut over): a
  seventh of the limit, so the limit settles where round trips are about 1.17 times the
  baseline. The band (1/6 and 2/7 of the limit: 1.2x-1.4x) sawed between the capacity and one
  or two over it; with a quarter of each round trip outside the server (the emulator at
  capacity 8 x 20 ms: ~10 in flight fill it) the server's p95 was 2.09 times its service
  time, and at capacity 4 every window at 6 queued two requests (p95 42 ms). Fixed limits
  measured beside it show how narrow the right range is: at capacity 8, 8 in flight gave
  290/s and 9-10 gave the full ~340/s at a p95 of 29-33 ms, 12 gave 43 ms; at capacity 4,
  4 gave 25 ms, 5 gave 37 ms and 6 gave 41 ms. So the limit must find the capacity to
  within a request.
* Why a proportion and not less than one request (``sqrt(limit) / 8`` was tried): the
  round trips a probe measures one at a time are shorter than those of the same server
  without a queue at 4-10 in flight, by 5-20% on the benchmark machine, because the client's
  and the server's own work per request (building, sending, parsing; the emulator's handler)
  waits behind the other requests' work. That share grows with the limit and reads as a
  queue; against a target under one request it held capacity 8 at 2-6 in flight (0.67 of
  the best fixed throughput). :class:`OwnWait` takes out the part that is measurable (see
  below); a seventh covers the rest. A tenth was measured too: capacity 4 at 4-5 in flight,
  but capacity 8 at 8-9 (0.85 of the best fixed throughput). Measured again for the tail
  guard (issue 15, loaded machine, single short runs): a tenth held capacity 8 at 8-10 but
  left the drop's p95 at 36.6 ms with 0.5 s buckets at 41 ms; a ninth (with the slowest
  twentieth dropped) held capacity 8 at 4-9 in one run (0.74 of the best fixed throughput)
  and the drop at 36.2 ms with buckets at 42 ms: a smaller proportion moves the limit about
  one request down and toward the client's own overhead, and does not find the last request.
* The tail guard. With the mean alone the limit settled a request or two past the knee on a
  quiet machine: capacity 8 at 10-11 in flight (server p95 40.1 ms, 2.00 x the service
  time), capacity 4 at 5-6 (42.3 ms), capacity 16 at 20-22 (0.5 s buckets at 40 ms). What
  sets the server's p95 is the share of requests that wait a whole service time behind a
  wave: 5% of them put it at twice the service time. The mean hardly sees them: windows
  logged on the benchmark (loaded machine) estimated a queue of 0.3-0.9 at capacity 8 with 8
  in flight (nothing waits), 0.5-1.7 with 9, 1.2-2.8 with 10; at capacity 4, 0.1-0.3 with 4,
  0.45-0.7 with 5. Counted directly, answers slower than :data:`SLOW` (1.5) baselines per
  window of 32 were 0.3 at capacity 8 with 8 in flight, 1.3 with 9, 2.5 with 10; none at
  capacity 4 with 4, 3.3 with 5, 11 with 6. So a window in which more than :data:`TAIL` (a
  sixteenth) of the answers are that slow, its mean within the target, trims the limit by
  one and holds it (no growth) for :data:`HOLD` windows. Each part of that was needed:

  - *the hold*: without it the limit is back at 5 the next window at capacity 4 (the mean
    sees no queue at 4), spends half its time there, and 0.5 s buckets reach 41 ms;
  - *a window closes once its tail is decided* (more slow answers than the whole window may
    have): a try at one more request then costs a few waits, not a window of 32 answers at
    that limit (5-8 of them slow at capacity 4 with 5 in flight: enough on their own to put
    the p95 of a 0.5 s bucket, some 85 answers, near 40 ms);
  - *slow answers released within half a baseline of each other count once*: a stall of
    ours or of the machine delays every answer in flight at once, a queue one request per
    wave, wave after wave. Without it the loaded machine's stalls walked capacity 8 down to
    1-3 in flight (116/s against fixed 8's 285);
  - *the tail trims at most one request below the mean's level*: a tail at the trimmed limit
    renews the hold but cuts no further until the limit is back; a cut by the mean starts
    over. On the loaded machine a shared CPU delays the server's answers at any limit, and
    trimming for each held capacity 8 at 2-11 in flight, mostly 4-6 (202/s against fixed 8's
    301).

  The price: a loaded machine's stalls (those the other parts do not catch) can hold the
  limit one request lower than the mean alone would; on a quiet machine that is the request
  the p95 target forbids anyway.
* Under the target the limit grows by ``1 - queued / target`` per window (+1 with no queue at
  all, nothing at the target), so it slows down as it nears the capacity instead of stepping
  past it. Over it, the limit goes straight to the estimated capacity plus the target
  (``inflight * baseline / rtt + target``, never below half), as Gradient2Limit's gradient
  does: when the server loses capacity the queue drains within a round trip or two. Both
  sides meet at the target, so there is no dead band and no sawtooth.
* Gradient2 itself (a long-run average RTT as the comparison point, a tolerance of 1.5-2
  times it, smoothing) was not taken: its long average follows our own standing queue, and a
  tolerance that wide is the queue the latency target forbids. Its square-root headroom was
  (see above): it suits a noise that grows with the square root of the limit, but what
  dominates here is our own work, which grows in proportion.
* The baseline is measured only by *probes*: at the start and then every ``probe_interval``
  seconds the limit drops to the floor until :data:`PROBE_SAMPLES` requests have been
  measured alone, and their median becomes the baseline (Envoy's adaptive concurrency filter
  does this).
  Without probes the baseline of a long job creeps up to the latency of our own standing
  queue and the limit ratchets up with it; a baseline that any lower window may lower drifts
  down into the noise instead, and the limit with it. The median, not the lower quartile:
  one lucky fast answer among five set a baseline below what the client sees without a
  queue once it has more than one request to handle, and held the limit under the
  server's capacity until the next probe. Twenty-five, not five: a baseline off by 5% moves
  the limit by half a request at 10, and the first answers of a job are slow (new
  connections, cold paths in the server): five gave 23-26 ms on the benchmark, 25 gave
  21.3-22.1 ms for the same 20 ms service; in the simulator five held capacity 8 at 247
  requests/s, 25 at 394 of 400. A probe costs 25 round trips at the floor per
  ``probe_interval`` (about 2% at 30 s).
* Our own delays are taken out of each round trip before the rule sees it, the larger of two
  estimates (``_own_delay.py``): :class:`LoopLag` (how late the event loop runs a timer: the
  process waiting for a shared CPU) and :class:`OwnWait` (how long this answer waited for the
  client to handle the answers of its wave before it). Never more than half the round trip.

:func:`next_limit` is the rule of the mean: pure, and tested from tables. :class:`AdaptiveLimit`
feeds it windows, keeps the baseline and the state of :func:`tail_guard` (the tail guard's
rule, pure and tested from a table too), on an injectable clock.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from typing import Final, NamedTuple

import attrs

Clock = Callable[[], float]

#: A congestion signal (timeout, 5xx, 429) multiplies the limit by this.
BACKOFF: Final = 0.75
#: Requests measured alone during a probe before the baseline is replaced.
PROBE_SAMPLES: Final = 25
#: A window is at least this many requests (and twice the limit), however low the limit.
MIN_WINDOW: Final = 32
#: An answer slower than this many baselines waited inside the server for a request ahead of it.
SLOW: Final = 1.5
#: The share of a window's answers that may be slow (:data:`SLOW`) before the limit is cut.
TAIL: Final = 1 / 16
#: Windows the limit does not grow after a cut for slow answers.
HOLD: Final = 4


class Signal(enum.Enum):
    """What one finished request tells the limiter."""

    #: An answer (2xx, or a 4xx other than 429): its round trip is a latency sample.
    OK = "ok"
    #: A timeout, a connection failure, a 5xx or a 429: the server is (or may be) overloaded.
    CONGESTED = "congested"
    #: No information: an answer refused while it was read (too large), a cancelled request.
    NEUTRAL = "neutral"


def signal_for(status: int) -> Signal:
    """The signal of an HTTP answer with ``status``.

    A 4xx counts as a latency sample like a 2xx: the server looked the request up and answered.
    Leaving it out would starve the limiter on jobs of mostly 404s (deleting contacts already
    gone), which would then never finish their first probe and run at the floor throughout.
    """
    if status == 429 or status >= 500:
        return Signal.CONGESTED
    return Signal.OK


@attrs.frozen(kw_only=True)
class Window:
    """What one window of finished requests measured.

    ``rtt``: the mean of its answers' faster nine tenths of round trips (None: no answer).
    ``dropped``: a timeout, connection failure, 5xx or 429 was among them.
    ``inflight``: the most requests at the server at once while the window ran.
    ``slow``: the share of its answers slower than :data:`SLOW` times the baseline.
    """

    rtt: float | None
    dropped: bool
    inflight: int
    slow: float = 0.0


def median(rtts: list[float]) -> float:
    """The middle round trip of ``rtts`` (the lower of the two middle ones)."""
    ordered = sorted(rtts)
    return ordered[(len(ordered) - 1) // 2]


def window_rtt(rtts: list[float]) -> float:
    """The mean of ``rtts`` without the slowest tenth (all of them below ten)."""
    ordered = sorted(rtts)
    kept = ordered[: len(ordered) - len(ordered) // 10]
    return math.fsum(kept) / len(kept)


def target_queue(limit: float) -> float:
    """How many requests the rule lets wait inside the server at ``limit``: a seventh of it
    (round trips about 1.17 times the baseline; see the module docstring for how it was
    chosen: a tenth held capacity 8 below its best throughput, a sixth and more let capacity
    4 queue)."""
    return limit / 7.0


def next_limit(
    limit: float,
    window: Window,
    baseline: float | None,
    *,
    floor: int,
    ceiling: int,
    slow_start: bool,
    hold: bool = False,
) -> tuple[float, bool]:
    """The limit after ``window``, and whether slow start goes on.

    Slow start (doubling per window while the queue stays under the target) ends at the first
    window over it or with congestion; after it the limit grows by ``1 - queued / target`` per
    window. ``hold`` (a cut for slow answers not long ago, see :class:`AdaptiveLimit`) stops
    the growth, not the cuts. The result is always within ``[floor, ceiling]``.
    """

    def clamp(value: float) -> float:
        return float(min(ceiling, max(floor, value)))

    if window.dropped:
        return clamp(limit * BACKOFF), False
    rtt = window.rtt
    if rtt is None or baseline is None or rtt <= 0 or baseline <= 0:
        return clamp(limit), slow_start
    # Fewer than half the allowed requests at the server: the client, not the server, sets the
    # pace (a slow input, a rate limit), so the latency says nothing about a higher limit.
    if window.inflight * 2 < limit:
        return clamp(limit), slow_start
    inflight = min(float(window.inflight), limit)
    queued = inflight * max(0.0, 1.0 - baseline / rtt)
    target = target_queue(limit)
    if queued > target:
        return clamp(max(limit / 2.0, inflight * baseline / rtt + target)), False
    if hold:
        return clamp(limit), slow_start
    # +1 with no queue at all, less the closer the queue comes to the target
    return clamp(limit * 2.0 if slow_start else limit + 1.0 - queued / target), slow_start


class Guard(NamedTuple):
    """The tail guard's state: windows left without growth, and the level the tail trimmed the
    limit to (0: none; the guard does not trim again below it until the mean moves)."""

    hold: int = 0
    trimmed_to: int = 0


def tail_guard(
    limit: float, proposed: float, window: Window, guard: Guard, *, floor: int
) -> tuple[float, Guard]:
    """The limit after ``window`` once the tail guard has had its say on ``proposed`` (what
    :func:`next_limit` made of ``limit``), and the guard's next state.

    A cut by the mean stands (and, with a tail, holds). Otherwise a tail of more than
    :data:`TAIL` slow answers, with at least half the limit in flight, holds the limit for
    :data:`HOLD` windows and trims it by one, but not again below that level until the mean
    cuts (a tail of stalls on a loaded machine, not of a queue, costs one request, not all of
    them). With fewer than half the limit in flight the tail is not our queue (see
    :func:`next_limit`). Without a tail the hold counts down.
    """
    tail = window.slow > TAIL
    if proposed < limit:  # the mean says the server has fewer places: trim anew
        return proposed, Guard(HOLD if tail else guard.hold, 0)
    if tail and not window.dropped and window.inflight * 2 >= limit:
        if max(floor, math.floor(limit)) > guard.trimmed_to:
            trimmed = max(float(floor), limit - 1.0)
            return trimmed, Guard(HOLD, math.floor(trimmed))
        return proposed, Guard(HOLD, guard.trimmed_to)
    return proposed, Guard(max(0, guard.hold - 1), guard.trimmed_to)


class AdaptiveLimit:
    """The adaptive limit of one governor: windows, baseline and probes around :func:`next_limit`.

    Call :meth:`on_sample` once per finished request that reached (or tried to reach) the
    server: ``started`` is when it was admitted (clock time), ``rtt`` its round trip if it
    succeeded, ``dropped`` whether it timed out or was answered 5xx/429, ``inflight`` how many
    were at the server when it finished. Read :attr:`limit` (an int within the floor and the
    ceiling) and :attr:`baseline`.

    It counts each window's slow answers (slower than :data:`SLOW` baselines, released at
    least half a baseline apart) for :func:`tail_guard`, and keeps the guard's state.
    """

    __slots__ = (
        "_changed_at",
        "_clock",
        "_count",
        "_dropped",
        "_guard",
        "_inflight",
        "_next_probe",
        "_probe_interval",
        "_probing",
        "_rtts",
        "_saved",
        "_slow",
        "_slow_at",
        "_slow_start",
        "baseline",
        "ceiling",
        "floor",
        "value",
    )

    def __init__(
        self,
        *,
        floor: int,
        ceiling: int,
        initial: int,
        probe_interval: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if not 1 <= floor <= ceiling:
            raise ValueError(f"need 1 <= floor ({floor}) <= ceiling ({ceiling})")
        self.floor = floor
        self.ceiling = ceiling
        self.value = float(min(ceiling, max(floor, initial)))
        self.baseline: float | None = None
        self._clock = clock
        self._probe_interval = probe_interval
        self._slow_start = True
        self._guard = Guard()
        self._slow_at = -math.inf
        # The first thing measured is the baseline, at the floor, before any queue of ours
        # can exist: a first window at the initial limit may already queue at a small server.
        self._probing = True
        self._saved = self.value
        self.value = float(floor)
        self._changed_at = clock()
        self._next_probe = self._changed_at + probe_interval
        self._reset_window()

    @property
    def limit(self) -> int:
        """The number of requests allowed in flight now."""
        return max(self.floor, math.floor(self.value))

    @property
    def probing(self) -> bool:
        return self._probing

    def _reset_window(self) -> None:
        self._count = 0
        self._dropped = False
        self._rtts: list[float] = []
        self._slow = 0
        self._inflight = 0

    def _set(self, value: float) -> None:
        self.value = value
        self._changed_at = self._clock()
        self._reset_window()

    def on_sample(self, started: float, rtt: float | None, dropped: bool, inflight: int) -> None:
        if started < self._changed_at:
            return  # admitted under an earlier limit: it says nothing about this one
        self._count += 1
        self._dropped = self._dropped or dropped
        if rtt is not None:
            self._rtts.append(rtt)
            baseline = self.baseline
            if baseline is not None and rtt > SLOW * baseline:
                # A stall (of this process, of the machine) delays every answer in flight at
                # once and counts once; a queue delays a request per wave, wave after wave.
                now = self._clock()
                if now - self._slow_at >= baseline / 2:
                    self._slow += 1
                    self._slow_at = now
        # +1: this request has already left the server's in-flight count
        self._inflight = max(self._inflight, inflight + 1)
        if self._probing:
            if self._count >= PROBE_SAMPLES and self._rtts:
                self.baseline = median(self._rtts)
                self._probing = False
                self._next_probe = self._clock() + self._probe_interval
                self._set(self._saved)
            return
        # A congestion signal needs no precision: a window with one closes after a round
        # trip's worth of answers (a timeout can take many seconds to arrive).
        size = max(3, self.limit) if self._dropped else max(MIN_WINDOW, 2 * self.limit)
        # Nor do slow answers once there are more than the whole window may have: the window
        # is over its tail whatever comes next, and every further answer at this limit adds
        # to the server's tail latency.
        if self._count < size and self._slow <= TAIL * size:
            return
        rtts = self._rtts
        window = Window(
            rtt=window_rtt(rtts) if rtts else None,
            dropped=self._dropped,
            inflight=self._inflight,
            slow=self._slow / len(rtts) if rtts else 0.0,
        )
        value, self._slow_start = next_limit(
            self.value,
            window,
            self.baseline,
            floor=self.floor,
            ceiling=self.ceiling,
            slow_start=self._slow_start,
            hold=self._guard.hold > 0,
        )
        value, self._guard = tail_guard(self.value, value, window, self._guard, floor=self.floor)
        if self._guard.hold == HOLD:  # a tail was seen: slow start is over
            self._slow_start = False
        if self._clock() >= self._next_probe and not window.dropped:
            self._probing = True
            self._saved = value
            self._set(float(self.floor))
        elif math.floor(value) != math.floor(self.value) or window.dropped:
            self._set(value)
        else:  # the same number of requests allowed: the next window goes on from here
            self.value = value
            self._reset_window()
