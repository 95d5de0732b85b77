"""``dialler-async sync``: make a campaign hold a file's contacts, sending only what changed."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt

from rich import box
from rich.console import Console
from rich.table import Table

from .._exceptions import ConfigurationError, SyncGuardError
from .._sync_types import SyncPlan, SyncResult
from ._commands import Job
from ._connect import UsageError, connect
from ._output import Account, write_report
from ._progress import Display, failure_sample, note, summary


def plan_table(console: Console, plan: SyncPlan, *, title: str) -> None:
    """The plan: rows by what the sync does with them, and the campaign's missing contacts."""
    policy = {"keep": "kept", "lock": "to lock", "delete": "to delete"}[plan.missing_policy]
    rows = [
        ("new", plan.new, "to import"),
        ("changed", plan.changed, "to update (changed fields only)"),
        ("unchanged", plan.unchanged, "no request"),
        ("conflicts", plan.conflicts, "several contacts with the UserData: not touched"),
        ("invalid", plan.invalid, "not sent"),
        ("superseded", plan.superseded, "a later row has the same UserData: merged into it"),
        (
            "missing",
            plan.missing,
            f"of {plan.campaign_size:,} in the campaign ({plan.missing_share:.1%}): {policy}",
        ),
    ]
    if not console.is_terminal:
        console.print(f"{title}: " + ", ".join(f"{name} {n}" for name, n, _ in rows), markup=False)
        return
    table = Table(title=title, box=box.ROUNDED, title_justify="left")
    table.add_column("plan")
    table.add_column("count", justify="right")
    table.add_column("", style="dim")
    for name, count, what in rows:
        table.add_row(name, f"{count:,}", what)
    console.print(table)


async def sync_command(args: argparse.Namespace, console: Console) -> int:
    """Run one sync end to end; returns the exit status (2 when the guard refuses)."""
    job = Job(args, console)
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    result: SyncResult | None = None
    refused: SyncGuardError | None = None
    interrupted = False
    try:
        async with connect(
            args, console, concurrency=args.concurrency, rate=args.rate, adaptive=args.adaptive
        ) as client:
            job.open_rejects()
            label = "planning" if args.dry_run else "syncing"
            with Display(
                console,
                label,
                job.total,
                quiet=args.quiet,
                source=job.path,
                adaptive=args.adaptive,
            ) as display:
                try:
                    result = await client.sync_contacts(
                        job.items(),
                        campaign_id=args.campaign_id,
                        campaign_name=args.campaign_name,
                        missing=args.missing,
                        max_missing=args.max_missing,
                        force=args.force,
                        dry_run=args.dry_run,
                        keep_results=False,
                        on_progress=display.update,
                        progress_interval=0.2 if display.live else 1.0,
                        concurrency=args.concurrency,
                        max_failures=args.max_failures,
                        checkpoint=args.checkpoint,
                    )
                except SyncGuardError as exc:
                    refused = exc
                except ConfigurationError as exc:
                    raise UsageError(str(exc)) from exc
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    interrupted = True
    finally:
        job.reader.close()
        if job.rejects is not None and (result is None or refused is not None):
            job.rejects.close()

    if refused is not None:
        plan_table(console, refused.plan, title=f"plan of sync {job.path} (refused)")
        note(console, f"error: {refused}", "bold red")
        note(console, "Nothing was written. Check the input, or pass --force.", "yellow")
        if args.report:
            _report(args, job, started_at, None, refused.plan, 2, ended="refused by the guard")
        return 2
    if result is None:
        note(console, "Interrupted: run the same sync again to finish it.", "bold yellow")
        return 130 if interrupted else 1
    account = Account.of(result.rows)
    account.dry_run = result.dry_run
    if job.rejects is not None:
        for failed in result.rows.failures:
            job.rejects.write(failed)
        job.rejects.close()
    status = 0 if result.ok else 1
    if args.report:
        _report(args, job, started_at, result, result.plan, status, ended=None)
    if not args.quiet:
        what = "dry run of " if result.dry_run else ""
        plan_table(console, result.plan, title=f"plan of {what}sync {job.path}")
        summary(console, account, title=f"{what}sync {job.path}")
        if result.missing is not None:
            missing = Account.of(result.missing)
            summary(console, missing, title=f"{result.missing.operation.value} missing contacts")
            failure_sample(console, missing)
        failure_sample(console, account)
        if job.rejects is not None and job.rejects.count:
            note(console, f"{job.rejects.count:,} rows did not succeed: {job.rejects.path}")
        if args.report:
            note(console, f"report: {args.report}", "dim")
    return status


def _report(
    args: argparse.Namespace,
    job: Job,
    started_at: str,
    result: SyncResult | None,
    plan: SyncPlan,
    status: int,
    *,
    ended: str | None,
) -> None:
    account = (
        Account.of(result.rows)
        if result is not None
        else Account(operation="sync", counts={}, elapsed=0.0)
    )
    account.dry_run = bool(args.dry_run)
    missing = Account.of(result.missing) if result and result.missing is not None else None
    write_report(
        args.report,
        account,
        command="sync",
        input=job.path,
        started_at=started_at,
        exit_status=status,
        ended_early=ended,
        rows_read=job.rows_read,
        plan=plan.as_dict(),
        campaign_id=plan.campaign_id,
        campaign_size=plan.campaign_size,
        missing_policy=plan.missing_policy,
        missing_account=(
            {"counts": missing.counts, "failures": missing.failures} if missing else None
        ),
        rejects=args.rejects,
        rejects_written=job.rejects.count if job.rejects else 0,
    )
