"""Progress and summaries on stderr: a rich progress bar and table on a terminal, plain log
lines otherwise (CI logs, pipes), nothing with ``--quiet``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
)
from rich.table import Table

from .._results import Outcome
from .._results import Progress as Snapshot
from ._output import Account

#: Seconds between two plain progress lines when stderr is not a terminal.
PLAIN_EVERY = 5.0

_STYLES = {
    "succeeded": "green",
    "valid": "green",
    "skipped": "cyan",
    "failed": "red",
    "invalid": "yellow",
    "ambiguous": "magenta",
    "cancelled": "dim",
}


def out_console() -> Console:
    """stdout, for data: tables are not squeezed to 80 columns when piped."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=240)
    return console


def err_console() -> Console:
    console = Console(stderr=True, highlight=False)
    console.soft_wrap = not console.is_terminal  # log lines: one line per message
    return console


def _eta(done: int, total: int | None, rate: float) -> str:
    if total is None or rate <= 0 or done >= total:
        return "-"
    seconds = int((total - done) / rate)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


def _limit(p: Snapshot) -> str:
    """The adaptive limit and the baseline it is judged against, e.g. ``limit 12 (rtt 21 ms)``;
    '' before the first snapshot that has one."""
    if p.concurrency_limit is None:
        return ""
    if p.baseline_rtt is None:  # still measuring the baseline, at the floor
        return f"limit {p.concurrency_limit} (measuring rtt)"
    return f"limit {p.concurrency_limit} (rtt {p.baseline_rtt * 1000:.0f} ms)"


def _split(p: Snapshot) -> tuple[int, int]:
    """(failed, invalid) of a snapshot: an INVALID row was never sent, so it is not "failed"."""
    invalid = p.counts.get(Outcome.INVALID, 0)
    return p.failed - invalid, invalid


def _trouble(failed: int, invalid: int, retries: int, throttled: int) -> str:
    red = "red" if failed else "dim"
    yellow = "yellow" if invalid else "dim"
    amber = "yellow" if retries or throttled else "dim"
    return (
        f"[{red}]failed {failed}[/] [{yellow}]invalid {invalid}[/] "
        f"[{amber}]retries {retries} 429s {throttled}[/]"
    )


class Display:
    """Shows a job's progress; fed by the SDK's ``on_progress`` snapshots."""

    def __init__(
        self,
        console: Console,
        label: str,
        total: int | None,
        *,
        quiet: bool,
        source: str = "",
        adaptive: bool = False,
    ) -> None:
        self.console = console
        #: show the adaptive concurrency limit and its baseline round trip (``--adaptive``)
        self.adaptive = adaptive
        self.label = label
        self.source = source
        self.total = total
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last_line = time.monotonic()

    def __enter__(self) -> Display:
        if self.live:
            self._bar = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=16),
                MofNCompleteColumn(),
                TextColumn("{task.fields[speed]}"),
                TextColumn("{task.fields[trouble]}"),
                TextColumn("[dim]{task.fields[limit]}"),
                console=self.console,
                transient=False,
                refresh_per_second=8,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                self.label, total=self.total, speed="", trouble=_trouble(0, 0, 0, 0), limit=""
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def update(self, p: Snapshot) -> None:
        total = p.total if p.total is not None else self.total
        if total is not None and p.done > total:
            total = None  # the quick line count was an underestimate
        if p.finished:
            total = p.done
        limit = _limit(p) if self.adaptive else ""
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                completed=p.done,
                total=total,
                speed=f"{p.rate:,.0f}/s ETA {_eta(p.done, total, p.rate)}",
                trouble=_trouble(*_split(p), p.retries, p.throttled),
                limit=limit,
            )
            return
        if self.quiet:
            return
        now = time.monotonic()
        if not p.finished and now - self._last_line < PLAIN_EVERY:
            return
        self._last_line = now
        of = f"/{total}" if total is not None else ""
        failed, invalid = _split(p)
        self.console.print(
            f"{self.label} {self.source}: {p.done}{of} done, {p.rate:,.0f}/s, failed {failed}, "
            f"invalid {invalid}, retries {p.retries}, 429s {p.throttled}, "
            f"ETA {_eta(p.done, total, p.rate)}{', ' + limit if limit else ''}",
            markup=False,
        )


def summary(console: Console, account: Account, *, title: str) -> None:
    """The end-of-job account: a table on a terminal, plain lines otherwise."""
    rate = account.total / account.elapsed if account.elapsed > 0 else 0.0
    stats: list[tuple[str, str]] = [
        ("total", f"{account.total:,}"),
        ("elapsed", f"{account.elapsed:.1f}s ({rate:,.0f}/s)"),
    ]
    if not account.dry_run:
        stats += [
            ("requests", f"{account.requests:,}"),
            ("retries", f"{account.retries:,}"),
            ("throttled (429)", f"{account.throttled:,}"),
        ]
    if account.duplicates:
        stats.append(("repeated keys in input", f"{account.duplicates:,}"))
    phones = account.phones
    if phones is not None:
        stats.append(
            (
                "phone numbers",
                f"{phones['normalised']:,} normalised, {phones['dropped']:,} dropped, "
                f"{phones['invalid']:,} invalid, {phones['suppressed']:,} suppressed",
            )
        )
        for reason, n in sorted(phones["skipped"].items()):
            stats.append((f"skipped: {reason}", f"{n:,}"))
    if not console.is_terminal:
        counts = ", ".join(f"{k} {n}" for k, n in account.counts.items() if n) or "nothing"
        console.print(f"{title}: {counts}", markup=False)
        console.print("  " + "; ".join(f"{k}: {v}" for k, v in stats), markup=False)
        return
    table = Table(title=title, box=box.ROUNDED, show_header=True, title_justify="left")
    table.add_column("outcome")
    table.add_column("rows", justify="right")
    for name, count in account.counts.items():
        style = _STYLES.get(name, "") if count else "dim"
        table.add_row(f"[{style}]{name}[/]" if style else name, f"[{style}]{count:,}[/]")
    table.add_section()
    for name, value in stats:
        table.add_row(f"[dim]{name}[/]", value)
    console.print(table)


def failure_sample(console: Console, account: Account, limit: int = 5) -> None:
    """The first few failures, so the reason is visible without opening a file."""
    failures = account.failures[:limit]
    if not failures:
        return
    if not console.is_terminal:
        for f in failures:
            console.print(
                f"  line {f['line'] or '?'} ({f['key'] or '-'}): {f['outcome']}: {f['error']}",
                markup=False,
            )
    else:
        table = Table(box=box.SIMPLE, show_header=True, header_style="bold")
        for column in ("line", "key", "outcome", "why"):
            table.add_column(column, overflow="fold")
        for f in failures:
            table.add_row(
                str(f["line"] or "?"),
                escape(str(f["key"] or "-")),
                f["outcome"],
                escape(f["error"]),
            )
        console.print(table)
    more = len(account.failures) - len(failures)
    if more > 0:
        console.print(f"  … and {more:,} more", markup=False)


def note(console: Console, text: str, style: str = "") -> None:
    """One line of prose (never markup-interpreted: it may hold user data)."""
    console.print(text, style=style or None, markup=False, highlight=False)


def table_out(console: Console, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Records as a table on ``console`` (stdout for data commands)."""
    table = Table(box=box.SIMPLE_HEAD)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(_cell(row.get(c))) for c in columns))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
