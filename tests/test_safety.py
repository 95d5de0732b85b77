"""Write safety: the policy as a table, and each hostile case on the emulator's end state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path

import pytest

from dialler_async import DiallerClient, Limits, Operation, Outcome, RetryPolicy
from dialler_async._checkpoint import PENDING
from dialler_async._converter import parse_number
from dialler_async._envelope import checked_action, first_raw_record
from dialler_async._exceptions import (
    BadRequestError,
    ConnectionLostError,
    ContactValidationError,
    RequestTimeoutError,
    ResponseFormatError,
    ServerError,
)
from dialler_async._item import ItemRunner, KeyGate, Verdict, succeeded
from dialler_async._operations import (
    Finding,
    Step,
    WriteKind,
    after_failure,
    after_lookup,
    after_not_found,
    rules_for,
    write_kind,
)
from dialler_async._transport import Reply
from dialler_async._validation import checked_contact, validate_key
from dialler_async.cli._input import Reader, neutralise, unguard
from dialler_async.emulator import Emulator, FaultKind

from .conftest import FakeClock, contact
from .invariants import Snapshot, assert_account

M, P = "POST", "/dialler/contacts/import"
TIMEOUT = RequestTimeoutError("late", method=M, path=P, request_sent=True)
LOST = ConnectionLostError("reset", method=M, path=P)
GATEWAY = ServerError(504, None, method=M, path=P)
REFUSED = ServerError(503, None, method=M, path=P)
BAD = BadRequestError(400, "Name: required", method=M, path=P)
MALFORMED = ResponseFormatError("status 500", method=M, path=P, body="{}")

IDEM, CREATE, DEL = WriteKind.IDEMPOTENT, WriteKind.CREATE, WriteKind.DELETE_BY_USER_DATA


@pytest.mark.parametrize(
    ("operation", "overwrite", "user_data", "kind"),
    [
        (Operation.IMPORT, True, "U", IDEM),
        (Operation.IMPORT, True, None, CREATE),
        (Operation.IMPORT, False, "U", CREATE),
        (Operation.UPDATE, False, "U", IDEM),
        (Operation.DELETE, False, None, IDEM),  # by ID: a second delete finds nothing
        (Operation.DELETE, False, "U", DEL),
        (Operation.LOCK, False, "U", IDEM),
        (Operation.RESET, False, "U", IDEM),
    ],
)
def test_what_is_safe_to_resend(
    operation: Operation, overwrite: bool, user_data: str | None, kind: WriteKind
) -> None:
    assert write_kind(operation, overwrite=overwrite, user_data=user_data) is kind


@pytest.mark.parametrize(
    ("journaled_unsettled", "journal_incomplete", "outcome"),
    [
        (True, False, Outcome.SUCCEEDED),  # our earlier attempt may have landed: it did
        (True, True, Outcome.SUCCEEDED),
        (False, True, Outcome.SKIPPED),  # no entry, but the last outcomes may be lost
        (False, False, Outcome.FAILED),  # no entry, none lost: really not there
    ],
)
def test_what_a_resumed_delete_that_finds_nothing_is(
    journaled_unsettled: bool, journal_incomplete: bool, outcome: Outcome
) -> None:
    assert (
        after_not_found(
            journaled_unsettled=journaled_unsettled, journal_incomplete=journal_incomplete
        )
        is outcome
    )


@pytest.mark.parametrize("overwrite", [True, False])
@pytest.mark.parametrize("user_data", ["U", None, "", "   "])
def test_an_import_row_is_prepared_with_the_policys_write_kind(
    overwrite: bool, user_data: str | None
) -> None:
    # Import.prepare decides the kind inline (it runs once per row): it must agree with the
    # policy function, blank UserData counting as none.
    rules = rules_for(Operation.IMPORT, {"overwrite_duplicates": overwrite, "campaign_id": 7})
    row = {"Name": "N", "PhoneNumber1": "+49301234567"}
    if user_data is not None:
        row["UserData"] = user_data
    prepared = rules.prepare(row)
    expected = write_kind(
        Operation.IMPORT,
        overwrite=overwrite,
        user_data=user_data if user_data and user_data.strip() else None,
    )
    assert prepared.kind is expected
    assert prepared.idempotent is (expected is IDEM)


@pytest.mark.parametrize(
    ("kind", "error", "step"),
    [
        # The transport already resent it as often as it may; it may have landed (harmless to
        # send again, but not "nothing done").
        (IDEM, TIMEOUT, Step.AMBIGUOUS),
        (IDEM, MALFORMED, Step.AMBIGUOUS),
        (IDEM, GATEWAY, Step.AMBIGUOUS),
        (IDEM, REFUSED, Step.FAIL),
        (IDEM, BAD, Step.FAIL),
        (CREATE, TIMEOUT, Step.CHECK),
        (CREATE, LOST, Step.CHECK),
        (CREATE, GATEWAY, Step.CHECK),
        (CREATE, MALFORMED, Step.CHECK),  # a 2xx saying 500, or about another contact
        (CREATE, REFUSED, Step.FAIL),  # nothing done (and already retried by the transport)
        (CREATE, BAD, Step.FAIL),
        (DEL, LOST, Step.CHECK),
        (DEL, GATEWAY, Step.CHECK),
        (DEL, BAD, Step.FAIL),
    ],
)
def test_after_a_failure(kind: WriteKind, error: Exception, step: Step) -> None:
    assert after_failure(kind, error) is step  # type: ignore[arg-type]


A, MATCH, DIFF, UNK = Finding.ABSENT, Finding.MATCHES, Finding.DIFFERS, Finding.UNCHECKABLE

# kind, finding, settled, resent -> step (resend or not is the RESEND row and nothing else)
LOOKUP_TABLE = [
    (CREATE, MATCH, False, False, Step.SUCCEED),
    (CREATE, MATCH, True, True, Step.SUCCEED),
    (CREATE, A, False, False, Step.WAIT),  # the first attempt may still be committing
    (CREATE, A, True, False, Step.RESEND),  # settled and not in our campaign: did not land
    (CREATE, A, True, True, Step.AMBIGUOUS),  # never a third POST
    (CREATE, DIFF, False, False, Step.WAIT),
    (CREATE, DIFF, True, False, Step.AMBIGUOUS),  # ours, but someone changed it
    (CREATE, UNK, False, False, Step.AMBIGUOUS),
    (CREATE, UNK, True, False, Step.AMBIGUOUS),
    (DEL, A, False, False, Step.SUCCEED),  # nothing left with that UserData: proven
    (DEL, MATCH, False, False, Step.WAIT),  # the delete may still be running
    (DEL, MATCH, True, False, Step.AMBIGUOUS),  # never a second delete
    (DEL, UNK, True, False, Step.AMBIGUOUS),
]


@pytest.mark.parametrize(("kind", "finding", "settled", "resent", "step"), LOOKUP_TABLE)
def test_what_a_lookup_proves(
    kind: WriteKind, finding: Finding, settled: bool, resent: bool, step: Step
) -> None:
    assert after_lookup(kind, finding, settled=settled, resent=resent) is step


def test_only_a_settled_absence_of_an_import_allows_a_resend() -> None:
    resends = {
        (k, f, s, r)
        for k in (CREATE, DEL)
        for f in Finding
        for s in (False, True)
        for r in (False, True)
        if after_lookup(k, f, settled=s, resent=r) is Step.RESEND
    }
    assert resends == {(CREATE, A, True, False)}


def _reply(data: object) -> Reply:
    return Reply(data, 1, M, P)


def test_a_2xx_is_checked() -> None:
    good = {"records": [{"ID": 7, "UserData": "U"}], "count": 1, "status": 200}
    assert first_raw_record(_reply(good), user_data="U", id=7)["ID"] == 7
    with pytest.raises(ResponseFormatError, match="status 500"):
        first_raw_record(_reply({**good, "status": 500}))
    with pytest.raises(ResponseFormatError, match="UserData"):
        first_raw_record(_reply(good), user_data="OTHER")
    with pytest.raises(ResponseFormatError, match="UserData"):
        first_raw_record(_reply({"records": [{"ID": 7, "UserData": None}]}), user_data="U")
    assert first_raw_record(_reply({"records": [{"ID": 7}]}), user_data="U")["ID"] == 7
    with pytest.raises(ResponseFormatError, match="contact 7, not 8"):
        first_raw_record(_reply(good), id=8)
    with pytest.raises(ResponseFormatError):
        checked_action(_reply({"status": 500}))
    checked_action(_reply({"status": 200}))
    checked_action(_reply(None))  # a retried delete that met 404: done


# -- on the emulator ---------------------------------------------------------------------------

TIMEOUT_S = 0.3


def settling(clock: FakeClock, emu: Emulator) -> object:
    """The client's sleep: virtual time, and a settle wait lets the server finish."""

    async def sleep(delay: float) -> None:
        if delay >= TIMEOUT_S:
            await asyncio.wait_for(emu.faults.settled(), 10)
        await clock.sleep(delay)

    return sleep


