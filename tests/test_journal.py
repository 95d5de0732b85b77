"""The checkpoint's log and its fold (format 3): what a fold leaves in ``items`` is what the
per-entry upsert left before, a crash during a fold loses nothing, older files open, and
``journal_entries`` reads a file while a job writes it."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dialler_async import ConfigurationError, DiallerClient, Operation, Outcome, _journal
from dialler_async._checkpoint import Checkpoint
from dialler_async._journal import (
    APPEND,
    FORMAT,
    LOG,
    NUMBERS,
    NUMBERS_INSERT,
    SCHEMA,
    UPSERT,
    JournalEntry,
    encode,
    fold,
    journal_entries,
)
from dialler_async.emulator import Emulator

from .conftest import contact
from .invariants import Snapshot, assert_account
from .journal import folded

Entry = tuple[Any, ...]
_ITEMS = "SELECT digest, occurrence, key, state, row, run, at, error FROM items ORDER BY 1, 2"


def _fresh(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(SCHEMA)
    db.execute(NUMBERS)
    db.execute(LOG)
    return db


def _direct(path: Path, batches: list[list[Entry]]) -> list[Entry]:
    """The items the per-entry upsert of format 2 leaves: each batch upserted as it commits."""
    db = _fresh(path)
    for batch in batches:
        db.execute("BEGIN")
        db.executemany(UPSERT, batch)
        db.execute("COMMIT")
    rows = db.execute(_ITEMS).fetchall()
    db.close()
    return rows


def _logged(path: Path, batches: list[list[Entry]], fold_before: set[int]) -> list[Entry]:
    """The items format 3 leaves: each batch appended to the log, folded before the batches in
    ``fold_before`` (as a run's open folds) and at the end; ``journal_entries`` must show the
    same before the last fold."""
    db = _fresh(path)
    for n, batch in enumerate(batches):
        if n in fold_before:
            fold(db)
        db.execute(APPEND, (encode(batch), None))
    unfolded = journal_entries(path)
    fold(db)
    rows = db.execute(_ITEMS).fetchall()
    assert db.execute("SELECT COUNT(*) FROM log").fetchone() == (0,)
    db.close()
    assert unfolded == {
        (d & (1 << 64) - 1, o): JournalEntry(s, k, r, run, at, e)
        for d, o, k, s, r, run, at, e in rows
    }
    return rows


def _entry(state: str, run: int, at: float, digest: int = -5, occurrence: int = 0) -> Entry:
    return (digest, occurrence, "K", state, int(at), run, at, f"{state} at {at}")


# (state, run, at) of one item's entries in commit order -> the (state, run, at) left
CASES = [
    # an AMBIGUOUS outcome keeps its own run's PENDING time (the write's send time)
    ([("pending", 1, 10.5), ("ambiguous", 1, 20.0)], ("ambiguous", 1, 10.5)),
    # an earlier run's AMBIGUOUS, then this run's resend: this run's PENDING time
    (
        [("ambiguous", 1, 10.0), ("pending", 2, 30.0), ("ambiguous", 2, 40.0)],
        ("ambiguous", 2, 30.0),
    ),
    # ... and an earlier run's entry says nothing about this run's send
    ([("ambiguous", 1, 10.0), ("ambiguous", 2, 40.0)], ("ambiguous", 2, 40.0)),
    ([("pending", 1, 10.0), ("ambiguous", 2, 40.0)], ("ambiguous", 2, 40.0)),
    # nothing replaces SUCCEEDED
    ([("succeeded", 1, 10.0), ("failed", 2, 20.0)], ("succeeded", 1, 10.0)),
    (
        [("succeeded", 1, 1.0), ("pending", 2, 2.0), ("ambiguous", 2, 3.0), ("cancelled", 3, 4.0)],
        ("succeeded", 1, 1.0),
    ),
    # CANCELLED replaces nothing, but is an entry where there was none
    ([("pending", 1, 10.0), ("cancelled", 1, 20.0)], ("pending", 1, 10.0)),
    ([("ambiguous", 1, 10.0), ("cancelled", 2, 20.0)], ("ambiguous", 1, 10.0)),
    ([("cancelled", 1, 10.0)], ("cancelled", 1, 10.0)),
    ([("cancelled", 1, 10.0), ("succeeded", 2, 20.0)], ("succeeded", 2, 20.0)),
    # confirmed outcomes and new "check first" states replace the rest
    ([("pending", 1, 10.0), ("failed", 1, 20.0)], ("failed", 1, 20.0)),
    ([("failed", 1, 10.0), ("succeeded", 2, 20.0)], ("succeeded", 2, 20.0)),
    ([("pending", 1, 10.0), ("pending", 2, 20.0)], ("pending", 2, 20.0)),
    ([("failed", 1, 10.0), ("pending", 2, 20.0), ("succeeded", 2, 30.0)], ("succeeded", 2, 30.0)),
]


@pytest.mark.parametrize(("steps", "left"), CASES)
@pytest.mark.parametrize("split", ["one batch", "a batch each", "a fold between runs"])
def test_a_fold_leaves_what_the_upsert_left(
    tmp_path: Path, steps: list[tuple[str, int, float]], left: tuple[str, int, float], split: str
) -> None:
    entries = [_entry(*step) for step in steps]
    batches = [entries] if split == "one batch" else [[e] for e in entries]
    runs = [e[5] for e in entries]
    fold_before = (
        {n for n in range(1, len(runs)) if runs[n] != runs[n - 1]}
        if split == "a fold between runs"
        else set()
    )
    direct = _direct(tmp_path / "direct.db", batches)
    assert [(r[3], r[5], r[6]) for r in direct] == [left]
    assert _logged(tmp_path / "logged.db", batches, fold_before) == direct


@pytest.mark.parametrize("seed", range(12))
def test_random_histories_fold_as_they_were_upserted(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    states = ["pending", "succeeded", "failed", "ambiguous", "cancelled"]
    identities = [(rng.choice([-(1 << 63), -1, 0, 7, (1 << 63) - 1]), rng.randrange(2))]
    identities += [(rng.getrandbits(64) - (1 << 63), 0) for _ in range(5)]
    run, at, entries = 1, 1.0, []
    for _ in range(300):
        if rng.random() < 0.05:
            run += 1
        at += rng.random()
        digest, occurrence = rng.choice(identities)
        state = rng.choice(states)
        entries.append((digest, occurrence, rng.choice(["K", None]), state, 0, run, at, None))
    cuts = sorted(rng.sample(range(1, len(entries)), 20))
    batches = [entries[a:b] for a, b in zip([0, *cuts], [*cuts, len(entries)], strict=True)]
    fold_before = set(rng.sample(range(1, len(batches)), 4))
    direct = _direct(tmp_path / "direct.db", batches)
    assert _logged(tmp_path / "logged.db", batches, fold_before) == direct


def test_numbers_fold_into_their_table(tmp_path: Path) -> None:
    pairs = [(-3, 4930), (5, 4931), (-3, 4930), (1 << 62, 4932)]
    db = _fresh(tmp_path / "logged.db")
    db.execute(APPEND, (encode([]), encode(pairs[:2])))
    db.execute(APPEND, (encode([]), encode(pairs[2:])))
    fold(db)
    logged = db.execute("SELECT digest, number FROM numbers ORDER BY 1, 2").fetchall()
    db.close()
    db = _fresh(tmp_path / "direct.db")
    db.executemany(NUMBERS_INSERT, pairs)
    assert logged == db.execute("SELECT digest, number FROM numbers ORDER BY 1, 2").fetchall()
    db.close()


def _count(path: Path, table: str) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (count,) = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    finally:
        db.close()
    return int(count)


def _first_run(path: Path, items: int) -> dict[tuple[int, int], JournalEntry]:
    """A closed run 1: PENDING for every item (a log row each), then their outcomes."""
    journal = Checkpoint(path, Operation.IMPORT, {})
    for n in range(items):
        journal.mark_pending((n * 7919, 0), f"K{n}", n)
    for n in range(items):
        outcome = Outcome.SUCCEEDED if n % 3 else Outcome.AMBIGUOUS
        journal.record((n * 7919, 0), f"K{n}", outcome, n, None if n % 3 else "timed out")
    journal.close()
    assert _count(path, "items") == 0  # a run does not write the index
    return journal_entries(path)


def test_an_error_during_a_fold_leaves_the_log_for_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ck.db"
    entries = _first_run(path, 12)
    logged = _count(path, "log")
    applied = 0
    apply = _journal._apply

    def failing(db: sqlite3.Connection, entries: list[Any], numbers: list[Any] | None) -> int:
        nonlocal applied
        if applied == 3:
            raise RuntimeError("injected: the fold dies after three log rows")
        applied += 1
        return apply(db, entries, numbers)

    monkeypatch.setattr(_journal, "_apply", failing)
    with pytest.raises(RuntimeError, match="injected"):
        Checkpoint(path, Operation.IMPORT, {})
    assert applied == 3
    assert (_count(path, "items"), _count(path, "log")) == (0, logged)  # rolled back
    assert journal_entries(path) == entries
    monkeypatch.undo()
    journal = Checkpoint(path, Operation.IMPORT, {})  # the lock was released; folds again
    try:
        assert journal.run == 2 and not journal.after_interruption
        assert (_count(path, "items"), _count(path, "log")) == (12, 0)
        assert journal_entries(path) == entries
        previous = journal.previous((3 * 7919, 0), "K3")
        assert previous is not None and previous.state == "ambiguous"
    finally:
        journal.close()


_KILLED_FOLD = textwrap.dedent(
    """
    import os, signal, sys
    from dialler_async import _checkpoint, _journal
    from dialler_async._results import Operation

    # A small page cache: the fold's pages spill into the WAL before it commits.
    _checkpoint._PRAGMAS = ("PRAGMA cache_size=10",)
    apply, rows = _journal._apply, []

    def dying(db, entries, numbers):
        rows.append(apply(db, entries, numbers))
        if len(rows) == 300:  # of 600 PENDING rows and the outcomes' batch
            os.kill(os.getpid(), signal.SIGKILL)
        return rows[-1]

    _journal._apply = dying
    _checkpoint.Checkpoint(sys.argv[1], Operation.IMPORT, {})
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_fold_killed_midway_is_folded_again(tmp_path: Path) -> None:
    path = tmp_path / "ck.db"
    entries = _first_run(path, 600)
    logged = _count(path, "log")
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_FOLD, str(path)], capture_output=True, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (_count(path, "items"), _count(path, "log")) == (0, logged)
    assert journal_entries(path) == entries
    journal = Checkpoint(path, Operation.IMPORT, {})
    try:
        assert (_count(path, "items"), _count(path, "log")) == (600, 0)
        assert journal_entries(path) == entries
    finally:
        journal.close()


