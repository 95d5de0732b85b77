"""The SDK's own CPU per row, with the network taken out.

``Transport.send`` is replaced by a canned answer (the body is still encoded with orjson and the
73-field answer decoded, as a real request would be; one ``sleep(0)`` stands for the wait), so
what is left is the bulk engine, validation, conversion, accounting and the transport's call
path. The baseline is a worker-pool loop doing the same encode / wait / decode per row: the
difference is what the SDK adds per row. No socket, no server process: the figure is steady on
a loaded machine (minimum over repetitions), and it is deterministic under
``valgrind --tool=callgrind`` (instructions per row: run it with two sizes and take the
difference, see ``benchmarks/README.md``).

    python -m benchmarks._engine_cost                  # all contenders, 10,000 rows, 8 reps
    python -m benchmarks._engine_cost --only sdk --rows 2000 --reps 1   # one run (for callgrind)
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

import orjson

from benchmarks._payloads import CAMPAIGN_ID, contacts
from dialler_async import DiallerClient, Limits
from dialler_async._transport import Transport

CONCURRENCY = 32
_RECORD = {"ID": 1, **{f"Field{i}": f"value{i}" for i in range(72)}}
_ANSWER = orjson.dumps({"records": [_RECORD], "count": 1, "status": 200})


async def _canned(
    self: Transport | None, method: str, path: str, body: Any = None, *, max_bytes: Any = None
) -> Any:
    orjson.dumps(body)
    await asyncio.sleep(0)
    return orjson.loads(_ANSWER)


async def bare(rows: list[dict[str, Any]]) -> int:
    """What a hand-written worker pool does per row around the same canned exchange."""
    source, ok = iter(rows), [0]

    async def worker() -> None:
        for row in source:
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


async def measure(names: list[str], n: int, reps: int) -> dict[str, list[float]]:
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
    args = parser.parse_args()
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    runs = asyncio.run(measure(names, args.rows, args.reps))
    base = min(runs["bare"]) if "bare" in runs else None
    print("| contender | CPU µs/row min | median | added over bare (min) |")
    print("|---|---|---|---|")
    for name, values in runs.items():
        added = f"{min(values) - base:.1f}" if base is not None else "-"
        print(f"| {name} | {min(values):.1f} | {statistics.median(values):.1f} | {added} |")


if __name__ == "__main__":
    main()