@pytest.fixture
async def slow(emulator: Emulator, clock: FakeClock) -> AsyncIterator[DiallerClient]:
    """A client with a short timeout whose settle waits let held commits finish."""
    emulator.configure(slow_seconds=TIMEOUT_S * 3)
    async with emulator.client(
        limits=Limits(max_concurrency=8),
        retry=RetryPolicy(initial_backoff=0.0, max_backoff=0.0),
        timeout=TIMEOUT_S,
        clock=clock,
        sleep=settling(clock, emulator),
    ) as c:
        yield c


async def test_a_lost_delete_by_user_data_never_deletes_a_second_contact(
    client: DiallerClient, emulator: Emulator
) -> None:
    keys = [f"CRM-{n:06d}" for n in range(10)]
    await client.import_contacts(
        [contact(n) for n in range(10)] * 2, overwrite_duplicates=False, keep_results=True
    )
    assert emulator.store.contact_count() == 20
    emulator.faults.script(FaultKind.DROP_AFTER, times=3, operation="delete_contact_by_user_data")
    before = Snapshot.take(emulator)
    result = await client.delete_contacts(user_data=keys, keep_results=True)
    assert_account(result, read=10, emulator=emulator, before=before)
    assert (result.succeeded, result.ambiguous) == (7, 3)
    assert emulator.stats.requests["delete_contact_by_user_data"] == 10
    assert emulator.store.contact_count() == 10  # one per row, never two


