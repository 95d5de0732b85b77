"""SQLite storage of the emulator: campaigns, contacts and call history.

One connection, used from the event loop's thread only; every call is synchronous because
SQLite answers these small statements in microseconds, far below an HTTP round trip. A
contact row keeps the API record as JSON bytes (``data``) beside the columns that are
searched (client, campaign, UserData), so a response splices stored bytes without decoding.
The connection runs in autocommit mode: a single-statement change (an import) is one
INSERT and its commit; changes spanning statements use ``transaction()``.

Only one emulator may use a database file at a time: contact IDs are allocated in memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import orjson

from dialler_async.emulator._records import campaign_record

__all__ = ["Store"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS campaigns (
    id INTEGER PRIMARY KEY,
    client_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS contacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id INTEGER NOT NULL,
    campaign_id INTEGER,
    user_data TEXT,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS contacts_by_user_data ON contacts (client_id, user_data);
CREATE INDEX IF NOT EXISTS contacts_by_campaign ON contacts (client_id, campaign_id);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    contact_id INTEGER NOT NULL,
    phone_number TEXT,
    call_start TEXT,
    result_code_id INTEGER,
    result_code TEXT,
    agent_uid TEXT
);
CREATE INDEX IF NOT EXISTS history_by_contact ON history (contact_id);
"""

# Constant SQL text throughout, so sqlite3's statement cache keeps every one prepared.
_INSERT: Final = (
    "INSERT INTO contacts (id, client_id, campaign_id, user_data, data) VALUES (?,?,?,?,?)"
)
_UPDATE: Final = "UPDATE contacts SET campaign_id = ?, user_data = ?, data = ? WHERE id = ?"
_BY_ID: Final = "SELECT data FROM contacts WHERE id = ? AND client_id = ?"
_BY_USER_DATA: Final = "SELECT data FROM contacts WHERE client_id = ? AND user_data = ? ORDER BY id"
_IDS_BY_USER_DATA: Final = (
    "SELECT id FROM contacts WHERE client_id = ? AND user_data = ? ORDER BY id"
)
_ALL: Final = "SELECT data FROM contacts WHERE client_id = ? ORDER BY id"
_BY_CAMPAIGN: Final = (
    "SELECT data FROM contacts WHERE client_id = ? AND campaign_id = ? ORDER BY id"
)
# json_each() turns one JSON-array parameter into a set: one prepared statement for any size.
_BY_ID_LIST: Final = (
    "SELECT id, data FROM contacts WHERE client_id = ? AND id IN (SELECT value FROM json_each(?))"
)
_BY_USER_DATA_LIST: Final = (
    "SELECT id, data FROM contacts"
    " WHERE client_id = ? AND user_data IN (SELECT value FROM json_each(?))"
)
_HISTORY: Final = (
    "SELECT id, contact_id, phone_number, call_start, result_code_id, result_code, agent_uid"
    " FROM history WHERE contact_id IN (SELECT value FROM json_each(?)) ORDER BY id"
)
_ADD_HISTORY: Final = (
    "INSERT INTO history (contact_id, phone_number, call_start, result_code_id, result_code,"
    " agent_uid) VALUES (?,?,?,?,?,?)"
)


def history_entry(row: tuple[Any, ...]) -> dict[str, Any]:
    """A history row as the history operations return it."""
    return {
        "ID": row[0],
        "DiallerContactsID": row[1],
        "PhoneNumber": row[2],
        "dtCallStart": row[3],
        "DiallerCampaignsResultCodesID": row[4],
        "ResultCode": row[5],
        "UsersUID": row[6],
    }


