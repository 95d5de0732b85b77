"""One memory measurement in a fresh process (run by ``_memory.py``, not by hand).

``python -m benchmarks._memory_child MODE N BASE_URL CONCURRENCY`` imports N generated
contacts and prints one JSON line: peak RSS (``VmHWM``), RSS before the run, time.

* ``sdk``: ``import_contacts`` over a lazy generator, ``keep_results=False``,
  ``detect_duplicates=False`` (streaming: nothing per contact is kept).
* ``naive``: the contacts as a list, one task per contact, ``asyncio.gather``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import orjson

from benchmarks._config import TOKEN
from benchmarks._contenders import STREAMING, Run, aiohttp_loop, sdk
from benchmarks._payloads import contacts


async def measure(mode: str, n: int, base: str, concurrency: int) -> Run:
    if mode == "sdk":
        return await sdk(base, TOKEN, contacts(n, "memory"), concurrency, **STREAMING)
    if mode == "naive":
        return await aiohttp_loop(base, TOKEN, list(contacts(n, "memory")), concurrency)
    raise SystemExit(f"unknown mode {mode!r}")


def status_bytes(key: str) -> int:
    """``VmHWM`` (peak RSS) or ``VmRSS`` of this process from /proc/self/status, in bytes.

    Not ``ru_maxrss``: on Linux that also counts the parent's RSS at fork time (the memory
    map replaced by exec is folded into it), which would hide everything under ~100 MB.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def main(argv: list[str]) -> int:
    mode, n, base, concurrency = argv[0], int(argv[1]), argv[2], int(argv[3])
    before = status_bytes("VmRSS")
    t0 = time.perf_counter()
    run = asyncio.run(measure(mode, n, base, concurrency))
    wall = time.perf_counter() - t0
    peak = status_bytes("VmHWM")
    print(
        orjson.dumps(
            {
                "mode": mode,
                "n": run.n,
                "ok": run.ok,
                "rss_before_mb": before / 2**20,
                "peak_rss_mb": peak / 2**20,
                "elapsed": wall,
                "rate": run.rate,
            }
        ).decode(),
        flush=True,
    )
    return 0 if run.ok == n else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