async def test_a_lost_delete_by_user_data_of_the_only_contact_is_proven(
    client: DiallerClient, emulator: Emulator
) -> None:
    await client.import_contacts([contact(n) for n in range(5)], keep_results=True)
    emulator.faults.script(FaultKind.DROP_AFTER, times=2, operation="delete_contact_by_user_data")
    emulator.faults.script(
        FaultKind.GATEWAY_TIMEOUT_AFTER, times=1, operation="delete_contact_by_user_data"
    )
    before = Snapshot.take(emulator)
    result = await client.delete_contacts(
        user_data=[f"CRM-{n:06d}" for n in range(5)], keep_results=True
    )
    assert_account(result, read=5, emulator=emulator, before=before)
    assert result.succeeded == 5
    assert sum(1 for i in result.items or [] if i.reconciled) == 3
    assert emulator.store.contact_count() == 0
    assert emulator.stats.requests["delete_contact_by_user_data"] == 5


async def test_single_delete_by_user_data_uses_the_same_rule(
    client: DiallerClient, emulator: Emulator
) -> None:
    await client.import_contacts(
        [contact(1), contact(1)], overwrite_duplicates=False, keep_results=True
    )
    emulator.faults.script(FaultKind.DROP_AFTER, times=1, operation="delete_contact_by_user_data")
    with pytest.raises(ConnectionLostError) as info:
        await client.delete_contact(user_data="CRM-000001")
    assert any("AMBIGUOUS" in note for note in getattr(info.value, "__notes__", []))
    assert emulator.store.contact_count() == 1  # the second contact was not deleted too
    assert emulator.stats.requests["delete_contact_by_user_data"] == 1


@pytest.mark.parametrize("fault", [FaultKind.SLOW, FaultKind.GATEWAY_TIMEOUT_AFTER])
async def test_a_slow_server_is_not_raced_into_duplicates(
    slow: DiallerClient, emulator: Emulator, fault: FaultKind
) -> None:
    emulator.faults.script(fault, times=5, operation="import_contact")
    before = Snapshot.take(emulator)
    rows = [contact(n) for n in range(20)]
    result = await asyncio.wait_for(
        slow.import_contacts(rows, overwrite_duplicates=False, keep_results=True), 60
    )
    assert_account(result, read=20, emulator=emulator, before=before, campaign_id=538)
    assert result.succeeded == 20
    assert sum(1 for i in result.items or [] if i.reconciled) == 5
    assert emulator.store.contact_count() == 20  # not 25
    assert emulator.stats.requests["import_contact"] == 20


