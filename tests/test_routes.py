"""The route table: the one place every method and path comes from, on both sides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dialler_async import DiallerClient, NotFoundError, Route, Routes
from dialler_async.emulator import Emulator

from .conftest import contact


def test_defaults_follow_the_api_notes() -> None:
    routes = Routes()
    assert routes.import_contact == Route("POST", "/dialler/contacts/import")
    assert routes.delete_contact == Route("DELETE", "/dialler/contacts/contact/{id}")
    assert routes.find_contacts.build(user_data="CON 6174/ä") == (
        "/dialler/contacts/contact?userData=CON%206174%2F%C3%A4"
    )
    assert routes.get_contact.build(id=215387) == "/dialler/contacts/215387"
    assert len(Routes.operations()) == 18


def test_route_validation() -> None:
    with pytest.raises(ValueError, match="start with"):
        Route("GET", "dialler/contacts")
    with pytest.raises(ValueError, match="unknown placeholders"):
        Route("GET", "/dialler/{contact}")
    with pytest.raises(ValueError, match="method"):
        Route("FETCH", "/x")
    with pytest.raises(ValueError, match="unknown operations"):
        Routes().replace(teleport=("GET", "/x"))
    with pytest.raises(ValueError, match="needs"):
        Routes().get_contact.build()
    assert Route("get", "/x").method == "GET"


def test_routes_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    path.write_text(
        json.dumps(
            {
                "find_contacts": "GET /dialler/contacts/search?userData={user_data}",
                "lock_contact": ["POST", "/dialler/contacts/{id}/lock"],
            }
        ),
        encoding="utf-8",
    )
    routes = Routes.from_file(path)
    assert routes.find_contacts == Route("GET", "/dialler/contacts/search?userData={user_data}")
    assert routes.lock_contact == Route("POST", "/dialler/contacts/{id}/lock")
    assert routes.unlock_contact == Routes().unlock_contact
    with pytest.raises(ValueError, match="METHOD /path"):
        Routes.from_mapping({"lock_contact": 42})


def moved() -> Routes:
    """Every operation on a different method/path than the default."""
    return Routes(
        list_contacts=Route("GET", "/v2/contacts"),
        get_contact=Route("GET", "/v2/contacts/{id}"),
        find_contacts=Route("GET", "/v2/search?key={user_data}"),
        get_contacts_batch=Route("POST", "/v2/batch"),
        import_contact=Route("PUT", "/v2/contacts/new"),
        update_contact=Route("PATCH", "/v2/contacts/change"),
        delete_contact=Route("POST", "/v2/contacts/{id}/delete"),
        delete_contact_by_user_data=Route("POST", "/v2/delete?key={user_data}"),
        lock_contact=Route("POST", "/v2/contacts/{id}/lock"),
        lock_contact_by_user_data=Route("POST", "/v2/lock?key={user_data}"),
        unlock_contact=Route("POST", "/v2/contacts/{id}/unlock"),
        unlock_contact_by_user_data=Route("POST", "/v2/unlock?key={user_data}"),
        reset_contact=Route("POST", "/v2/contacts/{id}/reset"),
        reset_contact_by_user_data=Route("POST", "/v2/reset?key={user_data}"),
        contact_history=Route("GET", "/v2/contacts/{id}/calls"),
        contact_history_by_user_data=Route("GET", "/v2/calls?key={user_data}"),
        list_campaigns=Route("GET", "/v2/campaigns"),
        get_campaign=Route("GET", "/v2/campaigns/{id}"),
    )


async def exercise_every_operation(c: DiallerClient) -> None:
    made = await c.import_contact(contact(1))
    assert made.id is not None
    assert (await c.get_contact(made.id)).id == made.id
    assert len(await c.list_contacts()) == 1
    assert len(await c.find_contacts("CRM-000001")) == 1
    assert len(await c.get_contacts_batch(ids=[made.id])) == 1
    await c.update_contact({"ID": made.id, "Tag": "t"})
    for action in (c.lock_contact, c.unlock_contact, c.reset_contact):
        await action(made.id)
        await action(user_data="CRM-000001")
    assert await c.contact_history(made.id) == []
    assert await c.contact_history(user_data="CRM-000001") == []
    assert len(await c.list_campaigns()) >= 1
    assert (await c.get_campaign(538)).id == 538
    await c.delete_contact(made.id)
    await c.import_contact(contact(2))
    await c.delete_contact(user_data="CRM-000002")


async def test_every_operation_follows_the_table_on_both_sides() -> None:
    routes = moved()
    assert all(a != b for (_, a), (_, b) in zip(routes.items(), Routes().items(), strict=True))
    async with Emulator(routes=routes) as emu:
        async with DiallerClient(emu.base_url, emu.client_id, emu.token, routes=routes) as c:
            await exercise_every_operation(c)
        assert set(emu.stats.requests) == set(Routes.operations())
        # the default table finds none of the moved routes: empty 404 = "route missing"
        async with DiallerClient(emu.base_url, emu.client_id, emu.token) as default:
            with pytest.raises(NotFoundError) as info:
                await default.list_campaigns()
            assert info.value.route_missing
