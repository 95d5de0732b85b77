"""(1) Overhead: the SDK's bulk import against the best hand-written loop, fast server.

Hand loops: ``naive`` (one task per contact up front, a semaphore, ``gather``), ``pool`` (a fixed
pool of workers pulling from one iterator, stdlib json), ``pool_orjson`` (the same with
orjson: issue 16's baseline) and ``pool_bytes`` (the same with the body pre-encoded, the URL
parsed once and the answer decoded without ``resp.json()``). Every SDK ratio is taken against
the BEST hand loop of the run (highest median throughput; its CPU per contact is the CPU
baseline), and against ``pool_orjson``. SDK rows: default options, the streaming
options (:data:`STREAMING`), a checkpoint, and default options on uvloop (against the best pool
loop on uvloop, too). All of them interleave in one run.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks._config import TOKEN, Sizes
from benchmarks._contenders import (
    STREAMING,
    Run,
    aiohttp_loop,
    httpx_loop,
    pool_bytes,
    pool_loop,
    pool_orjson,
    sdk,
    sdk_checkpoint,
)
from benchmarks._payloads import contacts
from benchmarks._procs import fast_server
from benchmarks._stats import Log, cpus, interleave, rates, ratio, summarize

HAND = ("naive", "pool", "pool_orjson", "pool_bytes")
SDK_ROWS = ("sdk", "sdk_streaming", "sdk_checkpoint")


def _uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


async def on_uvloop(make: Callable[[], Awaitable[Run]]) -> Run:
    """Run one contender in a fresh uvloop loop on a worker thread (this loop waits idle,
    so the process CPU the contender measures is its own)."""
    import uvloop

    def run() -> Run:
        async def main() -> Run:
            return await make()

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())

    return await asyncio.to_thread(run)


def best_hand(runs: dict[str, list[Run]], names: tuple[str, ...]) -> str:
    """The hand loop with the highest median throughput."""
    return max(names, key=lambda n: statistics.median(rates(runs[n])))


def _versus(runs: dict[str, list[Run]], a: str, b: str) -> dict[str, Any]:
    return {
        "throughput": ratio(rates(runs[a]), rates(runs[b])),
        "cpu_per_contact": ratio(cpus(runs[a]), cpus(runs[b])),
    }


async def run(sizes: Sizes, log: Log) -> dict[str, Any]:
    c = sizes.concurrency
    data = list(contacts(sizes.overhead_n, "overhead"))
    few = data[: sizes.overhead_httpx_n]
    uv = _uvloop_available()
    with fast_server() as server:
        base = server.url + "/rest/v1.0"
        contenders: dict[str, Callable[[], Awaitable[Run]]] = {
            "naive": lambda: aiohttp_loop(base, TOKEN, data, c),
            "pool": lambda: pool_loop(base, TOKEN, data, c),
            "pool_orjson": lambda: pool_orjson(base, TOKEN, data, c),
            "pool_bytes": lambda: pool_bytes(base, TOKEN, data, c),
            "sdk": lambda: sdk(base, TOKEN, data, c),
            "sdk_streaming": lambda: sdk(base, TOKEN, data, c, **STREAMING),
            "sdk_checkpoint": lambda: sdk_checkpoint(base, TOKEN, data, c),
            "httpx": lambda: httpx_loop(base, TOKEN, few, c),
        }
        if uv:
            contenders["pool_orjson_uvloop"] = lambda: on_uvloop(
                lambda: pool_orjson(base, TOKEN, data, c)
            )
            contenders["sdk_uvloop"] = lambda: on_uvloop(lambda: sdk(base, TOKEN, data, c))
        runs = await interleave(contenders, sizes.reps, log=log)
    best = best_hand(runs, HAND)
    ratios: dict[str, Any] = {f"{name}/{best}": _versus(runs, name, best) for name in SDK_ROWS}
    for name in SDK_ROWS:  # issue 16's baseline, whichever loop was best
        ratios[f"{name}/pool_orjson"] = _versus(runs, name, "pool_orjson")
    ratios["sdk/naive"] = _versus(runs, "sdk", "naive")  # the baseline of earlier runs
    if uv:
        ratios[f"sdk_uvloop/{best}"] = _versus(runs, "sdk_uvloop", best)
        ratios["sdk_uvloop/pool_orjson_uvloop"] = _versus(runs, "sdk_uvloop", "pool_orjson_uvloop")
    ratios["sdk/httpx"] = _versus(runs, "sdk", "httpx")
    return {
        "concurrency": c,
        "best_hand_loop": best,
        "uvloop": uv,
        "contenders": {name: summarize(r) for name, r in runs.items()},
        "ratios": ratios,
    }