async def test_single_import_waits_for_a_slow_commit(
    slow: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script(FaultKind.SLOW, times=1, operation="import_contact")
    made = await asyncio.wait_for(slow.import_contact(contact(1)), 30)
    assert made.user_data == "CRM-000001"
    assert emulator.store.contact_count() == 1


async def test_proof_means_the_right_campaign(client: DiallerClient, emulator: Emulator) -> None:
    rows = [contact(n) for n in range(50)]
    await client.import_contacts(
        rows, overwrite_duplicates=False, keep_results=True
    )  # the source, campaign 538
    copies = [{k: v for k, v in r.items() if k != "DiallerCampaignsID"} for r in rows]
    emulator.faults.script(FaultKind.DROP_BEFORE, times=5, operation="import_contact")
    before = Snapshot.take(emulator)
    result = await client.import_contacts(
        copies, campaign_name="Summer Campaign", overwrite_duplicates=False, keep_results=True
    )
    assert_account(result, read=50, emulator=emulator, before=before, campaign_id=539)
    assert result.succeeded == 50
    assert emulator.store.contact_count(campaign_id=539) == 50
    assert emulator.store.contact_count(campaign_id=538) == 50
    assert emulator.stats.requests["list_campaigns"] == 1  # resolved once, before row one


async def test_an_unknown_campaign_name_stops_the_job_before_row_one(
    client: DiallerClient, emulator: Emulator
) -> None:
    with pytest.raises(ValueError, match="no campaign named"):
        await client.import_contacts([contact(1)], campaign_name="Nope", keep_results=True)
    assert emulator.stats.requests["import_contact"] == 0


async def test_a_contact_changed_by_someone_else_is_ambiguous(
    client: DiallerClient, emulator: Emulator, clock: FakeClock
) -> None:
    await client.import_contact(contact(1, FirstName="Other"))  # same UserData, different data
    emulator.faults.script(FaultKind.DROP_BEFORE, times=1, operation="import_contact")
    before = Snapshot.take(emulator)
    result = await client.import_contacts(
        [contact(1)], overwrite_duplicates=False, keep_results=True
    )
    assert_account(result, read=1, emulator=emulator, before=before, campaign_id=538)
    assert result.ambiguous == 1 and result.failures[0].outcome is Outcome.AMBIGUOUS
    assert emulator.stats.requests["import_contact"] == 2  # the setup's and ours, no resend
    assert clock.sleeps.count(client.timeout) == 1  # it waited for the attempt to settle


async def test_a_resend_that_fails_again_is_checked_but_never_sent_a_third_time(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script(FaultKind.DROP_BEFORE, times=2, operation="import_contact")
    result = await client.import_contacts(
        [contact(1)], overwrite_duplicates=False, keep_results=True
    )
    assert result.ambiguous == 1
    assert emulator.stats.requests["import_contact"] == 2
    assert emulator.store.contact_count() == 0


# -- values are never silently changed -----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "given", "sent"),
    [
        ("Amount", "12,50", 12.5),
        ("Amount", "12,5", 12.5),
        ("Amount", " -0,75 ", -0.75),
        ("Amount", "1234.5", 1234.5),
        ("Amount", 3, 3.0),
        ("PhoneNumber2", 4930123456.0, "4930123456"),
        ("PhoneNumber2", 1e16, "10000000000000000"),
        ("PostalCode", 10115, "10115"),
        ("PostalCode", "01067", "01067"),
    ],
)
def test_values_sent_as_given(field: str, given: object, sent: object) -> None:
    body = validate_body({field: given})
    assert body[field] == sent and type(body[field]) is type(sent)


@pytest.mark.parametrize(
    ("field", "given", "reason"),
    [
        ("Amount", "NaN", "finite"),
        ("Amount", "inf", "finite"),
        ("Amount", "-Infinity", "finite"),
        ("Amount", "1e999", "finite"),
        ("Amount", float("nan"), "finite"),
        ("Amount", float("inf"), "finite"),
        ("Amount", "1,234", "ambiguous"),
        ("Amount", "12,500", "ambiguous"),
        ("Amount", "1,234.5", "ambiguous"),
        ("Amount", "1,2,3", "ambiguous"),
        ("Amount", "abc", "expected a number"),
        ("PhoneNumber2", 4930123456.5, "expected text"),
        ("PhoneNumber2", float("nan"), "expected text"),
        ("Comment", True, "expected text"),
    ],
)
def test_values_that_would_change_are_invalid(field: str, given: object, reason: str) -> None:
    with pytest.raises(ContactValidationError, match=reason) as info:
        validate_body({field: given})
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("text", "thousands", "number"),
    [("1,234", ",", 1234.0), ("1.234,5", ".", 1234.5), ("1,234.5", ",", 1234.5)],
)
def test_a_configured_thousands_separator(text: str, thousands: str, number: float) -> None:
    assert parse_number(text, thousands=thousands) == number


