"""Carrying out a sync's plan (:class:`Applier`): a lookup of each new row's UserData, then the
imports, the updates and the missing policy, each through the bulk engine.

The lookup closes the window between the snapshot and an import: a contact another writer
created meanwhile (or a sync run alongside) is found, in the synced campaign only (as the
engine's write-safety lookups judge), and the row becomes an update of it, "unchanged", or a
conflict, instead of a second contact. It costs one request per new row; a lookup that fails
makes its row FAILED with that error, never a blind import.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, Final

import attrs
import orjson

from ._converter import unstructure
from ._exceptions import DiallerError, NotFoundError, SyncConflictError
from ._limits import JOB_LIMITER, RateLimiter
from ._results import ItemResult, Operation, Outcome, Tally
from ._snapshot import server_values
from ._sync_phase import cancel_unread, run_phase
from ._sync_plan import _needs
from ._sync_run import SyncRun
from ._sync_types import CHANGED, NEW, Planned

#: New rows looked up per round (their UserData, index and body are held meanwhile).
_LOOKUP_BATCH: Final = 1000


class Applier:
    """Sends what one sync run planned; every journaled row is accounted exactly once."""

    def __init__(self, run: SyncRun) -> None:
        self.run = run
        self.ws = run.ws

    def cancel_planned(self) -> None:
        """Account the journaled rows as CANCELLED (stopped before they were sent)."""
        run = self.run
        with contextlib.suppress(sqlite3.Error):
            self.ws.db.execute("COMMIT")
        for index, _, user_data, _, _, duplicate in self.ws.todo((NEW, CHANGED)):
            item = self.ws.item(index)
            run.account(run.row(index, item, Outcome.CANCELLED, key=user_data, duplicate=duplicate))
        self.ws.db.execute("DELETE FROM todo")

    def dry_run(self) -> None:
        """Account the rows a sync would send as SKIPPED, saying what it would do."""
        run = self.run
        for index, kind, user_data, _, _, duplicate in self.ws.todo((NEW, CHANGED)):
            reason = "dry run: new" if kind == NEW else "dry run: changed"
            item = self.ws.item(index)
            run.account(
                run.row(
                    index, item, Outcome.SKIPPED, key=user_data, reason=reason, duplicate=duplicate
                )
            )

    # -- the lookup before an import -------------------------------------------------------

    async def check_new(self) -> None:
        """Look up every new row's UserData in the campaign (see the module docstring)."""
        last = -1
        while not self.run.stopped:
            batch = self.ws.db.execute(
                "SELECT idx, user_data, payload FROM todo WHERE kind = ? AND idx > ? "
                "ORDER BY idx LIMIT ?",
                (NEW, last, _LOOKUP_BATCH),
            ).fetchall()
            if not batch:
                return
            last = batch[-1][0]
            found = await self._look_up([user_data for _, user_data, _ in batch])
            for (index, user_data, payload), contacts in zip(batch, found, strict=True):
                self._recheck(index, user_data, payload, contacts)

    async def _look_up(self, keys: list[str]) -> list[list[Any] | DiallerError]:
        """The contacts of the campaign with each UserData, or the lookup's error; as many at
        once as the job's concurrency, each through the job's rate."""
        run = self.run
        client = run.client
        options = run.engine_options
        workers = options.get("concurrency") or client.limits.max_concurrency
        rate = options.get("rate")
        limiter = (
            RateLimiter(
                rate, margin=client.limits.jitter_margin, clock=client._clock, sleep=client._sleep
            )
            if rate
            else None
        )
        out: list[list[Any] | DiallerError] = [[] for _ in keys]
        todo = iter(enumerate(keys))

        async def worker() -> None:
            JOB_LIMITER.set(limiter)
            for position, key in todo:
                try:
                    contacts = await client.find_contacts(key)
                except DiallerError as exc:
                    out[position] = exc
                else:
                    out[position] = [c for c in contacts if c.campaign_id == run.campaign_id]

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(workers, len(keys))):
                    group.create_task(worker())
        except BaseExceptionGroup as failed:
            # Not a lookup's error (those are per row): the caller's, raised as itself.
            raise failed.exceptions[0] from None
        return out

    def _recheck(
        self, index: int, user_data: str, payload: bytes, contacts: list[Any] | DiallerError
    ) -> None:
        """Decide a new row again on what its lookup found in the campaign."""
        run, ws = self.run, self.ws
        error: DiallerError | None = None
        if isinstance(contacts, DiallerError):
            error = contacts  # not proven absent: never imported blindly
        elif not contacts:
            return  # still new: imported
        elif len(contacts) > 1:
            error = SyncConflictError(user_data, [c.id for c in contacts])
        else:
            (contact,) = contacts
            kind, diff = _needs(orjson.loads(payload), server_values(unstructure(contact)))
            if kind is not None and diff is not None and contact.id is not None:
                ws.replan(index, CHANGED, contact.id, diff)  # created since the snapshot
                return
        taken = ws.drop(index)
        if taken is None:  # pragma: no cover - the row was just read from the journal
            return
        _, item, duplicate = taken
        if error is None:
            result = run.row(
                index,
                item,
                Outcome.SKIPPED,
                key=user_data,
                reason="unchanged",
                duplicate=duplicate,
            )
        else:
            result = run.row(
                index, item, Outcome.FAILED, key=user_data, error=error, duplicate=duplicate
            )
        run.account(result)

    # -- the phases ------------------------------------------------------------------------

    async def apply_rows(self) -> None:
        """Imports (each new row looked up first), then updates, each through the engine."""
        run = self.run
        try:
            await self.check_new()
        except BaseException:
            run.stopped = True
            self.cancel_planned()
            raise
        try:
            await self._phase(Operation.IMPORT, self._planned(NEW), self._restore_row, run.rows)
        except BaseException:
            # The updates never started: every one of them is accounted all the same.
            cancel_unread(Operation.UPDATE, self._planned(CHANGED), run.account)
            raise
        await self._phase(Operation.UPDATE, self._planned(CHANGED), self._restore_row, run.rows)

    def _planned(self, kind: int) -> Iterator[tuple[int, Any]]:
        """The journaled rows of ``kind`` as engine items (position = input index)."""
        campaign_id = self.run.campaign_id
        for index, _, user_data, contact_id, payload, duplicate in self.ws.todo((kind,)):
            item = self.ws.item(index)
            if kind == NEW:
                # No value is no field in an import; the campaign is the sync's, by ID.
                body = {k: v for k, v in payload.items() if v is not None}
                body["DiallerCampaignsID"] = campaign_id
            else:
                body = {"ID": contact_id, **payload}
            yield index, Planned(body, index, item, user_data, duplicate)

    def _restore_row(self, result: ItemResult, position: int) -> ItemResult:
        planned = result.input
        if isinstance(planned, Planned):
            return attrs.evolve(
                result,
                index=position,
                input=planned.original,
                key=planned.user_data,
                duplicate_in_input=planned.duplicate,
            )
        return attrs.evolve(
            result,
            index=position,
            input=self.ws.item(position),
            key=self.ws.user_data(position),
        )

    async def apply_missing(self, operation: Operation) -> None:
        """Lock or delete the missing contacts by ID (already locked ones are SKIPPED)."""
        run = self.run

        def source() -> Iterator[tuple[int, Any]]:
            for position, (contact_id, locked) in enumerate(self.ws.missing()):
                if operation is Operation.LOCK and locked:
                    result = ItemResult(
                        index=position,
                        key=contact_id,
                        operation=operation,
                        outcome=Outcome.SKIPPED,
                        input=contact_id,
                        reason="already locked",
                    )
                    run.account(result, run.missing)
                    continue
                yield position, contact_id

        def restore(result: ItemResult, position: int) -> ItemResult:
            error = result.error
            if (
                operation is Operation.DELETE
                and result.outcome is Outcome.FAILED
                and isinstance(error, NotFoundError)
                and not error.route_missing
            ):
                # Deleted since the snapshot (another writer): the policy's goal is reached.
                return attrs.evolve(
                    result,
                    index=position,
                    outcome=Outcome.SKIPPED,
                    error=None,
                    reason="already deleted",
                )
            return attrs.evolve(result, index=position)

        await self._phase(operation, source(), restore, run.missing)

    async def _phase(
        self,
        operation: Operation,
        source: Iterator[tuple[int, Any]],
        restore: Callable[[ItemResult, int], ItemResult],
        tally: Tally,
    ) -> None:
        run = self.run

        def account(result: ItemResult) -> None:
            run.account(result, tally)

        if run.stopped:
            cancel_unread(operation, source, account)
            return
        options: dict[str, Any] = dict(run.engine_options)
        if run.max_failures:
            options["max_failures"] = run.max_failures - run.failures
        if run.raise_on_error:
            options["on_error"] = "raise"
        if operation is Operation.IMPORT:
            options.update(overwrite_duplicates=False, campaign_id=run.campaign_id)
        if operation in (Operation.IMPORT, Operation.UPDATE):
            # The plan screened the rows with the client's phone policy already; its output is
            # not input for a second reading ("e164-no-plus" text is not E.164).
            options["_phones_screened"] = True
        try:
            stopped = await run_phase(run.client, operation, source, restore, account, options)
        except BaseException:
            run.stopped = True
            raise
        run.stopped = run.stopped or stopped
