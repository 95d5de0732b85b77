"""A SQLite journal of a bulk job, so a re-run skips what is done and never duplicates a write.

Rows are keyed by input index and carry a fingerprint of the item, so a changed input file is
noticed (a changed row is simply processed again). Two kinds of rows:

* ``PENDING``: written BEFORE a write that is not safe to repeat is sent. If the process dies
  before the outcome is journaled, the re-run treats the row as AMBIGUOUS (look it up by
  UserData, or report it), never as "not sent".
* the final :class:`Outcome`, written before the item's result is handed to the caller.

Each write is its own transaction with ``synchronous=OFF``: it survives the process being
killed (SIGKILL), which is what resuming needs, at a fraction of an fsync's cost.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Final

import orjson

from ._exceptions import ConfigurationError
from ._results import Operation, Outcome

PENDING: Final = "pending"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY,
    fingerprint BLOB NOT NULL,
    state TEXT NOT NULL,
    key TEXT,
    error TEXT
);
"""


def fingerprint(payload: object) -> bytes:
    """A short, stable digest of an item's request payload."""
    return hashlib.blake2b(
        orjson.dumps(payload, option=orjson.OPT_SORT_KEYS), digest_size=8
    ).digest()


def _open(path: Path) -> sqlite3.Connection:
    """The journal, set up; a file that is not one (or cannot be one) is a ConfigurationError."""
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:  # "file is not a database", a directory, read-only
        if db is not None:
            db.close()
        raise ConfigurationError(
            f"cannot use {path} as a checkpoint ({exc}): give a new file name (it is created), "
            "or the checkpoint of an earlier run of this same job"
        ) from exc
    return db


class Checkpoint:
    """The journal file of one job (one operation with one set of options)."""

    def __init__(self, path: str | Path, operation: Operation, options: dict[str, object]) -> None:
        self.path = Path(path)
        self._db = _open(self.path)
        job = orjson.dumps(
            {"operation": operation.value, **options}, option=orjson.OPT_SORT_KEYS
        ).decode()
        row = self._db.execute("SELECT value FROM meta WHERE name='job'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('job', ?)", (job,))
        elif row[0] != job:
            self._db.close()
            raise ConfigurationError(
                f"checkpoint {self.path} belongs to another job ({row[0]}); this one is {job}. "
                "Use a new checkpoint file, or delete it to start over."
            )

    def previous(self, index: int, digest: bytes) -> str | None:
        """The journaled state of this item from an earlier run (None if new or changed)."""
        row = self._db.execute(
            "SELECT state, fingerprint FROM items WHERE idx=?", (index,)
        ).fetchone()
        if row is None or row[1] != digest:
            return None
        state: str = row[0]
        return state

    def mark_pending(self, index: int, digest: bytes, key: str | int | None) -> None:
        self._write(index, digest, PENDING, key, None)

    def record(
        self, index: int, digest: bytes, outcome: Outcome, key: str | int | None, error: str | None
    ) -> None:
        if outcome is Outcome.SKIPPED:
            return  # the SUCCEEDED row from the earlier run stays
        self._write(index, digest, outcome.value, key, error)

    def _write(
        self, index: int, digest: bytes, state: str, key: str | int | None, error: str | None
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?)",
            (index, digest, state, None if key is None else str(key), error),
        )

    def close(self) -> None:
        self._db.close()
