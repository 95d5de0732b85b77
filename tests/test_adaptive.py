"""The adaptive concurrency rule: tables for the pure rule, recorded sequences and a simulated
FIFO server on a fake clock for :class:`AdaptiveLimit`, and the concurrency gate it drives."""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dialler_async import Limits
from dialler_async._adaptive import (
    BACKOFF,
    HOLD,
    MIN_WINDOW,
    PROBE_SAMPLES,
    SLOW,
    TAIL,
    AdaptiveLimit,
    Guard,
    Signal,
    Window,
    median,
    next_limit,
    signal_for,
    tail_guard,
    target_queue,
    window_rtt,
)
from dialler_async._limits import ConcurrencyGate, Governor
from dialler_async._own_delay import LoopLag, OwnWait


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


B = 0.020  # the no-load round trip of the tables


@pytest.mark.parametrize(
    ("limit", "rtt", "inflight", "dropped", "slow", "expected", "slow_after"),
    [
        # no queue: slow start doubles, afterwards +1
        (8.0, B, 8, False, True, 16.0, True),
        (8.0, B, 8, False, False, 9.0, False),
        # a queue under the target (0.16 of 16/7 requests): grows by 1 - 0.16 / (16/7)
        (16.0, B * 1.01, 16, False, False, 16.0 + 1.0 - (16 - 16 / 1.01) / (16 / 7), False),
        # over it (3.2 requests at 1.25 x baseline): to the estimated capacity (12.8) + the
        # target, and slow start is over
        (16.0, B * 1.25, 16, False, True, 12.8 + 16 / 7, False),
        (16.0, B * 1.25, 16, False, False, 12.8 + 16 / 7, False),
        # continuous at the target: exactly two requests waiting at 14 hold the limit
        (14.0, B * 14 / 12, 14, False, False, 14.0, False),
        # a server serving four with a fifth request waiting half the time (1.1 x baseline at
        # 5, 0.45 waiting): under the target, grows slowly (by 0.36)
        (5.0, B * 1.1, 5, False, False, 5.0 + 1.0 - (5 - 5 / 1.1) / (5 / 7), False),
        # and with 6 in flight (1.5 waiting): back to 4.5 + the target, a limit of 5
        (6.0, B * 4 / 3, 6, False, False, 4.5 + 6 / 7, False),
        # a limit at the capacity grows (nothing waits)
        (4.0, B, 4, False, False, 5.0, False),
        # 2 x baseline with 16 in flight: 8 would do
        (16.0, B * 2, 16, False, False, 8.0 + 16 / 7, False),
        # 10 x baseline: never below half in one step
        (16.0, B * 10, 16, False, False, 8.0, False),
        # a timeout, 5xx or 429 in the window: x BACKOFF, whatever the latency says
        (16.0, B, 16, True, True, 16.0 * BACKOFF, False),
        (16.0, None, 16, True, False, 16.0 * BACKOFF, False),
        # app-limited (fewer than half the limit at the server): the latency says nothing
        (16.0, B, 7, False, False, 16.0, False),
        (16.0, B * 3, 7, False, True, 16.0, True),
        # no latency sample (only 4xx answers): hold
        (16.0, None, 16, False, False, 16.0, False),
        # clamps: the ceiling and the floor
        (40.0, B, 40, False, True, 64.0, True),
        (3.0, B, 3, True, False, 2.25, False),
        (2.0, B * 10, 2, False, False, 2.0, False),
    ],
)
def test_next_limit(
    limit: float,
    rtt: float | None,
    inflight: int,
    dropped: bool,
    slow: bool,
    expected: float,
    slow_after: bool,
) -> None:
    window = Window(rtt=rtt, dropped=dropped, inflight=inflight)
    got, still_slow = next_limit(limit, window, B, floor=2, ceiling=64, slow_start=slow)
    assert got == pytest.approx(max(2.0, expected))
    assert still_slow is slow_after


def test_next_limit_without_a_baseline_holds() -> None:
    window = Window(rtt=0.5, dropped=False, inflight=10)
    assert next_limit(10.0, window, None, floor=1, ceiling=64, slow_start=True) == (10.0, True)


