"""Sync a campaign with a source: send only what changed (:meth:`DiallerClient.sync_contacts`).

Three steps, each at bounded memory (the working set is a scratch SQLite file, :mod:`._snapshot`):

1. *Snapshot*: one streamed read of the campaign (the list route, :mod:`._listing`) into an
   index of UserData -> contacts.
2. *Plan* (:mod:`._sync_plan`): every input row is validated as an import would be and
   classified against the index: new, changed (only the differing fields are sent, by the
   server's ID), unchanged (SKIPPED, no request), conflict (several contacts hold its UserData:
   FAILED, untouched), invalid, superseded. *Missing*: contacts of the campaign no input row
   names.
3. *Apply* (:mod:`._sync_apply`) through the bulk engine: a lookup of each new row, imports,
   then updates, then the missing policy (keep, lock or delete by ID), unless the guard
   refuses it.

Every write a sync sends is safe to repeat (an update or lock/delete by ID; an import is a plain
import checked by lookup in the campaign before it is ever resent), and a sync run again plans
against what the server then holds, so an interrupted sync is resumed by running it again.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._exceptions import (
    BulkError,
    CheckpointError,
    ConfigurationError,
    ResponseFormatError,
    SyncGuardError,
)
from ._models import Campaign
from ._results import BulkResult, Operation
from ._snapshot import Workspace
from ._sync_apply import Applier
from ._sync_plan import Planner
from ._sync_run import SyncRun
from ._sync_types import MissingPolicy, SyncPlan, SyncResult

if TYPE_CHECKING:
    from ._client import DiallerClient


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
        run = SyncRun(client, campaign, ws, options)
        await _snapshot(client, run)
        planner, applier = Planner(run), Applier(run)
        try:
            await planner.plan(rows)
        except BaseException as exc:
            # Every row read is accounted, as when a bulk job stops: the planned ones were
            # never sent.
            applier.cancel_planned()
            partial = run.result(run.rows, Operation.SYNC, read_all=False)
            if isinstance(exc, sqlite3.Error):
                error = CheckpointError(f"the sync's scratch index {ws.path}: {exc}")
                error.bulk_result = partial  # type: ignore[attr-defined]
                raise error from exc
            exc.bulk_result = partial  # type: ignore[attr-defined]
            raise
        plan = planner.make_plan(missing)
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
            applier.dry_run()
            return _finish(run, plan, None, dry_run=True)
        action = Operation.LOCK if missing == "lock" else Operation.DELETE
        try:
            await applier.apply_rows()
            missing_result = None
            if missing != "keep":
                run.total = (run.total or 0) + plan.missing
                await applier.apply_missing(action)
                missing_result = run.result(run.missing, action, read_all=not run.stopped)
        except BaseException as stopped:
            # Cancelled, or the caller's on_progress raised: the account goes with it.
            rows_result = run.result(run.rows, Operation.SYNC, read_all=run.read_all)
            stopped.bulk_result = rows_result  # type: ignore[attr-defined]
            # The missing policy's own account: what it already locked or deleted.
            missing_partial = None
            if missing != "keep":
                missing_partial = run.result(run.missing, action, read_all=False)
            stopped.sync_result = SyncResult(  # type: ignore[attr-defined]
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


async def _snapshot(client: DiallerClient, run: SyncRun) -> None:
    """Read the campaign into the run's workspace; a bad answer or a scratch file that cannot
    be written is one of the SDK's errors."""
    try:
        await run.ws.load(client._iter_records(run.campaign_id), run.campaign_id)
    except ValueError as exc:
        route = client.routes.list_contacts
        raise ResponseFormatError(
            str(exc), method=route.method, path=route.path, body=None
        ) from None
    except sqlite3.Error as exc:
        raise CheckpointError(f"the sync's scratch index {run.ws.path}: {exc}") from None


def _finish(
    run: SyncRun, plan: SyncPlan, missing: BulkResult | None, *, dry_run: bool = False
) -> SyncResult:
    run.progress(finished=True)
    rows = run.result(run.rows, Operation.SYNC, read_all=run.read_all)
    return SyncResult(plan=plan, rows=rows, missing=missing, dry_run=dry_run)
