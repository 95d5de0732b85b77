"""(4) Rate accuracy: the SDK with ``Limits(max_per_second=R)`` against the emulator.

First the emulator has no limit: the achieved rate and the most request starts in any
one-second window, as the SERVER saw them (its arrival times) and as the client sent them
(aiohttp's ``on_request_start``, attached to the SDK's session for this benchmark only).
Then the emulator's own limit is set to R: how many 429s it sent, and the rate achieved.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import aiohttp

from benchmarks._config import Sizes
from benchmarks._payloads import CAMPAIGN_ID, contacts
from benchmarks._procs import ServerProcess, emulator
from benchmarks._stats import Log
from dialler_async import DiallerClient, Limits
from dialler_async.emulator._faults import max_in_window

_CONCURRENCY = 16


def _tracer(starts: list[float]) -> aiohttp.TraceConfig:
    async def on_start(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: object
    ) -> None:
        starts.append(time.monotonic())

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    trace.freeze()
    return trace


async def _one(
    server: ServerProcess, rate: float, n: int, server_limit: bool, tag: str
) -> dict[str, Any]:
    server.command("configure", changes={"rate_limit": rate if server_limit else None})
    server.command("reset")
    starts: list[float] = []
    limits = Limits(max_concurrency=_CONCURRENCY, max_per_second=rate)
    async with DiallerClient(server.url, 1, server.token, limits=limits) as client:
        client.transport.session.trace_configs.append(_tracer(starts))
        t0 = time.perf_counter()
        result = await client.import_contacts(
            contacts(n, tag), campaign_id=CAMPAIGN_ID, keep_results=False
        )
        elapsed = time.perf_counter() - t0
    stats = server.command("stats")
    span = (stats["last"] or 0.0) - (stats["first"] or 0.0)
    return {
        "configured": rate,
        "server_limit": rate if server_limit else None,
        "n": n,
        "succeeded": result.succeeded,
        "elapsed": elapsed,
        "achieved_client": n / elapsed,
        "achieved_server": (stats["arrivals"] - 1) / span if span > 0 else 0.0,
        "server_arrivals": stats["arrivals"],
        "max_in_one_second": stats["max_in_one_second"],
        "client_max_in_one_second": max_in_window(starts),
        "throttled_429": stats["throttled"],
        "client_saw_429": result.throttled,
    }


async def run(sizes: Sizes, log: Log) -> dict[str, Any]:
    plan: list[tuple[float, bool]] = [(r, False) for r in sizes.rate_rates]
    plan += [(r, True) for r in sizes.rate_rates]
    found: dict[str, list[dict[str, Any]]] = {}
    with emulator() as server:
        for rep in range(sizes.rate_reps):
            for rate, limited in plan:
                n = round(rate * sizes.rate_seconds)
                key = f"{rate:g}/s" + (" server-limited" if limited else "")
                tag = f"rate-{rep}-{rate:g}-{int(limited)}-{time.monotonic_ns()}"
                r = await _one(server, rate, n, limited, tag)
                if r["succeeded"] != n:
                    raise RuntimeError(f"rate {key}: {r['succeeded']} of {n} succeeded")
                found.setdefault(key, []).append(r)
                log(
                    f"    rep {rep + 1} {key:<22} achieved {r['achieved_client']:7.1f}/s, "
                    f"max in 1 s: server {r['max_in_one_second']}, client "
                    f"{r['client_max_in_one_second']}; 429s {r['throttled_429']}"
                )
    return {"concurrency": _CONCURRENCY, "seconds": sizes.rate_seconds, "runs": found}
