"""A SQLite journal of a bulk job, so a re-run skips what is done and never duplicates a write.

Items are identified by **content, not position**: the digest of the item's key (UserData or ID)
and request payload, plus its occurrence number among equal items of the input. Re-running with
rows re-ordered, inserted or removed therefore skips exactly what already succeeded. Two kinds of
state:

* ``PENDING``: written and committed BEFORE a write that is not safe to repeat is sent. If the
  process dies before the outcome is journaled, the re-run checks the item by lookup first
  (or reports it AMBIGUOUS), never treats it as "not sent". A row whose content changed but whose
  key has a PENDING or AMBIGUOUS entry is checked the same way.
* the final :class:`Outcome`. Only a confirmed outcome (SUCCEEDED, FAILED, AMBIGUOUS) replaces a
  PENDING or AMBIGUOUS entry: a row cancelled during its check stays "check first".

Final outcomes are written in short batches (a lost batch costs re-sending idempotent writes or
re-checking PENDING ones, never a duplicate); a PENDING entry is committed on its own, at once,
before its write is sent. A batch is one row appended to the file's log; the index of items that
a run reads is folded from the log when the file is next opened, so a run reads exactly what the
runs before it journaled and a run that finishes never pays the index inserts (the layout, the
fold and a read-only view of both: :mod:`dialler_async._journal`). ``synchronous=OFF``: every
commit survives the process being killed (SIGKILL), which is what resuming needs, at a fraction
of an fsync's cost.

A checkpoint in use is locked (an OS file lock, released when the process dies): a second job on
the same file fails at once with :class:`ConfigurationError`. A job opens its checkpoint in a
worker thread (:func:`open_checkpoint`): opening folds what the runs before journaled, seconds
for a few hundred thousand rows, which must not hold up the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Final

import attrs
import orjson

from ._digests import DigestSet
from ._exceptions import CheckpointError, ConfigurationError
from ._journal import (
    APPEND,
    FORMAT,
    LOG,
    NUMBERS,
    OPENS,
    PENDING,
    SCHEMA,
    encode,
    fold,
)
from ._results import Operation, Outcome

__all__ = ["PENDING", "Checkpoint", "Identity", "Previous", "open_checkpoint"]

#: Outcomes per commit (or one second of them), one log row each: what a crash can lose. A log
#: row of 512 costs about what one of 4,096 does per entry (0.41 against 0.36 µs of SQLite CPU,
#: benchmarks/README.md, "the checkpoint's journal"); the bound is format 2's.
_BATCH: Final = 4096
#: The page cache (16 MiB; SQLite's default is 2) and the WAL size that triggers a checkpoint
#: into the main file (4,000 pages, 16 MiB; default 1,000): folding a few hundred thousand
#: entries keeps the index pages in memory instead of reading them back per chunk.
_PRAGMAS: Final = ("PRAGMA cache_size=-16384", "PRAGMA wal_autocheckpoint=4000")
_BATCH_SECONDS: Final = 1.0
_AT: Final = 6  # the entry's time, in _entry's tuple

# Items an earlier run sent that may be on the account: done, or possibly landed.
_EARLIER_NUMBERS = """
SELECT DISTINCT numbers.digest, numbers.number FROM numbers
JOIN items ON items.digest = numbers.digest
WHERE items.state IN ('succeeded', 'pending', 'ambiguous') AND items.run < ?
"""

Identity = tuple[int, int]  # (digest, occurrence)


@attrs.frozen(slots=True)
class Previous:
    """What an earlier run journaled for an item: ``state``, and ``at`` (Unix time) when the
    write that may have landed was last sent."""

    state: str
    at: float


_U64: Final = (1 << 64) - 1
_TWO_63: Final = 1 << 63
_TWO_64: Final = 1 << 64
_SKIPPED: Final = Outcome.SKIPPED
_INVALID: Final = Outcome.INVALID


def _signed(digest: int) -> int:
    """SQLite integers are signed 64-bit."""
    return digest - _TWO_64 if digest >= _TWO_63 else digest


class _FileLock:
    """An exclusive, non-blocking OS lock on a file, held while a job uses it."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock(self._fd)
        except OSError:
            os.close(self._fd)
            raise

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)  # closing the descriptor releases the lock


def _lock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            raise BlockingIOError(str(exc)) from None
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


