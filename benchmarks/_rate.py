"""(4) Rate accuracy: the SDK with ``Limits(max_per_second=R)`` against the emulator.

First the emulator has no limit: the achieved rate and the most request starts in any
one-second window, as the SERVER saw them (its arrival times) and as the client sent them
(aiohttp's ``on_request_start``, attached to the SDK's session for this benchmark only).
Then the emulator's own limit is set to R: how many 429s it sent, and the rate achieved.
Last, the per-job rate under faults: the client has no rate limit, the job has ``rate=R`` and
the emulator answers 30% of requests with 503, so a third more attempts are retries; every
attempt passes the job's limiter, so the server still sees at most R + 1 arrivals in any second
(retry policy: 10 attempts, 10-100 ms backoff, no retry budget, so that every row lands).
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
from dialler_async import DiallerClient, Limits, RetryPolicy
from dialler_async.emulator._faults import max_in_window

_CONCURRENCY = 16
_FAULT_RETRY = RetryPolicy(max_attempts=10, initial_backoff=0.01, max_backoff=0.1, budget=None)


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
    server: ServerProcess,
    rate: float,
    n: int,
    server_limit: bool,
    tag: str,
    unavailable: float = 0.0,
) -> dict[str, Any]:
    """One import of ``n`` contacts at ``rate``: the client's rate limit, or (``unavailable``
    > 0: that share of requests answered 503) the job's own ``rate=``."""
    faults = {"unavailable": unavailable} if unavailable else {}
    server.command(
        "configure", changes={"rate_limit": rate if server_limit else None, "faults": faults}
    )
    server.command("reset")
    starts: list[float] = []
    per_job = unavailable > 0
    limits = Limits(max_concurrency=_CONCURRENCY, max_per_second=None if per_job else rate)
    retry = _FAULT_RETRY if per_job else None
    options: dict[str, Any] = {"rate": rate} if per_job else {}
    async with DiallerClient(server.url, 1, server.token, limits=limits, retry=retry) as client:
        client.transport.session.trace_configs.append(_tracer(starts))
        t0 = time.perf_counter()
        result = await client.import_contacts(
            contacts(n, tag), campaign_id=CAMPAIGN_ID, keep_results=False, **options
        )
        elapsed = time.perf_counter() - t0
    server.command("configure", changes={"faults": {}})
    stats = server.command("stats")
    span = (stats["last"] or 0.0) - (stats["first"] or 0.0)
    return {
        "configured": rate,
        "server_limit": rate if server_limit else None,
        "per_job_rate": per_job,
        "unavailable": unavailable,
        "retries": result.retries,
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
    plan: list[tuple[float, bool, float]] = [(r, False, 0.0) for r in sizes.rate_rates]
    plan += [(r, True, 0.0) for r in sizes.rate_rates]
    plan += [(r, False, 0.3) for r in sizes.rate_rates]
    found: dict[str, list[dict[str, Any]]] = {}
    with emulator() as server:
        for rep in range(sizes.rate_reps):
            for rate, limited, unavailable in plan:
                n = round(rate * sizes.rate_seconds * (1 - unavailable))  # ~same seconds
                key = f"{rate:g}/s" + (" server-limited" if limited else "")
                if unavailable:
                    key = f"rate={rate:g} per job, {unavailable:.0%} 503s"
                tag = f"rate-{rep}-{rate:g}-{int(limited)}-{unavailable}-{time.monotonic_ns()}"
                r = await _one(server, rate, n, limited, tag, unavailable)
                if r["succeeded"] != n:
                    raise RuntimeError(f"rate {key}: {r['succeeded']} of {n} succeeded")
                found.setdefault(key, []).append(r)
                log(
                    f"    rep {rep + 1} {key:<22} achieved {r['achieved_client']:7.1f}/s, "
                    f"max in 1 s: server {r['max_in_one_second']}, client "
                    f"{r['client_max_in_one_second']}; 429s {r['throttled_429']}; "
                    f"retries {r['retries']}"
                )
    return {"concurrency": _CONCURRENCY, "seconds": sizes.rate_seconds, "runs": found}