@pytest.mark.parametrize(
    ("limit", "rtt", "slow_start", "expected", "slow_after"),
    [
        # held (after a cut for slow answers): no growth, however clear the window
        (4.0, B, False, 4.0, False),
        (4.0, B, True, 4.0, True),
        (5.0, B * 1.1, False, 5.0, False),
        # but cuts still apply while held
        (16.0, B * 2, False, 8.0 + 16 / 7, False),
        (6.0, B * 4 / 3, False, 4.5 + 6 / 7, False),
    ],
)
def test_next_limit_held(
    limit: float, rtt: float, slow_start: bool, expected: float, slow_after: bool
) -> None:
    window = Window(rtt=rtt, dropped=False, inflight=int(limit))
    got, still_slow = next_limit(
        limit, window, B, floor=2, ceiling=64, slow_start=slow_start, hold=True
    )
    assert got == pytest.approx(expected)
    assert still_slow is slow_after


def test_a_window_closes_once_its_tail_is_decided_and_the_cut_holds() -> None:
    """At 8 (windows of 32), the third answer over SLOW x the baseline puts the window over
    its tail (more than 32 / 16): it closes there, one fewer; then HOLD windows without
    growth, however clear; then growth again."""
    clock = Clock()
    limit = fresh(clock, initial=8, probe_interval=1e9)
    slow = SLOW * B * 1.01
    # two slow answers in a full window: within the tail, the window runs to its end
    seen = feed(limit, clock, [slow, slow] + [B] * 29)
    assert set(seen) == {8}
    seen = feed(limit, clock, [B])
    assert seen == [16]  # slow start: the window was within the target and the tail
    seen = feed(limit, clock, [B] * 20 + [slow, slow])  # at 16, windows of 32: 2 slow are fine
    assert set(seen) == {16}
    # the third: decided at the window's 23rd answer. Its mean (a queue of 1.0) is within the
    # target (16/7): the tail alone cuts, by one
    seen = feed(limit, clock, [slow])
    assert seen == [15] and limit.value == pytest.approx(15.0)
    # held: HOLD clear windows (of 32) at 15, then one grows it
    seen = feed(limit, clock, [B] * 32 * HOLD)
    assert set(seen) == {15}
    seen = feed(limit, clock, [B] * 32)
    assert seen[-1] == 16


@pytest.mark.parametrize(
    ("limit", "queue"),
    [(1.0, 1 / 7), (4.0, 4 / 7), (7.0, 1.0), (14.0, 2.0), (64.0, 64 / 7)],
)
def test_target_queue_is_a_seventh_of_the_limit(limit: float, queue: float) -> None:
    assert target_queue(limit) == pytest.approx(queue)


@pytest.mark.parametrize(
    ("status", "signal"),
    [
        (200, Signal.OK),
        (201, Signal.OK),
        (400, Signal.OK),
        (404, Signal.OK),
        (409, Signal.OK),
        (429, Signal.CONGESTED),
        (500, Signal.CONGESTED),
        (503, Signal.CONGESTED),
        (504, Signal.CONGESTED),
    ],
)
def test_signal_for(status: int, signal: Signal) -> None:
    assert signal_for(status) is signal


# -- recorded sequences ------------------------------------------------------------------------


def feed(
    limit: AdaptiveLimit, clock: Clock, rtts: list[float], inflight: int | None = None
) -> list[int]:
    """Each round trip in turn, as a request admitted now and answered ``rtt`` later; returns
    the limit after each."""
    seen = []
    for rtt in rtts:
        started = clock.now
        clock.now += rtt
        at_server = limit.limit if inflight is None else inflight
        limit.on_sample(started, rtt, False, at_server - 1)
        seen.append(limit.limit)
    return seen


def fresh(clock: Clock, *, floor: int = 1, initial: int = 4, **kwargs: float) -> AdaptiveLimit:
    """A limit past its first probe (the baseline measured at the floor: ``B``)."""
    limit = AdaptiveLimit(floor=floor, ceiling=64, initial=initial, clock=clock, **kwargs)
    assert limit.probing and limit.limit == floor and limit.baseline is None
    feed(limit, clock, [B] * PROBE_SAMPLES, inflight=floor)
    assert not limit.probing and limit.baseline == pytest.approx(B)
    assert limit.limit == max(floor, initial)
    return limit


