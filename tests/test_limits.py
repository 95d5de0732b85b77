"""The governor: start spacing, no burst, Retry-After for everyone, adaptive rate; fake clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from dialler_async import Limits
from dialler_async._limits import Governor, RateLimiter, check_concurrency, check_rate

from .conftest import FakeClock


def max_in_window(times: list[float], window: float = 1.0) -> int:
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def starts(limiter: RateLimiter, clock: FakeClock, n: int) -> list[float]:
    out = []
    for _ in range(n):
        await limiter.acquire()
        out.append(clock())
    return out


async def test_no_burst_at_start_and_exact_spacing(clock: FakeClock) -> None:
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)
    times = await starts(limiter, clock, 50)
    assert times[0] == 1000.0  # the first start is not delayed
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g == pytest.approx(0.1) for g in gaps)
    assert max_in_window(times) <= 10 + 1
    assert (len(times) - 1) / (times[-1] - times[0]) == pytest.approx(10.0)


async def test_concurrent_acquirers_get_distinct_slots(clock: FakeClock) -> None:
    limiter = RateLimiter(20.0, clock=clock, sleep=clock.sleep)
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        times.append(clock())

    await asyncio.gather(*(one() for _ in range(20)))
    assert sorted(times) == pytest.approx([1000.0 + i / 20 for i in range(20)])


async def test_margin_stretches_the_spacing(clock: FakeClock) -> None:
    limiter = RateLimiter(100.0, margin=0.01, clock=clock, sleep=clock.sleep)
    times = await starts(limiter, clock, 101)
    assert times[-1] - times[0] == pytest.approx(1.01)  # 100 gaps of 10.1 ms
    assert max_in_window(times) == 100  # not 101: jitter cannot push the server over
    assert limiter.rate == pytest.approx(100.0)


async def test_unlimited_never_sleeps(clock: FakeClock) -> None:
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    await starts(limiter, clock, 100)
    assert clock.sleeps == []


async def test_pause_until_holds_everyone(clock: FakeClock) -> None:
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    limiter.pause_until(1005.0)
    times = await starts(limiter, clock, 3)
    assert times[0] == 1005.0 and clock.sleeps[0] == 5.0


async def test_cancelled_waiter_gives_its_slot_back(clock: FakeClock) -> None:
    gate = asyncio.Event()

    async def blocking_sleep(delay: float) -> None:
        await gate.wait()

    limiter = RateLimiter(1.0, clock=clock, sleep=blocking_sleep)
    await limiter.acquire()  # slot 1000
    waiter = asyncio.create_task(limiter.acquire())  # slot 1001, sleeping
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    clock.now = 1001.0
    # The cancelled waiter took nothing: the 1001 slot is free now, without sleeping.
    await asyncio.wait_for(limiter.acquire(), timeout=5)


async def test_waiters_queued_before_a_pause_honour_it(clock: FakeClock) -> None:
    limiter = RateLimiter(10.0, clock=clock, sleep=clock.sleep)
    times: list[float] = []

    async def start() -> None:
        await limiter.acquire()
        times.append(clock())

    tasks = [asyncio.create_task(start()) for _ in range(8)]
    while len(times) < 2:
        await asyncio.sleep(0)
    limiter.pause_until(clock() + 2.0)  # a 429 with Retry-After: 2 arrives now
    paused_at = clock()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert all(t >= paused_at + 2.0 for t in times[2:]), times


async def test_waiters_queued_before_a_rate_cut_start_at_the_new_rate(clock: FakeClock) -> None:
    limiter = RateLimiter(100.0, clock=clock, sleep=clock.sleep)
    times: list[float] = []

    async def start() -> None:
        await limiter.acquire()
        times.append(clock())

    tasks = [asyncio.create_task(start()) for _ in range(8)]
    while len(times) < 2:
        await asyncio.sleep(0)
    limiter.rate = 2.0
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    gaps = [b - a for a, b in itertools.pairwise(times[2:])]
    assert gaps and all(g >= 0.5 - 1e-9 for g in gaps), gaps


async def test_waiters_start_in_arrival_order(clock: FakeClock) -> None:
    limiter = RateLimiter(50.0, clock=clock, sleep=clock.sleep)
    order: list[int] = []

    async def start(n: int) -> None:
        await limiter.acquire()
        order.append(n)

    await asyncio.wait_for(asyncio.gather(*(start(n) for n in range(20))), timeout=5)
    assert order == list(range(20))


async def test_a_429_storm_beyond_the_deadline_fails_fast_with_one_probe(
    clock: FakeClock,
) -> None:
    governor = Governor(Limits(), clock=clock, sleep=clock.sleep)
    assert governor.throttle_storm(60.0, probe_every=5.0) is None
    governor.on_throttled(None)
    clock.now += 30
    assert governor.throttle_storm(60.0, probe_every=5.0) is None  # within the deadline
    clock.now += 31
    assert governor.throttle_storm(60.0, probe_every=5.0) is None  # the probe goes out
    assert governor.throttle_storm(60.0, probe_every=5.0) == pytest.approx(61.0)
    clock.now += 5
    assert governor.throttle_storm(60.0, probe_every=5.0) is None  # the next probe
    governor.on_success()  # the storm is over
    assert governor.throttle_storm(60.0, probe_every=5.0) is None
    assert governor.throttle_storm(None, probe_every=5.0) is None


async def test_adaptive_rate_halves_on_429_and_recovers(clock: FakeClock) -> None:
    governor = Governor(Limits(max_per_second=100.0), clock=clock, sleep=clock.sleep)
    governor.on_throttled(retry_after=2.0)
    assert governor.rate == 50.0
    assert governor.limiter._paused_until == clock() + 2.0
    governor.on_throttled(retry_after=None)
    assert governor.rate == 50.0  # answers to requests sent at the old rate: no second cut
    clock.now += 16 / 50  # max_concurrency requests later, at the new rate
    governor.on_throttled(retry_after=None)
    assert governor.rate == 25.0
    assert governor.throttled == 3
    governor.on_success()  # less than a second later: unchanged
    assert governor.rate == 25.0
    rates = []
    for _ in range(10):
        clock.now += 1.0
        governor.on_success()
        rates.append(governor.rate)
    assert rates[:3] == [35.0, 45.0, 55.0]  # +10% of the ceiling a second
    assert rates[-1] == 100.0  # back at the configured ceiling, never above


async def test_adaptive_without_a_configured_rate_cuts_from_the_observed_one(
    clock: FakeClock,
) -> None:
    governor = Governor(Limits(max_concurrency=4), clock=clock, sleep=clock.sleep)
    for _ in range(40):
        governor.release(await governor.acquire())
        clock.now += 0.01  # 100 starts per second
    governor.on_throttled(retry_after=1.0)
    assert governor.rate == pytest.approx(50.0, rel=0.05)  # half of the ~100/s seen lately


async def test_non_adaptive_only_pauses(clock: FakeClock) -> None:
    governor = Governor(Limits(max_per_second=10.0, adaptive=False), clock=clock, sleep=clock.sleep)
    governor.on_throttled(retry_after=1.0)
    assert governor.rate == 10.0


async def test_concurrency_cap(clock: FakeClock) -> None:
    governor = Governor(Limits(max_concurrency=3), clock=clock, sleep=clock.sleep)
    inside = peak = 0

    async def job() -> None:
        nonlocal inside, peak
        started = await governor.acquire()
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0)
        inside -= 1
        governor.release(started)

    await asyncio.gather(*(job() for _ in range(20)))
    assert peak == 3


def test_a_slow_configured_rate_is_never_raised_by_a_429(clock: FakeClock) -> None:
    governor = Governor(Limits(max_per_second=0.5), clock=clock, sleep=clock.sleep)
    governor.on_throttled(None)
    assert governor.rate == 0.5
    for _ in range(30):
        clock.now += 1.0
        governor.on_success()
    assert governor.rate == 0.5


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_per_second": 0}, "max_per_second"),
        ({"max_per_second": -5}, "max_per_second"),
        ({"max_per_second": float("nan")}, "max_per_second"),
        ({"max_per_second": float("inf")}, "max_per_second"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": -1}, "max_concurrency"),
        ({"max_concurrency": 2.5}, "max_concurrency"),
        ({"min_per_second": 0}, "min_per_second"),
        ({"min_per_second": 2.0, "max_per_second": 1.0}, "must not exceed"),
        ({"recovery": 0}, "recovery"),
        ({"jitter_margin": -0.1}, "jitter_margin"),
    ],
)
def test_limits_validation_names_the_setting(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "4"])
def test_job_concurrency_is_checked(value: object) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        check_concurrency("concurrency", value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -5, float("nan"), float("inf"), "5"])
def test_job_rate_is_checked(value: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        check_rate("rate", value)  # type: ignore[arg-type]
