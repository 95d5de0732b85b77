"""Checkpoint files in tests: read them as a run would see them, or edit their folded state to
simulate what a crash leaves (``dialler_async._journal`` has the layout)."""

from __future__ import annotations

import collections
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dialler_async._journal import fold, journal_entries


@contextlib.contextmanager
def folded(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to a checkpoint (not in use) whose log was folded into ``items`` and
    ``numbers``, as the next run's open does: edits commit statement by statement."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        fold(db)
        yield db
    finally:
        db.close()


def edit_items(path: Path, sql: str, *params: Any) -> None:
    """Run ``sql`` on the folded ``items`` of a checkpoint (e.g. to leave entries PENDING, as
    a run killed after sending does)."""
    with folded(path) as db:
        db.execute(sql, params)


def states(path: Path) -> collections.Counter[str]:
    """How many items the journal holds in each state (read-only; works while a job runs)."""
    return collections.Counter(entry.state for entry in journal_entries(path).values())