class Checkpoint:
    """The journal file of one job (one operation with one set of resolved options)."""

    def __init__(self, path: str | Path, operation: Operation, options: dict[str, Any]) -> None:
        self.path = Path(path)
        try:
            self._lock = _FileLock(self.path)
        except BlockingIOError:
            raise ConfigurationError(
                f"checkpoint {self.path} is in use by another running job; wait for it to end, "
                "or give another file"
            ) from None
        except OSError as exc:
            raise ConfigurationError(
                f"checkpoint {self.path} cannot be opened: {exc.strerror}"
            ) from None
        self._pending: list[tuple[Any, ...]] = []
        self._numbers: list[tuple[int, int]] = []  # note_numbers(), written with the batch
        self._batch_started = 0.0
        self.run = 0  # this run's number: 1 for a new file
        self.after_interruption = False
        # What earlier runs journaled, held in memory so that a row no earlier run saw (every
        # row of a first run) costs no query: the digests of their entries, and the keys of
        # those left unsettled (the key fallback of previous()). None: no earlier entries.
        self._earlier: DigestSet | None = None
        self._unsettled_keys: frozenset[str] = frozenset()
        try:
            # Opened in a worker thread (open_checkpoint), used on the event loop's afterwards:
            # never by two threads at once.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            self._lock.release()
            raise ConfigurationError(f"checkpoint {self.path} cannot be opened: {exc}") from None
        try:
            self._open(operation, options)
        except BaseException:
            self._db.close()
            self._lock.release()
            raise

    def _open(self, operation: Operation, options: dict[str, Any]) -> None:
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")
            for pragma in _PRAGMAS:
                self._db.execute(pragma)
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"{self.path} is not a checkpoint file ({exc}); give a new file name, or "
                "delete it to start over"
            ) from None
        if tables and "meta" not in tables:
            raise ConfigurationError(
                f"{self.path} is an SQLite file but not a checkpoint; give a new file name"
            )
        if not tables:
            self._db.executescript(SCHEMA)
            self._db.execute(NUMBERS)
            self._db.execute(LOG)
        meta = dict(self._db.execute("SELECT name, value FROM meta"))
        job = orjson.dumps(
            {"operation": operation.value, **options}, option=orjson.OPT_SORT_KEYS
        ).decode()
        if not tables:
            self._db.executemany(
                "INSERT INTO meta VALUES (?, ?)", [("format", FORMAT), ("job", job), ("runs", "1")]
            )
            self.run = 1
            return
        found = meta.get("format")
        if found not in OPENS:
            raise ConfigurationError(_format_refused(self.path, found))
        if meta.get("job") != job:
            raise ConfigurationError(
                f"checkpoint {self.path} belongs to another job ({meta.get('job')}); this one "
                f"is {job}. Use a new checkpoint file, or delete it to start over."
            )
        try:
            self._db.execute(NUMBERS)
            if found != FORMAT:  # format 2: no log yet; the table and the format together
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(LOG)
                self._db.execute("UPDATE meta SET value=? WHERE name='format'", (FORMAT,))
                self._db.execute("COMMIT")
            # Every earlier run's entries into the index, before anything is read from it.
            fold(self._db)
        except sqlite3.Error as exc:
            raise CheckpointError(f"writing checkpoint {self.path} failed: {exc}") from None
        except ValueError as exc:  # a log row that is not orjson: not written by this code
            raise ConfigurationError(
                f"checkpoint {self.path} is damaged ({exc}); delete it to start over"
            ) from None
        self.run = int(meta.get("runs", "0")) + 1
        # The run before this one ended without close() (killed, crashed, power lost): the
        # outcomes of its last batch may be lost, so a row without an entry may still have
        # been sent by it.
        self.after_interruption = meta.get("closed") != str(self.run - 1)
        self._db.execute("UPDATE meta SET value=? WHERE name='runs'", (str(self.run),))
        earlier = DigestSet()
        for (digest,) in self._db.execute("SELECT digest FROM items"):
            earlier.add(digest & _U64)
        if len(earlier):
            self._earlier = earlier
            self._unsettled_keys = frozenset(
                key
                for (key,) in self._db.execute(
                    "SELECT key FROM items WHERE state IN ('pending', 'ambiguous') "
                    "AND key IS NOT NULL"
                )
            )

    # -- reading ----------------------------------------------------------------------------

    def previous(self, identity: Identity, key: str | int | None) -> Previous | None:
        """What an earlier run journaled for this item (entries of this run are not read: each
        row is looked up before it is sent), or a "check first" state that an
        earlier run left for other content with the same key (the row was edited after a write
        that may have landed); None when there is nothing to go by."""
        earlier = self._earlier
        if earlier is None or (
            identity[0] not in earlier and (key is None or str(key) not in self._unsettled_keys)
        ):
            return None
        try:
            row = self._db.execute(
                "SELECT state, at FROM items WHERE digest=? AND occurrence=?",
                (_signed(identity[0]), identity[1]),
            ).fetchone()
            if row is None and key is not None:
                row = self._db.execute(
                    "SELECT state, at FROM items WHERE key=? AND state IN ('pending', 'ambiguous') "
                    "AND run < ? AND digest != ? ORDER BY at DESC",
                    (str(key), self.run, _signed(identity[0])),
                ).fetchone()
        except sqlite3.Error as exc:
            raise CheckpointError(f"reading checkpoint {self.path} failed: {exc}") from None
        return None if row is None else Previous(str(row[0]), float(row[1]))

    def earlier_numbers(self) -> list[tuple[int, int]]:
        """``(item digest, dial number)`` of every item an earlier run journaled as SUCCEEDED,
        PENDING or AMBIGUOUS (it is, or may be, on the account) that :meth:`note_numbers`
        noted; read once, before row one, by ``dedupe_phone`` (issue 14)."""
        if self._earlier is None:
            return []
        try:
            rows = self._db.execute(_EARLIER_NUMBERS, (self.run,)).fetchall()
        except sqlite3.Error as exc:
            raise CheckpointError(f"reading checkpoint {self.path} failed: {exc}") from None
        return [(digest & _U64, number) for digest, number in rows]

    # -- writing ----------------------------------------------------------------------------

    def note_numbers(self, digest: int, numbers: list[int]) -> None:
        """Journal the dial numbers of an item about to be sent (with the next batch, so never
        after its outcome; issue 14's ``dedupe_phone`` reads them on a resumed run)."""
        signed = _signed(digest)
        self._numbers += [(signed, number) for number in numbers]
        # An outcome's batch usually brings them to disk; rows that record none (skipped as
        # "already done" by a resume) must not pile up meanwhile.
        if len(self._numbers) >= 8 * _BATCH:
            self.flush()

    def mark_pending(self, identity: Identity, key: str | int | None, row: int) -> None:
        """Journal, durably and at once, that a write that is not safe to repeat is about to be
        sent."""
        self._pending.append(_entry(identity, key, PENDING, row, self.run, None))
        self.flush()

    def record(
        self,
        identity: Identity,
        key: str | int | None,
        outcome: Outcome,
        row: int,
        error: str | None,
    ) -> None:
        """Journal an item's final outcome (in the next batch)."""
        if outcome is _SKIPPED or outcome is _INVALID:
            # SKIPPED: the SUCCEEDED entry from the earlier run stays. INVALID: nothing was
            # sent, the row is simply checked again next time.
            return
        # _entry() inlined (a call per row). _value_, not .value: the enum property is a
        # Python-level descriptor call per row.
        digest = identity[0]
        entry = (
            digest - _TWO_64 if digest >= _TWO_63 else digest,
            identity[1],
            None if key is None else str(key),
            outcome._value_,
            row,
            self.run,
            time.time(),
            None if error is None else error[:500],
        )
        pending = self._pending
        if not pending:
            self._batch_started = entry[_AT]
        pending.append(entry)
        # Up to _BATCH outcomes or one second of them per commit: a slow job loses no more
        # than a second of outcomes to a crash (re-sent if safe to repeat, re-checked if
        # PENDING).
        if len(pending) >= _BATCH or entry[_AT] - self._batch_started >= _BATCH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Commit the batched entries."""
        if not self._pending and not self._numbers:
            return
        entries, self._pending = self._pending, []
        numbers, self._numbers = self._numbers, []
        try:
            # One row appended to the log, committed on its own (autocommit): the entries
            # reach the index of items when a later run opens the file (_journal.fold).
            self._db.execute(APPEND, (encode(entries), encode(numbers) if numbers else None))
        except sqlite3.Error as exc:
            raise CheckpointError(f"writing checkpoint {self.path} failed: {exc}") from None

    def close(self) -> None:
        """Flush and close; the file lock is released even when the flush fails."""
        try:
            self.flush()
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('closed', ?)", (str(self.run),)
                )
            except sqlite3.Error as exc:
                raise CheckpointError(f"writing checkpoint {self.path} failed: {exc}") from None
        finally:
            self._db.close()
            self._lock.release()


def _format_refused(path: Path, found: str | None) -> str:
    if found == "1":
        return (
            f"checkpoint {path} was written by an older version of dialler_async (format 1, "
            "keyed by row position); delete it to start over"
        )
    if found is None:
        return f"checkpoint {path} has no format in its meta table; delete it to start over"
    return (
        f"checkpoint {path} has format {found!r}; this version of dialler_async reads formats "
        f"{' and '.join(OPENS)} (a newer version wrote it?): use that version, or delete it to "
        "start over"
    )


def _entry(
    identity: Identity, key: str | int | None, state: str, row: int, run: int, error: str | None
) -> tuple[Any, ...]:
    return (
        _signed(identity[0]),
        identity[1],
        None if key is None else str(key),
        state,
        row,
        run,
        time.time(),
        None if error is None else error[:500],
    )


async def open_checkpoint(
    path: str | Path, operation: Operation, options: dict[str, Any]
) -> Checkpoint:
    """``Checkpoint(path, operation, options)``, opened in a worker thread. If the caller is
    cancelled meanwhile, the opening goes on in its thread and what it opened is closed (its
    file lock released) when it is done; the cancellation is raised at once."""
    opening = asyncio.get_running_loop().run_in_executor(None, Checkpoint, path, operation, options)
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_unused)
        raise


def _close_unused(opening: asyncio.Future[Checkpoint]) -> None:
    if opening.cancelled() or opening.exception() is not None:
        return
    with contextlib.suppress(CheckpointError):  # nothing was journaled: nothing is lost
        opening.result().close()
