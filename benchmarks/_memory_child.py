"""One memory measurement in a fresh process (run by ``_memory.py``, not by hand).

``python -m benchmarks._memory_child MODE N BASE_URL CONCURRENCY`` imports N generated
contacts and prints one JSON line: peak RSS (``VmHWM``), RSS before the run, time.

* ``sdk``: ``import_contacts`` over a lazy generator, ``keep_results=False`` and every other
  option at its default (``detect_duplicates`` on: its compact set is part of the measure).
* ``naive``: the contacts as a list, one task per contact, ``asyncio.gather``.
* ``failures``: N lock requests answered 404 with a 1 MiB body each, by a server in this
  process; prints the memory the account keeps per kept failure (traced allocations held by
  the result, so the server's own memory is not counted).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import tracemalloc
from pathlib import Path

import orjson
from aiohttp import web

from benchmarks._config import TOKEN
from benchmarks._contenders import Run, aiohttp_loop, sdk
from benchmarks._payloads import contacts
from dialler_async import DiallerClient, Limits


async def measure(mode: str, n: int, base: str, concurrency: int) -> Run:
    if mode == "sdk":
        return await sdk(base, TOKEN, contacts(n, "memory"), concurrency, keep_results=False)
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


async def kept_failures(n: int, concurrency: int) -> dict[str, float]:
    """Bytes the account keeps alive per failure whose answer carried a 1 MiB body."""
    body = b'{"status": 404, "error": "' + b"x" * (1 << 20) + b'"}'

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_found)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    limits = Limits(max_concurrency=concurrency)
    try:
        async with DiallerClient(
            f"http://127.0.0.1:{port}/rest/v1.0", 1, TOKEN, limits=limits
        ) as client:
            tracemalloc.start()
            result = await client.lock_contacts(ids=range(1, n + 1), keep_results=False)
            gc.collect()
            holding = tracemalloc.get_traced_memory()[0]
            failed = result.failed
            del result
            gc.collect()
            held = holding - tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
    finally:
        await runner.cleanup()
    return {"failures": failed, "bytes_per_failure": held / max(failed, 1)}


def main(argv: list[str]) -> int:
    mode, n, base, concurrency = argv[0], int(argv[1]), argv[2], int(argv[3])
    if mode == "failures":
        print(orjson.dumps(asyncio.run(kept_failures(n, concurrency))).decode(), flush=True)
        return 0
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
