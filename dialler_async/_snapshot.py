"""A sync's on-disk working set: the campaign's snapshot and the plan, in one SQLite file.

The snapshot maps UserData to the server's contacts (ID, lock state, the comparable field
values after normalisation); the plan journals each input row that needs a request (its kind,
the body to send, the row as given) and, per UserData seen in the input (so *missing* is one
query), the fields its rows ask for, merged in input order. Nothing of it is held in memory,
so a sync of a campaign of millions runs in the same few MB as one of thousands.

The file is scratch space: written without a journal or fsync and deleted when the sync ends.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from . import _fields as F
from ._converter import _structure_str as structure_text
from ._converter import format_datetime, parse_datetime

#: Fields a sync compares and may update (the campaign is the sync's own; UserData is the key).
COMPARED: Final[dict[str, F.Kind]] = {
    f.api: f.kind
    for f in F.IMPORT_FIELDS
    if f.api not in ("DiallerCampaignsID", "DiallerCampaignsName", "UserData")
}

_SCHEMA: Final = """
CREATE TABLE contacts (id INTEGER PRIMARY KEY, user_data TEXT, locked INTEGER, fields BLOB);
CREATE TABLE seen (user_data TEXT PRIMARY KEY, state BLOB, idx INTEGER) WITHOUT ROWID;
CREATE TABLE todo (idx INTEGER PRIMARY KEY, kind INTEGER, user_data TEXT, contact_id INTEGER,
                   payload BLOB, item BLOB, duplicate INTEGER);
"""

_BATCH: Final = 2000
_NAMES: Final = tuple(COMPARED)
#: Parameters per ``IN (...)`` query (SQLite allows 999 in its oldest builds).
_IN_LIMIT: Final = 900


def comparable(kind: F.Kind, value: Any) -> Any:
    """``value`` of a field of ``kind`` in one canonical form, so what the converter sends and
    what the server answers compare equal when they mean the same: text as text (``""`` is no
    value), numbers as numbers, date-times in the API's wall-clock form. A value that does not
    fit its kind is kept as it is (and so compares unequal to any valid one)."""
    if value is None or value == "":
        return None
    try:
        if kind is F.Kind.STR:
            if isinstance(value, float) and value.is_integer():
                return str(int(value))
            return value if isinstance(value, str) else str(value)
        if kind is F.Kind.INT:
            return int(value) if not isinstance(value, bool) else value
        if kind is F.Kind.FLOAT:
            return float(value) if not isinstance(value, bool) else value
        if kind is F.Kind.DATETIME:
            parsed = parse_datetime(value)
            return format_datetime(parsed) if parsed is not None else None
    except (ValueError, TypeError, OverflowError):
        return value
    return value


def server_values(record: Mapping[str, Any]) -> dict[str, Any]:
    """The comparable fields of a server record that hold a value, as the server sent them
    (normalised only when compared: a row sends a handful of the ~50 fields)."""
    get = record.get
    return {name: value for name in _NAMES if (value := get(name)) is not None}


def changed_fields(body: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a request ``body`` whose value differs from ``current`` (comparable
    values, absent = no value), as they would be sent. Fields outside :data:`COMPARED` are
    never part of an update."""
    out = {}
    get = current.get
    for name, sent in body.items():
        kind = COMPARED.get(name)
        if kind is None:
            continue
        now = get(name)
        if sent == now and type(sent) is type(now):
            continue  # the usual case, the same text: equal without normalising
        if comparable(kind, sent) != comparable(kind, now):
            out[name] = sent
    return out


def _pickled(item: Any) -> bytes:
    try:
        return pickle.dumps(item, pickle.HIGHEST_PROTOCOL)
    except (TypeError, AttributeError, pickle.PicklingError):
        if not isinstance(item, Mapping):
            raise
        # A valid Mapping pickle cannot copy (a MappingProxyType): kept as a plain dict.
        return pickle.dumps(dict(item), pickle.HIGHEST_PROTOCOL)


