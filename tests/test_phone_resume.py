"""``dedupe_phone`` across a resumed run (issue 14): "an earlier row" spans the runs of one
checkpoint, whatever order each run reads its rows in."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dialler_async import DiallerClient, Operation, Outcome, PhonePolicy, _checkpoint
from dialler_async._checkpoint import Checkpoint
from dialler_async._options import ImportOptions
from dialler_async._results import BulkResult
from dialler_async.emulator import Emulator
from tests.invariants import Snapshot, assert_account

from .journal import folded

DE = PhonePolicy("DE")


def row(name: str, *numbers: str, campaign: int | None = 538) -> dict[str, Any]:
    data: dict[str, Any] = {"UserData": name, "Name": name}
    if campaign is not None:
        data["DiallerCampaignsID"] = campaign
    for n, number in enumerate(numbers, start=1):
        data[f"PhoneNumber{n}"] = number
    return data


def options(tmp_path: Path, **more: Any) -> ImportOptions:
    opts: dict[str, Any] = {
        "phone_policy": DE,
        "dedupe_phone": True,
        "checkpoint": str(tmp_path / "job.db"),
        "keep_results": True,
        **more,
    }
    return opts  # type: ignore[return-value]


def outcomes(result: BulkResult) -> list[tuple[str | int | None, Outcome, str | None]]:
    return [(i.key, i.outcome, i.reason) for i in result.items or ()]


async def run(
    client: DiallerClient, emulator: Emulator, rows: list[dict[str, Any]], opts: ImportOptions
) -> BulkResult:
    before = Snapshot.take(emulator)
    result = await client.import_contacts(rows, **opts)
    assert_account(
        result, read=len(rows), emulator=emulator, before=before, campaign_id=538, upsert=True
    )
    return result


def dialled(emulator: Emulator) -> list[tuple[str | None, ...]]:
    """The numbers each contact on the server dials, sorted."""
    fields = [f"PhoneNumber{n}" for n in range(1, 7)]
    return sorted(
        tuple(sorted(c[f] for f in fields if c.get(f))) for c in emulator.store.all_contacts()
    )


async def test_reordered_rows_on_resume_import_no_twin(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    a, b = row("A", "030 1111111"), row("B", "+49 30 1111111")
    first = await run(client, emulator, [a, b], options(tmp_path))
    assert outcomes(first) == [
        ("A", Outcome.SUCCEEDED, None),
        ("B", Outcome.SKIPPED, "duplicate phone"),
    ]
    again = await run(client, emulator, [b, a], options(tmp_path))
    assert outcomes(again) == [
        ("B", Outcome.SKIPPED, "duplicate phone"),
        ("A", Outcome.SKIPPED, "already done"),
    ]
    assert dialled(emulator) == [("+49301111111",)]


async def test_a_twin_met_twice_first_on_resume_is_skipped_both_times(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    # The job's campaign comes from the option, not the rows: the checkpoint's identity of a
    # row includes it, and the screen must agree with the engine on it.
    opts = options(tmp_path, campaign_id=538)
    a = row("A", "030 1111111", "030 2222222", campaign=None)
    b = row("B", "030 2222222", "0049 30 1111111", campaign=None)  # same numbers, other order
    c = row("C", "030 3333333", campaign=None)
    first = await run(client, emulator, [a, b], opts)
    assert [o for _, o, _ in outcomes(first)] == [Outcome.SUCCEEDED, Outcome.SKIPPED]
    again = await run(client, emulator, [b, b, c, a, a], opts)
    assert outcomes(again) == [
        ("B", Outcome.SKIPPED, "duplicate phone"),
        ("B", Outcome.SKIPPED, "duplicate phone"),
        ("C", Outcome.SUCCEEDED, None),
        ("A", Outcome.SKIPPED, "already done"),
        # The second copy of A is judged as any later row: its numbers are A's.
        ("A", Outcome.SKIPPED, "duplicate phone"),
    ]
    assert dialled(emulator) == [("+49301111111", "+49302222222"), ("+49303333333",)]


async def test_a_twin_whose_first_copy_failed_is_imported_on_resume(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    a = row("A", "030 1111111", campaign=999_999)  # no such campaign: the server refuses it
    b = row("B", "030 1111111")
    first = await client.import_contacts([a, b], **options(tmp_path))
    assert_account(first, read=2)
    assert [o for _, o, _ in outcomes(first)] == [Outcome.FAILED, Outcome.SKIPPED]
    # A failed, so its number is not on the account: the twin may now go.
    again = await run(client, emulator, [b, a], options(tmp_path))
    assert outcomes(again) == [
        ("B", Outcome.SUCCEEDED, None),
        ("A", Outcome.SKIPPED, "duplicate phone"),
    ]
    assert dialled(emulator) == [("+49301111111",)]
    # A third run in the first order: B is done, A is B's twin (and the account unchanged).
    third = await run(client, emulator, [a, b], options(tmp_path))
    assert outcomes(third) == [
        ("A", Outcome.SKIPPED, "duplicate phone"),
        ("B", Outcome.SKIPPED, "already done"),
    ]
    assert dialled(emulator) == [("+49301111111",)]


async def test_an_edited_row_whose_numbers_were_imported_is_a_duplicate(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    a = row("A", "030 1111111")
    await run(client, emulator, [a], options(tmp_path))
    edited = {**a, "Name": "A (edited)", "UserData": "A2"}
    again = await run(client, emulator, [edited, row("D", "030 4444444")], options(tmp_path))
    assert outcomes(again) == [
        ("A2", Outcome.SKIPPED, "duplicate phone"),
        ("D", Outcome.SUCCEEDED, None),
    ]


async def test_without_dedupe_nothing_is_journaled_and_nothing_skipped(
    client: DiallerClient, emulator: Emulator, tmp_path: Path
) -> None:
    opts = options(tmp_path, dedupe_phone=False)
    a, b = row("A", "030 1111111"), row("B", "030 1111111")
    await run(client, emulator, [a, b], opts)
    with folded(tmp_path / "job.db") as db:
        assert db.execute("SELECT count(*) FROM numbers").fetchone() == (0,)
    assert len(dialled(emulator)) == 2


def test_earlier_numbers_are_those_of_items_that_are_or_may_be_on_the_account(
    tmp_path: Path,
) -> None:
    path = tmp_path / "job.db"
    cp = Checkpoint(path, Operation.IMPORT, {})
    for digest, number in [(1, 491), (2, 492), (3, 493), (4, 494), (1 << 63 | 5, 495)]:
        cp.note_numbers(digest, [number])
    cp.record((1, 0), "a", Outcome.SUCCEEDED, 0, None)
    cp.record((2, 0), "b", Outcome.FAILED, 1, "no")
    cp.mark_pending((3, 0), "c", 2)
    # 4: noted but never recorded (the run stopped first): not on the account.
    cp.record((1 << 63 | 5, 0), "e", Outcome.AMBIGUOUS, 4, "maybe")
    assert cp.earlier_numbers() == []  # nothing from an earlier run yet
    cp.close()
    cp = Checkpoint(path, Operation.IMPORT, {})
    try:
        assert sorted(cp.earlier_numbers()) == [(1, 491), (3, 493), (1 << 63 | 5, 495)]
    finally:
        cp.close()


def test_a_checkpoint_from_before_the_numbers_table_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "job.db"
    cp = Checkpoint(path, Operation.IMPORT, {})
    cp.record((1, 0), "a", Outcome.SUCCEEDED, 0, None)
    cp.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE numbers")
    cp = Checkpoint(path, Operation.IMPORT, {})
    try:
        assert cp.earlier_numbers() == []
        cp.note_numbers(2, [49])
        cp.flush()
    finally:
        cp.close()


async def test_a_resume_of_rows_all_done_does_not_pile_up_numbers(
    client: DiallerClient, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_checkpoint, "_BATCH", 16)  # the bound on unflushed numbers: 128
    data = [row(f"R{n}", f"030 {2_000_000 + n}") for n in range(300)]
    await run(client, emulator, data, options(tmp_path, dedupe_phone=False))  # noted nothing
    most = 0
    original = Checkpoint.note_numbers

    def spy(self: Checkpoint, digest: int, numbers: list[int]) -> None:
        nonlocal most
        original(self, digest, numbers)
        most = max(most, len(self._numbers))

    monkeypatch.setattr(Checkpoint, "note_numbers", spy)
    # Every row is "already done" (none records an outcome), each noted once: 300 numbers.
    again = await run(client, emulator, data * 3, options(tmp_path))
    assert again.counts[Outcome.SKIPPED] == 900
    assert {i.reason for i in again.items or ()} == {"already done", "duplicate phone"}
    assert 0 < most < 8 * 16
    # Now noted: a third run in another order finds each row's numbers as its own.
    third = await run(client, emulator, list(reversed(data)), options(tmp_path))
    assert {i.reason for i in third.items or ()} == {"already done"}
