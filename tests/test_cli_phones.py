"""The command line's phone options, results file and dry-run counts, against the emulator."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import phonenumbers

from tests.test_cli import (
    _wait_for_rows,
    cli,
    contacts,
    count,
    emu,
    read_csv,
    server,
    write_contacts,
)

ROWS = """UserData;Name;PhoneNumber1;PhoneNumber2
A1;Alpha;030 1111111;
A2;Beta;abc;
A3;Gamma;0049 30 2222222;12
A4;Delta;+49 (0)30 1111111;
A5;Eps;030 3333333;
A6;Zeta;=HYPERLINK("x");030 4444444
A7;Eta;4930555555.0;
"""


def test_results_file_maps_every_row_and_numbers_as_sent(tmp_path: Path) -> None:
    db = tmp_path / "emulator.db"
    source = tmp_path / "rows.csv"
    source.write_text(ROWS)
    (tmp_path / "dnc.txt").write_text("# DNC\n+49 30 3333333\n")
    results, report = tmp_path / "results.csv", tmp_path / "report.json"
    done = cli(
        "import", source, "--campaign-id", "538", *emu(db), "--phone-region", "de",
        "--suppress", tmp_path / "dnc.txt", "--dedupe-phone", "--results", results,
        "--report", report,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # one invalid row
    lines = {r["UserData"]: r for r in read_csv(results)}
    assert sorted(int(r["line"]) for r in lines.values()) == list(range(2, 9))
    assert {k: (r["outcome"], r["reason"]) for k, r in lines.items()} == {
        "A1": ("succeeded", ""),
        "A2": ("invalid", "PhoneNumber1: not a number ('abc')"),
        "A3": ("succeeded", ""),
        "A4": ("skipped", "duplicate phone"),
        "A5": ("skipped", "suppressed"),
        "A6": ("succeeded", ""),
        "A7": ("succeeded", ""),
    }
    ids = {c["UserData"]: c["ID"] for c in contacts(db)}
    assert {k: int(r["contact_id"]) for k, r in lines.items() if r["contact_id"]} == ids
    assert set(ids) == {"A1", "A3", "A6", "A7"}
    assert lines["A3"]["PhoneNumber1"] == "+49302222222" and lines["A3"]["PhoneNumber2"] == ""
    assert lines["A3"]["warnings"] == "PhoneNumber2: dropped, too short ('12')"
    assert lines["A7"]["PhoneNumber1"] == "+4930555555"  # a spreadsheet float
    assert lines["A6"]["PhoneNumber2"] == "+49304444444"
    cells = [c for r in lines.values() for c in r.values()]
    assert not [c for c in cells if c[:1] in ("=", "@")]  # a spreadsheet runs none of them
    phones = json.loads(report.read_text())["phones"]
    assert phones["phonenumbers_version"] == phonenumbers.__version__
    assert phones["suppression_list"] == {"numbers": 1, "rejected_lines": 0}
    assert (phones["region"], phones["format"], phones["check"]) == ("DE", "e164", "possible")


def test_results_file_guards_formulas(tmp_path: Path) -> None:
    db = tmp_path / "emulator.db"
    source = tmp_path / "rows.csv"
    source.write_text('UserData,Name,PhoneNumber1\n"=cmd|x",N,030 1234567\n')
    results = tmp_path / "results.csv"
    done = cli("import", source, "--campaign-id", "538", *emu(db), "--results", results)
    assert done.returncode == 0, done.stderr
    (line,) = read_csv(results)
    assert line["UserData"] == "'=cmd|x"
    assert line["PhoneNumber1"] == "030 1234567"  # no policy: sent as given


def test_results_file_for_a_larger_import_without_a_policy(tmp_path: Path) -> None:
    db = tmp_path / "emulator.db"
    source = tmp_path / "contacts.csv"
    write_contacts(source, 300, broken=5)
    results = tmp_path / "results.csv"
    done = cli("import", source, "--campaign-id", "538", *emu(db), "--results", results)
    assert done.returncode == 1
    lines = read_csv(results)
    assert len(lines) == 300 and len({r["line"] for r in lines}) == 300
    ids = {c["UserData"]: c["ID"] for c in contacts(db)}
    imported = {r["UserData"]: int(r["contact_id"]) for r in lines if r["outcome"] == "succeeded"}
    assert imported == ids and len(ids) == count(db) == 295


def test_dry_run_counts_numbers_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "emulator.db"
    source = tmp_path / "rows.csv"
    source.write_text(ROWS)
    (tmp_path / "dnc.txt").write_text("030 3333333\nnot a number\n")
    report = tmp_path / "report.json"
    done = cli(
        "import", source, "--campaign-id", "538", *emu(db), "--phone-region", "DE",
        "--suppress", tmp_path / "dnc.txt", "--dedupe-phone", "--dry-run", "--report", report,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "6 normalised, 2 dropped, 1 invalid, 1 suppressed" in done.stderr
    data = json.loads(report.read_text())
    assert data["counts"] == {"valid": 4, "invalid": 1, "skipped": 2}
    assert data["phone_counts"]["skipped"] == {"duplicate phone": 1, "suppressed": 1}
    assert data["phones"]["suppression_list"] == {"numbers": 1, "rejected_lines": 1}
    assert count(db) == 0


def test_phone_usage_errors_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "emulator.db"
    source = tmp_path / "rows.csv"
    source.write_text(ROWS)
    for extra in (
        ["--suppress", str(source)],
        ["--dedupe-phone"],
        ["--phone-region", "XX"],
        ["--phone-region", "DE", "--suppress", str(tmp_path / "missing.txt")],
        ["--phone-region", "DE", "--results", str(source)],
    ):
        done = cli("import", source, "--campaign-id", "538", *emu(db), *extra)
        assert done.returncode == 2, (extra, done.stderr)
    assert count(db) == 0


def test_results_file_after_ctrl_c_has_every_row_read(tmp_path: Path) -> None:
    write_contacts(tmp_path / "c.csv", 400, seed=5)
    results, report = tmp_path / "results.csv", tmp_path / "report.json"
    command = [
        "import", tmp_path / "c.csv", "--campaign-id", "538", "--phone-region", "DE",
        "--results", results, "--report", report, "--concurrency", "2",
    ]  # fmt: skip
    # 2 in flight at 50 ms: ~10 s for the 400 rows, so a loaded machine still signals it long
    # before it ends (at 4 it once finished first).
    with server(tmp_path, "--latency", "0.05") as srv:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dialler_async", *map(str, command)],
            env=srv.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for_rows(srv.db, proc, 40)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        account = json.loads(report.read_text())
        lines = read_csv(results)
        assert len(lines) == len({r["line"] for r in lines}) == account["rows_read"]
        outcomes = [r["outcome"] for r in lines]
        assert outcomes.count("succeeded") == account["counts"]["succeeded"] == count(srv.db)
        assert outcomes.count("cancelled") == account["counts"]["cancelled"] > 0


def test_update_takes_the_phone_policy(tmp_path: Path) -> None:
    db = tmp_path / "emulator.db"
    source = tmp_path / "rows.csv"
    source.write_text(ROWS)
    done = cli("import", source, "--campaign-id", "538", *emu(db), "--phone-region", "DE")
    assert done.returncode == 1, done.stderr  # A2 is invalid
    updates = tmp_path / "updates.csv"
    updates.write_text(
        "UserData;PhoneNumber1;PhoneNumber2\nA1;(030) 999-9999;\nA3;abc;\nA5;12;0171 1234567\n"
    )
    dry = cli("update", updates, *emu(db), "--phone-region", "DE", "--dry-run")
    assert dry.returncode == 1, dry.stderr
    assert "2 normalised, 1 dropped, 1 invalid" in dry.stderr
    done = cli(
        "update", updates, *emu(db), "--phone-region", "DE", "--phone-format", "e164-no-plus"
    )
    assert done.returncode == 1, done.stderr  # A3: no good number
    stored = {c["UserData"]: c for c in contacts(db)}
    assert stored["A1"]["PhoneNumber1"] == "49309999999"
    assert stored["A3"]["PhoneNumber1"] == "+49302222222"  # untouched
    assert stored["A5"]["PhoneNumber1"] == "+49303333333"  # the bad one dropped, kept
    assert stored["A5"]["PhoneNumber2"] == "491711234567"
    usage = cli("update", updates, *emu(db), "--phone-region", "DE", "--suppress", updates)
    assert usage.returncode == 2
