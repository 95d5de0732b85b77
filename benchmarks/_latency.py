"""(2) Latency-bound: a server that answers after ``latency`` seconds; throughput vs the
Little's-law ceiling ``concurrency / latency`` at rising concurrency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from benchmarks._config import TOKEN, Sizes
from benchmarks._contenders import Run, aiohttp_loop, httpx_loop, import_url, sdk
from benchmarks._payloads import contacts
from benchmarks._procs import fast_server
from benchmarks._stats import Contender, Log, interleave, rates, ratio, summarize


async def run(sizes: Sizes, log: Log) -> dict[str, Any]:
    latency = sizes.latency
    points: list[dict[str, Any]] = []
    with fast_server(latency=latency) as server:
        base = server.url + "/rest/v1.0"
        rtt = await round_trip(base)
        log(f"  one request at a time: {rtt * 1000:.2f} ms round trip (nominal {latency * 1000:g})")
        for c in sizes.latency_concurrencies:
            ceiling = c / latency
            log(f"  concurrency {c} (ceiling {ceiling:.0f}/s)")
            data = list(contacts(c * sizes.latency_rounds, f"latency{c}"))
            few = data[: c * sizes.latency_httpx_rounds]
            contenders: dict[str, Contender] = {
                "sdk": _bind(sdk, base, data, c),
                "aiohttp": _bind(aiohttp_loop, base, data, c),
            }
            if c in sizes.latency_httpx_at:
                contenders["httpx"] = _bind(httpx_loop, base, few, c)
            runs = await interleave(contenders, sizes.reps, log=log)
            point: dict[str, Any] = {
                "concurrency": c,
                "ceiling": ceiling,
                "practical_ceiling": c / rtt,
                "contenders": {},
            }
            for name, contender_runs in runs.items():
                summary = summarize(contender_runs)
                summary["vs_ceiling"] = summary["rate"]["median"] / ceiling
                summary["vs_practical_ceiling"] = summary["rate"]["median"] * rtt / c
                summary["cpu_bound_max"] = 1e6 / summary["cpu_us"]["median"]
                point["contenders"][name] = summary
            point["sdk/aiohttp"] = ratio(rates(runs["sdk"]), rates(runs["aiohttp"]))
            points.append(point)
    return {"latency": latency, "round_trip_at_concurrency_1": rtt, "points": points}


async def round_trip(base: str, count: int = 100) -> float:
    """Median seconds of one import request when only one is in flight (plain aiohttp): the
    server's real added latency (asyncio timers fire late, up to a millisecond) plus loopback."""
    url = import_url(base)
    samples = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        for i in range(count):
            t0 = time.perf_counter()
            async with session.post(url, json={"UserData": f"rtt-{i}", "Name": "x"}) as resp:
                await resp.read()
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples[5:])


def _bind(
    fn: Callable[..., Any], base: str, data: list[dict[str, Any]], c: int
) -> Callable[[], Any]:
    async def contender() -> Run:
        result: Run = await fn(base, TOKEN, data, c)
        return result

    return contender
