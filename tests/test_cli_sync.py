"""``dialler-async sync`` and the streamed ``export``, end to end on the embedded emulator."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from dialler_async.cli import main


def _write(path: Path, keys: range, city: str = "Berlin") -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["UserData", "Name", "PhoneNumber1", "City"])
        for i in keys:
            writer.writerow([f"K{i:04d}", f"N{i}", f"+4930{i:07d}", city])
    return path


def _contacts(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM contacts").fetchone()[0])


def test_the_guard_refuses_a_truncated_input_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "emu.db"
    full = _write(tmp_path / "full.csv", range(100))
    assert main(["sync", str(full), "--campaign-id", "538", "--emulator-db", str(db), "-q"]) == 0
    assert _contacts(db) == 100
    truncated = _write(tmp_path / "truncated.csv", range(30), city="Köln")  # 70% missing
    report = tmp_path / "report.json"
    status = main(
        [
            "sync",
            str(truncated),
            "--campaign-name",
            "Spring Campaign",
            "--missing",
            "delete",
            "--emulator-db",
            str(db),
            "--report",
            str(report),
        ]
    )
    assert status == 2
    assert _contacts(db) == 100  # nothing deleted (nor updated: the plan is shown, not run)
    err = capsys.readouterr().err
    assert "refus" in err and "missing 70" in err
    data = json.loads(report.read_text())
    assert data["plan"] == {
        "new": 0,
        "changed": 30,
        "unchanged": 0,
        "missing": 70,
        "conflicts": 0,
        "invalid": 0,
        "superseded": 0,
    }
    assert data["exit_status"] == 2


def test_sync_report_plan_rejects_and_rerun(tmp_path: Path) -> None:
    db = tmp_path / "emu.db"
    args = ["--campaign-id", "538", "--emulator-db", str(db), "-q"]
    assert main(["sync", str(_write(tmp_path / "a.csv", range(50))), *args]) == 0
    source = _write(tmp_path / "b.csv", range(48))
    with source.open("a", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerow(["", "no key", "+49301", "x"])
    report, rejects = tmp_path / "r.json", tmp_path / "rejects.csv"
    status = main(
        [
            "sync",
            str(source),
            *args,
            "--missing",
            "lock",
            "--report",
            str(report),
            "--rejects",
            str(rejects),
        ]
    )
    assert status == 1  # the row without UserData
    data = json.loads(report.read_text())
    assert data["plan"]["unchanged"] == 48 and data["plan"]["missing"] == 2
    assert data["plan"]["invalid"] == 1
    assert data["missing_account"]["counts"]["succeeded"] == 2
    with rejects.open(encoding="utf-8-sig") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["Name"] == "no key" and "sync needs UserData" in row["error_message"]

    dry = tmp_path / "dry.json"
    assert main(["sync", str(source), *args, "--dry-run", "--report", str(dry)]) == 1
    dry_report = json.loads(dry.read_text())
    assert dry_report["dry_run"] is True
    assert dry_report["counts"]["skipped"] == 48 and dry_report["counts"]["invalid"] == 1
    out = tmp_path / "export.csv"
    assert main(["export", "--campaign-id", "538", "--emulator-db", str(db), "-o", str(out)]) == 0
    with out.open(encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 50


def _cities(db: Path) -> dict[str, object]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT data FROM contacts").fetchall()
    return {json.loads(d)["UserData"]: json.loads(d)["City"] for (d,) in rows}


@pytest.mark.parametrize(
    ("options", "cell", "expected"),
    [
        ([], "", None),  # default: an empty cell is "no value", the file is the whole truth
        (["--empty-cells", "keep"], "", "Berlin"),  # empty means "not given"
        (["--empty-cells", "keep", "--null-marker", "NULL"], "NULL", None),
        (["--null-marker", "NULL"], "NULL", None),
        (["--empty-cells", "keep", "--null-marker", "NULL"], "", "Berlin"),
    ],
    ids=["default-clears", "keep", "keep-marker", "marker", "keep-marker-empty"],
)
def test_sync_empty_cells_rule(
    tmp_path: Path, options: list[str], cell: str, expected: object
) -> None:
    db = tmp_path / "emu.db"
    args = ["sync", "--campaign-id", "538", "--emulator-db", str(db), "-q"]
    assert main([*args, str(_write(tmp_path / "a.csv", range(3)))]) == 0
    emptied = _write(tmp_path / "b.csv", range(3), city=cell)
    assert main([*args, str(emptied), *options]) == 0
    cities = _cities(db)
    assert cities["K0001"] in ((None, "") if expected is None else (expected,)), cities
    # Run again: whatever the rule, the campaign already holds the file, so nothing changes.
    report = tmp_path / "r.json"
    assert main([*args, str(emptied), *options, "--report", str(report)]) == 0
    plan = json.loads(report.read_text())["plan"]
    assert plan["changed"] == 0 and plan["unchanged"] == 3, plan
