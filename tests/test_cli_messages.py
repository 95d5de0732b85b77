"""Every CLI failure a user can cause: one line that says how to fix it, the documented exit
status, and no traceback (issue 12). Each case runs the real command line as a subprocess."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dialler_async import BulkResult, Operation
from dialler_async.cli._args import delimiter
from dialler_async.cli._commands import rejects_name
from dialler_async.cli._input import FIELD_LIMIT

from .test_cli import REPO, SPRING, clean_env, cli, count, emu, server, write_contacts

Result = subprocess.CompletedProcess[str]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "emulator.db"


def fails(result: Result, status: int, *hints: str) -> None:
    """``result`` exited with ``status``, without a traceback, its stderr holding every hint."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for hint in hints:
        assert hint in result.stderr, (hint, result.stderr)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An emulator database holding 1,500 contacts of campaign 538 (about 250 kB exported:
    more than a pipe holds, so a reader that stops early really breaks the pipe)."""
    tmp = tmp_path_factory.mktemp("loaded")
    write_contacts(tmp / "c.csv", 1500)
    db = tmp / "emulator.db"
    done = cli("import", tmp / "c.csv", "--campaign-id", str(SPRING), *emu(db), "-q")
    assert done.returncode == 0, done.stderr
    return db


# -- stdout closed early ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_into_a_reader_that_stops_early(loaded: Path, fmt: str) -> None:
    # `dialler-async export --campaign-id 538 | head -1`, without a shell
    proc = subprocess.Popen(
        [sys.executable, "-m", "dialler_async", "export", "--campaign-id", str(SPRING),
         "--format", fmt, *emu(loaded)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head` does once it has its line
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0, stderr
    assert first.startswith(b"ID," if fmt == "csv" else b'{"ID":')
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
    assert "exported" not in stderr  # it did not export them all, so it does not say so


# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "char"),
    [("tab", "\t"), ("TAB", "\t"), ("\\t", "\t"), ("\t", "\t"), ("semicolon", ";"),
     ("comma", ","), ("pipe", "|"), (";", ";"), ("#", "#")],
)  # fmt: skip
def test_delimiter_names(given: str, char: str) -> None:
    assert delimiter(given) == char


@pytest.mark.parametrize("given", ["", "ab", "tabs", "\n", '"'])
def test_delimiter_refused(given: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="one character, or tab"):
        delimiter(given)


@pytest.mark.parametrize(
    ("given", "char"),
    [("tab", "\t"), ("\\t", "\t"), ("semicolon", ";"), ("comma", ","), ("#", "#")],
)
def test_delimiter_option_imports_the_file(tmp_path: Path, db: Path, given: str, char: str) -> None:
    rows = write_contacts(tmp_path / "c.csv", 5)
    source = tmp_path / "d.csv"
    with (tmp_path / "c.csv").open(encoding="utf-8", newline="") as fh:
        table = list(csv.reader(fh))
    with source.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh, delimiter=char).writerows(table)
    result = cli("import", source, "--delimiter", given, "--campaign-id", str(SPRING), *emu(db))
    assert result.returncode == 0, result.stderr
    assert count(db) == len(rows)


def test_bad_delimiter_is_a_usage_error(tmp_path: Path) -> None:
    write_contacts(tmp_path / "c.csv", 1)
    result = cli("import", tmp_path / "c.csv", "--delimiter", "ab", "--emulator")
    fails(result, 2, "--delimiter", "one character, or tab")


@pytest.mark.parametrize(
    ("rate", "hint"),
    [("abc", "expected a number"), ("nan", "positive number"), ("inf", "positive number"),
     ("-inf", "positive number"), ("0", "positive number")],
)  # fmt: skip
def test_rate_must_be_a_positive_number(tmp_path: Path, rate: str, hint: str) -> None:
    write_contacts(tmp_path / "c.csv", 1)
    result = cli("import", tmp_path / "c.csv", f"--rate={rate}", "--emulator")
    fails(result, 2, "--rate", hint)
    assert "_positive" not in result.stderr  # no internal function names


def test_concurrency_must_be_a_whole_number(tmp_path: Path) -> None:
    write_contacts(tmp_path / "c.csv", 1)
    result = cli("import", tmp_path / "c.csv", "--concurrency", "many", "--emulator")
    fails(result, 2, "--concurrency", "expected a whole number")
    assert "_positive" not in result.stderr


def test_history_without_a_contact(db: Path) -> None:
    fails(cli("history", *emu(db)), 2, "give its ID", "--user-data")
    fails(cli("history", "1", "--user-data", "X", *emu(db)), 2, "not both")


def test_export_of_an_unknown_campaign_is_refused_like_import(tmp_path: Path, db: Path) -> None:
    out = tmp_path / "out.csv"
    result = cli("export", "--campaign-id", "999", "-o", out, *emu(db))
    fails(result, 2, "no campaign ID 999", "538 Spring Campaign")
    assert not out.exists()
    write_contacts(tmp_path / "c.csv", 1)
    imported = cli("import", tmp_path / "c.csv", "--campaign-id", "999", *emu(db))
    fails(imported, 2, "no campaign ID 999")


# -- checkpoint, rejects, report ----------------------------------------------------------


def test_checkpoint_that_is_not_a_checkpoint(tmp_path: Path, db: Path) -> None:
    write_contacts(tmp_path / "c.csv", 3)
    other = tmp_path / "other.csv"
    write_contacts(other, 3)
    before = other.read_bytes()
    result = cli("import", tmp_path / "c.csv", "--campaign-id", str(SPRING), *emu(db),
                 "--checkpoint", other)  # fmt: skip
    fails(result, 2, f"{other} is not a checkpoint", "give a new file name")
    assert other.read_bytes() == before and count(db) == 0


full_disk = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")


@full_disk
def test_full_disk_while_writing_rejects(tmp_path: Path, db: Path) -> None:
    write_contacts(tmp_path / "c.csv", 40, broken=3)
    report = tmp_path / "report.json"
    result = cli("import", tmp_path / "c.csv", "--campaign-id", str(SPRING), *emu(db),
                 "--rejects", "/dev/full", "--report", report)  # fmt: skip
    fails(result, 2, "cannot write the rejects file /dev/full", "No space left on device",
          "free disk space")  # fmt: skip
    assert "import " in result.stderr and "invalid 3" in result.stderr  # the summary
    data = json.loads(report.read_text())
    assert data["counts"]["invalid"] == 3 and data["counts"]["succeeded"] == 37
    assert data["exit_status"] == 2 and "No space left" in data["rejects_error"]
    assert count(db) == 37  # the job itself went on


@full_disk
def test_full_disk_while_writing_the_report(tmp_path: Path, db: Path) -> None:
    write_contacts(tmp_path / "c.csv", 10)
    result = cli("import", tmp_path / "c.csv", "--campaign-id", str(SPRING), *emu(db),
                 "--report", "/dev/full")  # fmt: skip
    fails(result, 2, "cannot write the report /dev/full", "free disk space")
    assert "succeeded 10" in result.stderr and "report: /dev/full" not in result.stderr


# -- input --------------------------------------------------------------------------------


def _rewrite(path: Path, line: int, column: str, value: str) -> None:
    """Set one cell of a CSV (``line`` counted as in an editor: the header is line 1)."""
    with path.open(encoding="utf-8", newline="") as fh:
        table = list(csv.reader(fh))
    table[line - 1][table[0].index(column)] = value
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(table)


def test_a_field_longer_than_the_csv_default_limit_is_read(tmp_path: Path, db: Path) -> None:
    source = tmp_path / "c.csv"
    write_contacts(source, 20)
    _rewrite(source, 6, "Name", "N" * 200_000)  # the csv module stops at 131,072 by default
    result = cli("import", source, "--campaign-id", str(SPRING), *emu(db))
    fails(result, 1, "line 6", "Name: 200000 characters, at most")
    assert count(db) == 19


def test_a_field_beyond_the_limit_makes_its_row_invalid(tmp_path: Path, db: Path) -> None:
    source = tmp_path / "c.csv"
    write_contacts(source, 20)
    _rewrite(source, 11, "Comment", "C" * (FIELD_LIMIT + 1))
    rejects = tmp_path / "rejects.csv"
    result = cli("import", source, "--campaign-id", str(SPRING), *emu(db), "--rejects", rejects)
    fails(result, 1, "line 11 has a field longer than")
    assert count(db) == 19  # the rows after it too
    with rejects.open(encoding="utf-8-sig", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["error_status"] == "invalid" and "longer than" in row["error_message"]


def test_a_decoding_error_names_its_line_and_the_encoding_option(tmp_path: Path) -> None:
    source = tmp_path / "c.csv"
    write_contacts(source, 800)  # well beyond one chunk of the text layer's read-ahead
    lines = source.read_bytes().split(b"\n")
    lines[701] = lines[701].replace(b",", b",M\xfcller", 1)  # line 702: a cp1252 ü
    source.write_bytes(b"\n".join(lines))
    result = cli("import", source, "--campaign-id", str(SPRING), "--emulator")
    fails(result, 2, "line 702 is not UTF-8 text", "--encoding cp1252")


def test_utf16_is_told_to_use_the_utf16_encoding(tmp_path: Path, db: Path) -> None:
    write_contacts(tmp_path / "c.csv", 5)
    text = (tmp_path / "c.csv").read_text(encoding="utf-8")
    source, bare = tmp_path / "u16.csv", tmp_path / "u16le.csv"
    source.write_bytes(text.encode("utf-16"))  # with a byte order mark, as Excel writes it
    bare.write_bytes(text.encode("utf-16-le"))
    fails(cli("import", source, "--emulator"), 2, "UTF-16", "--encoding utf-16")
    fails(cli("import", bare, "--emulator"), 2, "--encoding utf-16-le")
    fixed = cli("import", source, "--encoding", "utf-16", "--campaign-id", str(SPRING), *emu(db))
    assert fixed.returncode == 0, fixed.stderr
    assert count(db) == 5


def test_unknown_encoding(tmp_path: Path) -> None:
    write_contacts(tmp_path / "c.csv", 1)
    fails(cli("import", tmp_path / "c.csv", "--encoding", "klingon", "--emulator"), 2,
          "unknown encoding 'klingon'", "utf-8, cp1252")  # fmt: skip


# -- wrong base URL -----------------------------------------------------------------------


@contextlib.contextmanager
def _without_prefix(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The emulator's variables, with DIALLER_BASE_URL missing its /rest/v1.0 suffix."""
    with server(tmp_path) as srv:
        env = dict(srv.env)
        assert env["DIALLER_BASE_URL"].endswith("/rest/v1.0")
        env["DIALLER_BASE_URL"] = env["DIALLER_BASE_URL"].removesuffix("/rest/v1.0")
        yield env


