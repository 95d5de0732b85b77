"""The bulk commands: import, update, delete, lock, unlock, reset (and their dry runs)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from .. import _fields as F
from .._client import DiallerClient
from .._exceptions import CheckpointError, ConfigurationError, DiallerError
from .._models import Campaign
from .._options import StreamOptions
from .._results import BulkResult, Operation
from ._args import parse_map
from ._connect import UsageError, check_server, connect, unknown_campaign
from ._dryrun import dry_run
from ._input import (
    Columns,
    InputError,
    Reader,
    count_lines,
    key_file_has_header,
    key_items,
)
from ._output import Account, Rejects, line_of, write_report
from ._phones import PhoneRules
from ._probe import MISSING, PROBE_ID, PROBE_USER_DATA, probe_one
from ._progress import Display, failure_sample, note, summary
from ._resultsfile import ResultsFile


class Job:
    """One bulk command: its input, options, and what it has written so far."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.operation = Operation(args.command)
        self.keyed = self.operation not in (Operation.IMPORT, Operation.UPDATE, Operation.SYNC)
        self.columns: Columns | None = None
        self.rows_read = 0
        self.last_line: int | None = None
        self.rejects: Rejects | None = None
        self.results: ResultsFile | None = None
        self.phones: PhoneRules | None = None
        self.written: set[int] = set()
        if self.keyed:
            self.by_user_data = args.user_data is not None
            self.key_name = "UserData" if self.by_user_data else "ID"
            self.path: str = args.user_data if self.by_user_data else args.ids
            self.reader = Reader(self.path, fmt=None, encoding=args.encoding, strict_header=False)
        else:
            self.path = args.file
            self.reader = Reader(
                self.path, fmt=args.format, encoding=args.encoding, delimiter=args.delimiter
            )
        try:
            self.check_outputs()
            self._plan()
            self.phones = PhoneRules.from_args(args, console)
            if self.keyed:
                header = key_file_has_header(self.reader, args.column, self.key_name)
                header = header and self.reader.format == "csv"
            else:
                header = self.reader.format == "csv"
            self.total = count_lines(self.path, header)
        except BaseException:
            self.reader.close()
            raise

    def _plan(self) -> None:
        args = self.args
        if self.keyed:
            return
        fields = F.IMPORT_FIELDS
        if self.operation is Operation.UPDATE:
            fields = (F.BY_API["ID"], *F.IMPORT_FIELDS)
        try:
            mapping = parse_map(args.map)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        self.columns = Columns(fields, mapping=mapping, drop=args.drop_column)
        if self.reader.format == "csv":
            self.columns.plan(self.reader.header)
            self._warn_columns(0, 0)
        if self.operation is Operation.UPDATE and self.reader.format == "csv":
            sent = {self.columns.target(h) for h in self.reader.header}
            if not sent & {"ID", "UserData"}:
                raise UsageError(f"{self.path}: an update needs an ID or a UserData column")

    def _warn_columns(self, unknown_seen: int, ignored_seen: int) -> tuple[int, int]:
        assert self.columns is not None
        unknown, ignored = self.columns.unknown, self.columns.ignored
        if len(unknown) > unknown_seen:
            note(
                self.console,
                "warning: unknown columns are sent as they are: "
                f"{', '.join(unknown[unknown_seen:])} "
                "(--map COLUMN=FIELD to rename, --drop-column to leave out)",
                "yellow",
            )
        if len(ignored) > ignored_seen and not self.args.quiet:
            note(self.console, f"note: not sent: {', '.join(ignored[ignored_seen:])}", "dim")
        return len(unknown), len(ignored)

    def items(self) -> Iterator[Any]:
        """The input, lazily, counting what was read."""
        if self.keyed:
            source = key_items(self.reader, self.args.column, self.key_name)
        else:
            assert self.columns is not None
            source = self.reader.rows(
                self.columns,
                null_marker=getattr(self.args, "null_marker", None),
                empty_is_null=getattr(self.args, "empty_cells", "keep") == "clear",
            )
        seen = (len(self.columns.unknown), len(self.columns.ignored)) if self.columns else (0, 0)
        for item in source:
            self.rows_read += 1
            self.last_line = line_of(item)
            if self.columns is not None and self.reader.format == "jsonl":
                seen = self._warn_columns(*seen)
            yield item

    def check_outputs(self) -> None:
        """Refuse to write a rejects file, report or checkpoint over the input."""
        if self.path == "-":
            return
        source = Path(self.path).resolve()
        for option in ("rejects", "report", "checkpoint", "results"):
            target = getattr(self.args, option, None)
            if target and Path(target).resolve() == source:
                raise UsageError(f"--{option} {target} is the input file; choose another name")

    def open_rejects(self) -> None:
        if self.args.rejects:
            header = self.reader.header if not self.keyed and self.reader.format == "csv" else None
            try:
                self.rejects = Rejects(
                    self.args.rejects,
                    header=header,
                    delimiter=self.reader.delimiter,
                    encoding=self.reader.encoding,
                )
            except OSError as exc:
                raise UsageError(str(exc)) from exc
        if getattr(self.args, "results", None) and not self.args.dry_run:
            try:
                phones = self.phones
                self.results = ResultsFile(
                    self.args.results,
                    policy=phones.policy if phones else None,
                    suppress=phones.suppress if phones else None,
                )
            except OSError as exc:
                raise UsageError(str(exc)) from exc

    def close(self) -> None:
        self.reader.close()
        if self.rejects is not None:
            self.rejects.close()
        if self.results is not None:
            self.results.close()

    # -- checks -------------------------------------------------------------------------

    async def _check_routes(self, client: DiallerClient) -> None:
        """Refuse to start a job whose endpoint the server does not have (every row would
        fail): the same harmless request as ``probe`` sends for it."""
        if self.keyed:
            name = f"{self.operation.value}_contact"
            name += "_by_user_data" if self.by_user_data else ""
        else:
            name = f"{self.operation.value}_contact"
        route = getattr(client.routes, name)
        found = await probe_one(client, name, route, PROBE_ID, PROBE_USER_DATA)
        if found["result"] == MISSING:
            raise UsageError(
                f"the server has no endpoint for {name} ({route.method} {route.path} answered "
                "404 with an empty body); run `dialler-async probe` and override the route "
                "with --routes FILE"
            )

    async def preflight(self, client: DiallerClient) -> list[Campaign] | None:
        """One cheap read before the job: catches a wrong token or URL before row one."""
        campaigns: list[Campaign] | None
        try:
            campaigns = await check_server(client)
        except DiallerError as exc:  # e.g. a 5xx: the job itself may still work
            note(self.console, f"warning: could not list the campaigns ({exc})", "yellow")
            campaigns = None
        await self._check_routes(client)
        args = self.args
        if self.operation is Operation.IMPORT and campaigns is not None:
            problem = unknown_campaign(campaigns, args.campaign_id, args.campaign_name)
            if problem is not None:
                raise UsageError(problem)
        return campaigns

    def options(self, display: Display) -> StreamOptions:
        args = self.args
        options: StreamOptions = {
            "keep_results": False,
            "on_progress": display.update,
            "concurrency": args.concurrency,
            "max_failures": args.max_failures,
            "total": self.total,
            "progress_interval": 0.2 if display.live else 1.0,
        }
        if args.checkpoint:
            options["checkpoint"] = args.checkpoint
        if self.operation is Operation.IMPORT:
            options["overwrite_duplicates"] = args.overwrite_duplicates
            options["campaign_id"] = args.campaign_id
            options["campaign_name"] = args.campaign_name
            if self.phones is not None:
                options["phone_policy"] = self.phones.policy
                options["suppress"] = self.phones.suppress
                options["dedupe_phone"] = self.phones.dedupe
        elif self.operation is Operation.UPDATE and self.phones is not None:
            options["phone_policy"] = self.phones.policy
        if self.keyed:
            options["by_user_data"] = self.by_user_data
        if self.results is not None:
            # Every row as it is accounted, also those that finish while a Ctrl-C winds the
            # job down (they never reach the stream).
            options["on_result"] = self.results.write
        return options

    async def run(self, client: DiallerClient, display: Display) -> tuple[BulkResult, str | None]:
        """Stream the job; returns the account and why it ended early (or None)."""
        try:
            results = client.stream(self.operation, self.items(), **self.options(display))
        except ConfigurationError as exc:  # e.g. a checkpoint of another job
            raise UsageError(str(exc)) from exc
        ended: str | None = None
        async with results:
            try:
                async for result in results:
                    if not result.ok and self.rejects is not None:
                        self.rejects.write(result)
                        self.written.add(result.index)
            except ConfigurationError as exc:  # the checkpoint: another job's, in use, not one
                raise UsageError(str(exc)) from exc
            except CheckpointError as exc:  # e.g. a full disk: the job stopped, account kept
                ended = f"checkpoint: {exc}; what was journaled before is kept"
                bulk: BulkResult = getattr(exc, "bulk_result", None) or results.result
            except asyncio.CancelledError as cancelled:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                ended = "interrupted"
                bulk = getattr(cancelled, "bulk_result", None) or results.result
            except InputError as exc:  # says where and what to do itself
                ended = f"input: {exc}"
                bulk = results.result
            except (csv.Error, OSError, ValueError) as exc:
                ended = f"input: reading {self.path} failed near line {self.last_line}: {exc}"
                if self.results is not None and self.results.error is exc:
                    ended = f"input: writing the results file failed: {exc}"
                bulk = results.result
            else:
                bulk = results.result
        if self.rejects is not None:
            for failed in bulk.failures:
                if failed.index not in self.written:
                    self.rejects.write(failed)
        return bulk, ended


