"""The emulator in a child process, driven by JSON lines on stdin (run by the benchmarks).

``python -m benchmarks._emu_server [--seed N]`` starts an in-memory ``Emulator``, prints
``dialler emulator listening on URL client_id=N token=T`` and then answers one JSON line per
command line: ``{"cmd": "reset"}`` (forget the stats), ``{"cmd": "configure", "changes":
{...}}`` (``Emulator.configure``), ``{"cmd": "stats"}`` (what the server saw, with the most
arrivals in any one-second window), ``{"cmd": "latencies"}`` (``[arrival, seconds, status]``
per answer, as the server measured it). It stops when stdin closes.

The emulator's own ``python -m dialler_async.emulator`` keeps its stats in its process; this
wrapper is how a benchmark reads the arrival times the server recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from dialler_async.emulator import Emulator, EmulatorConfig


def _stats(emu: Emulator) -> dict[str, Any]:
    stats = emu.stats
    times = [t for t, _ in stats.arrivals]
    return {
        **stats.as_dict(),
        "first": times[0] if times else None,
        "last": times[-1] if times else None,
        "max_in_one_second": stats.max_starts_in_window(1.0),
        "contacts": emu.store.contact_count(),
    }


def _handle(emu: Emulator, line: bytes) -> dict[str, Any]:
    request = orjson.loads(line)
    cmd = request.get("cmd")
    if cmd == "reset":
        emu.stats.reset()
        return {"ok": True}
    if cmd == "configure":
        config = emu.configure(**request.get("changes", {}))
        return {"ok": True, "rate_limit": config.rate_limit}
    if cmd == "stats":
        return _stats(emu)
    if cmd == "latencies":
        return {"latencies": list(emu.stats.latencies)}
    if cmd == "seed":  # replace every contact with N of one campaign (sync benchmark)
        return {"contacts": seed_campaign(emu, int(request["n"]))}
    return {"error": f"unknown command {cmd!r}"}


def seed_campaign(emu: Emulator, n: int, campaign: int = 538) -> int:
    """Exactly ``n`` contacts S0000000.. in ``campaign`` (stored directly, no requests)."""
    store = emu.store
    with store.transaction():
        store._db.execute("DELETE FROM contacts")
        for i in range(n):
            store.insert(emu.client_id, bench_contact(i, campaign))
    return store.contact_count()


def bench_contact(i: int, campaign: int = 538) -> dict[str, Any]:
    from dialler_async.emulator._records import new_contact

    return new_contact(
        {
            "UserData": f"S{i:07d}",
            "Name": f"Name{i}",
            "FirstName": "Max",
            "City": "Berlin",
            "PhoneNumber1": f"+4930{i:08d}",
            "DiallerCampaignsID": campaign,
            "DiallerCampaignsName": "Spring Campaign",
        }
    )


async def serve(seed: int) -> None:
    loop = asyncio.get_running_loop()
    async with Emulator(EmulatorConfig(seed=seed), port=0) as emu:
        print(
            f"dialler emulator listening on {emu.base_url} client_id={emu.client_id} "
            f"token={emu.token}",
            flush=True,
        )
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
        while line := await reader.readline():
            try:
                answer = _handle(emu, line)
            except Exception as exc:  # report, keep serving
                answer = {"error": repr(exc)}
            sys.stdout.buffer.write(orjson.dumps(answer) + b"\n")
            sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._emu_server")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