def test_a_base_url_without_the_rest_prefix_stops_before_row_one(tmp_path: Path) -> None:
    write_contacts(tmp_path / "c.csv", 30)
    with _without_prefix(tmp_path) as env:
        url = env["DIALLER_BASE_URL"]
        result = cli("import", tmp_path / "c.csv", "--campaign-id", str(SPRING), env=env)
        fails(result, 2, f"{url} is not a jtel REST base URL", "/rest/v1.0",
              f"{url}/rest/v1.0")  # fmt: skip
        assert "row" not in result.stderr.split("error:")[0]  # no job ran
        probe = cli("probe", env=env)
        fails(probe, 2, f"{url} is not a jtel REST base URL", "every one of the 18 routes")
        assert "override" not in probe.stderr  # not a route problem
        for command in (["campaigns"], ["get", "1"], ["export"]):
            fails(cli(*command, env=env), 2, "ending in /rest/v1.0")
    assert count(tmp_path / "server.db") == 0


# -- wording ------------------------------------------------------------------------------


def test_progress_line_counts_invalid_rows_as_invalid(tmp_path: Path, db: Path) -> None:
    write_contacts(tmp_path / "c.csv", 30, broken=3)
    result = cli("import", tmp_path / "c.csv", "--campaign-id", str(SPRING), *emu(db))
    assert result.returncode == 1
    assert "failed 0, invalid 3" in result.stderr  # the plain progress line (not a terminal)
    assert "3 rows did not succeed" in result.stderr