class Workspace:
    """The snapshot and plan of one sync, in a scratch SQLite file in ``directory`` (None:
    the system's temporary directory). Close it to delete the file."""

    def __init__(self, directory: str | Path | None = None) -> None:
        fd, name = tempfile.mkstemp(prefix="dialler-sync-", suffix=".db", dir=directory)
        os.close(fd)
        self.path = Path(name)
        self.db = sqlite3.connect(name, isolation_level=None)
        # Scratch data, rebuilt by running the sync again: no journal, no fsync.
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.executescript(_SCHEMA)
        self.size = 0

    def close(self) -> None:
        self.db.close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    # -- snapshot -----------------------------------------------------------------------

    async def load(self, records: AsyncIterator[dict[str, Any]], campaign_id: int) -> int:
        """Index the records of the campaign's list answer; returns how many. A record of
        another campaign means the server ignored the campaign filter: the answer is refused
        (``ValueError``), as a sync against the whole account could lock or delete all of it."""
        batch: list[tuple[int, str | None, int, bytes]] = []
        insert = "INSERT OR IGNORE INTO contacts VALUES (?, ?, ?, ?)"
        self.db.execute("BEGIN")
        async for record in records:
            contact_id = record.get("ID")
            if type(contact_id) is not int:
                raise ValueError(f"a record without an integer ID: {record.get('ID')!r}")
            campaign = record.get("DiallerCampaignsID")
            if campaign is not None and campaign != campaign_id:
                raise ValueError(
                    f"contact {contact_id} is in campaign {campaign!r}, not {campaign_id}: "
                    "the server did not filter the list by campaign (check the list_contacts "
                    "route)"
                )
            user_data = record.get("UserData")
            if user_data is not None and not isinstance(user_data, str):
                # As iter_contacts reads it (a number is its digits); any other shape is a
                # record we cannot match, never "no UserData" (that would make it missing).
                try:
                    user_data = structure_text(user_data, str)
                except ValueError as exc:
                    raise ValueError(f"contact {contact_id}: unexpected UserData ({exc})") from None
            key = user_data if isinstance(user_data, str) and user_data.strip() else None
            fields = orjson.dumps(server_values(record))
            batch.append((contact_id, key, 1 if record.get("bLocked") else 0, fields))
            if len(batch) >= _BATCH:
                self.db.executemany(insert, batch)
                batch.clear()
        self.db.executemany(insert, batch)
        self.db.execute("CREATE INDEX contacts_user_data ON contacts (user_data)")
        self.db.execute("COMMIT")
        (self.size,) = self.db.execute("SELECT count(*) FROM contacts").fetchone()
        return int(self.size)

    def matches_many(self, keys: list[str]) -> dict[str, list[tuple[int, dict[str, Any]]]]:
        """The campaign's contacts with each of these UserData (ID order), with their field
        values; a UserData no contact has is absent."""
        out: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for start in range(0, len(keys), _IN_LIMIT):
            part = keys[start : start + _IN_LIMIT]
            query = (
                "SELECT user_data, id, fields FROM contacts WHERE user_data IN "
                f"({','.join('?' * len(part))}) ORDER BY id"
            )
            for user_data, contact_id, fields in self.db.execute(query, part):
                out.setdefault(user_data, []).append((contact_id, orjson.loads(fields)))
        return out

    # -- plan ---------------------------------------------------------------------------

    def seen_many(self, keys: list[str]) -> set[str]:
        """Which of these UserData an earlier input row had (:meth:`first_seen_many`)."""
        out: set[str] = set()
        for start in range(0, len(keys), _IN_LIMIT):
            part = keys[start : start + _IN_LIMIT]
            query = f"SELECT user_data FROM seen WHERE user_data IN ({','.join('?' * len(part))})"
            out.update(row[0] for row in self.db.execute(query, part))
        return out

    def first_seen_many(self, rows: list[tuple[str, bytes | None, int | None]]) -> None:
        """Note UserData seen for the first time: each with the state its row asks for (JSON
        of its fields; None for a conflict) and the row holding its planned request (None:
        nothing to send)."""
        if rows:
            self.db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)", rows)

    def prior(self, user_data: str) -> tuple[dict[str, Any] | None, int | None]:
        """What the earlier rows with this UserData ask for, merged in input order (None: a
        conflict), and the row holding their planned request (None: nothing to send)."""
        found = self.db.execute(
            "SELECT state, idx FROM seen WHERE user_data = ?", (user_data,)
        ).fetchone()
        state = orjson.loads(found[0]) if found[0] is not None else None
        return state, found[1]

    def remember(self, user_data: str, state: Mapping[str, Any], index: int | None) -> None:
        """Replace what the rows so far with this UserData ask for (see :meth:`prior`)."""
        self.db.execute(
            "UPDATE seen SET state = ?, idx = ? WHERE user_data = ?",
            (orjson.dumps(state), index, user_data),
        )

    def plan(
        self,
        index: int,
        kind: int,
        user_data: str,
        contact_id: int | None,
        payload: Mapping[str, Any],
        item: Any,
        duplicate: bool,
    ) -> None:
        """Journal one input row that needs a request (``item``: the row as given)."""
        self.db.execute(
            "INSERT INTO todo VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                index,
                kind,
                user_data,
                contact_id,
                orjson.dumps(payload),
                _pickled(item),
                1 if duplicate else 0,
            ),
        )

    def replan(
        self, index: int, kind: int, contact_id: int | None, payload: Mapping[str, Any]
    ) -> None:
        """Change what the journaled row ``index`` is to send."""
        self.db.execute(
            "UPDATE todo SET kind = ?, contact_id = ?, payload = ? WHERE idx = ?",
            (kind, contact_id, orjson.dumps(payload), index),
        )

    def drop(self, index: int) -> tuple[int, Any, bool] | None:
        """Take the journaled row ``index`` out of the plan: its kind, the row as given, and
        whether it was a duplicate (None: no such row)."""
        found = self.db.execute(
            "SELECT kind, item, duplicate FROM todo WHERE idx = ?", (index,)
        ).fetchone()
        if found is None:
            return None
        self.db.execute("DELETE FROM todo WHERE idx = ?", (index,))
        return found[0], pickle.loads(found[1]), bool(found[2])  # noqa: S301 - our own file

    def todo(self, kinds: tuple[int, ...]) -> Iterator[tuple[int, int, str, int | None, Any, bool]]:
        """The journaled rows of these kinds in input order: index, kind, UserData, contact ID,
        body, duplicate (the row as given: :meth:`item`)."""
        marks = ",".join("?" * len(kinds))
        cursor = self.db.execute(
            f"SELECT idx, kind, user_data, contact_id, payload, duplicate FROM todo "
            f"WHERE kind IN ({marks}) ORDER BY idx",
            kinds,
        )
        while rows := cursor.fetchmany(_BATCH):
            for idx, kind, user_data, contact_id, payload, duplicate in rows:
                yield idx, kind, user_data, contact_id, orjson.loads(payload), bool(duplicate)

    def user_data(self, index: int) -> str | None:
        """The UserData of the journaled input row ``index``."""
        row = self.db.execute("SELECT user_data FROM todo WHERE idx = ?", (index,)).fetchone()
        return str(row[0]) if row is not None else None

    def item(self, index: int) -> Any:
        """The input row ``index`` as it was given (only rows journaled by :meth:`plan`)."""
        row = self.db.execute("SELECT item FROM todo WHERE idx = ?", (index,)).fetchone()
        return pickle.loads(row[0]) if row is not None else None  # noqa: S301 - our own file

    def count(self, kinds: tuple[int, ...]) -> int:
        marks = ",".join("?" * len(kinds))
        query = f"SELECT count(*) FROM todo WHERE kind IN ({marks})"
        return int(self.db.execute(query, kinds).fetchone()[0])

    def missing(self) -> Iterator[tuple[int, bool]]:
        """The campaign's contacts whose UserData no input row had (ID order): ID, locked."""
        cursor = self.db.execute(
            "SELECT c.id, c.locked FROM contacts c LEFT JOIN seen s ON s.user_data = c.user_data "
            "WHERE s.user_data IS NULL ORDER BY c.id"
        )
        while rows := cursor.fetchmany(_BATCH):
            for contact_id, locked in rows:
                yield contact_id, bool(locked)

    def missing_count(self) -> int:
        query = (
            "SELECT count(*) FROM contacts c LEFT JOIN seen s ON s.user_data = c.user_data "
            "WHERE s.user_data IS NULL"
        )
        return int(self.db.execute(query).fetchone()[0])
