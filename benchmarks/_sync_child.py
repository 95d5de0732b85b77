"""One client run of the sync benchmark, in its own process (so its peak RSS is its own).

``python -m benchmarks._sync_child MODE URL CLIENT_ID TOKEN FILE RATE`` with MODE ``sync``,
``reimport`` or ``export`` prints one JSON line: wall time, requests, and the peak RSS before
and after the job (``ru_maxrss``: the process's high-water mark).
"""

from __future__ import annotations

import asyncio
import csv
import resource
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson

from dialler_async import DiallerClient, Limits


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rows(path: str) -> Iterator[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as fh:
        yield from csv.DictReader(fh)


async def run(mode: str, url: str, client_id: int, token: str, path: str, rate: float) -> None:
    limits = Limits(max_concurrency=16, max_per_second=rate)
    async with DiallerClient(url, client_id, token, limits=limits, timeout=120.0) as client:
        await client.list_campaigns()  # warm: connection, imports, first allocations
        before = _peak_mb()
        started = time.perf_counter()
        detail: dict[str, Any] = {}
        if mode == "sync":
            result = await client.sync_contacts(_rows(path), campaign_id=538, keep_results=False)
            detail = {"plan": result.plan.as_dict(), "ok": result.ok}
        elif mode == "reimport":
            bulk = await client.import_contacts(_rows(path), campaign_id=538, keep_results=False)
            detail = {"ok": bulk.ok, "total": bulk.total}
        else:
            count = 0
            with open(path, "w", newline="", encoding="utf-8") as out:
                writer = csv.writer(out)
                async for contact in client.iter_contacts(538):
                    writer.writerow((contact.id, contact.user_data, contact.name, contact.city))
                    count += 1
            detail = {"exported": count}
        elapsed = time.perf_counter() - started
        requests = client.transport.requests - 1
    after = _peak_mb()
    line = {"mode": mode, "elapsed": elapsed, "requests": requests, "rss_before_mb": before}
    line |= {"rss_peak_mb": after, "growth_mb": after - before, **detail}
    sys.stdout.write(orjson.dumps(line).decode() + "\n")


if __name__ == "__main__":
    mode, url, client_id, token, path, rate = sys.argv[1:7]
    asyncio.run(run(mode, url, int(client_id), token, path, float(rate)))
