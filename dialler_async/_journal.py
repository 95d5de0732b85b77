"""The checkpoint file's layout (format 3): what a run appends, and how it is folded.

Tables:

* ``meta``: ``format``, ``job`` (the job's resolved options), ``runs``, ``closed`` (the last
  run that closed the file).
* ``items``: the **folded** state, one row per item identity ``(digest, occurrence)``: its
  state, key, input row, run, time and error, as :data:`UPSERT` leaves them. It holds what every
  earlier run journaled, and it is what a run reads (``Checkpoint.previous``).
* ``log``: what runs since the last fold journaled, one row per committed batch: ``entries``
  (orjson of the batch's entry tuples, :data:`ENTRY` order) and ``numbers`` (orjson of
  ``[digest, number]`` pairs, issue 14, or NULL). Appending a row is one B-tree append to a
  rowid table per batch; the upsert into ``items`` it replaces cost ~21k instructions per
  entry (a random page of a WITHOUT ROWID index, a conflict check, a partial index).
* ``numbers``: the folded dial numbers by item digest.

:func:`fold` applies the log to ``items`` and ``numbers`` entry by entry, in commit order, with
:data:`UPSERT`'s rules, and deletes the log rows it applied, in one transaction: a crash during a
fold leaves the log as it was, and the next open folds it again. A checkpoint folds when it is
opened, before it reads anything, so a run that finishes never pays the index inserts; the run
that resumes it pays them once. :func:`journal_entries` reads the folded view (``items`` merged
with the log, by :func:`merge`, the same rules in Python) without writing: while a job runs, or
after it was killed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Final

import attrs
import orjson

from ._exceptions import CheckpointError

PENDING: Final = "pending"
FORMAT: Final = "3"
#: Formats this version opens: 2 (no log) is upgraded in place on open.
OPENS: Final = ("2", FORMAT)
#: An entry's fields, in the order they are bound and encoded.
ENTRY: Final = ("digest", "occurrence", "key", "state", "row", "run", "at", "error")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    digest INTEGER NOT NULL,
    occurrence INTEGER NOT NULL,
    key TEXT,
    state TEXT NOT NULL,
    row INTEGER NOT NULL,
    run INTEGER NOT NULL,
    at REAL NOT NULL,
    error TEXT,
    PRIMARY KEY (digest, occurrence)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS unsettled ON items (key) WHERE state IN ('pending', 'ambiguous');
"""
LOG: Final = (
    "CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, entries BLOB NOT NULL, numbers BLOB)"
)
APPEND: Final = "INSERT INTO log (entries, numbers) VALUES (?, ?)"
# Issue 14, dedupe_phone across runs: the dial numbers (E.164 digits) of each item sent, by the
# item's digest, so a resumed run knows what the account may already dial before any row of
# its own is judged. Created in every file (a file from before this table simply has none).
NUMBERS: Final = """
CREATE TABLE IF NOT EXISTS numbers (
    digest INTEGER NOT NULL,
    number INTEGER NOT NULL,
    PRIMARY KEY (digest, number)
) WITHOUT ROWID
"""
NUMBERS_INSERT: Final = "INSERT OR IGNORE INTO numbers (digest, number) VALUES (?, ?)"

# Nothing replaces SUCCEEDED (an item with this identity is then skipped, never sent), and
# CANCELLED replaces nothing (it says only "not done in this run"): so only a confirmed outcome
# (SUCCEEDED, FAILED) or another "check first" state replaces a PENDING or AMBIGUOUS entry.
# An AMBIGUOUS outcome keeps the send time of its own run's PENDING entry; one left by an earlier
# run says nothing about this run's resend (it may be on the server right now), so it does not.
# merge() is the same rule in Python: change both together (tests/test_journal.py compares them).
UPSERT: Final = """
INSERT INTO items (digest, occurrence, key, state, row, run, at, error)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (digest, occurrence) DO UPDATE SET
    key = excluded.key, state = excluded.state, row = excluded.row, run = excluded.run,
    at = CASE WHEN excluded.state = 'ambiguous' AND items.state = 'pending'
                   AND items.run = excluded.run
              THEN items.at ELSE excluded.at END,
    error = excluded.error
WHERE excluded.state != 'cancelled' AND items.state != 'succeeded'
"""