def test_the_first_probe_measures_the_baseline_at_the_floor() -> None:
    clock = Clock()
    limit = AdaptiveLimit(floor=2, ceiling=64, initial=8, clock=clock)
    assert limit.limit == 2 and limit.probing
    # queued answers to requests admitted before the start cannot exist; slow answers
    # during the probe count into its median
    slow = [3 * B, 5 * B] * 5
    feed(limit, clock, [B] * (PROBE_SAMPLES - len(slow) - 1), inflight=2)
    feed(limit, clock, slow, inflight=2)
    assert limit.probing and limit.limit == 2
    feed(limit, clock, [B], inflight=2)
    assert limit.baseline == pytest.approx(B) and limit.limit == 8


def test_slow_start_doubles_per_window_until_a_queue_shows() -> None:
    clock = Clock()
    limit = fresh(clock)
    # a window is max(MIN_WINDOW, 2 x limit) answers: 32 at 4, at 8 and at 16
    assert MIN_WINDOW == 32
    seen = feed(limit, clock, [B] * (32 * 3))
    assert seen[30] == 4 and seen[31] == 8 and seen[63] == 16 and seen[-1] == 32
    assert limit.baseline == pytest.approx(B)
    # the queue shows (2 x baseline at 32 in flight): cut to 16 + the target (32/7), slow start
    # is over. Every answer is slow, so the window of 64 closes as soon as more than TAIL of
    # it (a sixteenth: 4) is: at the fifth answer
    assert int(64 * TAIL) == 4
    seen = feed(limit, clock, [2 * B] * 5)
    assert seen[-2] == 32 and seen[-1] == 20
    # a cut with slow answers holds the limit for HOLD windows of 40 answers (at 20) ...
    after = feed(limit, clock, [B] * 40 * HOLD)
    assert set(after) == {20}
    after = feed(limit, clock, [B] * 40)  # ... then +1 per window, not doubling
    assert after[-2] == 20 and after[-1] == limit.limit == 21


def test_answers_to_requests_admitted_under_an_earlier_limit_are_ignored() -> None:
    clock = Clock()
    limit = fresh(clock, initial=16)
    feed(limit, clock, [B] * 32)  # baseline B; slow start doubles to 32
    assert limit.limit == 32
    early = clock.now - 0.001  # admitted just before that change
    for _ in range(100):  # a burst of very slow answers to requests of the old limit
        limit.on_sample(early, 10 * B, False, 31)
    assert limit.limit == 32  # one decision per window of requests the limit governed


def test_one_burst_of_congestion_cuts_once() -> None:
    clock = Clock()
    limit = fresh(clock, initial=20)
    started = clock.now
    clock.now += B
    seen = []
    for _ in range(100):  # 100 timeouts of requests admitted together: one signal
        limit.on_sample(started, None, True, 19)
        seen.append(limit.limit)
    # a window with a congestion signal closes after a round trip's worth (20), not 40
    assert seen[18] == 20 and seen[19] == int(20 * BACKOFF)
    assert limit.limit == int(20 * BACKOFF)


def test_the_probe_replaces_the_baseline_and_restores_the_limit() -> None:
    clock = Clock()
    limit = fresh(clock, floor=2, initial=8, probe_interval=30.0)
    feed(limit, clock, [B] * 32)
    # the server's own latency rises for good (another route, a slower disk): 30 ms no-load
    clock.now += 30.0
    before = limit.limit
    # the window that notices the probe is due
    feed(limit, clock, [0.030] * max(MIN_WINDOW, 2 * before))
    assert limit.probing and limit.limit == 2
    feed(limit, clock, [0.030] * PROBE_SAMPLES, inflight=2)
    assert not limit.probing
    assert limit.baseline == pytest.approx(0.030)  # rose: only a probe may raise it
    assert limit.limit >= 2


def test_the_baseline_moves_only_at_probes() -> None:
    clock = Clock()
    limit = fresh(clock)
    feed(limit, clock, [0.010] * 40)  # faster windows: no queue, the limit grows
    assert limit.baseline == pytest.approx(B) and limit.limit > 4
    feed(limit, clock, [0.100] * 50)  # slower windows: a queue, the limit is cut
    assert limit.baseline == pytest.approx(B)


