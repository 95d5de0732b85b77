"""Client CPU of a sync's fixed part, per contact (``python -m benchmarks._sync_cpu``).

The emulator runs in its own process (seeded with N contacts of campaign 538, all fields);
this process reads the campaign into a sync's on-disk index (the snapshot) and classifies the
same N rows as CSV would give them, 2% changed (the plan), and reports the process CPU time
of each per contact. Nothing is sent, so the numbers are the client's own cost, steadier than
wall time on a shared machine. ``--profile FILE`` writes a cProfile of both steps.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from dialler_async import DiallerClient

from ._sync_bench import Server, write_input


def _rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


async def measure(server: Server, rows: list[dict[str, Any]]) -> tuple[float, float]:
    """CPU seconds of (snapshot, plan) for one sync of ``rows``."""
    from dialler_async import _snapshot, _sync

    async with DiallerClient(server.url, int(server.client_id), server.token) as client:
        campaign = await _sync.resolve_campaign(client, 538, None)
        ws = _snapshot.Workspace()
        try:
            if hasattr(_sync, "SyncRun"):  # pragma: no branch - this tree
                from dialler_async._sync_plan import Planner
                from dialler_async._sync_run import SyncRun

                run: Any = SyncRun(client, campaign, ws, {"keep_results": False})
                planner: Any = Planner(run)
            else:  # the tree before the plan/apply split (for before/after runs)
                run = planner = _sync.Sync(client, campaign, ws, {"keep_results": False})
            started = time.process_time()
            await ws.load(client._iter_records(538), 538)
            loaded = time.process_time()
            await planner.plan(rows)
            planned = time.process_time()
        finally:
            ws.close()
    return loaded - started, planned - loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._sync_cpu")
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of one run here")
    args = parser.parse_args(argv)
    server = Server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "input.csv"
            write_input(source, args.contacts, changed_every=50)
            rows = _rows(source)
            server.ask(cmd="seed", n=args.contacts)
            runs = []
            for _ in range(args.repeats):
                runs.append(asyncio.run(measure(server, [dict(r) for r in rows])))
            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                asyncio.run(measure(server, [dict(r) for r in rows]))
                profiler.disable()
                profiler.dump_stats(args.profile)
    finally:
        server.close()
    n = args.contacts
    snap = statistics.median(s for s, _ in runs) / n * 1e6
    plan = statistics.median(p for _, p in runs) / n * 1e6
    line = {"contacts": n, "snapshot_us": round(snap, 1), "plan_us": round(plan, 1)}
    line["total_us"] = round(snap + plan, 1)
    print(orjson.dumps(line).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