async def bulk_command(args: argparse.Namespace, console: Console) -> int:
    """Run one bulk command end to end; returns the exit status."""
    job = Job(args, console)
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    label = "checking" if args.dry_run else job.operation.value
    ended: str | None = None
    try:
        async with connect(
            args, console, concurrency=args.concurrency, rate=args.rate, adaptive=args.adaptive
        ) as client:
            campaigns = await job.preflight(client)
            job.open_rejects()  # only now: a job refused above leaves no empty rejects file
            with Display(
                console,
                label,
                job.total,
                quiet=args.quiet,
                source=job.path,
                adaptive=args.adaptive,
            ) as display:
                if args.dry_run:
                    account = await dry_run(job, display, campaigns)
                else:
                    bulk, ended = await job.run(client, display)
                    account = Account.of(bulk)
    finally:
        job.close()

    status = 0 if account.problems == 0 else 1
    if ended == "interrupted":
        status = 130
    elif ended is not None:
        status = 2
    rejects_error = job.rejects.error if job.rejects else None
    if rejects_error is not None and status != 130:
        status = 2  # an output asked for is incomplete: not just "some rows failed"
    report_error: str | None = None
    if args.report:
        try:
            _write_report(
                job,
                account,
                started_at=started_at,
                status=status,
                ended=ended,
            )
        except OSError as exc:
            report_error = f"cannot write the report {args.report}: {exc.strerror or exc}"
            status = status if status == 130 else 2
    _closing(job, account, ended, console, report_written=report_error is None)
    for error in (rejects_error, report_error):
        if error is not None:
            kept = "the summary" if error is report_error or not args.report else "the report"
            note(
                console,
                f"error: {error}. Every row is still accounted for in {kept}; free disk space "
                "(or choose another path) and run the same command again.",
                "bold red",
            )
    return status