def waves(limit: int, capacity: int) -> list[float]:
    """One window as a server serving ``capacity`` at once answers it when the requests come
    in step (the emulator on a loaded machine did): the first ``capacity`` after one service
    time, the next after two, ..."""
    return [B * (1 + i // capacity) for i in range(limit)]


def test_recorded_waves_hold_the_limit_near_the_capacity() -> None:
    """A server serving 4 at once, answering in waves: the limit settles at the capacity,
    trying one more now and then (at 5, every fifth answer waits a whole wave: a tail of a
    fifth, over TAIL). With the window's lower quartile standing for it, the first wave hid
    the queue from the rule and the limit climbed to 17; with the mean alone (no tail guard)
    it settled between the capacity and twice it."""
    clock = Clock()
    limit = fresh(clock, initial=4, probe_interval=1e9)
    seen: list[int] = []
    for _ in range(200):
        current = limit.limit
        seen += feed(limit, clock, waves(current, 4), inflight=current)
    assert set(seen[-100:]) == {4, 5}
    assert seen[-100:].count(4) >= 75


def test_the_tail_trims_one_request_until_the_limit_is_back() -> None:
    """Slow answers with the mean within the target trim the limit by one; more of them at the
    trimmed limit (stalls of a loaded machine, not a queue) do not trim it further; once the
    limit is back where it was trimmed, a tail trims it again. A cut by the mean starts over."""
    clock = Clock()
    limit = fresh(clock, initial=8, probe_interval=1e9)
    slow = SLOW * B * 1.01
    tail = [B] * 20 + [slow] * 3  # over the tail at its 23rd answer; the mean within the target
    feed(limit, clock, [B] * 32)  # slow start: 16
    assert limit.limit == 16
    assert feed(limit, clock, tail)[-1] == 15
    for _ in range(3):  # tails at 15: no further trim (the hold is renewed; the limit stays)
        assert set(feed(limit, clock, tail)) == {15}
    # HOLD clear windows, then growth back to 16, where a tail trims again
    feed(limit, clock, [B] * 32 * HOLD)
    assert limit.limit == 15
    feed(limit, clock, [B] * 32)
    assert limit.limit == 16
    assert feed(limit, clock, tail)[-1] == 15
    # a cut by the mean (a deep queue: 2 x the baseline) ...
    feed(limit, clock, [2 * B] * 3)
    assert limit.limit == 9  # 7.5 + 15/7
    # ... after which a tail may trim again
    assert feed(limit, clock, tail)[-1] == 8


def test_the_tail_of_an_app_limited_window_trims_nothing() -> None:
    """Fewer than half the limit in flight (a slow input): slow answers are not our queue."""
    clock = Clock()
    limit = fresh(clock, initial=16, probe_interval=1e9)
    slow = SLOW * B * 1.01
    # the window closes at its third slow answer (over its tail) and keeps the limit
    seen = feed(limit, clock, [B] * 20 + [slow] * 3, inflight=4)
    assert set(seen) == {16} and limit.value == 16.0


def test_the_tail_never_trims_below_the_floor() -> None:
    clock = Clock()
    limit = fresh(clock, floor=4, initial=4, probe_interval=1e9)
    slow = SLOW * B * 1.01
    for _ in range(5):
        assert set(feed(limit, clock, [B] * 20 + [slow] * 3)) == {4}
    assert limit.value == 4.0


def test_slow_answers_released_together_count_once() -> None:
    """A stall delays every answer in flight at once: 8 slow answers released together are
    one slow event, within the tail of a window of 32; spread a round trip apart, five are
    over the tail of a window of 64 (4)."""
    clock = Clock()
    limit = fresh(clock, initial=16, probe_interval=1e9)
    slow = SLOW * B * 1.01
    started = clock.now
    clock.now += slow
    for _ in range(8):  # admitted together, answered together after a stall of ours
        limit.on_sample(started, slow, False, 15)
    feed(limit, clock, [B] * 24)
    assert limit.limit == 32  # one slow event in 32, the mean within the target: doubled
    feed(limit, clock, [B] * 59 + [slow] * 5)
    assert limit.limit == 31  # five slow answers a round trip apart: one fewer


RECORDED = json.loads((Path(__file__).parent / "fixtures" / "adaptive_rtts.json").read_text())


def recorded_windows(concurrency: int) -> list[Window]:
    """The recorded answers at ``concurrency`` in windows as the limiter takes them."""
    answers = [rtt for rtt, _ in RECORDED["runs"][str(concurrency)]]
    size = max(MIN_WINDOW, 2 * concurrency)
    return [
        Window(rtt=window_rtt(answers[i : i + size]), dropped=False, inflight=concurrency)
        for i in range(0, len(answers) - size + 1, size)
    ]


@pytest.mark.parametrize(
    ("concurrency", "lowest", "highest"),
    [
        # the capacity: grow or hold (one window of this loaded recording reads 1.17 x the
        # baseline, exactly the target, and holds at 3.999)
        (4, 3.99, 5.0),
        # one more: part of each round trip is outside the server, so 5 fill a server serving
        # four without much of a queue: hold, or grow slowly (by under half a request)
        (5, 5.0, 5.5),
        # twice the capacity, a full wave waiting: every window cuts, to about the capacity
        # plus the target
        (8, 4.5, 6.0),
    ],
)
def test_recorded_round_trips_at_capacity_4(
    concurrency: int, lowest: float, highest: float
) -> None:
    """Round trips recorded against the emulator (capacity 4 x 20 ms, its own process, a loaded
    machine): the baseline is the median of the answers at concurrency 1 (24 of them, about
    what a probe takes); each window of the runs at 4, 5 and 8 goes through the rule."""
    baseline = median([rtt for rtt, _ in RECORDED["runs"]["1"][:PROBE_SAMPLES]])
    windows = recorded_windows(concurrency)
    assert len(windows) >= 3
    after = [
        next_limit(float(concurrency), w, baseline, floor=1, ceiling=64, slow_start=False)[0]
        for w in windows
    ]
    assert lowest <= min(after) and max(after) <= highest
    if concurrency == 8:
        assert max(after) < 8.0


@pytest.mark.parametrize(
    ("rtts", "expected"),
    [
        ([B], B),
        ([B, 3 * B], 2 * B),
        ([B] * 9 + [9 * B], B),  # one in ten dropped: a stall of ours
        ([B, B, B, 9 * B], 3 * B),  # fewer than ten: nothing dropped
        ([B] * 4 + [2 * B] * 6, 14 / 9 * B),  # a queue shows
    ],
)
def test_window_rtt_drops_the_slowest_tenth(rtts: list[float], expected: float) -> None:
    assert window_rtt(rtts) == pytest.approx(expected, rel=1e-3)


def test_adaptive_limit_validates_floor_and_ceiling() -> None:
    with pytest.raises(ValueError, match="floor"):
        AdaptiveLimit(floor=0, ceiling=4, initial=2)
    with pytest.raises(ValueError, match="floor"):
        AdaptiveLimit(floor=5, ceiling=4, initial=2)
    clock = Clock()
    assert fresh(clock, floor=3, initial=1).limit == 3


# -- a simulated FIFO server ---------------------------------------------------------------------


def simulate(
    capacity: Callable[[float], int],
    duration: float,
    *,
    service: float = B,
    stall: float = 0.0,
    floor: int = 1,
    ceiling: int = 64,
    outside: float = 0.0,
) -> list[tuple[float, int, float, float]]:
    """A closed loop: as many requests as the limit allows, served first come first served by
    ``capacity(t)`` workers taking ``service`` (± 20%, seeded) each, plus up to ``stall``
    seconds of client-side delay on a tenth of the answers (a loaded machine; seeded), plus
    ``outside`` seconds on every round trip that no queue causes (the network, parsing, the
    client's own work: half on the way there, half back).
    Returns ``(time, limit, rtt, server latency)`` per answer.
    """
    clock = Clock()
    rng = random.Random(7)
    limit = AdaptiveLimit(floor=floor, ceiling=ceiling, initial=4, clock=clock)
    free: list[float] = []  # when each worker is next free
    outstanding: list[tuple[float, float, float]] = []  # (answered at, admitted at, at server)
    seen: list[tuple[float, int, float, float]] = []
    while clock.now < duration:
        workers = capacity(clock.now)
        while len(free) < workers:
            free.append(clock.now)
        while len(free) > workers:
            free.remove(max(free))  # that worker finishes its request and leaves
        while len(outstanding) < limit.limit:
            arrives = clock.now + outside / 2
            i = free.index(min(free))
            done = max(arrives, free[i]) + service * rng.uniform(0.8, 1.2)
            free[i] = done
            extra = stall * rng.random() if rng.random() < 0.1 else 0.0
            heapq.heappush(outstanding, (done + outside / 2 + extra, clock.now, done - arrives))
        answered, admitted, at_server = heapq.heappop(outstanding)
        clock.now = answered
        limit.on_sample(admitted, answered - admitted, False, len(outstanding))
        assert floor <= limit.limit <= ceiling
        seen.append((answered, limit.limit, answered - admitted, at_server))
    return seen


def _between(seen: list[tuple[float, int, float, float]], lo: float, hi: float) -> list[float]:
    return [rtt for t, _, rtt, _ in seen if lo <= t < hi]


def _server_between(
    seen: list[tuple[float, int, float, float]], lo: float, hi: float
) -> list[float]:
    return [latency for t, _, _, latency in seen if lo <= t < hi]


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


@pytest.mark.parametrize("stall", [0.0, 0.010])
def test_simulated_capacity_8_full_throughput_and_a_short_queue(stall: float) -> None:
    seen = simulate(lambda t: 8, 20.0, stall=stall)
    rtts = _between(seen, 2.0, 20.0)
    assert len(rtts) / 18.0 >= 0.9 * 400  # the server's ceiling: 8 / 20 ms
    assert _p95(rtts) <= 2 * B + stall
    assert max(limit for t, limit, *_ in seen if t >= 2.0) <= 16


def test_simulated_capacity_drop_and_return() -> None:
    def capacity(t: float) -> int:
        return 4 if 10.0 <= t < 20.0 else 16

    seen = simulate(capacity, 30.0)
    assert len(_between(seen, 5.0, 10.0)) / 5.0 >= 0.9 * 800
    # within a second of the drop, the latency is back under twice the service time
    assert _p95(_between(seen, 11.0, 20.0)) <= 2 * B
    assert len(_between(seen, 11.0, 20.0)) / 9.0 >= 0.9 * 200
    # and the throughput comes back when the capacity does
    assert len(_between(seen, 22.0, 30.0)) / 8.0 >= 0.9 * 800


@pytest.mark.parametrize("outside", [0.002, 0.005, 0.010])
def test_simulated_round_trips_with_a_part_no_queue_causes(outside: float) -> None:
    """Part of every round trip is the network and the client (a quarter to a half of the
    service time here): the limit must rise above the capacity to keep the server busy, yet keep
    the latency the SERVER measures (its queue) under twice the service time, steady and after
    a drop from 16 to 4."""
    seen = simulate(lambda t: 8, 20.0, outside=outside)
    assert len(_server_between(seen, 2.0, 20.0)) / 18.0 >= 0.9 * 400
    assert _p95(_server_between(seen, 2.0, 20.0)) <= 2 * B

    seen = simulate(lambda t: 4 if 10.0 <= t < 20.0 else 16, 30.0, outside=outside)
    during = _server_between(seen, 11.0, 20.0)
    assert _p95(during) <= 2 * B
    assert len(during) / 9.0 >= 0.9 * 200
    assert len(_server_between(seen, 22.0, 30.0)) / 8.0 >= 0.9 * 800


@pytest.mark.parametrize("outside", [0.0, 0.002])
def test_simulated_drop_the_tail_guard_holds_the_capacity(outside: float) -> None:
    """After a drop from 16 to 4 the limit stays at 4 most of the time, trying 5 now and then,
    and the server's p95 stays at 1.5 x the service time. Without the tail guard (the mean
    alone) this simulator held 4 half the time at no outside time and an eighth of it at 2 ms
    (p95 31 and 33 ms)."""
    seen = simulate(lambda t: 4 if 10.0 <= t < 20.0 else 16, 30.0, outside=outside)
    limits = [limit for t, limit, *_ in seen if 11.0 <= t < 20.0]
    assert limits.count(4) >= 0.7 * len(limits)
    assert _p95(_server_between(seen, 11.0, 20.0)) <= 1.5 * B


def test_simulated_limit_stays_within_floor_and_ceiling() -> None:
    seen = simulate(lambda t: 1 if t < 5 else 200, 10.0, floor=3, ceiling=12)
    limits = [limit for _, limit, *_ in seen]
    assert min(limits) == 3 and max(limits) == 12


# -- the gate and the governor -------------------------------------------------------------------


async def test_gate_cut_applies_to_waiters_and_raise_admits_them_at_once() -> None:
    gate = ConcurrencyGate(2)
    await gate.acquire()
    await gate.acquire()
    admitted: list[int] = []

    async def waiter(i: int) -> None:
        await gate.acquire()
        admitted.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(4)]
    await asyncio.sleep(0)
    assert gate.waiting == 4
    gate.limit = 1  # a cut: two holders, limit 1
    gate.release()
    await asyncio.sleep(0)
    assert admitted == [] and gate.held == 1  # still at the new limit: nobody admitted
    gate.limit = 4  # a raise: three admitted at once, in order
    await asyncio.sleep(0)
    assert admitted == [0, 1, 2] and gate.held == 4
    for _ in range(4):
        gate.release()
    await asyncio.gather(*tasks)
    assert admitted == [0, 1, 2, 3] and gate.held == 1


async def test_gate_cancelled_waiters_take_nothing() -> None:
    gate = ConcurrencyGate(1)
    await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    gate.release()  # the slot goes to the second waiter, not the cancelled one
    await second
    assert gate.held == 1 and gate.waiting == 0
    # handed a slot and cancelled before it ran: the slot is passed on
    third = asyncio.create_task(gate.acquire())
    fourth = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # hands the slot to third
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    await fourth
    assert gate.held == 1 and gate.waiting == 0


async def test_governor_fixed_by_default_and_adaptive_on_request() -> None:
    clock = Clock()
    fixed = Governor(Limits(max_concurrency=5), clock=clock)
    assert fixed.concurrency_limit == 5 and fixed.baseline_rtt is None and fixed.adaptive is None
    governor = Governor(
        Limits(max_concurrency=50, min_concurrency=2, adaptive_concurrency=True), clock=clock
    )
    assert governor.concurrency_limit == 2  # the first probe, at the floor
    for _ in range(PROBE_SAMPLES):
        probe = await governor.acquire()
        clock.now += B
        governor.release(probe, Signal.OK)
    assert governor.concurrency_limit == 4  # the initial adaptive limit
    for _ in range(MIN_WINDOW // 4):  # one window: rounds of 4 at once
        starts = [await governor.acquire() for _ in range(4)]
        clock.now += B
        for started in starts:
            governor.release(started, Signal.OK)
    assert governor.baseline_rtt == pytest.approx(B)
    assert governor.concurrency_limit == 8  # slow start
    for _ in range(MIN_WINDOW):
        one = await governor.acquire()
        clock.now += B
        governor.release(one, Signal.OK)  # one at a time: app-limited, no change
    assert governor.concurrency_limit == 8
    started = await governor.acquire()
    governor.release(started, Signal.NEUTRAL)  # cancelled, or refused as too large
    assert governor.concurrency_limit == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_concurrency": 0}, "min_concurrency"),
        ({"min_concurrency": 20, "max_concurrency": 10}, "must not exceed"),
        ({"probe_interval": 0}, "probe_interval"),
    ],
)
def test_limits_validate_adaptive_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)  # type: ignore[arg-type]


