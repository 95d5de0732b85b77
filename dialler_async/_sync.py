"""Sync a campaign with a source: send only what changed (:meth:`DiallerClient.sync_contacts`).

Three steps, each at bounded memory (the working set is a scratch SQLite file, :mod:`._snapshot`):

1. *Snapshot*: one streamed read of the campaign (the list route, parsed by ijson) into an
   index of UserData -> contacts.
2. *Plan*: every input row is validated as an import would be and classified against the
   index: new, changed (only the differing fields are sent, by the server's ID), unchanged
   (SKIPPED, no request), conflict (several contacts hold its UserData: FAILED, untouched),
   invalid. *Missing*: contacts of the campaign no input row names.
3. *Apply* through the bulk engine: imports, then updates, then the missing policy (keep,
   lock or delete by ID), unless the guard refuses it.

Every write a sync sends is safe to repeat (an update or lock/delete by ID; an import is a plain
import checked by lookup in the campaign before it is ever resent), and a sync run again plans
against what the server then holds, so an interrupted sync is resumed by running it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import orjson

from ._exceptions import (
    BulkError,
    CheckpointError,
    ConfigurationError,
    ContactValidationError,
    DiallerError,
    NotFoundError,
    ResponseFormatError,
    SyncConflictError,
    SyncGuardError,
)
from ._models import Campaign
from ._operations import Import
from ._results import BulkResult, ItemResult, Operation, Outcome, Progress, Tally
from ._snapshot import Workspace, changed_fields
from ._sync_phase import cancel_unread, run_phase
from ._sync_types import (
    AFTER_NEW,
    CHANGED,
    NEW,
    MissingPolicy,
    Planned,
    SyncPlan,
    SyncResult,
    merged,
)

if TYPE_CHECKING:
    from ._client import DiallerClient

_NO_USER_DATA: Final = "UserData: sync needs UserData (the key that matches a row to a contact)"
#: Options that only shape how a stream is delivered; a sync returns its account at the end.
_IGNORED: Final = ("ordered", "detect_duplicates", "total")
_PASSED: Final = ("concurrency", "rate", "grace")


async def resolve_campaign(
    client: DiallerClient, campaign_id: int | None, campaign_name: str | None
) -> Campaign:
    """The campaign a sync is of (by ID, or by name: the lowest ID with that name)."""
    if (campaign_id is None) == (campaign_name is None):
        raise TypeError("give exactly one of campaign_id or campaign_name")
    campaigns = sorted(await client.list_campaigns(), key=lambda c: c.id or 0)
    for campaign in campaigns:
        if campaign.id is not None and (
            campaign.id == campaign_id
            if campaign_id is not None
            else campaign.name == campaign_name
        ):
            return campaign
    what = f"ID {campaign_id}" if campaign_id is not None else f"named {campaign_name!r}"
    raise ConfigurationError(f"the account has no campaign {what}")


class Sync:
    """One sync run (see :func:`sync`)."""

    def __init__(
        self, client: DiallerClient, campaign: Campaign, ws: Workspace, options: dict[str, Any]
    ) -> None:
        self.client = client
        self.campaign = campaign
        self.campaign_id: int = campaign.id or 0
        self.ws = ws
        on_error = options.pop("on_error", "collect")
        if on_error not in ("collect", "raise"):
            raise ValueError("on_error must be 'collect' or 'raise'")
        self.raise_on_error = on_error == "raise"
        self.max_failures: int | None = options.pop("max_failures", None)
        self.on_progress: Callable[[Progress], object] | None = options.pop("on_progress", None)
        self.progress_interval: float = options.pop("progress_interval", 0.5)
        keep = options.pop("keep_results", True)
        self.engine_options: dict[str, Any] = {k: options.pop(k) for k in _PASSED if k in options}
        for name in _IGNORED:
            options.pop(name, None)
        if options:
            raise TypeError(f"unknown sync options: {sorted(options)}")
        self.rows = Tally(keep)
        self.missing = Tally(keep)
        self.failures = 0
        self.stopped = False
        self.counts = {"new": 0, "changed": 0, "unchanged": 0, "conflicts": 0, "invalid": 0}
        self.total: int | None = None
        transport = client.transport
        self.clock = client._clock
        self.started = self.clock()
        self.last_progress = self.started
        self.base = (transport.requests, transport.retries, transport.governor.throttled)
        self.read_all = False

    # -- account ------------------------------------------------------------------------

    def _counters(self) -> dict[str, int]:
        t = self.client.transport
        return {
            "requests": t.requests - self.base[0],
            "retries": t.retries - self.base[1],
            "throttled": t.governor.throttled - self.base[2],
        }

    def account(self, result: ItemResult, tally: Tally | None = None) -> None:
        (tally or self.rows).add(result)
        if not result.ok and result.outcome is not Outcome.CANCELLED:
            self.failures += 1
            if self.raise_on_error or (self.max_failures and self.failures >= self.max_failures):
                self.stopped = True
        self.progress()

    def progress(self, finished: bool = False) -> None:
        if self.on_progress is None:
            return
        now = self.clock()
        if not finished and now - self.last_progress < self.progress_interval:
            return
        self.last_progress = now
        counts = dict(self.rows.counts)
        for outcome, n in self.missing.counts.items():
            counts[outcome] += n
        done, elapsed = self.rows.done + self.missing.done, now - self.started
        self.on_progress(
            Progress(
                done=done,
                total=self.total,
                counts=counts,
                elapsed=elapsed,
                rate=done / elapsed if elapsed > 0 else 0.0,
                current_rate_limit=self.client.transport.governor.rate,
                concurrency_limit=self.client.transport.governor.concurrency_limit,
                baseline_rtt=self.client.transport.governor.baseline_rtt,
                finished=finished,
                **self._counters(),
            )
        )

    def result(self, tally: Tally, operation: Operation, read_all: bool) -> BulkResult:
        return tally.result(
            operation, elapsed=self.clock() - self.started, read_all=read_all, **self._counters()
        )

    def _row(
        self,
        index: int,
        item: Any,
        outcome: Outcome,
        *,
        key: str | None = None,
        error: DiallerError | None = None,
        reason: str | None = None,
        duplicate: bool = False,
        operation: Operation = Operation.SYNC,
    ) -> ItemResult:
        return ItemResult(
            index=index,
            key=key,
            operation=operation,
            outcome=outcome,
            input=item,
            error=error,
            reason=reason,
            duplicate_in_input=duplicate,
        )

    # -- plan ---------------------------------------------------------------------------

    async def plan(self, rows: Iterable[Any] | AsyncIterable[Any]) -> None:
        """Classify every input row (see the module docstring); journal those to send."""
        rules = Import(overwrite_duplicates=False, campaign_id=self.campaign_id, campaign_name=None)
        await rules.resolve(self.client)
        db = self.ws.db
        db.execute("BEGIN")
        index = 0
        try:
            if isinstance(rows, AsyncIterable):
                async for item in rows:
                    self._classify(rules, index, item)
                    index += 1
            else:
                for item in rows:
                    self._classify(rules, index, item)
                    index += 1
                    if index % 1000 == 0:
                        await asyncio.sleep(0)  # let a cancellation in
            self.read_all = True
        finally:
            db.execute("COMMIT")
            self.total = index

    def _classify(self, rules: Import, index: int, item: Any) -> None:
        counts = self.counts
        try:
            prepared = rules.prepare(item)
            body = prepared.payload
            user_data = prepared.user_data
            if user_data is None:
                raise ContactValidationError([_NO_USER_DATA])
            problem = self._campaign_problem(body)
            if problem:
                raise ContactValidationError([problem], key=user_data)
            # By ID only: a name is resolved by the server to the lowest ID of that name,
            # which need not be the campaign synced.
            body.pop("DiallerCampaignsName", None)
            body["DiallerCampaignsID"] = self.campaign_id
            try:
                orjson.dumps(body)  # journaled and sent as JSON: refuse it here, per row
            except TypeError as exc:
                raise ContactValidationError(
                    [f"cannot be sent as JSON: {exc}"], key=user_data
                ) from None
        except ContactValidationError as err:
            counts["invalid"] += 1
            self.account(self._row(index, item, Outcome.INVALID, key=err.key, error=err))  # type: ignore[arg-type]
            return
        ws = self.ws
        found = ws.matches(user_data)
        duplicate, overlay = ws.see(user_data)
        if len(found) > 1:
            counts["conflicts"] += 1
            error = SyncConflictError(user_data, [contact_id for contact_id, _ in found])
            self.account(
                self._row(
                    index, item, Outcome.FAILED, key=user_data, error=error, duplicate=duplicate
                )
            )
            return
        if not found and not duplicate:
            counts["new"] += 1
            ws.plan_state(user_data, merged({}, body))
            ws.plan(index, NEW, user_data, None, body, item)
            return
        if found:
            contact_id: int | None = found[0][0]
            current = overlay if overlay is not None else found[0][1]
        else:
            contact_id, current = None, overlay or {}
        diff = changed_fields(body, current)
        if not diff:
            counts["unchanged"] += 1
            row = self._row(
                index,
                item,
                Outcome.SKIPPED,
                key=user_data,
                reason="unchanged",
                duplicate=duplicate,
            )
            self.account(row)
            return
        counts["changed"] += 1
        ws.plan_state(user_data, merged(current, diff))
        kind = CHANGED if contact_id is not None else AFTER_NEW
        ws.plan(index, kind, user_data, contact_id, diff, item)

    def _campaign_problem(self, body: Mapping[str, Any]) -> str | None:
        campaign_id = body.get("DiallerCampaignsID")
        name = body.get("DiallerCampaignsName")
        if campaign_id is not None and campaign_id != self.campaign_id:
            return (
                f"DiallerCampaignsID: the row is for campaign {campaign_id}; "
                f"this sync is of campaign {self.campaign_id}"
            )
        if campaign_id is None and name is not None and name != self.campaign.name:
            return (
                f"DiallerCampaignsName: the row is for campaign {name!r}; "
                f"this sync is of {self.campaign.name!r}"
            )
        return None

    def cancel_planned(self) -> None:
        """Account the journaled rows as CANCELLED (the plan stopped before any was sent)."""
        with contextlib.suppress(sqlite3.Error):
            self.ws.db.execute("COMMIT")
        for index, _, user_data, _, _ in self.ws.todo((NEW, CHANGED, AFTER_NEW)):
            item = self.ws.item(index)
            self.account(self._row(index, item, Outcome.CANCELLED, key=user_data))

    def make_plan(self, policy: MissingPolicy) -> SyncPlan:
        return SyncPlan(
            campaign_id=self.campaign_id,
            campaign_size=self.ws.size,
            missing=self.ws.missing_count(),
            missing_policy=policy,
            **self.counts,
        )

    # -- apply --------------------------------------------------------------------------

    def dry_run(self) -> None:
        """Account the rows a sync would send as SKIPPED, saying what it would do."""
        for index, kind, user_data, _, _ in self.ws.todo((NEW, CHANGED, AFTER_NEW)):
            reason = "dry run: new" if kind == NEW else "dry run: changed"
            item = self.ws.item(index)
            self.account(self._row(index, item, Outcome.SKIPPED, key=user_data, reason=reason))

    async def apply_rows(self) -> None:
        """Imports, then updates, each through the bulk engine."""
        await self._phase(Operation.IMPORT, self._planned((NEW,)), self._restore_row, self.rows)
        await self._phase(
            Operation.UPDATE, self._planned((CHANGED, AFTER_NEW)), self._restore_row, self.rows
        )

    def _planned(self, kinds: tuple[int, ...]) -> Iterator[tuple[int, Any]]:
        """The journaled rows of ``kinds`` as engine items (position = input index)."""
        for index, kind, user_data, contact_id, payload in self.ws.todo(kinds):
            item = self.ws.item(index)
            duplicate = kind == AFTER_NEW or self._duplicate(index, user_data)
            if kind == AFTER_NEW:
                contact_id = self.ws.created(user_data)
                if contact_id is None:
                    error = DiallerError(
                        "an earlier row with this UserData was to create the contact and did not"
                    )
                    self.account(
                        self._row(
                            index, item, Outcome.FAILED, key=user_data, error=error, duplicate=True
                        )
                    )
                    continue
            if contact_id is not None:
                payload = {"ID": contact_id, **payload}
            yield index, Planned(payload, index, item, user_data, duplicate)

    def _duplicate(self, index: int, user_data: str) -> bool:
        # Only the rows sent are asked: an earlier row with the same UserData has a lower index.
        row = self.ws.db.execute(
            "SELECT 1 FROM todo WHERE user_data = ? AND idx < ? LIMIT 1", (user_data, index)
        ).fetchone()
        return row is not None

    def _restore_row(self, result: ItemResult, position: int) -> ItemResult:
        planned = result.input
        if isinstance(planned, Planned):
            if result.outcome is Outcome.SUCCEEDED and result.operation is Operation.IMPORT:
                contact_id = result.contact_id
                if contact_id is not None:
                    self.ws.note_created(planned.user_data, contact_id)
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
                    self.account(result, self.missing)
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

        await self._phase(operation, source(), restore, self.missing)

    async def _phase(
        self,
        operation: Operation,
        source: Iterator[tuple[int, Any]],
        restore: Callable[[ItemResult, int], ItemResult],
        tally: Tally,
    ) -> None:
        def account(result: ItemResult) -> None:
            self.account(result, tally)

        if self.stopped:
            cancel_unread(operation, source, account)
            return
        options: dict[str, Any] = dict(self.engine_options)
        if self.max_failures:
            options["max_failures"] = self.max_failures - self.failures
        if self.raise_on_error:
            options["on_error"] = "raise"
        if operation is Operation.IMPORT:
            options.update(overwrite_duplicates=False, campaign_id=self.campaign_id)
        if operation in (Operation.IMPORT, Operation.UPDATE):
            # The plan screened the rows with the client's phone policy already; its output is
            # not input for a second reading ("e164-no-plus" text is not E.164).
            options["_phones_screened"] = True
        try:
            stopped = await run_phase(self.client, operation, source, restore, account, options)
        except BaseException:
            self.stopped = True
            raise
        self.stopped = self.stopped or stopped


async def sync(
    client: DiallerClient,
    rows: Iterable[Any] | AsyncIterable[Any],
    *,
    campaign_id: int | None = None,
    campaign_name: str | None = None,
    missing: MissingPolicy = "keep",
    max_missing: float = 0.10,
    force: bool = False,
    dry_run: bool = False,
    on_plan: Callable[[SyncPlan], object] | None = None,
    **options: Any,
) -> SyncResult:
    """See :meth:`DiallerClient.sync_contacts`."""
    if missing not in ("keep", "lock", "delete"):
        raise ValueError("missing must be 'keep', 'lock' or 'delete'")
    if not 0.0 <= max_missing <= 1.0:
        raise ValueError(f"max_missing must be between 0 and 1, got {max_missing!r}")
    options = dict(options)
    checkpoint = options.pop("checkpoint", None)
    directory = Path(checkpoint).parent if checkpoint else None
    campaign = await resolve_campaign(client, campaign_id, campaign_name)
    try:
        ws = Workspace(directory)
    except OSError as exc:
        # A directory that does not exist or cannot be written: a setting to correct.
        raise ConfigurationError(f"cannot create the sync's scratch index: {exc}") from None
    try:
        run = Sync(client, campaign, ws, options)
        try:
            await ws.load(client._iter_records(run.campaign_id), run.campaign_id)
        except ValueError as exc:
            route = client.routes.list_contacts
            raise ResponseFormatError(
                str(exc), method=route.method, path=route.path, body=None
            ) from None
        except sqlite3.Error as exc:
            raise CheckpointError(f"the sync's scratch index {ws.path}: {exc}") from None
        try:
            await run.plan(rows)
        except BaseException as exc:
            # Every row read is accounted, as when a bulk job stops: the planned ones were
            # never sent.
            run.cancel_planned()
            partial = run.result(run.rows, Operation.SYNC, read_all=False)
            if isinstance(exc, sqlite3.Error):
                error = CheckpointError(f"the sync's scratch index {ws.path}: {exc}")
                error.bulk_result = partial  # type: ignore[attr-defined]
                raise error from exc
            exc.bulk_result = partial  # type: ignore[attr-defined]
            raise
        plan = run.make_plan(missing)
        if on_plan is not None:
            on_plan(plan)
        if missing != "keep" and not force and plan.missing_share > max_missing:
            raise SyncGuardError(
                f"refusing to {missing} {plan.missing} of the campaign's {plan.campaign_size} "
                f"contacts ({plan.missing_share:.0%} > max_missing {max_missing:.0%}): is the "
                "input complete? Nothing was written; pass force=True if this is intended",
                plan,
            )
        if dry_run:
            run.dry_run()
            return _finish(run, plan, None, dry_run=True)
        try:
            await run.apply_rows()
            missing_result = None
            if missing != "keep":
                action = Operation.LOCK if missing == "lock" else Operation.DELETE
                run.total = (run.total or 0) + plan.missing
                await run.apply_missing(action)
                missing_result = run.result(run.missing, action, read_all=not run.stopped)
        except asyncio.CancelledError as cancelled:
            rows_result = run.result(run.rows, Operation.SYNC, read_all=run.read_all)
            cancelled.bulk_result = rows_result  # type: ignore[attr-defined]
            # The missing policy's own account: what it already locked or deleted.
            missing_partial = None
            if missing != "keep":
                action = Operation.LOCK if missing == "lock" else Operation.DELETE
                missing_partial = run.result(run.missing, action, read_all=False)
            cancelled.sync_result = SyncResult(  # type: ignore[attr-defined]
                plan=plan, rows=rows_result, missing=missing_partial
            )
            raise
        result = _finish(run, plan, missing_result)
        if run.raise_on_error and run.failures:
            raise BulkError(f"sync stopped at the first failure: {result.summary()}", result.rows)
        return result
    finally:
        with contextlib.suppress(Exception):
            ws.close()


def _finish(
    run: Sync, plan: SyncPlan, missing: BulkResult | None, *, dry_run: bool = False
) -> SyncResult:
    run.progress(finished=True)
    rows = run.result(run.rows, Operation.SYNC, read_all=run.read_all)
    return SyncResult(plan=plan, rows=rows, missing=missing, dry_run=dry_run)