Entry = tuple[Any, ...]  # ENTRY's fields; the digest signed (SQLite integers are signed)
_U64: Final = (1 << 64) - 1


def encode(values: list[Entry] | list[tuple[int, int]]) -> bytes:
    """A log blob: orjson of the tuples (a text with a lone surrogate, which UTF-8 cannot
    hold and SQLite could not either, is kept with the surrogate escaped)."""
    try:
        return orjson.dumps(values)
    except orjson.JSONEncodeError:
        return orjson.dumps([tuple(map(_utf8, value)) for value in values])


def _utf8(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def merge(old: Entry | None, new: Entry) -> Entry:
    """The entry :data:`UPSERT` leaves when ``new`` meets ``old`` (None: no entry yet)."""
    if old is None:
        return new
    state = new[3]
    if state == "cancelled" or old[3] == "succeeded":
        return old
    if state == "ambiguous" and old[3] == PENDING and old[5] == new[5]:
        return (*new[:6], old[6], new[7])
    return new


def fold(db: sqlite3.Connection) -> int:
    """Apply the log to ``items`` and ``numbers`` in commit order and delete it, as one
    transaction (rolled back on any error); the number of entries applied.

    ``db`` is in autocommit mode (``isolation_level=None``) and holds the file's lock.
    Raises ``sqlite3.Error``, or ``ValueError`` for a log row that is not orjson."""
    db.execute("BEGIN IMMEDIATE")
    try:
        applied = last = 0
        # One log row at a time (a cursor, not fetchall): a batch's blob is up to ~0.5 MB.
        # The upserts beside it touch only items and numbers, and nothing commits meanwhile.
        for seq, blob, noted in db.execute("SELECT seq, entries, numbers FROM log ORDER BY seq"):
            last = seq
            applied += _apply(db, _decode(blob), None if noted is None else _decode(noted))
        if last:
            db.execute("DELETE FROM log WHERE seq <= ?", (last,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return applied


def _decode(blob: bytes) -> list[Any]:
    decoded = orjson.loads(blob)
    if not isinstance(decoded, list):
        raise ValueError(f"a log row holds {type(decoded).__name__}, not a list")
    return decoded


def _apply(db: sqlite3.Connection, entries: list[Any], numbers: list[Any] | None) -> int:
    # In commit order. Sorting by identity (stably) would leave the same items, but costs more
    # than it saves: 6.6 against 4.9 µs an entry folding 100,000 in chunks of 16,384.
    db.executemany(UPSERT, entries)
    if numbers:
        db.executemany(NUMBERS_INSERT, numbers)
    return len(entries)


@attrs.frozen(slots=True)
class JournalEntry:
    """What the journal holds for one item (see the module docstring)."""

    state: str
    key: str | None
    row: int
    run: int
    at: float
    error: str | None


def journal_entries(path: str | Path) -> dict[tuple[int, int], JournalEntry]:
    """Every item's entry, by identity ``(digest, occurrence)`` (the digest unsigned): ``items``
    merged with the log not yet folded, read in one snapshot on a read-only connection (beside
    a running job, or after one was killed). For tests and inspection; raises
    :class:`CheckpointError` when the file is not a readable checkpoint."""
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=5, isolation_level=None)
    except sqlite3.Error as exc:
        raise CheckpointError(f"reading checkpoint {path} failed: {exc}") from None
    try:
        db.execute("BEGIN")  # one snapshot: a fold cannot commit between the two reads
        folded: dict[tuple[int, int], Entry] = {
            (row[0], row[1]): row for row in db.execute(f"SELECT {', '.join(ENTRY)} FROM items")
        }
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        if "log" in tables:
            for (blob,) in db.execute("SELECT entries FROM log ORDER BY seq"):
                for entry in _decode(blob):
                    identity = (entry[0], entry[1])
                    folded[identity] = merge(folded.get(identity), tuple(entry))
    except (sqlite3.Error, ValueError, LookupError, TypeError) as exc:  # a damaged log row too
        raise CheckpointError(f"reading checkpoint {path} failed: {exc!r}") from None
    finally:
        db.close()
    return {
        (digest & _U64, occurrence): JournalEntry(
            state=entry[3], key=entry[2], row=entry[4], run=entry[5], at=entry[6], error=entry[7]
        )
        for (digest, occurrence), entry in folded.items()
    }