async def test_loop_lag_measures_our_own_stalls_and_stops_when_idle() -> None:
    busy = [True]
    lag = LoopLag(lambda: busy[0])
    lag.start()
    lag.start()  # idempotent: one timer
    time.sleep(0.06)  # the process stalls: the timer due in 10 ms fires >= 50 ms late
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert lag.value >= 0.25 * 0.05
    busy[0] = False
    for _ in range(200):
        if not lag._running:
            break
        await asyncio.sleep(0.005)
    assert not lag._running


def test_own_wait_is_the_time_spent_on_the_answers_before_in_the_same_wave() -> None:
    wall, cpu = Clock(), Clock()
    own = OwnWait(wall=wall, cpu=cpu)
    wall.now = 1.0
    assert own(64) == 0.0  # the loop was idle before: this answer starts a wave
    # a wave: the loop busy throughout, each answer taking 1 ms to handle
    waits = []
    for _ in range(4):
        wall.now += 0.001
        cpu.now += 0.001
        waits.append(own(64))
    # the second answer waited for the first (released at 1.000): measured from the wave's
    # first release to the previous one, so the first answer's own handling is not counted
    assert waits == pytest.approx([0.0, 0.001, 0.002, 0.003])
    # 20 ms idle (the CPU clock hardly moved): the next answer starts a new wave
    wall.now += 0.020
    cpu.now += 0.001
    assert own(64) == 0.0
    wall.now += 0.001
    cpu.now += 0.001
    assert own(64) == 0.0  # the new wave's first release to the previous one: nothing yet
    wall.now += 0.001
    cpu.now += 0.001
    assert own(64) == pytest.approx(0.001)