def test_one_instant_is_one_wall_clock_time() -> None:
    berlin_summer = timezone(timedelta(hours=2))
    a = validate_body({"FollowUpDateTime": "2026-05-01T09:30:00+02:00"}, berlin_summer)
    b = validate_body({"FollowUpDateTime": "2026-05-01T07:30:00Z"}, berlin_summer)
    assert a["FollowUpDateTime"] == b["FollowUpDateTime"] == "2026-05-01T09:30:00"
    naive = validate_body({"FollowUpDateTime": "2026-05-01T09:30:00"}, UTC)
    assert naive["FollowUpDateTime"] == "2026-05-01T09:30:00"  # wall-clock time kept
    utc = validate_body({"FollowUpDateTime": "2026-05-01T09:30:00+02:00"}, UTC)
    assert utc["FollowUpDateTime"] == "2026-05-01T07:30:00"


@pytest.mark.parametrize("key", ["12³", "١٢", "1 2", "", "0", "-3", "x"])
def test_bad_ids_are_refused_cleanly(key: str) -> None:
    with pytest.raises(ContactValidationError, match="positive integer"):
        validate_key(key, by_user_data=False)


async def test_aware_datetimes_reach_the_server_in_its_zone(emulator: Emulator) -> None:
    async with emulator.client(server_timezone=timezone(timedelta(hours=-5))) as c:
        made = await c.import_contact(contact(1, FollowUpDateTime="2026-05-01T12:00:00Z"))
    assert made.follow_up_at == datetime(2026, 5, 1, 7, 0)


def validate_body(fields: dict[str, object], zone: tzinfo | None = None) -> dict[str, object]:
    _, body = checked_contact(contact(1, **fields), server_timezone=zone)
    return body


# -- the CLI's rejects file round-trips ------------------------------------------------------------


@pytest.mark.parametrize(
    "cell", ["@ANNA", "=SUM(A1)", "'=x", "'plain", "''", "-2+3", "+4930123", "\tx", "Müller", ""]
)
def test_the_formula_guard_is_undone_exactly(cell: str) -> None:
    assert unguard(neutralise(cell)) == cell


def test_re_importing_the_rejects_file_sends_the_original_values(tmp_path: Path) -> None:
    from .test_cli import cli, contacts, emu, read_csv

    source, rejects, db = tmp_path / "in.csv", tmp_path / "rejects.csv", tmp_path / "emu.db"
    source.write_text(
        "Name,PhoneNumber1,UserData,Comment\n@ANNA,,@ANNA,'quoted\n=B,+4930111,=B,-2+3\n",
        encoding="utf-8",
    )
    first = cli("import", source, "--campaign-id", "538", *emu(db), "--rejects", rejects)
    assert first.returncode == 1, first.stderr
    assert read_csv(rejects)[0]["UserData"] == "'@ANNA"  # guarded for the spreadsheet
    text = rejects.read_text(encoding="utf-8-sig").replace("'@ANNA,,", "'@ANNA,+4930222,", 1)
    rejects.write_text(text, encoding="utf-8")  # the user fixes the missing phone number
    again = cli("import", rejects, "--campaign-id", "538", *emu(db))
    assert again.returncode == 0, again.stderr
    stored = {c["UserData"]: c for c in contacts(db)}
    assert set(stored) == {"@ANNA", "=B"}
    assert stored["@ANNA"]["Name"] == "@ANNA" and stored["@ANNA"]["Comment"] == "'quoted"
    assert stored["=B"]["Comment"] == "-2+3"


def test_a_file_without_the_error_columns_is_read_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("Name,UserData\n'@ANNA,x\n", encoding="utf-8")
    reader = Reader(str(path), fmt=None, encoding="utf-8")
    try:
        assert [raw for _, raw in reader.records()] == [{"Name": "'@ANNA", "UserData": "x"}]
    finally:
        reader.close()


# -- same contact, two keys ---------------------------------------------------------------------