def _as_format_2(path: Path) -> None:
    """Turn a closed format-3 file into what format 2 wrote: everything in ``items``, no log."""
    with folded(path) as db:
        db.execute("DROP TABLE log")
        db.execute("UPDATE meta SET value='2' WHERE name='format'")


def _meta(path: Path) -> dict[str, str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT name, value FROM meta"))
    finally:
        db.close()


def test_a_format_2_file_opens_and_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "ck.db"
    entries = _first_run(path, 5)
    _as_format_2(path)
    assert journal_entries(path) == entries  # a file without a log reads too
    journal = Checkpoint(path, Operation.IMPORT, {})
    try:
        assert _meta(path)["format"] == FORMAT == "3"
        assert journal.run == 2 and not journal.after_interruption
        previous = journal.previous((7919, 0), "K1")
        assert previous is not None and previous.state == "succeeded"
        journal.record((1, 1), "new", Outcome.FAILED, 9, "no")
    finally:
        journal.close()
    assert journal_entries(path)[(1, 1)].state == "failed"
    assert len(journal_entries(path)) == 6


async def test_a_job_resumes_from_a_format_2_file(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    path = tmp_path / "ck.db"
    data = [contact(n) for n in range(20)]
    before = Snapshot.take(emulator)
    first = await client.import_contacts(
        data[:12], checkpoint=path, overwrite_duplicates=False, keep_results=True
    )
    assert_account(first, read=12, emulator=emulator, before=before, upsert=False)
    _as_format_2(path)
    before = Snapshot.take(emulator)
    second = await client.import_contacts(
        data, checkpoint=path, overwrite_duplicates=False, keep_results=True
    )
    assert_account(second, read=20, emulator=emulator, before=before, upsert=False)
    assert (second.skipped, second.succeeded) == (12, 8)
    assert emulator.store.contact_count() == 20
    assert _meta(path)["format"] == "3"


@pytest.mark.parametrize(
    ("found", "message"),
    [
        ("1", r"format 1, keyed by row position"),
        ("7", r"has format '7'; this version of dialler_async reads formats 2 and 3"),
        (None, r"has no format"),
    ],
)
def test_an_unknown_format_is_refused_by_name(
    tmp_path: Path, found: str | None, message: str
) -> None:
    path = tmp_path / "ck.db"
    _first_run(path, 3)
    with folded(path) as db:
        if found is None:
            db.execute("DELETE FROM meta WHERE name='format'")
        else:
            db.execute("UPDATE meta SET value=? WHERE name='format'", (found,))
    with pytest.raises(ConfigurationError, match=message):
        Checkpoint(path, Operation.IMPORT, {})
    assert _meta(path).get("format") == found  # left as it was
    assert _meta(path)["runs"] == "1"


def test_a_damaged_log_row_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "ck.db"
    _first_run(path, 3)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(APPEND, (b"\x00not json", None))
    db.close()
    with pytest.raises(ConfigurationError, match="is damaged"):
        Checkpoint(path, Operation.IMPORT, {})
    assert _count(path, "items") == 0  # nothing folded


def test_journal_entries_while_a_run_writes_and_after_it_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "ck.db"
    _first_run(path, 6)
    journal = Checkpoint(path, Operation.IMPORT, {})  # run 2: folds run 1
    journal.mark_pending((0, 0), "K0", 0)  # run 1 left it AMBIGUOUS: this run resends
    journal.record((0, 0), "K0", Outcome.AMBIGUOUS, 0, "timed out again")
    journal.record((7919, 0), "K1", Outcome.FAILED, 1, "never replaces SUCCEEDED")
    journal.record((99, 0), "new", Outcome.SUCCEEDED, 6, None)
    in_memory = journal_entries(path)  # the batch is not committed yet
    assert (99, 0) not in in_memory and in_memory[(0, 0)].state == "pending"
    journal.flush()
    seen = journal_entries(path)  # read-only, beside the open (locked) checkpoint
    pending_at = in_memory[(0, 0)].at
    assert seen[(0, 0)] == JournalEntry("ambiguous", "K0", 0, 2, pending_at, "timed out again")
    assert seen[(7919, 0)].state == "succeeded" and seen[(7919, 0)].run == 1
    assert seen[(99, 0)].state == "succeeded" and len(seen) == 7
    journal._db.close()  # killed: close() never ran
    journal._lock.release()
    assert journal_entries(path) == seen
    again = Checkpoint(path, Operation.IMPORT, {})
    try:
        assert again.after_interruption and journal_entries(path) == seen
        assert _count(path, "log") == 0 and _count(path, "items") == 7
    finally:
        again.close()


def test_journal_entries_of_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    from dialler_async import CheckpointError

    with pytest.raises(CheckpointError, match="reading checkpoint"):
        journal_entries(tmp_path / "missing.db")
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no such table"):
        journal_entries(tmp_path / "empty.db")


async def test_every_unsafe_row_is_in_the_journal_when_its_result_is_delivered(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    """Read beside the running job: each row's PENDING (or its outcome) is committed before it
    is sent, so before its result is handed over; the run writes only the log."""
    path = tmp_path / "ck.db"
    data = [contact(n) for n in range(120)]
    missing: list[int] = []

    def on_result(result: Any) -> None:
        if result.index not in {e.row for e in journal_entries(path).values()}:
            missing.append(result.index)

    before = Snapshot.take(emulator)
    result = await client.import_contacts(
        data, checkpoint=path, overwrite_duplicates=False, on_result=on_result, concurrency=8
    )
    assert_account(result, read=120, emulator=emulator, before=before, upsert=False)
    assert result.succeeded == 120 and missing == []
    assert _count(path, "items") == 0 and _count(path, "log") >= 120
    assert {e.state for e in journal_entries(path).values()} == {"succeeded"}
    assert len(journal_entries(path)) == 120


def test_a_text_with_a_lone_surrogate_is_kept_escaped(tmp_path: Path) -> None:
    path = tmp_path / "ck.db"
    journal = Checkpoint(path, Operation.IMPORT, {})
    journal.record((1, 0), "K\ud800", Outcome.FAILED, 0, "bad \udcff byte")
    journal.close()
    (entry,) = journal_entries(path).values()
    assert (entry.key, entry.error) == ("K\\ud800", "bad \\udcff byte")
