"""SQLite's CPU per journaled outcome, the checkpoint's schema and upsert as shipped.

``python -m benchmarks._journal_cost [--rows 100000] [--batch 512 4096] [--pragmas]``: inserts
``rows`` SUCCEEDED entries with random digests (as a job's are) in commits of ``batch`` entries,
with SQLite's defaults or the checkpoint's page-cache and WAL pragmas, and prints the process
CPU per entry (minimum of three runs, a fresh file each). This is what chose 4,096 entries a
commit and the pragmas in ``dialler_async/_checkpoint.py``.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from dialler_async._checkpoint import _PRAGMAS, _SCHEMA, _UPSERT


def cost(rows: int, batch: int, pragmas: bool, seed: int) -> float:
    """Process CPU µs per entry for one fresh journal."""
    with tempfile.TemporaryDirectory(prefix="dialler-journal-") as tmp:
        db = sqlite3.connect(Path(tmp) / "job.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        for pragma in _PRAGMAS if pragmas else ():
            db.execute(pragma)
        db.executescript(_SCHEMA)
        rng = random.Random(seed)
        entries = [
            (rng.getrandbits(63), 0, f"bench-{i:09d}", "succeeded", i, 1, time.time(), None)
            for i in range(rows)
        ]
        started = time.process_time()
        for start in range(0, rows, batch):
            db.execute("BEGIN")
            db.executemany(_UPSERT, entries[start : start + batch])
            db.execute("COMMIT")
        spent = time.process_time() - started
        db.close()
    return spent / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._journal_cost")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[512, 4096])
    args = parser.parse_args()
    print("| entries a commit | pragmas | CPU µs per entry (min of 3) |")
    print("|---|---|---|")
    for batch in args.batch:
        for pragmas in (False, True):
            best = min(cost(args.rows, batch, pragmas, seed) for seed in range(3))
            label = "cache 16 MiB, WAL 16 MiB" if pragmas else "SQLite's defaults"
            print(f"| {batch:,} | {label} | {best:.2f} |")


if __name__ == "__main__":
    main()
