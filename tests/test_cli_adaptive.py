"""``--adaptive``: the CLI's switch for adaptive concurrency, and the limit and baseline round
trip in its progress display."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from dialler_async import Outcome
from dialler_async._results import Progress
from dialler_async.cli._args import build_parser
from dialler_async.cli._progress import Display
from tests.test_cli import cli, count, emu, write_contacts

SPRING = 538


def snapshot(limit: int | None, baseline: float | None, *, finished: bool = False) -> Progress:
    return Progress(
        done=10,
        total=20,
        counts={Outcome.SUCCEEDED: 10},
        elapsed=1.0,
        rate=10.0,
        requests=10,
        retries=0,
        throttled=0,
        current_rate_limit=None,
        finished=finished,
        concurrency_limit=limit,
        baseline_rtt=baseline,
    )


def plain(adaptive: bool, p: Progress) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with Display(console, "import", 20, quiet=False, adaptive=adaptive) as display:
        display.update(p)
    return out.getvalue()


@pytest.mark.parametrize(
    ("adaptive", "limit", "baseline", "shown"),
    [
        (True, 12, 0.0214, "limit 12 (rtt 21 ms)"),
        (True, 1, None, "limit 1 (measuring rtt)"),  # the first probe is still running
        (False, 16, None, None),  # a fixed limit is the --concurrency the user gave
        (True, None, None, None),  # a snapshot without a governor (a dry run)
    ],
)
def test_plain_progress_line_shows_the_limit_and_baseline(
    adaptive: bool, limit: int | None, baseline: float | None, shown: str | None
) -> None:
    line = plain(adaptive, snapshot(limit, baseline, finished=True))
    assert "10/10 done" in line
    if shown is None:
        assert "limit" not in line
    else:
        assert line.rstrip().endswith(shown)


def test_live_bar_shows_the_limit() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    with Display(console, "import", 20, quiet=False, adaptive=True) as display:
        display.update(snapshot(7, 0.02))
    assert "limit 7 (rtt 20 ms)" in out.getvalue()


def test_the_flag_parses_and_is_off_by_default() -> None:
    parser = build_parser()
    assert parser.parse_args(["import", "x.csv"]).adaptive is False
    args = parser.parse_args(["import", "x.csv", "--adaptive", "--concurrency", "1"])
    assert args.adaptive is True and args.concurrency == 1
    assert parser.parse_args(["sync", "x.csv", "--campaign-id", "1", "--adaptive"]).adaptive


def test_import_with_adaptive_and_concurrency_1(tmp_path: Path) -> None:
    """End to end, in a subprocess: the job runs, the account is complete, the last progress
    line (stderr is not a terminal) says the limit and the baseline round trip."""
    db = tmp_path / "emulator.db"
    source = tmp_path / "contacts.csv"
    write_contacts(source, 30)
    for concurrency in ("1", "8"):
        result = cli(
            "import",
            source,
            "--campaign-id",
            str(SPRING),
            "--adaptive",
            "--concurrency",
            concurrency,
            *emu(db),
        )
        assert result.returncode == 0, result.stderr
        progress = [line for line in result.stderr.splitlines() if " done, " in line]
        assert progress and "limit " in progress[-1] and " ms)" in progress[-1], result.stderr
        if concurrency == "1":
            assert "limit 1 (" in progress[-1]
    assert count(db) == 30
