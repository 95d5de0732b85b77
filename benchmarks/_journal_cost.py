"""SQLite's CPU per journaled outcome: the checkpoint's log (format 3) against the upsert.

``python -m benchmarks._journal_cost [--rows 100000] [--batch 512 4096] [--append-log]
[--numbers]``: journals ``rows`` SUCCEEDED entries with random digests (as a job's are) in
commits of ``batch`` entries, a fresh file each, and prints the process CPU per entry (minimum
of three runs):

* **format 3, as shipped** (``dialler_async._journal``): each batch is one orjson blob appended
  to the log (``encode`` + ``APPEND``, the cost a run pays), and the log is folded into the
  index of items by ``fold`` (the cost the next open pays, once);
* **format 2's upsert** of every entry into the WITHOUT ROWID ``items`` table at each commit
  (``UPSERT``), with SQLite's defaults and with the checkpoint's page-cache and WAL pragmas:
  this is what chose 4,096 entries a commit and the pragmas;
* ``--append-log``: a candidate not built, the entries appended as rows of an unindexed table;
* ``--numbers``: one dial number per entry (issue 14's ``dedupe_phone``), inserted into the
  ``numbers`` table at each commit (format 2) or carried in the log row (format 3).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from dialler_async._checkpoint import _PRAGMAS
from dialler_async._journal import (
    APPEND,
    LOG,
    NUMBERS,
    NUMBERS_INSERT,
    SCHEMA,
    UPSERT,
    encode,
    fold,
)


def _fresh(directory: Path, pragmas: bool) -> sqlite3.Connection:
    """A new journal with the checkpoint's schema (and its pragmas, or SQLite's defaults)."""
    db = sqlite3.connect(directory / "job.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    for pragma in _PRAGMAS if pragmas else ():
        db.execute(pragma)
    db.executescript(SCHEMA)
    db.execute(NUMBERS)
    db.execute(LOG)
    return db


def _entries(rows: int, seed: int) -> list[tuple[object, ...]]:
    """SUCCEEDED entries with random digests, as a job's are."""
    rng = random.Random(seed)
    return [
        (rng.getrandbits(63), 0, f"bench-{i:09d}", "succeeded", i, 1, time.time(), None)
        for i in range(rows)
    ]


def _numbers(rows: int, seed: int) -> list[tuple[int, int]]:
    """One dial number per entry, by a random item digest."""
    rng = random.Random(-seed)
    return [(rng.getrandbits(63), 4930_0000_0000 + i) for i in range(rows)]


def cost(rows: int, batch: int, pragmas: bool, seed: int, numbers: bool = False) -> float:
    """Format 2: process CPU µs per entry upserted at each commit, for one fresh journal."""
    with tempfile.TemporaryDirectory(prefix="dialler-journal-") as tmp:
        db = _fresh(Path(tmp), pragmas)
        entries = _entries(rows, seed)
        pairs = _numbers(rows, seed) if numbers else []
        started = time.process_time()
        for start in range(0, rows, batch):
            db.execute("BEGIN")
            if pairs:
                db.executemany(NUMBERS_INSERT, pairs[start : start + batch])
            db.executemany(UPSERT, entries[start : start + batch])
            db.execute("COMMIT")
        spent = time.process_time() - started
        db.close()
    return spent / rows * 1e6


def log_cost(rows: int, batch: int, seed: int, numbers: bool = False) -> tuple[float, float]:
    """Format 3: process CPU µs per entry appended to the log during a run (encoding
    included), and to fold it at the next open."""
    with tempfile.TemporaryDirectory(prefix="dialler-journal-") as tmp:
        db = _fresh(Path(tmp), pragmas=True)
        entries = _entries(rows, seed)
        pairs = _numbers(rows, seed) if numbers else []
        started = time.process_time()
        for start in range(0, rows, batch):
            chunk = pairs[start : start + batch]
            db.execute(
                APPEND, (encode(entries[start : start + batch]), encode(chunk) if chunk else None)
            )
        appended = time.process_time()
        fold(db)
        folded = time.process_time()
        assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == rows
        assert db.execute("SELECT COUNT(*) FROM numbers").fetchone()[0] == len(pairs)
        db.close()
    return (appended - started) / rows * 1e6, (folded - appended) / rows * 1e6


_COLUMNS = (
    "CREATE TABLE columns (digest INTEGER NOT NULL, occurrence INTEGER NOT NULL, key TEXT, "
    "state TEXT NOT NULL, row INTEGER NOT NULL, run INTEGER NOT NULL, at REAL NOT NULL, "
    "error TEXT)"
)
_FOLD_COLUMNS = UPSERT.replace(
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "SELECT digest, occurrence, key, state, row, run, at, error FROM columns WHERE true "
    "ORDER BY digest, occurrence, rowid",
)


def append_cost(rows: int, batch: int, seed: int) -> tuple[float, float]:
    """The candidate not built: µs per entry appended as a row of an unindexed table during a
    run, and to fold it (in digest order, in SQL) afterwards."""
    with tempfile.TemporaryDirectory(prefix="dialler-journal-") as tmp:
        db = _fresh(Path(tmp), pragmas=True)
        db.execute(_COLUMNS)
        entries = _entries(rows, seed)
        started = time.process_time()
        for start in range(0, rows, batch):
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO columns VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                entries[start : start + batch],
            )
            db.execute("COMMIT")
        appended = time.process_time()
        db.execute("BEGIN")
        db.execute(_FOLD_COLUMNS)
        db.execute("DELETE FROM columns")
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
        "--append-log", action="store_true", help="also rows appended to an unindexed table"
    )
    parser.add_argument("--numbers", action="store_true", help="also one dial number an entry")
    args = parser.parse_args()
    print("| entries a commit | journal | CPU µs per entry (min of 3) |")
    print("|---|---|---|")
    for batch in args.batch:
        for numbers in (False, True) if args.numbers else (False,):
            also = ", a number each" if numbers else ""
            run, fold_ = min((log_cost(args.rows, batch, s, numbers) for s in range(3)), key=sum)
            print(
                f"| {batch:,} | format 3: a log row a commit{also} "
                f"| **{run:.2f}** in the run + {fold_:.2f} to fold at the next open |"
            )
            for pragmas in (False, True) if not numbers else (True,):
                best = min(cost(args.rows, batch, pragmas, s, numbers) for s in range(3))
                label = "cache 16 MiB, WAL 16 MiB" if pragmas else "SQLite's defaults"
                print(f"| {batch:,} | format 2: upsert each entry, {label}{also} | {best:.2f} |")
        if args.append_log:
            run, fold_ = min((append_cost(args.rows, batch, s) for s in range(3)), key=sum)
            print(
                f"| {batch:,} | rows of an unindexed table (not built) "
                f"| {run:.2f} in the run + {fold_:.2f} |"
            )


if __name__ == "__main__":
    main()
