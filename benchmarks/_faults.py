"""(6) Faults: throughput with injected 503s and dropped connections vs a clean emulator, and
the account (every item accounted for, none imported twice).

The SDK runs with its default RetryPolicy except a short backoff
(``initial_backoff=0.01, max_backoff=0.1``) so the run is fast. Fault mix at probability p per
request: 503 with p/2, connection dropped before processing p/4, dropped after the commit p/4.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from benchmarks._config import Sizes
from benchmarks._payloads import CAMPAIGN_ID, contacts
from benchmarks._procs import ServerProcess, emulator
from benchmarks._stats import Log, ratio, spread
from dialler_async import DiallerClient, Limits, RetryPolicy

RETRY = RetryPolicy(initial_backoff=0.01, max_backoff=0.1)


def mix(p: float) -> dict[str, float]:
    if p <= 0:
        return {}
    return {"unavailable": p / 2, "drop_before": p / 4, "drop_after": p / 4}


async def _one(server: ServerProcess, p: float, n: int, c: int, tag: str) -> dict[str, Any]:
    server.command("configure", changes={"faults": mix(p)})
    server.command("reset")
    before = server.command("stats")["contacts"]
    limits = Limits(max_concurrency=c)
    gc.collect()
    async with DiallerClient(server.url, 1, server.token, limits=limits, retry=RETRY) as client:
        t0 = time.perf_counter()
        result = await client.import_contacts(
            contacts(n, tag), campaign_id=CAMPAIGN_ID, keep_results=False
        )
        elapsed = time.perf_counter() - t0
    stats = server.command("stats")
    counts = {o.value: k for o, k in result.counts.items()}
    return {
        "n": n,
        "elapsed": elapsed,
        "rate": n / elapsed,
        "counts": counts,
        "accounted": result.total == n,
        "requests": result.requests,
        "retries": result.retries,
        "server_faults": stats["faults"],
        "server_new_contacts": stats["contacts"] - before,
    }


async def run(sizes: Sizes, log: Log) -> dict[str, Any]:
    levels = [0.0, *sizes.fault_probabilities]
    c, n = sizes.concurrency, sizes.fault_n
    found: dict[float, list[dict[str, Any]]] = {p: [] for p in levels}
    with emulator(seed=7) as server:
        for rep in range(-1, sizes.fault_reps):  # rep -1: warm-up, not recorded
            for p in levels:
                tag = f"faults-{rep}-{p:g}-{time.monotonic_ns()}"
                r = await _one(server, p, n, c, tag)
                if rep >= 0:
                    found[p].append(r)
                log(
                    f"    {'warm-up' if rep < 0 else f'rep {rep + 1}'} faults {p:5.1%}: "
                    f"{r['rate']:7.0f}/s, retries {r['retries']}, {r['counts']}, "
                    f"new records {r['server_new_contacts']}"
                )
    clean = [r["rate"] for r in found[0.0]]
    out: dict[str, Any] = {
        "concurrency": c,
        "n": n,
        "retry": "RetryPolicy(initial_backoff=0.01, max_backoff=0.1), other fields default",
        "levels": {},
    }
    for p, runs in found.items():
        rates = [r["rate"] for r in runs]
        out["levels"][f"{p:g}"] = {
            "probability": p,
            "mix": mix(p),
            "rate": spread(rates),
            "vs_clean": ratio(rates, clean),
            "retries": [r["retries"] for r in runs],
            "counts": [r["counts"] for r in runs],
            "all_accounted": all(r["accounted"] for r in runs),
            "all_succeeded": all(r["counts"]["succeeded"] == r["n"] for r in runs),
            "server_new_contacts": [r["server_new_contacts"] for r in runs],
            "no_duplicates": all(r["server_new_contacts"] == r["n"] for r in runs),
            "server_faults": [r["server_faults"] for r in runs],
        }
    return out