def test_one_row_is_one_row(tmp_path: Path, db: Path) -> None:
    write_contacts(tmp_path / "c.csv", 10, broken=1)
    result = cli("import", tmp_path / "c.csv", "--campaign-id", str(SPRING), *emu(db))
    assert result.returncode == 1
    assert "1 row did not succeed. Add --rejects rejects.csv to get it" in result.stderr
    assert "1 rows" not in result.stderr


def test_rejects_hint_never_names_the_input(tmp_path: Path, db: Path) -> None:
    source = tmp_path / "rejects.csv"
    write_contacts(source, 10, broken=2)
    result = cli("import", source, "--campaign-id", str(SPRING), *emu(db))
    assert result.returncode == 1 and "--rejects rejects-2.csv" in result.stderr


@pytest.mark.parametrize(
    ("given", "suggested"),
    [("crm.csv", "rejects.csv"), ("rejects.csv", "rejects-2.csv"),
     ("out/REJECTS.jsonl", "rejects-2.jsonl"), ("rejects-2.csv", "rejects-3.csv"),
     ("-", "rejects.csv"), ("my-rejects.csv", "rejects.csv")],
)  # fmt: skip
def test_rejects_name(given: str, suggested: str) -> None:
    assert rejects_name(given) == suggested


def test_key_jobs_are_not_told_to_import_again(tmp_path: Path, db: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("NOPE-1\nNOPE-2\n")
    result = cli("lock", "--user-data", keys, *emu(db))
    assert result.returncode == 1
    assert "import" not in result.stderr and "ready to run again" in result.stderr
    rejects = tmp_path / "locks.csv"
    again = cli("lock", "--user-data", keys, *emu(db), "--rejects", rejects)
    assert f"run the same command with --user-data {rejects}" in again.stderr
    assert "import" not in again.stderr


def test_summary_counts_one_item() -> None:
    result = BulkResult(
        operation=Operation.LOCK, succeeded=1, failed=0, invalid=0, ambiguous=0,
        cancelled=0, skipped=0, items=None, failures=(), elapsed=0.1, requests=1, retries=0,
        throttled=0, duplicates_in_input=0,
    )  # fmt: skip
    assert result.summary().startswith("1 item: 1 succeeded")


def test_help_texts() -> None:
    emulator = cli("emulator", "--help")
    assert emulator.returncode == 0
    out = emulator.stdout
    assert "see below" in out and "fault kinds (what the client sees):" in out
    assert "(default: None)" not in out and "(default: [])" not in out
    assert out.count("(default: none)") == 1
    for command in ("import", "lock", "export", "probe"):
        text = cli(command, "--help").stdout
        assert text.count("connection:") == 1, command
        assert "environment:" in text


# -- the example --------------------------------------------------------------------------


def test_bulk_import_example_fails_like_the_cli_on_an_invalid_row() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "bulk_import.py"), "20"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "20 succeeded, 1 invalid" in result.stdout
