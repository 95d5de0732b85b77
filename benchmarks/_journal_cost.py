"""SQLite's CPU per journaled outcome, the checkpoint's schema and upsert as shipped.

``python -m benchmarks._journal_cost [--rows 100000] [--batch 512 4096] [--append-log]``: inserts
``rows`` SUCCEEDED entries with random digests (as a job's are) in commits of ``batch`` entries,
with SQLite's defaults or the checkpoint's page-cache and WAL pragmas, and prints the process
CPU per entry (minimum of three runs, a fresh file each). This is what chose 4,096 entries a
commit and the pragmas in ``dialler_async/_checkpoint.py``. ``--append-log`` adds a candidate
not built: the entries appended to an unindexed table during the run (with the pragmas) and
folded into the index afterwards, the two costs apart.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from dialler_async._checkpoint import _PRAGMAS, _SCHEMA, _UPSERT


def _fresh(directory: Path, pragmas: bool) -> sqlite3.Connection:
    """A new journal with the checkpoint's schema (and its pragmas, or SQLite's defaults)."""
    db = sqlite3.connect(directory / "job.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    for pragma in _PRAGMAS if pragmas else ():
        db.execute(pragma)
    db.executescript(_SCHEMA)
    return db


def _entries(rows: int, seed: int) -> list[tuple[object, ...]]:
    """SUCCEEDED entries with random digests, as a job's are."""
    rng = random.Random(seed)
    return [
        (rng.getrandbits(63), 0, f"bench-{i:09d}", "succeeded", i, 1, time.time(), None)
        for i in range(rows)
    ]


def cost(rows: int, batch: int, pragmas: bool, seed: int) -> float:
    """Process CPU µs per entry for one fresh journal."""
    with tempfile.TemporaryDirectory(prefix="dialler-journal-") as tmp:
        db = _fresh(Path(tmp), pragmas)
        entries = _entries(rows, seed)
        started = time.process_time()
        for start in range(0, rows, batch):
            db.execute("BEGIN")
            db.executemany(_UPSERT, entries[start : start + batch])
            db.execute("COMMIT")
        spent = time.process_time() - started
        db.close()
    return spent / rows * 1e6


#: A candidate not built (see benchmarks/README.md, issue 16 third round): outcomes appended to
#: an unindexed table during the run, folded into ``items`` (in digest order) at the next open.
_LOG = (
    "CREATE TABLE log (digest INTEGER NOT NULL, occurrence INTEGER NOT NULL, key TEXT, "
    "state TEXT NOT NULL, row INTEGER NOT NULL, run INTEGER NOT NULL, at REAL NOT NULL, "
    "error TEXT)"
)
_FOLD = _UPSERT.replace(
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "SELECT digest, occurrence, key, state, row, run, at, error FROM log WHERE true "
    "ORDER BY digest, occurrence, rowid",
)


def append_cost(rows: int, batch: int, seed: int) -> tuple[float, float]:
    """Process CPU µs per entry appended to the log during a run, and to fold it afterwards."""
    with tempfile.TemporaryDirectory(prefix="dialler-journal-") as tmp:
        db = _fresh(Path(tmp), pragmas=True)
        db.execute(_LOG)
        entries = _entries(rows, seed)
        started = time.process_time()
        for start in range(0, rows, batch):
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO log VALUES (?, ?, ?, ?, ?, ?, ?, ?)", entries[start : start + batch]
            )
            db.execute("COMMIT")
        appended = time.process_time()
        db.execute("BEGIN")
        db.execute(_FOLD)
        db.execute("DELETE FROM log")
        db.execute("COMMIT")
        folded = time.process_time()
        assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == rows
        db.close()
    return (appended - started) / rows * 1e6, (folded - appended) / rows * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._journal_cost")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[512, 4096])
    parser.add_argument(
        "--append-log", action="store_true", help="also the append-then-fold candidate"
    )
    args = parser.parse_args()
    print("| entries a commit | pragmas | CPU µs per entry (min of 3) |")
    print("|---|---|---|")
    for batch in args.batch:
        for pragmas in (False, True):
            best = min(cost(args.rows, batch, pragmas, seed) for seed in range(3))
            label = "cache 16 MiB, WAL 16 MiB" if pragmas else "SQLite's defaults"
            print(f"| {batch:,} | {label} | {best:.2f} |")
        if args.append_log:
            runs = [append_cost(args.rows, batch, seed) for seed in range(3)]
            run, fold = min(runs, key=sum)
            print(
                f"| {batch:,} | append to a log, fold later | {run:.2f} in the run + {fold:.2f} |"
            )


if __name__ == "__main__":
    main()