def test_own_wait_counts_a_preempted_process_as_no_wait() -> None:
    """The process waited for a CPU (wall time moved, its CPU clock less than 80% of it): that
    is LoopLag's to measure; OwnWait errs low and starts a new wave."""
    wall, cpu = Clock(), Clock()
    own = OwnWait(wall=wall, cpu=cpu)
    wall.now = 1.0
    own(64)
    wall.now += 0.001
    cpu.now += 0.001
    own(64)
    wall.now += 0.010
    cpu.now += 0.007  # busy 70% of the time: not throughout
    assert own(64) == 0.0
    wall.now += 0.001
    cpu.now += 0.0008  # 80%: busy
    assert own(64) == pytest.approx(0.0)
    wall.now += 0.001
    cpu.now += 0.001
    assert own(64) == pytest.approx(0.001)


def test_own_wait_counts_at_most_limit_minus_one_answers_back() -> None:
    """A client busy without a pause: with 3 in flight, at most 2 answers can have been ready
    before this one, so the wait stays at one answer's handling instead of growing."""
    wall, cpu = Clock(), Clock()
    own = OwnWait(wall=wall, cpu=cpu)
    wall.now = 1.0
    waits = []
    for _ in range(50):
        wall.now += 0.001
        cpu.now += 0.001
        waits.append(own(3))
    assert waits[:3] == pytest.approx([0.0, 0.0, 0.001])
    assert max(waits) == pytest.approx(0.001)
    assert own(1) == 0.0  # one in flight: nothing can have been ahead


