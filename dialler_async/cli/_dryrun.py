"""Dry runs: every row validated exactly as the job would, the campaign resolved, no writes."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import attrs

from .._exceptions import ContactValidationError
from .._models import Campaign
from .._results import Operation, Outcome
from .._results import Progress as Snapshot
from .._screen import PhoneScreen, screen_update
from .._validation import validate_contact, validate_key, validate_update
from ._input import UnparsableLine
from ._output import Account, key_of, line_of, raw_of
from ._progress import Display

if TYPE_CHECKING:
    from ._commands import Job


def problems(
    job: Job, item: Any, campaigns: list[Campaign] | None, screen: PhoneScreen | None = None
) -> str | None:
    """Why ``item`` would be rejected (dry run), or None. With ``screen`` (an import's phone
    rules), a row the job would skip raises :class:`Skip`."""
    if isinstance(item, UnparsableLine):
        return item.problem
    try:
        if job.keyed:
            return _key_problem(item, job.by_user_data)
        if job.operation is Operation.IMPORT:
            given = job.args.campaign_id is not None or bool(job.args.campaign_name)
            if screen is not None:
                verdict = screen.check(item, campaign_given=given)
                if verdict.skip is not None:
                    raise Skip(verdict.skip)
                cid = verdict.body.get("DiallerCampaignsID")
                cname = verdict.body.get("DiallerCampaignsName")
            else:
                checked: Any = validate_contact(item, campaign_given=given)
                cid, cname = checked.campaign_id, checked.campaign_name
        elif screen is not None:  # an update under a phone policy
            _, body, _ = screen_update(item, screen.normaliser, counts=screen.counts)
            cid, cname = body.get("DiallerCampaignsID"), body.get("DiallerCampaignsName")
        else:
            checked = validate_update(item)
            cid, cname = checked.campaign_id, checked.campaign_name
    except ContactValidationError as exc:
        return "; ".join(exc.problems)
    if campaigns is None:
        return None
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


class Skip(Exception):
    """A row the job would skip (``args[0]``: the reason)."""


async def dry_run(job: Job, display: Display, campaigns: list[Campaign] | None) -> Account:
    """Validate every row (and its campaign, against ``campaigns``) without sending a write."""
    started = time.monotonic()
    valid = invalid = 0
    skipped: dict[str, int] = {}
    failures: list[dict[str, Any]] = []
    phones = job.phones if job.operation in (Operation.IMPORT, Operation.UPDATE) else None
    screen = phones.screen() if phones is not None else None
    for index, item in enumerate(job.items()):
        try:
            problem = problems(job, item, campaigns, screen)
        except Skip as skip:
            skipped[skip.args[0]] = skipped.get(skip.args[0], 0) + 1
            continue
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
            display.update(_snapshot(valid, invalid, job.total, started, sum(skipped.values())))
            await asyncio.sleep(0)  # let Ctrl-C (task cancellation) through
    display.update(
        _snapshot(valid, invalid, job.total, started, sum(skipped.values()), finished=True)
    )
    counts = {"valid": valid, "invalid": invalid}
    if screen is not None:
        counts["skipped"] = sum(skipped.values())
    return Account(
        operation=job.operation.value,
        counts=counts,
        elapsed=time.monotonic() - started,
        failures=failures,
        dry_run=True,
        phones=None if screen is None else {**attrs.asdict(screen.counts), "skipped": skipped},
    )


def _key_problem(item: Any, by_user_data: bool) -> str | None:
    try:
        validate_key(item, by_user_data=by_user_data)
    except ContactValidationError as exc:
        return "; ".join(exc.problems)
    return None


def _snapshot(
    valid: int,
    invalid: int,
    total: int | None,
    started: float,
    skipped: int = 0,
    finished: bool = False,
) -> Snapshot:
    elapsed = time.monotonic() - started
    done = valid + invalid + skipped
    return Snapshot(
        done=done,
        total=total,
        counts={Outcome.SUCCEEDED: valid, Outcome.INVALID: invalid, Outcome.SKIPPED: skipped},
        elapsed=elapsed,
        rate=done / elapsed if elapsed > 0 else 0.0,
        requests=0,
        retries=0,
        throttled=0,
        current_rate_limit=None,
        finished=finished,
    )
