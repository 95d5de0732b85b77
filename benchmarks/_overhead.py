"""(1) Overhead: the SDK's bulk import vs hand-written aiohttp and httpx loops, fast server."""

from __future__ import annotations

from typing import Any

from benchmarks._config import TOKEN, Sizes
from benchmarks._contenders import aiohttp_loop, httpx_loop, sdk
from benchmarks._payloads import contacts
from benchmarks._procs import fast_server
from benchmarks._stats import Log, cpus, interleave, rates, ratio, summarize


async def run(sizes: Sizes, log: Log) -> dict[str, Any]:
    c = sizes.concurrency
    data = list(contacts(sizes.overhead_n, "overhead"))
    few = data[: sizes.overhead_httpx_n]
    with fast_server() as server:
        base = server.url + "/rest/v1.0"
        runs = await interleave(
            {
                "sdk": lambda: sdk(base, TOKEN, data, c),
                "aiohttp": lambda: aiohttp_loop(base, TOKEN, data, c),
                "httpx": lambda: httpx_loop(base, TOKEN, few, c),
            },
            sizes.reps,
            log=log,
        )
    sdk_runs, aio_runs, hx_runs = runs["sdk"], runs["aiohttp"], runs["httpx"]
    return {
        "concurrency": c,
        "contenders": {name: summarize(r) for name, r in runs.items()},
        "ratios": {
            "sdk/aiohttp": {
                "throughput": ratio(rates(sdk_runs), rates(aio_runs)),
                "cpu_per_contact": ratio(cpus(sdk_runs), cpus(aio_runs)),
            },
            "sdk/httpx": {
                "throughput": ratio(rates(sdk_runs), rates(hx_runs)),
                "cpu_per_contact": ratio(cpus(sdk_runs), cpus(hx_runs)),
            },
        },
    }
