"""Hostile review of the phone feature (issue 14): each break found is a test here."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dialler_async import (
    ConfigurationError,
    ContactValidationError,
    DiallerClient,
    PhonePolicy,
    SuppressionList,
)
from dialler_async._options import ImportOptions
from dialler_async._screen import PhoneScreen, suppression_list
from dialler_async.emulator import Emulator
from tests.invariants import assert_account
from tests.test_cli import cli, count, emu
from tests.test_cli_phones import ROWS

DE = PhonePolicy("DE")


def row(value: object) -> dict[str, object]:
    return {"UserData": "u", "Name": "n", "DiallerCampaignsID": 538, "PhoneNumber1": value}


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        (4930123456.0, "+4930123456"),  # a spreadsheet float
        (49301234567, "+49301234567"),  # an int
        (
            "\u0660\u0663\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667",
            "+49301234567",
        ),  # Arabic-Indic
        ("".join(chr(0xFF10 + int(d)) for d in "0301234567"), "+49301234567"),  # full-width
        ("+49 30 1234567;ext=12", "+49301234567"),  # the extension is not dialled
    ],
)
def test_numbers_in_odd_but_honest_forms_are_read(value: object, sent: str) -> None:
    assert PhoneScreen(DE).check(row(value)).body["PhoneNumber1"] == sent


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1234537, "not a number"),  # =030-1234567 computed by a spreadsheet: 30 - 1234567
        ("-4930123456", "not a number"),
        (-4930123456.0, "not a number"),
        (math.nan, "expected text"),
        (True, "expected text"),
        ("030\x001234567", "not a number"),
        ("+", "not a number"),
        ("1" * 300, "too long"),
    ],
)
def test_values_that_are_not_numbers_make_the_row_invalid(value: object, reason: str) -> None:
    with pytest.raises(ContactValidationError) as info:
        PhoneScreen(DE).check(row(value))
    assert reason in str(info.value)


@pytest.mark.parametrize(
    ("data", "numbers", "rejected"),
    [
        (b"", 0, 0),  # empty: an empty list, not an error
        (b"\xef\xbb\xbf+49301234567\r\n030 7654321\r\n", 2, 0),  # BOM, CRLF
        ("+49301234567\n030 7654321\n".encode("utf-16"), 2, 0),  # "Unicode text" export
        (b"hello\n,,,\n\x00\x01\n+49301234567\n", 1, 3),  # garbage lines are counted
        (b"+49301234567\n" + b"9" * 2_000_000 + b"\n030 7654321\n", 2, 1),  # a huge line
    ],
)
def test_suppression_files_as_they_come(
    tmp_path: Path, data: bytes, numbers: int, rejected: int
) -> None:
    path = tmp_path / "dnc.txt"
    path.write_bytes(data)
    dnc = suppression_list(str(path), DE)
    assert (len(dnc), dnc.rejected) == (numbers, rejected)


def test_a_suppression_file_that_is_not_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "dnc.txt"
    path.write_bytes("+49301234567 Müller\n".encode("latin-1"))
    with pytest.raises(ConfigurationError, match="UTF-8"):
        suppression_list(str(path), DE)


def test_a_suppression_iterable_of_spreadsheet_values() -> None:
    dnc = SuppressionList([4930123456.0, 49301234567, 1.5, None, b"+4930", True, " "], DE)  # type: ignore[list-item]
    assert sorted(dnc._keys) == [4930123456, 49301234567]
    assert dnc.rejected == 5


def test_results_file_that_cannot_be_written_exits_2_before_the_job(tmp_path: Path) -> None:
    db = tmp_path / "emulator.db"
    source = tmp_path / "rows.csv"
    source.write_text(ROWS)
    for target in ("/dev/full", str(source / "results.csv"), str(tmp_path)):
        done = cli(
            "import", source, "--campaign-id", "538", *emu(db), "--phone-region", "DE",
            "--results", target,
        )  # fmt: skip
        assert done.returncode == 2, (target, done.stderr)
        assert "Traceback" not in done.stderr
        assert "results" in done.stderr
    assert count(db) == 0


async def test_a_suppress_that_is_not_an_iterable_is_a_configuration_error() -> None:
    async def numbers() -> AsyncIterator[str]:
        yield "+49301234567"

    for wrong in (numbers(), 49301234567):
        with pytest.raises(ConfigurationError, match="suppress= takes"):
            suppression_list(wrong, DE)  # type: ignore[arg-type]


async def test_a_resumed_dedupe_with_reordered_rows_imports_no_twin(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    first = {"UserData": "A", "Name": "A", "DiallerCampaignsID": 538, "PhoneNumber1": "030 1111111"}
    twin = {**first, "UserData": "B", "Name": "B"}
    options: ImportOptions = {
        "phone_policy": DE,
        "dedupe_phone": True,
        "checkpoint": str(tmp_path / "job.db"),
    }
    await client.import_contacts([first, twin], **options)
    again = await client.import_contacts([twin, first], **options)
    assert_account(again, read=2)
    assert emulator.store.contact_count() == 1  # B would dial A's number a second time


def test_the_screen_never_changes_the_callers_row() -> None:
    data = {
        "UserData": "u",
        "Name": "n",
        "DiallerCampaignsID": 538,
        "PhoneNumber1": "030 1234567",
        "PhoneNumber2": "12",
        "PhoneNumber3": "030 7654321",
        "City": None,
    }
    before = dict(data)
    screen = PhoneScreen(DE, suppress=SuppressionList(["030 7654321"], DE), dedupe=True)
    verdict = screen.check(data)
    assert data == before
    assert verdict.body["PhoneNumber1"] == "+49301234567"
    assert "PhoneNumber2" not in verdict.body and verdict.body["PhoneNumber3"] is None
