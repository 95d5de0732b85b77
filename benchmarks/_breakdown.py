"""Where the SDK's client CPU goes, without a profiler: the same import, with one layer at a
time swapped for what the hand-written loop does, interleaved against the fast server.

* ``aiohttp_loop``: the hand-written baseline (stdlib json, one task per contact).
* ``transport_loop``: the same user loop, but each request through the SDK's
  ``Transport.call`` (governor slot, retry wrapper, orjson, Reply), no bulk engine.
* ``bulk_raw``: ``import_contacts`` with ``prepare`` replaced by ``{**row, campaign}`` and no
  answer structuring: the bulk engine + transport.
* ``bulk_no_structure``: ``import_contacts`` without handling the answer (the SDK's
  ``Import.contact``, which structures a Contact, or ``Import.record`` in SDK versions that
  keep the raw record and structure it lazily, whichever exists, returns None).
* ``sdk``: the real ``import_contacts``.

Each step's extra µs per contact is what that layer costs. The SDK is monkeypatched in this
process only (``unittest.mock.patch.object``), never edited.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any
from unittest import mock

from benchmarks._config import TOKEN, Sizes
from benchmarks._contenders import CLIENT_ID, Run, aiohttp_loop, sdk
from benchmarks._payloads import CAMPAIGN_ID, contacts
from benchmarks._procs import fast_server
from benchmarks._stats import Log, interleave, summarize
from dialler_async import DiallerClient, Limits
from dialler_async._operations import Import, Prepared

ORDER = ("aiohttp_loop", "transport_loop", "bulk_raw", "bulk_no_structure", "sdk")


def _raw_prepare(self: Import, item: Any) -> Prepared:
    user_data = item["UserData"]
    body = {**item, "DiallerCampaignsID": CAMPAIGN_ID}
    return Prepared(
        key=user_data, serial_key=user_data, payload=body, idempotent=True, user_data=user_data
    )


def _no_answer(self: Import, reply: Any, prepared: Any = None) -> None:
    return None


#: The ``Import`` method that turns the reply into the result's contact/record.
ANSWER_METHOD = "contact" if hasattr(Import, "contact") else "record"


async def transport_loop(base: str, data: list[dict[str, Any]], c: int) -> Run:
    limits = Limits(max_concurrency=c)
    async with DiallerClient(base, CLIENT_ID, TOKEN, limits=limits) as client:
        semaphore = asyncio.Semaphore(c)
        rules = Import(overwrite_duplicates=True, campaign_id=CAMPAIGN_ID, campaign_name=None)
        method, path, _ = rules.request(client, rules.prepare(data[0]))
        transport = client.transport

        async def one(contact: dict[str, Any]) -> Any:
            async with semaphore:
                body = {**contact, "DiallerCampaignsID": CAMPAIGN_ID}
                return await transport.call(method, path, body, idempotent=True)

        t0, c0 = time.perf_counter(), time.process_time()
        results = await asyncio.gather(*(one(x) for x in data), return_exceptions=True)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    ok = sum(1 for r in results if not isinstance(r, BaseException))
    return Run(len(results), elapsed, cpu, ok)


def _patched(fn: Callable[[], Awaitable[Run]], **patches: Any) -> Callable[[], Any]:
    """``fn`` run with attributes of ``Import`` replaced (only for the duration of the run)."""

    async def contender() -> Run:
        with contextlib.ExitStack() as stack:
            for name, value in patches.items():
                stack.enter_context(mock.patch.object(Import, name, value))
            return await fn()

    return contender


async def run(sizes: Sizes, log: Log) -> dict[str, Any]:
    c = sizes.concurrency
    data = list(contacts(sizes.overhead_n, "breakdown"))
    with fast_server() as server:
        base = server.url + "/rest/v1.0"

        def full() -> Awaitable[Run]:
            return sdk(base, TOKEN, data, c, keep_results=False)

        runs = await interleave(
            {
                "aiohttp_loop": lambda: aiohttp_loop(base, TOKEN, data, c),
                "transport_loop": lambda: transport_loop(base, data, c),
                "bulk_raw": _patched(full, **{"prepare": _raw_prepare, ANSWER_METHOD: _no_answer}),
                "bulk_no_structure": _patched(full, **{ANSWER_METHOD: _no_answer}),
                "sdk": full,
            },
            sizes.reps,
            log=log,
        )
    steps = {name: summarize(runs[name]) for name in ORDER}
    layers: dict[str, float] = {}
    previous = None
    for name in ORDER:
        cpu = steps[name]["cpu_us"]["median"]
        if previous is not None:
            layers[f"{previous} -> {name}"] = cpu - steps[previous]["cpu_us"]["median"]
        previous = name
    return {
        "concurrency": c,
        "answer_method_patched": f"Import.{ANSWER_METHOD}",
        "steps": steps,
        "layer_cost_us": layers,
    }
