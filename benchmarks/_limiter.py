"""(7) The rate limiter: aiolimiter's ``AsyncLimiter`` against our ``RateLimiter``, in process.

Why it is here: issue 11 asks to build on aiolimiter where it can meet the pacing rules and to
keep, with a measurement, the reasons where it cannot. Three questions:

* **Accuracy**: 16 tasks take ``4 x R`` starts as fast as the limiter lets them; the most starts
  in any one-second window (must be <= R + 1) and the achieved rate. aiolimiter is configured as
  its own docs show (``AsyncLimiter(R, 1)``) and as the field notes advise for "at most R in
  any window" (``AsyncLimiter(1, 1 / R)``); ours as the client's governor builds it (1% margin)
  and without the margin.
* **Admission CPU**: process CPU per start over the same runs, and per start when nobody waits
  (a limiter far above the rate asked for), which is what every request of an unthrottled job
  pays.
* **A rate cut or pause while callers wait** (what a 429 needs): 8 callers (3 in the quick run)
  queue at 10/s, and
  after the first start the rate is cut to 2/s. aiolimiter has no public way to change its rate
  or to pause; the nearest is to set its public ``max_rate``/``time_period`` attributes, which
  it does not read again (its per-second rate is fixed at construction), so the queued callers
  keep the old pace. Ours re-reads rate and pause whenever a waiter wakes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks._config import Sizes
from benchmarks._stats import Log
from dialler_async._limits import RateLimiter
from dialler_async.emulator._faults import max_in_window

_TASKS = 16
Acquire = Callable[[], Awaitable[Any]]


def _contenders(rate: float) -> dict[str, Callable[[], tuple[Acquire, Callable[[float], None]]]]:
    """name -> factory of (acquire, cut_rate_to). ``cut_rate_to`` does what the library allows."""
    from aiolimiter import AsyncLimiter

    def aiolimiter_default() -> tuple[Acquire, Callable[[float], None]]:
        lim = AsyncLimiter(rate, 1.0)

        def cut(new: float) -> None:
            lim.max_rate = new  # public attribute; the bucket keeps its constructed leak rate

        return lim.acquire, cut

    def aiolimiter_one_token() -> tuple[Acquire, Callable[[float], None]]:
        lim = AsyncLimiter(1, 1.0 / rate)

        def cut(new: float) -> None:
            lim.time_period = 1.0 / new  # likewise not read again

        return lim.acquire, cut

    def ours(margin: float) -> Callable[[], tuple[Acquire, Callable[[float], None]]]:
        def make() -> tuple[Acquire, Callable[[float], None]]:
            lim = RateLimiter(rate, margin=margin)

            def cut(new: float) -> None:
                lim.rate = new

            return lim.acquire, cut

        return make

    return {
        "aiolimiter AsyncLimiter(R, 1)": aiolimiter_default,
        "aiolimiter AsyncLimiter(1, 1/R)": aiolimiter_one_token,
        "RateLimiter(R, margin=0.01) (the SDK's)": ours(0.01),
        "RateLimiter(R, margin=0)": ours(0.0),
    }


async def _starts(acquire: Acquire, n: int) -> tuple[list[float], float]:
    """``n`` starts taken by ``_TASKS`` tasks; their times and the process CPU they cost."""
    times: list[float] = []
    left = [n]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await acquire()
            times.append(time.monotonic())

    c0 = time.process_time()
    async with asyncio.TaskGroup() as tg:
        for _ in range(_TASKS):
            tg.create_task(worker())
    return sorted(times), time.process_time() - c0


async def _uncontended_us(acquire: Acquire, n: int) -> float:
    c0 = time.process_time()
    for _ in range(n):
        await acquire()
    return (time.process_time() - c0) / n * 1e6


async def _cut_while_waiting(
    make: Callable[[], tuple[Acquire, Callable[[float], None]]], callers: int
) -> float:
    """``callers`` queue at 10/s; after the first start the rate is cut to 2/s. Returns the
    mean gap between the later starts (0.5 s if the cut reaches the queued callers, 0.1 s if
    not)."""
    acquire, cut = make()
    times: list[float] = []

    async def one() -> None:
        await acquire()
        times.append(time.monotonic())

    tasks = [asyncio.create_task(one()) for _ in range(callers)]
    while not times:
        await asyncio.sleep(0.001)
    cut(2.0)
    await asyncio.gather(*tasks)
    times.sort()
    later = times[1:]
    return (later[-1] - later[0]) / (len(later) - 1)


async def run(sizes: Sizes, log: Log) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tasks": _TASKS,
        "seconds": sizes.limiter_seconds,
        "reps": sizes.limiter_reps,
        "runs": [],
    }
    plan = [(rep, rate) for rep in range(sizes.limiter_reps) for rate in sizes.limiter_rates]
    for rep, rate in plan:  # contenders interleaved within each repetition
        n = round(rate * sizes.limiter_seconds)
        for name, make in _contenders(rate).items():
            acquire, _ = make()
            times, cpu = await _starts(acquire, n)
            span = times[-1] - times[0]
            row = {
                "limiter": name,
                "rep": rep,
                "rate": rate,
                "starts": n,
                "max_in_one_second": max_in_window(times),
                "max_in_first_second": sum(1 for t in times if t - times[0] < 1.0),
                "achieved": (n - 1) / span if span > 0 else 0.0,
                "cpu_us_per_start": cpu / n * 1e6,
            }
            out["runs"].append(row)
            log(
                f"    {name:<40} R={rate:g}: max in 1 s {row['max_in_one_second']}, "
                f"achieved {row['achieved']:.1f}/s, {row['cpu_us_per_start']:.1f} µs/start"
            )
    free: dict[str, float] = {}
    cut: dict[str, float] = {}
    for name, make in _contenders(1e9).items():
        free[name] = await _uncontended_us(make()[0], sizes.limiter_uncontended_n)
    for name, make in _contenders(10.0).items():
        cut[name] = await _cut_while_waiting(make, sizes.limiter_cut_callers)
        log(
            f"    {name:<40} uncontended {free[name]:.2f} µs/start; after a cut to 2/s "
            f"the queued callers start {cut[name]:.2f} s apart"
        )
    out["uncontended_us_per_start"] = free
    out["gap_after_cut_to_2_per_s"] = cut
    return out
