"""The contenders: the SDK's bulk import and what a user would write by hand.

Each runs one import of the given contacts at a given concurrency and returns a :class:`Run`:
contacts, wall seconds, client CPU seconds (``time.process_time()`` of this process: the
server is another process) and how many succeeded. Sessions are opened before the clock starts.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import httpx
import orjson
from yarl import URL

from benchmarks._payloads import CAMPAIGN_ID
from dialler_async import DiallerClient, Limits, RetryPolicy

CLIENT_ID = 1
IMPORT_PATH = "/dialler/contacts/import?overwriteDuplicates=true"


class Run(NamedTuple):
    n: int
    elapsed: float
    cpu: float
    ok: int

    @property
    def rate(self) -> float:
        return self.n / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.n * 1e6 if self.n else 0.0


def import_url(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/{CLIENT_ID}{IMPORT_PATH}"


#: The bulk options of the "streaming" SDK row: nothing kept per item, no duplicate set.
STREAMING: dict[str, Any] = {"keep_results": False, "detect_duplicates": False}


async def sdk(
    base_url: str,
    token: str,
    contacts: Iterable[dict[str, Any]],
    concurrency: int,
    *,
    retry: RetryPolicy | None = None,
    rate: float | None = None,
    **options: Any,
) -> Run:
    """``client.import_contacts(contacts, campaign_id=...)`` with ``Limits(max_concurrency=c)``
    and the bulk ``options`` given (none: the SDK's defaults)."""
    limits = Limits(max_concurrency=concurrency, max_per_second=rate)
    async with DiallerClient(base_url, CLIENT_ID, token, limits=limits, retry=retry) as client:
        t0, c0 = time.perf_counter(), time.process_time()
        result = await client.import_contacts(contacts, campaign_id=CAMPAIGN_ID, **options)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Run(result.total, elapsed, cpu, result.succeeded)


async def sdk_checkpoint(
    base_url: str, token: str, contacts: Iterable[dict[str, Any]], concurrency: int
) -> Run:
    """:func:`sdk` with default options and ``checkpoint=`` a fresh SQLite file per run."""
    with tempfile.TemporaryDirectory(prefix="dialler-bench-") as tmp:
        return await sdk(
            base_url, token, contacts, concurrency, checkpoint=Path(tmp) / "job.sqlite"
        )


def _check(status: int, data: Any) -> dict[str, Any]:
    if status != 200 or not isinstance(data, dict) or data.get("status") != 200:
        raise RuntimeError(f"import failed: HTTP {status}")
    record: dict[str, Any] = data["records"][0]
    return record


async def _timed_pool(
    worker: Callable[[], Awaitable[None]], concurrency: int
) -> tuple[float, float]:
    """Run ``concurrency`` copies of ``worker`` to the end: wall-clock and process CPU seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    return time.perf_counter() - t0, time.process_time() - c0


async def pool_loop(
    base_url: str,
    token: str,
    contacts: Iterable[dict[str, Any]],
    concurrency: int,
    *,
    fast_json: bool = False,
) -> Run:
    """The loop an experienced user writes: a fixed pool of ``concurrency`` workers pulling
    from one iterator; ``session.post(json=...)`` and ``resp.json()`` with the stdlib's json,
    or (``fast_json``) orjson as the session's serializer and the answer's decoder."""
    url = import_url(base_url)
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    # orjson: aiohttp's bytes serializer hook (3.12+) spares the str round trip.
    serializer: dict[str, Any] = {"json_serialize_bytes": orjson.dumps} if fast_json else {}
    loads: Callable[[str], Any] = orjson.loads if fast_json else json.loads
    async with aiohttp.ClientSession(headers=headers, connector=connector, **serializer) as session:
        counts = [0, 0]  # done, ok
        source = iter(contacts)

        async def worker() -> None:
            for contact in source:
                counts[0] += 1
                body = {**contact, "DiallerCampaignsID": CAMPAIGN_ID}
                try:
                    async with session.post(url, json=body) as resp:
                        _check(resp.status, await resp.json(loads=loads))
                except (aiohttp.ClientError, RuntimeError, ValueError):
                    continue
                counts[1] += 1

        elapsed, cpu = await _timed_pool(worker, concurrency)
    return Run(counts[0], elapsed, cpu, counts[1])


pool_orjson = partial(pool_loop, fast_json=True)


async def pool_bytes(
    base_url: str,
    token: str,
    contacts: Iterable[dict[str, Any]],
    concurrency: int,
    *,
    connector_limit: int | None = None,
    **session_options: Any,
) -> Run:
    """The worker pool as someone who has profiled aiohttp writes it: the body encoded with
    orjson and passed as bytes (``data=``, with the Content-Type among the session's
    headers), the URL parsed once (a ``yarl.URL``), the answer read and decoded with
    ``orjson.loads`` (no ``resp.json()`` content-type check). ~8% fewer instructions a row
    than :func:`pool_orjson` (callgrind: ``benchmarks/README.md``). ``connector_limit`` and
    ``session_options`` (for ``aiohttp.ClientSession``) are the variants ``_instructions.py``
    counts."""
    url = URL(import_url(base_url))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limit = concurrency if connector_limit is None else connector_limit
    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(
        headers=headers, connector=connector, **session_options
    ) as session:
        counts = [0, 0]  # done, ok
        source = iter(contacts)

        async def worker() -> None:
            for contact in source:
                counts[0] += 1
                body = orjson.dumps({**contact, "DiallerCampaignsID": CAMPAIGN_ID})
                try:
                    async with session.post(url, data=body) as resp:
                        _check(resp.status, orjson.loads(await resp.read()))
                except (aiohttp.ClientError, RuntimeError, ValueError):
                    continue
                counts[1] += 1

        elapsed, cpu = await _timed_pool(worker, concurrency)
    return Run(counts[0], elapsed, cpu, counts[1])


async def aiohttp_loop(
    base_url: str, token: str, contacts: Sequence[dict[str, Any]], concurrency: int
) -> Run:
    """The naive hand loop: one task per contact created up front, a semaphore,
    ``asyncio.gather``, ``resp.json()``."""
    url = import_url(base_url)
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(contact: dict[str, Any]) -> dict[str, Any]:
            async with semaphore:
                body = {**contact, "DiallerCampaignsID": CAMPAIGN_ID}
                async with session.post(url, json=body) as resp:
                    return _check(resp.status, await resp.json())

        t0, c0 = time.perf_counter(), time.process_time()
        results = await asyncio.gather(*(one(c) for c in contacts), return_exceptions=True)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    ok = sum(1 for r in results if not isinstance(r, BaseException))
    return Run(len(results), elapsed, cpu, ok)


async def httpx_loop(
    base_url: str, token: str, contacts: Sequence[dict[str, Any]], concurrency: int
) -> Run:
    """The same loop written with ``httpx.AsyncClient``."""
    url = import_url(base_url)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=60.0
    ) as client:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(contact: dict[str, Any]) -> dict[str, Any]:
            async with semaphore:
                body = {**contact, "DiallerCampaignsID": CAMPAIGN_ID}
                resp = await client.post(url, json=body)
                return _check(resp.status_code, resp.json())

        t0, c0 = time.perf_counter(), time.process_time()
        results = await asyncio.gather(*(one(c) for c in contacts), return_exceptions=True)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    ok = sum(1 for r in results if not isinstance(r, BaseException))
    return Run(len(results), elapsed, cpu, ok)
