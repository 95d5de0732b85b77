"""Profiles of the SDK's bulk import (default options) and of the best hand loop, fast server.

cProfile inflates every function call, so its absolute µs are higher than unprofiled; use them
to rank. pyinstrument (a sampling profiler, where installed) distorts less and shows the call
tree. Listings go to ``results/profile_sdk.txt``, ``profile_pool_orjson.txt`` (cProfile) and
``profile_sdk_pyinstrument.txt`` (pyinstrument).
"""

from __future__ import annotations

import cProfile
import io
import pstats
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks._config import TOKEN, Sizes
from benchmarks._contenders import Run, pool_orjson, sdk
from benchmarks._payloads import contacts
from benchmarks._procs import fast_server
from benchmarks._stats import Log


def _rows(stats: pstats.Stats, n: int, where: str, key: int, limit: int) -> list[dict[str, Any]]:
    """The top ``limit`` functions (file containing ``where``) by tottime (key 2) or cumtime
    (key 3), in µs per contact."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in table.items():
        if where not in filename:
            continue
        short = filename.split("site-packages/")[-1].split("/work/main/")[-1]
        rows.append(
            {
                "function": f"{short}:{line}({name})",
                "calls_per_contact": calls / n,
                "tottime_us": tottime / n * 1e6,
                "cumtime_us": cumtime / n * 1e6,
            }
        )
    rows.sort(key=lambda r: -r["tottime_us" if key == 2 else "cumtime_us"])
    return rows[:limit]


async def _profile(
    fn: Callable[[], Awaitable[Run]], n: int, out: Path
) -> tuple[pstats.Stats, float]:
    await fn()  # warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    run = await fn()
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(60)
    stats.sort_stats("cumtime").print_stats(60)
    out.write_text(text.getvalue(), encoding="utf-8")
    return stats, run.cpu_us


async def _sample(fn: Callable[[], Awaitable[Run]], out: Path) -> bool:
    """A pyinstrument profile of one run, as text; False when pyinstrument is missing."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return False
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    await fn()
    profiler.stop()
    out.write_text(profiler.output_text(unicode=True, show_all=False), encoding="utf-8")
    return True


async def run(sizes: Sizes, log: Log, out_dir: Path) -> dict[str, Any]:
    n, c = sizes.profile_n, sizes.concurrency
    data = list(contacts(n, "profile"))
    with fast_server() as server:
        base = server.url + "/rest/v1.0"
        sdk_stats, sdk_us = await _profile(
            lambda: sdk(base, TOKEN, data, c), n, out_dir / "profile_sdk.txt"
        )
        aio_stats, aio_us = await _profile(
            lambda: pool_orjson(base, TOKEN, data, c), n, out_dir / "profile_pool_orjson.txt"
        )
        sampled = await _sample(
            lambda: sdk(base, TOKEN, data, c), out_dir / "profile_sdk_pyinstrument.txt"
        )
    result: dict[str, Any] = {
        "n": n,
        "profiled_cpu_us": {"sdk": sdk_us, "pool_orjson": aio_us},
        "pyinstrument": sampled,
        "sdk_own_by_cumtime": _rows(sdk_stats, n, "dialler_async", 3, 25),
        "sdk_own_by_tottime": _rows(sdk_stats, n, "dialler_async", 2, 15),
        "sdk_all_by_tottime": _rows(sdk_stats, n, "", 2, 25),
        "pool_orjson_all_by_tottime": _rows(aio_stats, n, "", 2, 15),
    }
    log(f"    profiled CPU per contact: SDK {sdk_us:.0f} µs, pool_orjson loop {aio_us:.0f} µs")
    for row in result["sdk_own_by_cumtime"][:12]:
        log(f"    {row['cumtime_us']:8.1f} µs cum {row['tottime_us']:7.1f} own  {row['function']}")
    return result