# -- the tail guard, as a table ------------------------------------------------------------------


def _tail_window(slow: float, inflight: int = 8, dropped: bool = False) -> Window:
    return Window(rtt=B, dropped=dropped, inflight=inflight, slow=slow)


@pytest.mark.parametrize(
    ("limit", "proposed", "window", "guard", "expected"),
    [
        # no tail: the mean's proposal stands, the hold counts down
        (8.0, 9.0, _tail_window(0.0), Guard(), (9.0, Guard(0, 0))),
        (8.0, 8.0, _tail_window(0.0), Guard(3, 7), (8.0, Guard(2, 7))),
        # a tail at 8 in flight: one fewer, held, and the level noted
        (8.0, 9.0, _tail_window(0.2), Guard(), (7.0, Guard(HOLD, 7))),
        # a tail again at the trimmed level: held, not cut further
        (7.0, 7.5, _tail_window(0.2, inflight=7), Guard(2, 7), (7.5, Guard(HOLD, 7))),
        # back above the trimmed level: trimmed once more
        (9.0, 9.0, _tail_window(0.2, inflight=9), Guard(0, 7), (8.0, Guard(HOLD, 8))),
        # fewer than half the limit in flight: the tail is not our queue
        (8.0, 8.0, _tail_window(0.5, inflight=3), Guard(2, 0), (8.0, Guard(1, 0))),
        # a congestion signal in the window: the mean's cut is the answer
        (8.0, 8.0, _tail_window(0.5, dropped=True), Guard(), (8.0, Guard(0, 0))),
        # a cut by the mean stands; with a tail it holds; the trimmed level is forgotten
        (8.0, 5.0, _tail_window(0.2), Guard(0, 7), (5.0, Guard(HOLD, 0))),
        (8.0, 5.0, _tail_window(0.0), Guard(2, 7), (5.0, Guard(2, 0))),
        # never below the floor
        (3.0, 3.0, _tail_window(0.5, inflight=3), Guard(), (3.0, Guard(HOLD, 3))),
    ],
)
def test_tail_guard_table(
    limit: float, proposed: float, window: Window, guard: Guard, expected: tuple[float, Guard]
) -> None:
    assert tail_guard(limit, proposed, window, guard, floor=3) == expected
