"""Dry runs: every row validated exactly as the job would, the campaign resolved, no writes."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .._exceptions import ContactValidationError
from .._models import Campaign
from .._results import Operation, Outcome
from .._results import Progress as Snapshot
from .._validation import validate_contact, validate_key, validate_update
from ._input import UnparsableLine
from ._output import Account, key_of, line_of, raw_of
from ._progress import Display

if TYPE_CHECKING:
    from ._commands import Job


def problems(job: Job, item: Any, campaigns: list[Campaign] | None) -> str | None:
    """Why ``item`` would be rejected (dry run), or None."""
    if isinstance(item, UnparsableLine):
        return item.problem
    try:
        if job.keyed:
            return _key_problem(item, job.by_user_data)
        if job.operation is Operation.IMPORT:
            given = job.args.campaign_id is not None or bool(job.args.campaign_name)
            checked: Any = validate_contact(item, campaign_given=given)
        else:
            checked = validate_update(item)
    except ContactValidationError as exc:
        return "; ".join(exc.problems)
    if campaigns is None:
        return None
    cid, cname = checked.campaign_id, checked.campaign_name
    if isinstance(cid, int) and all(c.id != cid for c in campaigns):
        return f"DiallerCampaignsID: no campaign {cid} on this server"
    if (
        cid is None
        and isinstance(cname, str)
        and cname.strip()
        and all(c.name != cname for c in campaigns)
    ):
        return f"DiallerCampaignsName: no campaign {cname!r} on this server"
    return None


async def dry_run(job: Job, display: Display, campaigns: list[Campaign] | None) -> Account:
    """Validate every row (and its campaign, against ``campaigns``) without sending a write."""
    started = time.monotonic()
    valid = invalid = 0
    failures: list[dict[str, Any]] = []
    for index, item in enumerate(job.items()):
        problem = problems(job, item, campaigns)
        if problem is None:
            valid += 1
        else:
            invalid += 1
            if job.rejects is not None:
                job.rejects.write_row(raw_of(item), Outcome.INVALID.value, problem)
            failures.append(
                {
                    "index": index,
                    "line": line_of(item),
                    "key": key_of(item),
                    "outcome": Outcome.INVALID.value,
                    "status": None,
                    "error_type": "ContactValidationError",
                    "error": problem,
                }
            )
        if index % 1000 == 999:
            display.update(_snapshot(valid, invalid, job.total, started))
            await asyncio.sleep(0)  # let Ctrl-C (task cancellation) through
    display.update(_snapshot(valid, invalid, job.total, started, finished=True))
    return Account(
        operation=job.operation.value,
        counts={"valid": valid, "invalid": invalid},
        elapsed=time.monotonic() - started,
        failures=failures,
        dry_run=True,
    )


def _key_problem(item: Any, by_user_data: bool) -> str | None:
    try:
        validate_key(item, by_user_data=by_user_data)
    except ContactValidationError as exc:
        return "; ".join(exc.problems)
    return None


def _snapshot(
    valid: int, invalid: int, total: int | None, started: float, finished: bool = False
) -> Snapshot:
    elapsed = time.monotonic() - started
    done = valid + invalid
    return Snapshot(
        done=done,
        total=total,
        counts={Outcome.SUCCEEDED: valid, Outcome.INVALID: invalid},
        elapsed=elapsed,
        rate=done / elapsed if elapsed > 0 else 0.0,
        requests=0,
        retries=0,
        throttled=0,
        current_rate_limit=None,
        finished=finished,
    )