class Store:
    """The emulator's database (``emu.store``); its query methods serve test assertions too."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'contacts'").fetchone()
        self._next_id: int = (row[0] if row else 0) + 1
        self._campaigns: dict[int, dict[str, Any]] = {}
        self._campaign_names: dict[tuple[int, str], int] = {}
        for (data,) in self._db.execute("SELECT data FROM campaigns ORDER BY id"):
            self._cache_campaign(orjson.loads(data))

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several statements into one commit (rolled back on error)."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- campaigns ------------------------------------------------------------------------

    def _cache_campaign(self, record: dict[str, Any]) -> None:
        self._campaigns[record["ID"]] = record
        self._campaign_names.setdefault((record["ClientsID"], record["Name"]), record["ID"])

    def add_campaign(
        self, campaign_id: int, name: str, client_id: int, *, replace: bool = True, **fields: Any
    ) -> dict[str, Any]:
        """Create (or with ``replace`` overwrite) a campaign; ``fields`` override defaults."""
        if not replace and campaign_id in self._campaigns:
            return self._campaigns[campaign_id]
        old = self._campaigns.pop(campaign_id, None)
        if old is not None:
            self._campaign_names.pop((old["ClientsID"], old["Name"]), None)
        record = campaign_record(campaign_id, name, client_id) | fields
        self._db.execute(
            "INSERT OR REPLACE INTO campaigns (id, client_id, name, data) VALUES (?,?,?,?)",
            (campaign_id, client_id, name, orjson.dumps(record)),
        )
        self._cache_campaign(record)
        return record

    def campaign(self, client_id: int, campaign_id: int) -> dict[str, Any] | None:
        """The campaign with this ID if it belongs to ``client_id``."""
        record = self._campaigns.get(campaign_id)
        return record if record is not None and record["ClientsID"] == client_id else None

    def campaign_by_name(self, client_id: int, name: str) -> dict[str, Any] | None:
        """The client's campaign of this exact (case-sensitive) name, lowest ID first."""
        campaign_id = self._campaign_names.get((client_id, name))
        return None if campaign_id is None else self._campaigns[campaign_id]

    def campaigns(self, client_id: int | None = None) -> list[dict[str, Any]]:
        """Every campaign (of one client), ordered by ID."""
        return [
            c
            for _, c in sorted(self._campaigns.items())
            if client_id is None or c["ClientsID"] == client_id
        ]

    # -- contacts: writes -----------------------------------------------------------------

    def insert(self, client_id: int, record: dict[str, Any]) -> bytes:
        """Store a new contact; sets ``record["ID"]`` and returns the record's JSON."""
        contact_id = record["ID"] = self._next_id
        data = orjson.dumps(record)
        self._db.execute(
            _INSERT,
            (contact_id, client_id, record["DiallerCampaignsID"], record["UserData"], data),
        )
        self._next_id = contact_id + 1
        return data

    def save(self, record: dict[str, Any]) -> bytes:
        """Write back a changed contact (found by its ``ID``); returns the record's JSON."""
        data = orjson.dumps(record)
        self._db.execute(
            _UPDATE, (record["DiallerCampaignsID"], record["UserData"], data, record["ID"])
        )
        return data

    def delete(self, contact_id: int) -> None:
        """Delete a contact and its history."""
        with self.transaction():
            self._db.execute("DELETE FROM history WHERE contact_id = ?", (contact_id,))
            self._db.execute("DELETE FROM contacts WHERE id = ?", (contact_id,))

    def add_history(
        self,
        contact_id: int,
        phone_number: str,
        call_start: str,
        result_code_id: int | None,
        result_code: str | None,
        agent_uid: str | None,
    ) -> int:
        """Record one call attempt; returns the history entry's ID."""
        cursor = self._db.execute(
            _ADD_HISTORY,
            (contact_id, phone_number, call_start, result_code_id, result_code, agent_uid),
        )
        return cursor.lastrowid or 0

    # -- contacts: reads as stored JSON ---------------------------------------------------

    def contact_json(self, client_id: int, contact_id: int) -> bytes | None:
        row = self._db.execute(_BY_ID, (contact_id, client_id)).fetchone()
        if row is None:
            return None
        data: bytes = row[0]
        return data

    def contacts_json(self, client_id: int, campaign_id: int | None = None) -> list[bytes]:
        """The client's contacts (of one campaign), ordered by ID."""
        if campaign_id is None:
            rows = self._db.execute(_ALL, (client_id,))
        else:
            rows = self._db.execute(_BY_CAMPAIGN, (client_id, campaign_id))
        return [row[0] for row in rows]

    def find_json(self, client_id: int, user_data: str) -> list[bytes]:
        """The client's contacts with this UserData, ordered by ID."""
        return [row[0] for row in self._db.execute(_BY_USER_DATA, (client_id, user_data))]

    # -- contacts: reads as dicts ---------------------------------------------------------

    def contact(self, client_id: int, contact_id: int) -> dict[str, Any] | None:
        data = self.contact_json(client_id, contact_id)
        return None if data is None else orjson.loads(data)

    def first_by_user_data(self, client_id: int, user_data: str) -> dict[str, Any] | None:
        """The client's contact with this UserData and the lowest ID."""
        row = self._db.execute(_BY_USER_DATA + " LIMIT 1", (client_id, user_data)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def ids_by_user_data(self, client_id: int, user_data: str) -> list[int]:
        return [row[0] for row in self._db.execute(_IDS_BY_USER_DATA, (client_id, user_data))]

    def contacts_for(
        self, client_id: int, ids: Iterable[int], user_datas: Iterable[str]
    ) -> list[dict[str, Any]]:
        """The client's contacts whose ID or UserData is listed, each once, ordered by ID."""
        found: dict[int, bytes] = {}
        for sql, keys in ((_BY_ID_LIST, list(ids)), (_BY_USER_DATA_LIST, list(user_datas))):
            if keys:
                found.update(self._db.execute(sql, (client_id, orjson.dumps(keys))).fetchall())
        return [orjson.loads(found[i]) for i in sorted(found)]

    def history(self, contact_ids: Iterable[int]) -> list[dict[str, Any]]:
        """The history entries of these contacts, ordered by entry ID."""
        rows = self._db.execute(_HISTORY, (orjson.dumps(list(contact_ids)),))
        return [history_entry(row) for row in rows]

    def dialable(self, client_id: int | None = None) -> list[dict[str, Any]]:
        """Every contact (of one client) as a dict, ordered by ID."""
        if client_id is None:
            rows = self._db.execute("SELECT data FROM contacts ORDER BY id")
        else:
            rows = self._db.execute(_ALL, (client_id,))
        return [orjson.loads(row[0]) for row in rows]

    # -- test helpers ---------------------------------------------------------------------

    def get(self, contact_id: int) -> dict[str, Any] | None:
        """A contact of any client by ID, as the API would return it."""
        row = self._db.execute("SELECT data FROM contacts WHERE id = ?", (contact_id,)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def all_contacts(self, client_id: int | None = None) -> list[dict[str, Any]]:
        """Every contact (of one client), ordered by ID."""
        return self.dialable(client_id)

    def contact_count(
        self,
        user_data: str | None = None,
        campaign_id: int | None = None,
        client_id: int | None = None,
    ) -> int:
        """How many contacts match every filter given."""
        sql, args = "SELECT COUNT(*) FROM contacts WHERE 1", []
        for column, value in (
            ("user_data", user_data),
            ("campaign_id", campaign_id),
            ("client_id", client_id),
        ):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        count: int = self._db.execute(sql, args).fetchone()[0]
        return count

    def history_count(self, contact_id: int | None = None) -> int:
        """How many call attempts are recorded (for one contact)."""
        if contact_id is None:
            row = self._db.execute("SELECT COUNT(*) FROM history").fetchone()
        else:
            row = self._db.execute(
                "SELECT COUNT(*) FROM history WHERE contact_id = ?", (contact_id,)
            ).fetchone()
        count: int = row[0]
        return count
