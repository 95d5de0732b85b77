"""The governor: start spacing, no burst, Retry-After for everyone, adaptive rate; fake clock."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from dialler_async import Limits
from dialler_async._limits import Governor, RateLimiter

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
    assert limiter._next == 1001.0  # the cancelled slot is free again


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
        await governor.acquire()
        governor.release()
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
        await governor.acquire()
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0)
        inside -= 1
        governor.release()

    await asyncio.gather(*(job() for _ in range(20)))
    assert peak == 3


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match="max_per_second"):
        Limits(max_per_second=0)
    with pytest.raises(ValueError, match="max_concurrency"):
        Limits(max_concurrency=0)
