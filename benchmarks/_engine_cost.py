"""The SDK's own CPU per row, with the network taken out.

``Transport.send`` is replaced by a canned answer (the body is still encoded with orjson and the
73-field answer decoded, as a real request would be; one ``sleep(0)`` stands for the wait), so
what is left is the bulk engine, validation, conversion, accounting and the transport's call
path. With ``--net session`` the cut is lower: aiohttp's ``ClientSession.request`` answers from
a canned response instead, so the transport's own attempt (admission, governor, size checks,
decoding) is measured too, and the baseline calls the same fake session. The baseline is a
worker-pool loop doing the same encode / wait / decode per row: the difference is what the SDK
adds per row. No socket, no server process: the figure is steady on
a loaded machine (minimum over repetitions), and it is deterministic under
``valgrind --tool=callgrind`` (instructions per row: run it with two sizes and take the
difference, see ``benchmarks/README.md``).

    python -m benchmarks._engine_cost                  # all contenders, 10,000 rows, 8 reps
    python -m benchmarks._engine_cost --only sdk --rows 2000 --reps 1   # one run (for callgrind)
    python -m benchmarks._engine_cost --net session     # the transport's attempt included
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks._payloads import CAMPAIGN_ID, contacts
from dialler_async import DiallerClient, Limits
from dialler_async._transport import Transport

CONCURRENCY = 32
_NET = ["send"]  # where the network is cut: "send" (Transport.send) or "session" (aiohttp)
_RECORD = {"ID": 1, **{f"Field{i}": f"value{i}" for i in range(72)}}
_ANSWER = orjson.dumps({"records": [_RECORD], "count": 1, "status": 200})


async def _canned(
    self: Transport | None, method: str, path: str, body: Any = None, *, max_bytes: Any = None
) -> Any:
    orjson.dumps(body)
    await asyncio.sleep(0)
    return orjson.loads(_ANSWER)


class _CannedResponse:
    """What the transport reads of an aiohttp response, answered from memory."""

    status = 200
    headers: dict[str, str] = {}
    content_length = len(_ANSWER)

    async def read(self) -> bytes:
        return _ANSWER

    async def json(self, *, loads: Callable[[bytes], Any] = orjson.loads) -> Any:
        return loads(_ANSWER)


class _CannedRequest:
    __slots__ = ()

    async def __aenter__(self) -> _CannedResponse:
        await asyncio.sleep(0)
        return _CannedResponse()

    async def __aexit__(self, *exc: object) -> None:
        return None


def _canned_request(self: Any, method: str, url: Any, *, data: Any = None, **_: Any) -> Any:
    return _CannedRequest()


async def bare(rows: list[dict[str, Any]]) -> int:
    """What a hand-written worker pool does per row around the same canned exchange."""
    source, ok = iter(rows), [0]

    async def worker() -> None:
        for row in source:
            if _NET[0] == "session":
                body = orjson.dumps({**row, "DiallerCampaignsID": CAMPAIGN_ID})
                async with _canned_request(None, "POST", "/", data=body) as resp:
                    data = await resp.json()
            else:
                data = await _canned(None, "POST", "/", {**row, "DiallerCampaignsID": CAMPAIGN_ID})
            if data["status"] == 200 and data["records"][0]:
                ok[0] += 1

    async with asyncio.TaskGroup() as group:
        for _ in range(CONCURRENCY):
            group.create_task(worker())
    return ok[0]


async def sdk(rows: list[dict[str, Any]], **options: Any) -> int:
    limits = Limits(max_concurrency=CONCURRENCY)
    async with DiallerClient("http://127.0.0.1:9/rest/v1.0", 1, "t", limits=limits) as client:
        result = await client.import_contacts(rows, campaign_id=CAMPAIGN_ID, **options)
    return result.succeeded


async def sdk_checkpoint(rows: list[dict[str, Any]]) -> int:
    with tempfile.TemporaryDirectory(prefix="dialler-cost-") as tmp:
        return await sdk(rows, checkpoint=Path(tmp) / "job.db")


CONTENDERS: dict[str, Callable[[list[dict[str, Any]]], Awaitable[int]]] = {
    "bare": bare,
    "sdk": sdk,
    "sdk_streaming": lambda rows: sdk(rows, detect_duplicates=False),
    "sdk_keep_results": lambda rows: sdk(rows, keep_results=True),
    "sdk_checkpoint": sdk_checkpoint,
}


async def measure(names: list[str], n: int, reps: int, net: str = "send") -> dict[str, list[float]]:
    _NET[0] = net
    if net == "session":
        aiohttp.ClientSession.request = _canned_request  # type: ignore[method-assign]
    else:
        Transport.send = _canned  # type: ignore[method-assign]
    rows = list(contacts(n, "engine-cost"))
    runs: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up
        await CONTENDERS[name](rows)
    for _ in range(reps):
        for name in names:
            gc.collect()
            started = time.process_time()
            ok = await CONTENDERS[name](rows)
            runs[name].append((time.process_time() - started) / n * 1e6)
            if ok != n:
                raise RuntimeError(f"{name}: {ok} of {n} succeeded")
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._engine_cost")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--only", default=",".join(CONTENDERS))
    parser.add_argument("--net", choices=("send", "session"), default="send")
    args = parser.parse_args()
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    runs = asyncio.run(measure(names, args.rows, args.reps, args.net))
    base = min(runs["bare"]) if "bare" in runs else None
    print("| contender | CPU µs/row min | median | added over bare (min) |")
    print("|---|---|---|---|")
    for name, values in runs.items():
        added = f"{min(values) - base:.1f}" if base is not None else "-"
        print(f"| {name} | {min(values):.1f} | {statistics.median(values):.1f} | {added} |")


if __name__ == "__main__":
    main()
