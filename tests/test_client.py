"""Every single-call function over real HTTP against the emulator, including error statuses."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from dialler_async import (
    AuthenticationError,
    BadRequestError,
    ClientStateError,
    ConfigurationError,
    ConnectError,
    ContactUpdate,
    ContactValidationError,
    DiallerClient,
    NewContact,
    NotFoundError,
    ResponseFormatError,
    RetryPolicy,
    ServerError,
)
from dialler_async.emulator import Emulator, EmulatorConfig, FaultKind

from .conftest import contact


async def test_import_get_find_update(client: DiallerClient, emulator: Emulator) -> None:
    created = await client.import_contact(contact(1, City="München", Amount=12.5))
    assert created.id is not None and created.city == "München" and created.amount == 12.5
    assert (await client.get_contact(created.id)) == created
    found = await client.find_contacts("CRM-000001")
    assert [c.id for c in found] == [created.id]
    updated = await client.update_contact({"UserData": "CRM-000001", "City": None, "Tag": "vip"})
    assert (updated.city, updated.tag, updated.name) == (None, "vip", "Mustermann1")
    by_id = await client.update_contact(ContactUpdate(id=created.id, comment="called"))
    assert by_id.comment == "called" and by_id.tag == "vip"
    assert emulator.store.contact_count() == 1


async def test_import_accepts_models_and_campaign_names(client: DiallerClient) -> None:
    made = await client.import_contact(
        NewContact(name="Schmidt", campaign_name="Summer Campaign", phone_number3="+43123")
    )
    assert made.campaign_id == 539 and made.phone_number3 == "+43123"


async def test_duplicates_by_user_data(client: DiallerClient, emulator: Emulator) -> None:
    first = await client.import_contact(contact(1))
    again = await client.import_contact(contact(1, FirstName="Moritz"), overwrite_duplicates=True)
    assert again.id == first.id and again.first_name == "Moritz"
    third = await client.import_contact(contact(1), overwrite_duplicates=False)
    assert third.id != first.id
    assert emulator.store.contact_count(user_data="CRM-000001") == 2
    assert len(await client.find_contacts("CRM-000001")) == 2


async def test_list_contacts_and_campaign_filter(client: DiallerClient) -> None:
    await client.import_contact(contact(1))
    await client.import_contact(contact(2, DiallerCampaignsID=540))
    assert len(await client.list_contacts()) == 2
    assert [c.user_data for c in await client.list_contacts(campaign_id=540)] == ["CRM-000002"]


async def test_batch_returns_extended_records(client: DiallerClient, emulator: Emulator) -> None:
    a = await client.import_contact(contact(1))
    await client.import_contact(contact(2))
    await emulator.dial(rounds=2, seed=7)
    records = await client.get_contacts_batch(ids=[a.id or 0], user_data=["CRM-000002"])
    assert sorted(r.user_data or "" for r in records) == ["CRM-000001", "CRM-000002"]
    for record in records:
        assert record.history is not None and len(record.history) == 2
        assert record.history[0].statistics is not None
    assert await client.get_contacts_batch() == []


async def test_lock_unlock_reset_history(client: DiallerClient, emulator: Emulator) -> None:
    made = await client.import_contact(contact(1))
    assert made.id is not None
    await emulator.dial(rounds=1, seed=1)
    history = await client.contact_history(made.id)
    assert len(history) == 1 and history[0].contact_id == made.id
    assert history == await client.contact_history(user_data="CRM-000001")
    dialled = await client.get_contact(made.id)
    assert dialled.tries_phone_number1 == 1
    await client.reset_contact(user_data="CRM-000001")
    reset = await client.get_contact(made.id)
    assert reset.tries_phone_number1 == 0 and reset.next_try_at is None
    assert len(await client.contact_history(made.id)) == 1  # history is kept
    await client.lock_contact(made.id)
    await client.lock_contact(made.id)  # idempotent
    assert (await client.get_contact(made.id)).locked is True
    await emulator.dial(rounds=1, seed=2)
    assert len(await client.contact_history(made.id)) == 1  # locked contacts are skipped
    await client.unlock_contact(user_data="CRM-000001")
    assert (await client.get_contact(made.id)).locked is False


async def test_delete_by_id_and_user_data(client: DiallerClient, emulator: Emulator) -> None:
    a = await client.import_contact(contact(1))
    await client.import_contact(contact(2))
    await client.delete_contact(a.id)
    await client.delete_contact(user_data="CRM-000002")
    assert emulator.store.contact_count() == 0
    with pytest.raises(NotFoundError) as info:
        await client.delete_contact(a.id)
    assert info.value.status == 404 and info.value.error == "Dialler contact not found"
    assert not info.value.route_missing


async def test_campaigns(client: DiallerClient) -> None:
    campaigns = await client.list_campaigns()
    assert {c.name for c in campaigns} >= {"Spring Campaign", "Summer Campaign"}
    assert (await client.get_campaign(538)).name == "Spring Campaign"
    with pytest.raises(NotFoundError, match="Dialler campaign not found"):
        await client.get_campaign(9999)


async def test_keyed_calls_need_exactly_one_key(client: DiallerClient) -> None:
    with pytest.raises(TypeError, match="exactly one"):
        await client.lock_contact()
    with pytest.raises(TypeError, match="exactly one"):
        await client.delete_contact(1, user_data="x")


async def test_find_with_no_match_is_empty(client: DiallerClient) -> None:
    assert await client.find_contacts("nobody") == []
    with pytest.raises(NotFoundError):
        await client.get_contact(123456)


async def test_validation_happens_before_any_request(
    client: DiallerClient, emulator: Emulator
) -> None:
    before = sum(emulator.stats.requests.values())
    with pytest.raises(ContactValidationError) as info:
        await client.import_contact({"FirstName": "Max"})
    assert len(info.value.problems) == 3
    assert sum(emulator.stats.requests.values()) == before


async def test_server_side_400_and_404_for_imports(client: DiallerClient) -> None:
    with pytest.raises(NotFoundError, match="Dialler campaign not found"):
        await client.import_contact(contact(1, DiallerCampaignsID=4242))
    # the server checks too: bypass client validation with an unknown extra field type
    with pytest.raises(BadRequestError) as info:
        await client.transport.send("POST", "/dialler/contacts/import", {"Name": "x"})
    assert info.value.status == 400 and info.value.error


async def test_wrong_token_and_other_clients_id() -> None:
    config = EmulatorConfig(extra_clients={2: "token-of-client-2"})
    async with Emulator(config) as emu:
        async with DiallerClient(emu.base_url, 1, "wrong-token") as bad:
            with pytest.raises(AuthenticationError) as info:
                await bad.list_campaigns()
            assert info.value.status == 401
            assert "wrong-token" not in str(info.value)
        async with DiallerClient(emu.base_url, 2, emu.token) as other:
            with pytest.raises(AuthenticationError):
                await other.list_contacts()
        async with DiallerClient(emu.base_url, 2, "token-of-client-2") as two:
            assert await two.list_contacts() == []


async def test_missing_route_is_told_apart_from_missing_object(emulator: Emulator) -> None:
    from dialler_async import Routes

    routes = Routes().replace(
        find_contacts=("GET", "/dialler/contacts/nowhere?userData={user_data}")
    )
    async with DiallerClient(emulator.base_url, 1, emulator.token, routes=routes) as c:
        with pytest.raises(NotFoundError) as info:
            await c.find_contacts("x")
        assert info.value.route_missing and info.value.body is None


async def test_server_errors_and_malformed_answers(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script(FaultKind.SERVER_ERROR, times=1)
    with pytest.raises(ServerError) as info:
        await client.list_campaigns()
    assert info.value.status == 500 and info.value.attempts == 1  # 500 is never retried
    emulator.faults.script(FaultKind.INVALID_JSON, times=1, operation="list_campaigns")
    with pytest.raises(ResponseFormatError, match="invalid JSON"):
        await client.list_campaigns()
    emulator.faults.script(FaultKind.BAD_GATEWAY, times=4, operation="get_campaign")
    with pytest.raises(ServerError) as bad_gateway:
        await client.get_campaign(538)
    assert bad_gateway.value.status == 502 and "<html" in (bad_gateway.value.body or "").lower()
    assert bad_gateway.value.attempts == 4


async def test_idempotent_calls_are_retried_through_transient_faults(
    client: DiallerClient, emulator: Emulator, clock: object
) -> None:
    emulator.faults.script(FaultKind.UNAVAILABLE, times=1, operation="list_campaigns")
    emulator.faults.script(FaultKind.DROP_BEFORE, times=1, operation="list_campaigns")
    emulator.faults.script(FaultKind.GATEWAY_TIMEOUT, times=1, operation="list_campaigns")
    assert len(await client.list_campaigns()) >= 3
    assert emulator.stats.requests["list_campaigns"] == 4
    # every attempt went through our retry layer (aiohttp's own silent resend is off)
    assert client.transport.retries == 3


async def test_plain_import_is_not_repeated_after_a_lost_answer(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script(FaultKind.DROP_AFTER, times=1, operation="import_contact")
    made = await client.import_contact(contact(1))  # proven by lookup, not sent again
    assert made.user_data == "CRM-000001" and made.id is not None
    assert emulator.stats.requests["import_contact"] == 1
    assert emulator.store.contact_count() == 1  # it landed; we did not send it twice


async def test_plain_import_is_not_repeated_after_a_read_timeout(emulator: Emulator) -> None:
    emulator.configure(slow_seconds=0.5)
    emulator.faults.script(FaultKind.SLOW, times=1, operation="import_contact")

    async def settle(delay: float) -> None:  # "waiting" lets the server finish its commit
        await asyncio.wait_for(emulator.faults.settled(), 10)

    async with emulator.client(
        timeout=0.1, retry=RetryPolicy(initial_backoff=0), sleep=settle
    ) as c:
        made = await c.import_contact(contact(1))
    assert made.user_data == "CRM-000001"
    assert emulator.stats.requests["import_contact"] == 1
    assert emulator.store.contact_count() == 1


async def test_upsert_import_is_retried_after_a_lost_answer(
    client: DiallerClient, emulator: Emulator
) -> None:
    emulator.faults.script(FaultKind.DROP_AFTER, times=1, operation="import_contact")
    made = await client.import_contact(contact(1), overwrite_duplicates=True)
    assert made.user_data == "CRM-000001"
    assert emulator.stats.requests["import_contact"] == 2
    assert emulator.store.contact_count() == 1  # the resend overwrote, no duplicate


async def test_delete_whose_retry_meets_404_counts_as_done(
    client: DiallerClient, emulator: Emulator
) -> None:
    made = await client.import_contact(contact(1))
    emulator.faults.script(FaultKind.DROP_AFTER, times=1, operation="delete_contact")
    await client.delete_contact(made.id)
    assert emulator.store.contact_count() == 0


async def test_connect_error_says_nothing_was_sent() -> None:
    async with DiallerClient("http://127.0.0.1:9", 1, "t", retry=RetryPolicy.never()) as c:
        with pytest.raises(ConnectError) as info:
            await c.list_campaigns()
    assert info.value.request_sent is False


async def test_lifecycle() -> None:
    c = DiallerClient("http://127.0.0.1:9", 1, "secret-token")
    with pytest.raises(ClientStateError, match="async with"):
        await c.list_campaigns()
    async with c:
        pass
    with pytest.raises(ClientStateError, match="closed"):
        await c.list_campaigns()
    with pytest.raises(ClientStateError):
        async with c:
            pass


def test_token_never_in_repr() -> None:
    c = DiallerClient("https://h/rest/v1.0", 42, "s3cr3t-token-value")
    assert "s3cr3t" not in repr(c) and "s3cr3t" not in str(c)
    assert "client_id=42" in repr(c)


async def test_token_never_in_logs_or_errors(
    emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.faults.script(FaultKind.UNAVAILABLE, times=1)
    async with emulator.client() as c:
        await c.list_campaigns()
        with pytest.raises(NotFoundError) as info:
            await c.get_contact(999)
    assert emulator.token not in caplog.text
    assert emulator.token not in repr(info.value) and emulator.token not in str(info.value)
    assert "GET /dialler/campaigns" in caplog.text


def test_from_env(tmp_path: Path) -> None:
    env = {
        "DIALLER_BASE_URL": "https://h:8443/rest/v1.0",
        "DIALLER_CLIENT_ID": "42",
        "DIALLER_TOKEN": "tok",
    }
    c = DiallerClient.from_env(env)
    assert (c.base_url, c.client_id) == ("https://h:8443/rest/v1.0", 42)
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n", encoding="utf-8")
    env2 = {**env, "DIALLER_TOKEN": "", "DIALLER_TOKEN_FILE": str(token_file)}
    assert DiallerClient.from_env(env2)._token == "from-file"
    with pytest.raises(ConfigurationError, match=r"DIALLER_BASE_URL.*DIALLER_TOKEN"):
        DiallerClient.from_env({"DIALLER_CLIENT_ID": "1"})
    with pytest.raises(ConfigurationError, match="integer"):
        DiallerClient.from_env({**env, "DIALLER_CLIENT_ID": "x"})


def test_tls_verification_is_on_by_default_and_off_is_loud(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert DiallerClient("https://h/rest/v1.0", 1, "t")._verify is True
    with caplog.at_level(logging.WARNING):
        DiallerClient("https://h/rest/v1.0", 1, "t", verify=False)
    assert "TLS certificate verification is OFF" in caplog.text