def _write_report(
    job: Job, account: Account, *, started_at: str, status: int, ended: str | None
) -> None:
    args = job.args
    write_report(
        args.report,
        account,
        command=args.command,
        input=job.path,
        started_at=started_at,
        exit_status=status,
        ended_early=ended,
        rows_read=job.rows_read,
        checkpoint=args.checkpoint,
        rejects=args.rejects,
        rejects_written=job.rejects.count if job.rejects else 0,
        rejects_error=job.rejects.error if job.rejects else None,
        results=getattr(args, "results", None),
        phones=job.phones.report() if job.phones else None,
    )


def plural(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``, ``1,000 rows``."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def rejects_name(input_path: str) -> str:
    """A rejects file name to suggest: ``rejects.csv``, unless that is the input itself (a
    re-run of an earlier rejects file): then ``rejects-2.csv``, ``rejects-3.csv`` ..."""
    name = Path(input_path).name if input_path != "-" else ""
    match = re.fullmatch(r"rejects(?:-(\d+))?(\.csv|\.jsonl)", name, re.IGNORECASE)
    if match is None:
        return "rejects.csv"
    return f"rejects-{int(match[1] or 1) + 1}{match[2]}"


def rerun_hint(job: Job, path: str, one: bool) -> str:
    """What to do with a rejects file: import/update take it as input, key jobs as keys."""
    them = "it" if one else "them"
    if not job.keyed:
        return f"fix {them} and run the same command on that file"
    option = "--user-data" if job.by_user_data else "--ids"
    return f"check {them}, then run the same command with {option} {path}"


def _closing(
    job: Job, account: Account, ended: str | None, console: Console, *, report_written: bool
) -> None:
    args = job.args
    if ended is not None and ended != "interrupted":
        note(console, "error: " + ended.removeprefix("input: "), "bold red")
    if args.quiet:
        return
    what = "dry run of " if account.dry_run else ""
    summary(console, account, title=f"{what}{account.operation} {job.path}")
    rejects = job.rejects
    if ended == "interrupted":
        if rejects is not None and rejects.count:
            note(
                console,
                f"{plural(rejects.count, 'row')} that did not succeed so far "
                f"{'is' if rejects.count == 1 else 'are'} in {rejects.path}.",
                "yellow",
            )
        if args.checkpoint:
            note(
                console,
                f"Interrupted. The checkpoint {args.checkpoint} is flushed: run the same command "
                "again to resume (rows already done are skipped).",
                "bold yellow",
            )
        else:
            note(
                console,
                "Interrupted. Without --checkpoint a re-run starts from the first row again "
                "(safe for imports with the default upsert by UserData); add --checkpoint FILE "
                "to be able to resume.",
                "bold yellow",
            )
    elif account.problems:
        failure_sample(console, account)
        if rejects is not None and rejects.error is None:
            one = rejects.count == 1
            note(
                console,
                f"{plural(rejects.count, 'row')} did not succeed: "
                f"{'it is' if one else 'they are'} in {rejects.path} as "
                f"{'it' if one else 'they'} came in, with error_status and error_message; "
                f"{rerun_hint(job, rejects.path, one)}.",
                "yellow",
            )
        elif rejects is None:
            one = account.problems == 1
            note(
                console,
                f"{plural(account.problems, 'row')} did not succeed. Add --rejects "
                f"{rejects_name(job.path)} to get {'it' if one else 'them'} in a file, as "
                f"{'it' if one else 'they'} came in, ready to "
                f"{'fix and import again' if not job.keyed else 'run again'}.",
                "yellow",
            )
        ambiguous = account.counts.get("ambiguous", 0)
        if ambiguous:
            again = (
                "Re-import them with the default --overwrite-duplicates (an upsert cannot "
                "duplicate), or look them up with `find` first."
                if job.operation is Operation.IMPORT
                else "Look them up with `find` (or `get`) before running them again."
            )
            note(
                console,
                f"{plural(ambiguous, 'row')} {'is' if ambiguous == 1 else 'are'} ambiguous: "
                f"may or may not have been applied. {again}",
                "magenta",
            )
        stopped = args.max_failures and account.problems >= args.max_failures
        if stopped and not account.dry_run and job.total and job.rows_read < job.total:
            note(
                console,
                f"Stopped after {args.max_failures} failures (--max-failures): rows after line "
                f"{job.last_line} were not read.",
                "bold yellow",
            )
    if args.report and report_written:
        note(console, f"report: {args.report}", "dim")
