"""A sync's plan: every input row validated as an import would be and classified against the
campaign's snapshot (:class:`Planner`).

* *new*: no contact of the campaign has its UserData: to import.
* *changed*: a field it carries differs from the contact's (compared after normalisation,
  :func:`._snapshot.changed_fields`): to update by the contact's ID, with those fields only.
* *unchanged*: SKIPPED (reason ``"unchanged"``), no request.
* *conflict*: several contacts hold its UserData: FAILED (:class:`SyncConflictError`), untouched.
* *invalid*: INVALID, as for an import; a row without UserData too.
* *superseded*: a later row has the same UserData. The rows of one UserData are merged in
  input order (later fields win) and compared as one, so a re-run of the same input sends
  nothing however its duplicates differ; only the last row that needs a request sends it.

A field a mapping row gives as None or blank text asks for *no value*: it is compared too, and
cleared when the contact has one (an emptied amount or appointment must not read as
"unchanged"). A field the row does not carry at all is never compared.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from typing import Any, Final

import orjson

from . import _fields as F
from ._exceptions import ContactValidationError, SyncConflictError
from ._operations import Import
from ._results import Outcome
from ._snapshot import COMPARED, changed_fields
from ._sync_run import SyncRun
from ._sync_types import CHANGED, NEW, MissingPolicy, SyncPlan

_NO_USER_DATA: Final = "UserData: sync needs UserData (the key that matches a row to a contact)"
#: Rows classified together (one index query for all of them).
_CHUNK: Final = 500
SUPERSEDED: Final = "superseded by a later row with the same UserData"
#: A compared field's API name from either spelling a mapping row may use.
_SPELLING: Final = {
    **{f.py: f.api for f in F.IMPORT_FIELDS if f.api in COMPARED},
    **{name: name for name in COMPARED},
}


def emptied_fields(item: Any) -> list[str]:
    """The compared fields (API names) a mapping row gives as None or blank text."""
    if type(item) is not dict and not isinstance(item, Mapping):
        return []
    out = []
    for key, value in item.items():
        if value is None or (type(value) is str and not value.strip()):
            name = _SPELLING.get(key)
            if name is not None:
                out.append(name)
    return out


class Planner:
    """Classifies the input rows of one sync run into its workspace's journal."""

    def __init__(self, run: SyncRun) -> None:
        self.run = run
        self.ws = run.ws

    async def plan(self, rows: Iterable[Any] | AsyncIterable[Any]) -> None:
        """Classify every input row (see the module docstring); journal those to send. Rows
        are classified in chunks (one index query per chunk, not per row); the rows of a
        chunk already read are classified even when the source fails or the task is
        cancelled, so every row read is in the account."""
        run = self.run
        rules = Import(overwrite_duplicates=False, campaign_id=run.campaign_id, campaign_name=None)
        await rules.resolve(run.client)
        db = self.ws.db
        db.execute("BEGIN")
        index = 0
        chunk: list[tuple[int, Any]] = []
        run.deferring = True
        try:
            if isinstance(rows, AsyncIterable):
                async for item in rows:
                    chunk.append((index, item))
                    index += 1
                    if len(chunk) == _CHUNK:
                        taken, chunk = chunk, []
                        self._classify(rules, taken)
                        run.check()
            else:
                for item in rows:
                    chunk.append((index, item))
                    index += 1
                    if len(chunk) == _CHUNK:
                        taken, chunk = chunk, []
                        self._classify(rules, taken)
                        run.check()
                        await asyncio.sleep(0)  # let a cancellation in
            run.read_all = True
        finally:
            try:
                taken, chunk = chunk, []
                self._classify(rules, taken)
            finally:
                run.deferring = False
                db.execute("COMMIT")
                run.total = index
        run.check()

    def _body(self, rules: Import, item: Any) -> tuple[str, dict[str, Any], bytes]:
        """The row's UserData, the fields it asks for (None: no value) and their JSON."""
        prepared = rules.prepare(item)
        body = prepared.payload
        user_data = prepared.user_data
        if user_data is None:
            raise ContactValidationError([_NO_USER_DATA])
        problem = self._campaign_problem(body)
        if problem:
            raise ContactValidationError([problem], key=user_data)
        # The campaign is the sync's own, set by ID when sent: a name is resolved by the server
        # to the lowest ID of that name, which need not be the campaign synced.
        body.pop("DiallerCampaignsName", None)
        body.pop("DiallerCampaignsID", None)
        for name in emptied_fields(item):
            body[name] = None  # blank text too: "no value" is sent as null, one way
        try:
            blob = orjson.dumps(body)  # journaled and sent as JSON: refuse it here, per row
        except TypeError as exc:
            raise ContactValidationError(
                [f"cannot be sent as JSON: {exc}"], key=user_data
            ) from None
        return user_data, body, blob

    def _classify(self, rules: Import, chunk: list[tuple[int, Any]]) -> None:
        """Classify a chunk of rows in input order. Should the index fail (a full disk), the
        rows not yet decided are accounted CANCELLED before the error goes on."""
        run, counts = self.run, self.run.counts
        valid: list[tuple[int, Any, str, dict[str, Any], bytes]] = []
        for index, item in chunk:
            try:
                user_data, body, blob = self._body(rules, item)
            except ContactValidationError as err:
                counts["invalid"] += 1
                key = err.key if isinstance(err.key, str) else None
                run.account(run.row(index, item, Outcome.INVALID, key=key, error=err))
            else:
                valid.append((index, item, user_data, body, blob))
        if not valid:
            return
        decided = 0
        try:
            keys = list({v[2] for v in valid})
            found = self.ws.matches_many(keys)
            seen = self.ws.seen_many(keys)
            fresh: list[tuple[str, bytes | None, int | None]] = []
            for index, item, user_data, body, blob in valid:
                contacts = found.get(user_data, ())
                duplicate = user_data in seen
                if not duplicate:
                    seen.add(user_data)
                if len(contacts) > 1:
                    if not duplicate:
                        fresh.append((user_data, None, None))  # seen: its contacts aren't missing
                    counts["conflicts"] += 1
                    ids = [contact_id for contact_id, _ in contacts]
                    error = SyncConflictError(user_data, ids)
                    run.account(
                        run.row(
                            index,
                            item,
                            Outcome.FAILED,
                            key=user_data,
                            error=error,
                            duplicate=duplicate,
                        )
                    )
                elif not duplicate:
                    contact_id, server = contacts[0] if contacts else (None, None)
                    kind, payload = _needs(body, server)
                    fresh.append((user_data, blob, index if kind else None))
                    self._decide(index, item, user_data, kind, contact_id, payload, duplicate=False)
                else:
                    self.ws.first_seen_many(fresh)  # the earlier rows, before they are read
                    fresh.clear()
                    self._repeated(index, item, user_data, body, contacts)
                decided += 1
            self.ws.first_seen_many(fresh)
        except BaseException:
            for index, item, user_data, _, _ in valid[decided:]:
                run.account(run.row(index, item, Outcome.CANCELLED, key=user_data))
            raise

    def _repeated(
        self,
        index: int,
        item: Any,
        user_data: str,
        body: dict[str, Any],
        contacts: Sequence[tuple[int, dict[str, Any]]],
    ) -> None:
        """A repeated UserData: the rows so far and this one, merged, against the snapshot."""
        run, ws, counts = self.run, self.ws, self.run.counts
        state, earlier = ws.prior(user_data)
        if earlier is not None:
            dropped = ws.drop(earlier)
            if dropped is not None:
                was, earlier_item, earlier_duplicate = dropped
                counts["new" if was == NEW else "changed"] -= 1
                counts["superseded"] += 1
                run.account(
                    run.row(
                        earlier,
                        earlier_item,
                        Outcome.SKIPPED,
                        key=user_data,
                        reason=SUPERSEDED,
                        duplicate=earlier_duplicate,
                    )
                )
        contact_id, server = contacts[0] if contacts else (None, None)
        net = {**(state or {}), **body}
        kind, payload = _needs(net, server)
        ws.remember(user_data, net, index if kind else None)
        self._decide(index, item, user_data, kind, contact_id, payload, duplicate=True)

    def _decide(
        self,
        index: int,
        item: Any,
        user_data: str,
        kind: int | None,
        contact_id: int | None,
        payload: dict[str, Any] | None,
        *,
        duplicate: bool,
    ) -> None:
        run = self.run
        if kind is None or payload is None:
            run.counts["unchanged"] += 1
            if not run.rows.keep:
                # Most rows of a nightly sync: counted, no result object (nobody keeps it).
                run.rows.count(Outcome.SKIPPED, duplicate=duplicate)
                if run.on_progress is not None:
                    run.progress()
                return
            run.account(
                run.row(
                    index,
                    item,
                    Outcome.SKIPPED,
                    key=user_data,
                    reason="unchanged",
                    duplicate=duplicate,
                )
            )
            return
        run.counts["new" if kind == NEW else "changed"] += 1
        self.ws.plan(index, kind, user_data, contact_id, payload, item, duplicate)

    def _campaign_problem(self, body: Mapping[str, Any]) -> str | None:
        campaign_id = body.get("DiallerCampaignsID")
        name = body.get("DiallerCampaignsName")
        run = self.run
        if campaign_id is not None and campaign_id != run.campaign_id:
            return (
                f"DiallerCampaignsID: the row is for campaign {campaign_id}; "
                f"this sync is of campaign {run.campaign_id}"
            )
        if campaign_id is None and name is not None and name != run.campaign.name:
            return (
                f"DiallerCampaignsName: the row is for campaign {name!r}; "
                f"this sync is of {run.campaign.name!r}"
            )
        return None

    def make_plan(self, policy: MissingPolicy) -> SyncPlan:
        return SyncPlan(
            campaign_id=self.run.campaign_id,
            campaign_size=self.ws.size,
            missing=self.ws.missing_count(),
            missing_policy=policy,
            **self.run.counts,
        )


def _needs(
    body: dict[str, Any], server: Mapping[str, Any] | None
) -> tuple[int | None, dict[str, Any] | None]:
    """What a contact needs so it holds ``body``: (NEW, the import body) when there is none,
    (CHANGED, the differing fields) or (None, None) when it holds it already."""
    if server is None:
        return NEW, body
    diff = changed_fields(body, server)
    return (CHANGED, diff) if diff else (None, None)