async def test_one_contact_named_by_id_and_by_user_data_ends_in_input_order(
    client: DiallerClient, emulator: Emulator
) -> None:
    imported = await client.import_contacts([contact(n) for n in range(200)], keep_results=True)
    ids = [i.contact.id for i in sorted(imported.items or [], key=lambda i: i.index) if i.contact]
    emulator.configure(latency=0.001, latency_jitter=0.004, seed=5)
    updates: list[dict[str, object]] = []
    for n, contact_id in enumerate(ids):  # by ID first, then the same contact by UserData
        updates += [{"ID": contact_id, "Tag": "first"}, {"UserData": f"CRM-{n:06d}", "Tag": "last"}]
    before = Snapshot.take(emulator)
    result = await asyncio.wait_for(client.update_contacts(updates, keep_results=True), 60)
    assert_account(result, read=400, emulator=emulator, before=before)
    assert result.succeeded == 400
    assert {c["Tag"] for c in emulator.store.all_contacts()} == {"last"}


async def test_the_key_gate_keeps_kinds_apart_in_arrival_order() -> None:
    gate = KeyGate()
    log: list[str] = []

    async def row(name: str, kind: str) -> None:
        await gate.enter(kind)
        log.append(f"+{name}")
        await asyncio.sleep(0)
        log.append(f"-{name}")
        gate.leave()

    await asyncio.gather(row("a", "id"), row("b", "id"), row("c", "ud"), row("d", "id"))
    assert log.index("+c") > max(log.index("-a"), log.index("-b"))
    assert log.index("+d") > log.index("-c")  # a later ID row does not overtake c

    await gate.enter("id")  # admitted at once: nothing waits
    waiting = asyncio.ensure_future(gate.enter("ud"))
    await asyncio.sleep(0)
    waiting.cancel()  # a row cancelled while waiting takes no place
    await asyncio.sleep(0)
    gate.leave()
    await asyncio.wait_for(gate.enter("ud"), 1)  # free again
    gate.leave()


# -- resume ---------------------------------------------------------------------------------------


class _Item:
    def __init__(self) -> None:
        self.index = 0
        self.sent_unsafe = False
        self.sending = False


@pytest.mark.parametrize(
    ("on_server", "outcome", "imports"),
    [
        ({"FirstName": "Max"}, Outcome.SUCCEEDED, 0),  # it landed before the crash
        ({"FirstName": "Edited"}, Outcome.AMBIGUOUS, 0),  # landed, then edited: not resent
        (None, Outcome.SUCCEEDED, 1),  # never landed: sent now
    ],
)
async def test_a_resumed_unconfirmed_import_is_checked_not_resent(
    client: DiallerClient,
    emulator: Emulator,
    clock: FakeClock,
    on_server: dict[str, object] | None,
    outcome: Outcome,
    imports: int,
) -> None:
    if on_server is not None:
        await client.import_contact(contact(1, **on_server))
    emulator.stats.reset()
    rules = rules_for(Operation.IMPORT, {"overwrite_duplicates": False})
    await rules.resolve(client)
    runner = ItemRunner(client, rules, None)
    verdict = await runner.run(
        _Item(), rules.prepare(contact(1)), resumed=PENDING, before_unsafe_send=None
    )
    assert verdict.outcome is outcome
    assert emulator.stats.requests["import_contact"] == imports
    assert clock.sleeps == []  # the crashed run is over: nothing to wait for
    assert emulator.store.contact_count() == 1


async def test_a_lookup_that_fails_leaves_the_write_ambiguous_not_resent(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script(FaultKind.DROP_AFTER, times=1, operation="import_contact")
    emulator.faults.script(FaultKind.SERVER_ERROR, times=1, operation="find_contacts")
    before = Snapshot.take(emulator)
    result = await client.import_contacts(
        [contact(1)], overwrite_duplicates=False, keep_results=True
    )
    assert_account(result, read=1, emulator=emulator, before=before, campaign_id=538)
    assert result.ambiguous == 1 and result.failures[0].error is not None
    assert emulator.stats.requests["import_contact"] == 1
    assert emulator.store.contact_count() == 1


@pytest.mark.parametrize("record", [None, {"ID": 7}])
@pytest.mark.parametrize("attempts", [1, 3])
def test_the_success_verdict_is_the_named_tuple_its_fields_say(
    record: dict[str, int] | None, attempts: int
) -> None:
    # succeeded() builds the tuple directly (once per row): field by field, it must be what
    # the named tuple's own constructor builds.
    verdict = succeeded(record, attempts)
    assert verdict == Verdict(Outcome.SUCCEEDED, record=record, attempts=attempts)
    assert verdict.outcome is Outcome.SUCCEEDED and verdict.record is record
    assert verdict.error is None and verdict.reconciled is False and verdict.reason is None
