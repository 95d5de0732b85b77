"""The ``dialler-async`` command line, driven as a subprocess against the emulator.

Most tests use ``--emulator-db FILE``: each CLI run starts the emulator in-process on that
SQLite file, so consecutive runs share the data and the test reads the file afterwards. The
interrupt tests and the probe of a moved route run the emulator as its own process
(``python -m dialler_async.emulator --port 0``), slowed down with ``--latency``.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dialler_async import _fields as F
from dialler_async.cli import main
from dialler_async.cli._input import Columns, InputError, detect_delimiter, neutralise

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "contacts.csv"
COMMANDS = [
    "import",
    "update",
    "delete",
    "lock",
    "unlock",
    "reset",
    "sync",
    "export",
    "get",
    "find",
    "history",
    "campaigns",
    "probe",
    "emulator",
]
SPRING, SUMMER = 538, 539


# -- helpers ------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALLER_")}
    env.update(extra)
    return env


def cli(
    *args: str | Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dialler_async", *map(str, args)],
        capture_output=True,
        text=True,
        env=env if env is not None else clean_env(),
        input=stdin,
        timeout=120,
        check=False,
    )


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_contacts", REPO / "examples/make_contacts.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_contacts(
    path: Path, count: int, *, broken: int = 0, seed: int = 7
) -> list[dict[str, str]]:
    gen = load_generator()
    rows: list[dict[str, str]] = gen.generate(count, seed, broken)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, gen.HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def read_csv(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


def contacts(db: Path, campaign_id: int | None = None) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        sql, params = "SELECT data FROM contacts", tuple[int, ...]()
        if campaign_id is not None:
            sql, params = sql + " WHERE campaign_id = ?", (campaign_id,)
        return [json.loads(row[0]) for row in conn.execute(sql + " ORDER BY id", params)]


def count(db: Path) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM contacts").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def duplicate_user_data(db: Path) -> list[tuple[str, int]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT user_data, COUNT(*) FROM contacts GROUP BY user_data HAVING COUNT(*) > 1"
        ).fetchall()


class Server:
    """The emulator as a separate process; ``env`` holds the DIALLER_* variables for it."""

    def __init__(self, proc: subprocess.Popen[str], db: Path) -> None:
        self.proc = proc
        self.db = db
        assert proc.stdout is not None
        first = proc.stdout.readline()
        exports = proc.stdout.readline()
        assert "listening on" in first, first
        pairs = dict(word.split("=", 1) for word in shlex.split(exports)[1:])
        self.token = pairs["DIALLER_TOKEN"]
        self.env = clean_env(**pairs)


@contextlib.contextmanager
def server(
    tmp_path: Path, *options: str, command: tuple[str, ...] = ("dialler_async.emulator",)
) -> Iterator[Server]:
    db = tmp_path / "server.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", *command, "--port", "0", "--db", str(db), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield Server(proc, db)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "emulator.db"


def emu(db: Path) -> list[str]:
    return ["--emulator-db", str(db)]


# -- units --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("=SUM(A1:A9)", "'=SUM(A1:A9)"),
        ("@cmd", "'@cmd"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("+4930123456", "+4930123456"),
        ("+49 (0)30 1234-56", "+49 (0)30 1234-56"),
        ("-12.5", "-12.5"),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("Müller", "Müller"),
        ("", ""),
    ],
)
def test_neutralise(cell: str, expected: str) -> None:
    assert neutralise(cell) == expected


@pytest.mark.parametrize(
    ("line", "delimiter"),
    [("a,b,c\n", ","), ("a;b;c\r\n", ";"), ("a\tb\n", "\t"), ("Name\n", ","), ("a;b,c;d\n", ";")],
)
def test_detect_delimiter(line: str, delimiter: str) -> None:
    assert detect_delimiter(line) == delimiter


def test_columns_match_api_and_python_names() -> None:
    columns = Columns(F.IMPORT_FIELDS, mapping={"Nachname": "name"}, drop=["Internal"])
    header = ["phonenumber1", "first_name", "Nachname", "ID", "Segment", "Internal", "error_status"]
    assert columns.plan(header) == [
        "PhoneNumber1",
        "FirstName",
        "Name",
        None,
        "Segment",
        None,
        None,
    ]
    assert columns.unknown == ["Segment"]
    assert columns.ignored == ["ID", "Internal"]
    with pytest.raises(InputError, match="both mean Name"):
        Columns(F.IMPORT_FIELDS, mapping={}).plan(["Name", "name"])
    with pytest.raises(InputError, match="not a field"):
        Columns(F.IMPORT_FIELDS, mapping={"A": "Nonsense"})


def test_example_file_is_deterministic(tmp_path: Path) -> None:
    gen = load_generator()
    assert gen.main(["-o", str(tmp_path / "c.csv")]) == 0
    assert (tmp_path / "c.csv").read_bytes() == EXAMPLE.read_bytes()


# -- help and usage -----------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    assert "usage: dialler-async " + command in capsys.readouterr().out


def test_help_as_module_and_overwrite_explained() -> None:
    result = cli("import", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "upsert by UserData" in text and "safe" in text
    assert cli("--help").returncode == 0


def test_usage_errors_exit_2(tmp_path: Path, db: Path) -> None:
    assert cli("import").returncode == 2  # argparse: FILE missing
    assert cli("frobnicate").returncode == 2
    missing = cli("import", tmp_path / "nope.csv", *emu(db))
    assert missing.returncode == 2 and "cannot open" in missing.stderr
    write_contacts(tmp_path / "c.csv", 3)
    unknown = cli("import", tmp_path / "c.csv", "--campaign-name", "Winter", *emu(db))
    assert unknown.returncode == 2 and "no campaign 'Winter'" in unknown.stderr
    assert "Spring Campaign" in unknown.stderr
    bad_map = cli("import", tmp_path / "c.csv", "--map", "Name=Nonsense", *emu(db))
    assert bad_map.returncode == 2 and "not a field" in bad_map.stderr
    same = cli("import", tmp_path / "c.csv", "--rejects", tmp_path / "c.csv", *emu(db))
    assert same.returncode == 2 and "is the input file" in same.stderr
    assert len(read_csv(tmp_path / "c.csv")) == 3
    (tmp_path / "routes.json").write_text('{"no_such_operation": "GET /x"}')
    bad_routes = cli("campaigns", "--routes", tmp_path / "routes.json", *emu(db))
    assert bad_routes.returncode == 2 and "unknown operations" in bad_routes.stderr
    assert count(db) == 0


def test_missing_environment_exits_2_with_the_variables(tmp_path: Path) -> None:
    write_contacts(tmp_path / "c.csv", 2)
    result = cli("import", tmp_path / "c.csv", "--campaign-id", str(SPRING))
    assert result.returncode == 2
    for name in ("DIALLER_BASE_URL", "DIALLER_CLIENT_ID", "DIALLER_TOKEN", "--emulator"):
        assert name in result.stderr
    partial = cli("campaigns", env=clean_env(DIALLER_BASE_URL="http://127.0.0.1:9"))
    assert partial.returncode == 2 and "missing: DIALLER_CLIENT_ID" in partial.stderr


# -- import ---------------------------------------------------------------------------------


def test_readme_import_rejects_exactly_the_broken_rows_and_fixed_ones_import(
    tmp_path: Path, db: Path
) -> None:
    rejects, report = tmp_path / "rejects.csv", tmp_path / "report.json"
    args = ["--campaign-name", "Spring Campaign", *emu(db)]
    result = cli("import", EXAMPLE, *args, "--rejects", rejects, "--report", report)
    assert result.returncode == 1, result.stderr
    assert "succeeded 2989, invalid 11" in result.stderr

    original = {r["UserData"]: r for r in read_csv(EXAMPLE)}
    rejected = read_csv(rejects)
    assert len(rejected) == 11
    assert list(rejected[0]) == [*read_csv(EXAMPLE)[0].keys(), "error_status", "error_message"]
    for row in rejected:
        cells = {k: v for k, v in row.items() if not k.startswith("error_")}
        source = original[cells["UserData"]]
        assert cells == {k: neutralise(v) for k, v in source.items()}  # as it came in
        assert row["error_status"] == "invalid" and row["error_message"]
    formula = next(r for r in rejected if "HYPERLINK" in r["Comment"])
    assert formula["Comment"].startswith("'=")
    assert all(not r["PhoneNumber1"] or r["PhoneNumber1"][0] in "+'" for r in rejected)

    data = json.loads(report.read_text())
    assert data["counts"]["succeeded"] == 2989 and data["counts"]["invalid"] == 11
    # 2989 imports and one list_campaigns: the campaign name is resolved once, before row one
    assert data["total"] == 3000 and data["requests"] == 2990 and data["exit_status"] == 1
    assert {f["key"] for f in data["failures"]} == {r["UserData"] for r in rejected}
    assert count(db) == 2989

    for row in rejected:  # what a user would fix in a spreadsheet
        row["Name"] = row["Name"].strip()[:64] or "Unbekannt"
        row["PhoneNumber1"] = row["PhoneNumber1"].lstrip("'").split(" ")[0] or "+4930555000"
        row["PostalCode"] = row["PostalCode"][-5:]
        row["Amount"] = ""
        row["Salutation"] = row["Salutation"][:16]
        row["UserData"] = row["UserData"][:64]
    with rejects.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.DictWriter(fh, list(rejected[0]))
        writer.writeheader()
        writer.writerows(rejected)
    again = cli("import", rejects, *args, "--rejects", tmp_path / "rejects2.csv")
    assert again.returncode == 0, again.stderr
    assert "unknown columns" not in again.stderr  # the error columns are not sent
    assert read_csv(tmp_path / "rejects2.csv") == []
    assert count(db) == 3000
    assert duplicate_user_data(db) == []


def test_dry_run_sends_no_writes(tmp_path: Path, db: Path) -> None:
    rejects, report = tmp_path / "rejects.csv", tmp_path / "report.json"
    result = cli(
        "import", EXAMPLE, "--campaign-id", str(SPRING), *emu(db), "--dry-run",
        "--rejects", rejects, "--report", report,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "valid 2989, invalid 11" in result.stderr
    assert len(read_csv(rejects)) == 11
    assert json.loads(report.read_text())["dry_run"] is True
    assert count(db) == 0
    # a row naming a campaign the server does not have is caught too
    (tmp_path / "c.csv").write_text(
        "Name,PhoneNumber1,DiallerCampaignsName\nA,+4930111,Spring Campaign\nB,+4930222,Winter\n"
    )
    checked = cli("import", tmp_path / "c.csv", *emu(db), "--dry-run", "--quiet")
    assert checked.returncode == 1
    clean = cli(
        "import", EXAMPLE, "--campaign-id", "540", *emu(db), "--dry-run", "--max-failures", "1"
    )
    assert clean.returncode == 1 and count(db) == 0


def test_exit_0_when_everything_succeeded_and_stdin_semicolon_bom(tmp_path: Path, db: Path) -> None:
    text = "\ufeffuserdata;NAME;phone_number1;City\nK-1;Groß;+4930111;Köln\nK-2;Weiß;+4930222;\n"
    result = cli("import", "-", "--campaign-id", str(SPRING), *emu(db), stdin=text)
    assert result.returncode == 0, result.stderr
    records = {c["UserData"]: c for c in contacts(db)}
    assert records["K-1"]["Name"] == "Groß" and records["K-1"]["City"] == "Köln"
    assert records["K-2"]["City"] is None  # an empty cell is "not given"
    # the same rows again: upserts by UserData, no duplicates
    assert cli("import", "-", "--campaign-id", str(SPRING), *emu(db), stdin=text).returncode == 0
    assert count(db) == 2


def test_non_utf8_file_needs_its_encoding(tmp_path: Path, db: Path) -> None:
    source = tmp_path / "latin1.csv"
    source.write_bytes("UserData;Name;PhoneNumber1\nL-1;Müller;+4930111\n".encode("latin-1"))
    refused = cli("import", source, "--campaign-id", str(SPRING), *emu(db))
    assert refused.returncode == 2 and "--encoding" in refused.stderr
    loaded = cli("import", source, "--campaign-id", str(SPRING), "--encoding", "latin-1", *emu(db))
    assert loaded.returncode == 0, loaded.stderr
    assert [c["Name"] for c in contacts(db)] == ["Müller"]


def test_jsonl_map_and_unknown_columns(tmp_path: Path, db: Path) -> None:
    source = tmp_path / "crm.csv"
    source.write_text(
        "Kundennummer,Nachname,Telefon,Segment\nC-1,Meier,+41441234567,A\nC-2,Huber,+43123456,B\n",
        encoding="utf-8",
    )
    result = cli(
        "import", source, "--campaign-name", "Summer Campaign", *emu(db),
        "--map", "Kundennummer=UserData", "--map", "Nachname=name", "--map", "Telefon=PhoneNumber1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("unknown columns are sent as they are: Segment") == 1
    assert {c["UserData"] for c in contacts(db, SUMMER)} == {"C-1", "C-2"}

    lines = tmp_path / "more.jsonl"
    lines.write_text(
        '{"UserData": "J-1", "Name": "Jäger", "PhoneNumber1": "+4940111", "PostalCode": 20095}\n'
        "\n"
        "not json\n"
        '{"UserData": "J-2", "Name": "Kühn", "PhoneNumber1": "+4940222"}\n',
        encoding="utf-8",
    )
    rejects = tmp_path / "rejects.jsonl"
    result = cli("import", lines, "--campaign-id", str(SPRING), *emu(db), "--rejects", rejects)
    assert result.returncode == 1
    bad = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert bad == [
        {"line": "not json", "error_status": "invalid", "error_message": bad[0]["error_message"]}
    ]
    assert "not valid JSON" in bad[0]["error_message"]
    assert {c["UserData"]: c["PostalCode"] for c in contacts(db, SPRING)} == {
        "J-1": "20095",
        "J-2": None,
    }


def test_max_failures_stops_early(tmp_path: Path, db: Path) -> None:
    source = tmp_path / "c.csv"
    source.write_text(
        "UserData,Name,PhoneNumber1\n" + "".join(f"U-{n},,+49301{n}\n" for n in range(300))
    )
    report = tmp_path / "r.json"
    result = cli("import", source, "--campaign-id", str(SPRING), *emu(db), "--max-failures", "5",
                 "--concurrency", "2", "--report", report)  # fmt: skip
    assert result.returncode == 1
    data = json.loads(report.read_text())
    assert data["counts"]["invalid"] >= 5 and data["rows_read"] < 300


def test_checkpoint_of_another_job_is_a_usage_error(tmp_path: Path, db: Path) -> None:
    write_contacts(tmp_path / "c.csv", 5)
    checkpoint = tmp_path / "ck.db"
    base: list[str | Path] = ["import", tmp_path / "c.csv", *emu(db), "--checkpoint", checkpoint]
    assert cli(*base, "--campaign-id", str(SPRING)).returncode == 0
    again = cli(*base, "--campaign-id", str(SPRING))
    assert again.returncode == 0 and "skipped 5" in again.stderr
    other = cli(*base, "--campaign-id", str(SUMMER))
    assert other.returncode == 2 and "belongs to another job" in other.stderr


# -- update and keyed commands ------------------------------------------------------------


def test_update_sends_only_given_cells(tmp_path: Path, db: Path) -> None:
    write_contacts(tmp_path / "c.csv", 3)
    assert cli("import", tmp_path / "c.csv", "--campaign-id", str(SPRING), *emu(db)).returncode == 0
    before = {c["UserData"]: c for c in contacts(db)}
    first = before["CRM-000001"]
    changes = tmp_path / "changes.csv"
    changes.write_text(
        f"ID;UserData;City;Comment\n{first['ID']};;Hamburg;\n;CRM-000002;;NULL\n;CRM-999999;X;\n"
    )
    result = cli(
        "update", changes, *emu(db), "--null-marker", "NULL", "--rejects", tmp_path / "r.csv"
    )
    assert result.returncode == 1, result.stderr
    after = {c["UserData"]: c for c in contacts(db)}
    assert after["CRM-000001"]["City"] == "Hamburg"
    assert after["CRM-000001"]["Comment"] == first["Comment"]
    assert after["CRM-000002"]["Comment"] is None
    assert after["CRM-000002"]["City"] == before["CRM-000002"]["City"]
    (rejected,) = read_csv(tmp_path / "r.csv", delimiter=";")  # the input's delimiter
    assert rejected["UserData"] == "CRM-999999" and rejected["error_status"] == "failed"
    assert "404" in rejected["error_message"]


def test_keyed_commands_by_ids_and_user_data(tmp_path: Path, db: Path) -> None:
    write_contacts(tmp_path / "c.csv", 6)
    assert cli("import", tmp_path / "c.csv", "--campaign-id", str(SPRING), *emu(db)).returncode == 0
    ids = {c["UserData"]: c["ID"] for c in contacts(db)}
    id_file = tmp_path / "ids.txt"
    id_file.write_text(f"{ids['CRM-000001']}\n{ids['CRM-000002']}\n\n")
    ud_file = tmp_path / "ud.txt"
    ud_file.write_text("CRM-000003\nCRM-000004\n")

    def state() -> dict[str, dict[str, Any]]:
        return {c["UserData"]: c for c in contacts(db)}

    assert cli("lock", "--ids", id_file, *emu(db)).returncode == 0
    assert cli("lock", "--user-data", ud_file, *emu(db)).returncode == 0
    assert [state()[f"CRM-00000{n}"]["bLocked"] for n in range(1, 6)] == [True] * 4 + [False]
    assert cli("unlock", "--ids", id_file, *emu(db)).returncode == 0
    assert cli("unlock", "--user-data", ud_file, *emu(db)).returncode == 0
    assert not any(c["bLocked"] for c in state().values())

    with contextlib.closing(sqlite3.connect(db)) as conn:  # as if the dialler had called
        for key in ("CRM-000001", "CRM-000003"):
            record = state()[key] | {"nTriesPhoneNumber1": 3, "DiallerCampaignsResultCodesID": 2491}
            conn.execute(
                "UPDATE contacts SET data = ? WHERE id = ?", (json.dumps(record), record["ID"])
            )
        conn.commit()
    assert cli("reset", "--ids", id_file, *emu(db)).returncode == 0
    assert cli("reset", "--user-data", ud_file, *emu(db)).returncode == 0
    assert all(state()[k]["nTriesPhoneNumber1"] == 0 for k in ("CRM-000001", "CRM-000003"))
    assert state()["CRM-000001"]["DiallerCampaignsResultCodesID"] is None

    # delete by a CSV column (the export's own shape), then by user data; a missing key fails
    keys = tmp_path / "keys.csv"
    keys.write_text(f"Name,ID\nx,{ids['CRM-000001']}\ny,{ids['CRM-000002']}\nz,999999\n")
    rejects = tmp_path / "rejects.csv"
    result = cli("delete", "--ids", keys, *emu(db), "--rejects", rejects)
    assert result.returncode == 1
    assert read_csv(rejects) == [
        {"Name": "z", "ID": "999999", "error_status": "failed",
         "error_message": read_csv(rejects)[0]["error_message"]},
    ]  # fmt: skip
    assert cli("delete", "--user-data", ud_file, *emu(db)).returncode == 0
    assert sorted(state()) == ["CRM-000005", "CRM-000006"]
    (tmp_path / "names.csv").write_text("who;Kunde\n1;CRM-000005\n")
    assert (
        cli(
            "delete", "--user-data", tmp_path / "names.csv", "--column", "Kunde", *emu(db)
        ).returncode
        == 0
    )
    assert sorted(state()) == ["CRM-000006"]


# -- read commands ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_round_trip_into_another_campaign(tmp_path: Path, db: Path, fmt: str) -> None:
    rows = write_contacts(tmp_path / "c.csv", 40)
    assert cli("import", tmp_path / "c.csv", "--campaign-id", str(SPRING), *emu(db)).returncode == 0
    exported = tmp_path / f"spring.{fmt}"
    result = cli("export", "--campaign-id", str(SPRING), "--format", fmt, "-o", exported, *emu(db))
    assert result.returncode == 0, result.stderr
    if fmt == "csv":
        assert len(read_csv(exported)) == len(rows)
    result = cli(
        "import", exported, *emu(db), "--campaign-id", str(SUMMER), "--no-overwrite-duplicates",
        "--drop-column", "DiallerCampaignsID", "--drop-column", "DiallerCampaignsName",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    def fields(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        skip = {"DiallerCampaignsID", "DiallerCampaignsName"}
        return [{f.api: r[f.api] for f in F.IMPORT_FIELDS if f.api not in skip} for r in records]

    # Compared by UserData: a job's rows land in the order the server gets them, which with
    # 16 in flight is not the file's order (uvloop schedules differently from asyncio's loop).
    spring, summer = contacts(db, SPRING), contacts(db, SUMMER)
    spring.sort(key=lambda r: r["UserData"])
    summer.sort(key=lambda r: r["UserData"])
    assert len(summer) == len(rows) and fields(summer) == fields(spring)
    assert summer[0]["PhoneNumber1"].startswith("+")


def test_export_to_stdout_reimports(tmp_path: Path, db: Path) -> None:
    write_contacts(tmp_path / "c.csv", 5)
    assert cli("import", tmp_path / "c.csv", "--campaign-id", str(SPRING), *emu(db)).returncode == 0
    result = cli("export", *emu(db))
    assert result.returncode == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 5 and rows[0]["ID"] and rows[0]["UserData"] == "CRM-000001"
    again = cli("import", "-", *emu(db), stdin=result.stdout)  # same contacts: upserts
    assert again.returncode == 0 and count(db) == 5


def test_get_find_history_campaigns(tmp_path: Path, db: Path) -> None:
    write_contacts(tmp_path / "c.csv", 2)
    assert cli("import", tmp_path / "c.csv", "--campaign-id", str(SPRING), *emu(db)).returncode == 0
    (first, _) = contacts(db)
    got = cli("get", str(first["ID"]), "--json", *emu(db))
    assert got.returncode == 0 and json.loads(got.stdout)["UserData"] == "CRM-000001"
    table = cli("get", str(first["ID"]), *emu(db))
    assert table.returncode == 0 and "CRM-000001" in table.stdout
    assert cli("get", "999999", *emu(db)).returncode == 1
    found = cli("find", "CRM-000002", "--json", *emu(db))
    assert found.returncode == 0 and [c["UserData"] for c in json.loads(found.stdout)] == [
        "CRM-000002"
    ]
    assert cli("find", "nobody", *emu(db)).returncode == 1
    history = cli("history", "--user-data", "CRM-000001", "--json", *emu(db))
    assert history.returncode == 0 and json.loads(history.stdout) == []
    assert cli("history", *emu(db)).returncode == 2
    campaigns = cli("campaigns", "--json", *emu(db))
    assert {c["Name"] for c in json.loads(campaigns.stdout)} >= {"Spring Campaign"}
    assert "Spring Campaign" in cli("campaigns", *emu(db)).stdout


# -- probe --------------------------------------------------------------------------------


def test_probe_all_present(db: Path) -> None:
    result = cli("probe", "--json", *emu(db))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 18 and {r["result"] for r in rows} == {"present"}
    assert count(db) == 0  # harmless


def test_probe_finds_a_moved_route_and_routes_override_fixes_it(tmp_path: Path) -> None:
    moved = tmp_path / "routes.json"
    moved.write_text(
        json.dumps({"find_contacts": "GET /dialler/contacts/search?userData={user_data}"})
    )
    with server(tmp_path, "--routes", str(moved)) as srv:  # the client keeps the default routes
        result = cli("probe", env=srv.env)
        assert result.returncode == 1
        missing = [x.split()[0] for x in result.stdout.splitlines() if "MISSING" in x]
        assert missing == ["find_contacts"]
        assert "--routes" in result.stderr
        fixed = cli("probe", "--routes", moved, env=srv.env)
        assert fixed.returncode == 0, fixed.stdout
        wrong_token = cli("probe", env=srv.env | {"DIALLER_TOKEN": "wrong"})
        assert wrong_token.returncode == 2 and "refused the token" in wrong_token.stderr
        assert srv.token not in result.stdout + result.stderr + wrong_token.stderr


def test_bulk_job_refuses_to_start_when_its_route_is_missing(tmp_path: Path) -> None:
    moved = tmp_path / "routes.json"
    moved.write_text(json.dumps({"lock_contact_by_user_data": "GET /dialler/lock?u={user_data}"}))
    keys = tmp_path / "keys.txt"
    keys.write_text("CRM-000001\n")
    with server(tmp_path, "--routes", str(moved)) as srv:
        refused = cli("lock", "--user-data", keys, env=srv.env)
        assert refused.returncode == 2
        assert "no endpoint for lock_contact_by_user_data" in refused.stderr
        fixed = cli("lock", "--user-data", keys, "--routes", moved, env=srv.env)
        assert fixed.returncode == 1 and "Dialler contact not found" in fixed.stderr


def test_emulator_command_serves_until_sigint(tmp_path: Path) -> None:
    with server(tmp_path, command=("dialler_async", "emulator")) as srv:
        result = cli("campaigns", "--json", env=srv.env)
        assert result.returncode == 0 and "Spring Campaign" in result.stdout
        srv.proc.send_signal(signal.SIGINT)
        assert srv.proc.wait(timeout=10) == 0


# -- interrupts ---------------------------------------------------------------------------


def _wait_for_rows(db: Path, proc: subprocess.Popen[str], at_least: int) -> None:
    deadline = time.monotonic() + 30
    while count(db) < at_least:
        assert proc.poll() is None, "the import finished before it could be interrupted"
        assert time.monotonic() < deadline, "the import made no progress"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "overwrite"),
    [
        (signal.SIGINT, "--overwrite-duplicates"),
        (signal.SIGTERM, "--no-overwrite-duplicates"),
        (signal.SIGKILL, "--no-overwrite-duplicates"),
    ],
    ids=["sigint-upsert", "sigterm-plain", "sigkill-plain"],
)
def test_resume_after_interrupt(tmp_path: Path, sig: signal.Signals, overwrite: str) -> None:
    total = 400
    write_contacts(tmp_path / "c.csv", total, seed=11)
    checkpoint, report = tmp_path / "ck.db", tmp_path / "report.json"
    command: list[str | Path] = [
        "import", tmp_path / "c.csv", "--campaign-name", "Spring Campaign", overwrite,
        "--checkpoint", checkpoint, "--report", report, "--rejects", tmp_path / "rejects.csv",
    ]  # fmt: skip
    with server(tmp_path, "--latency", "0.05") as srv:
        proc = subprocess.Popen(
            # 2 in flight at 50 ms: ~10 s for the 400 rows, so a loaded machine still signals
            # it long before it ends (at 4 it once finished first).
            [sys.executable, "-m", "dialler_async", *map(str, command), "--concurrency", "2"],
            env=srv.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for_rows(srv.db, proc, 40)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
        if sig != signal.SIGKILL:  # Ctrl-C, or a polite stop from a supervisor
            assert proc.returncode == 130, stderr
            assert "checkpoint" in stderr and "resume" in stderr
            first = json.loads(report.read_text())
            assert first["ended_early"] == "interrupted" and first["exit_status"] == 130
            done = first["counts"]["succeeded"]
            assert first["counts"]["ambiguous"] == 0 and done == count(srv.db)
            assert sum(first["counts"].values()) == first["rows_read"]
        else:
            assert proc.returncode == -signal.SIGKILL
            done = 0
        assert 0 < count(srv.db) < total

        again = cli(*command, "--concurrency", "16", env=srv.env)
        assert again.returncode == 0, again.stderr
        second = json.loads(report.read_text())
        assert second["counts"]["succeeded"] + second["counts"]["skipped"] == total
        if sig != signal.SIGKILL:
            assert second["counts"]["skipped"] == done  # exactly what the first run confirmed
        else:
            assert second["counts"]["skipped"] > 0  # the journal survived the SIGKILL
        assert count(srv.db) == total
        assert duplicate_user_data(srv.db) == []
        assert srv.token not in report.read_text() + again.stdout + again.stderr
