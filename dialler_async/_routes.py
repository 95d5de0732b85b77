"""The route table: one method and path per operation, overridable per operation.

Several paths are inferred (the wiki does not show them), so a user whose server differs
replaces just those entries::

    routes = Routes().replace(find_contacts=Route("GET", "/dialler/contacts?userData={user_data}"))

Paths are relative to ``{base_url}/{client_id}``. Placeholders are ``{id}`` and
``{user_data}``; they may stand in the path or in the query string and are URL-encoded when
filled in. The emulator serves the same table, so a test of one is a test of the other.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote

import attrs

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_PLACEHOLDERS: Final = frozenset({"id", "user_data"})


def _check_path(instance: Route, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.startswith("/"):
        raise ValueError(f"route path must start with '/': {value!r}")
    names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    unknown = names - _PLACEHOLDERS
    if unknown:
        raise ValueError(f"route path {value!r} has unknown placeholders {sorted(unknown)}")


@attrs.frozen
class Route:
    """One operation's HTTP method and path template."""

    method: Method = attrs.field(
        converter=str.upper,  # type: ignore[misc]
        validator=attrs.validators.in_(_METHODS),
    )
    path: str = attrs.field(validator=_check_path)

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(
            name for _, name, _, _ in string.Formatter().parse(self.path) if name is not None
        )

    def build(self, *, id: int | None = None, user_data: str | None = None) -> str:
        """Fill in the placeholders (URL-encoded) and return the relative path with query."""
        values: dict[str, str] = {}
        if id is not None:
            values["id"] = quote(str(id), safe="")
        if user_data is not None:
            values["user_data"] = quote(user_data, safe="")
        missing = self.placeholders - values.keys()
        if missing:
            raise ValueError(f"route {self.path!r} needs {sorted(missing)}")
        return self.path.format(**values) if values else self.path


@attrs.frozen
class Routes:
    """Every operation of the Dialler Contacts API (section 10.1 of the API notes)."""

    list_contacts: Route = Route("GET", "/dialler/contacts")
    get_contact: Route = Route("GET", "/dialler/contacts/{id}")
    find_contacts: Route = Route("GET", "/dialler/contacts/contact?userData={user_data}")
    get_contacts_batch: Route = Route("POST", "/dialler/contacts")
    import_contact: Route = Route("POST", "/dialler/contacts/import")
    update_contact: Route = Route("POST", "/dialler/contacts/update")
    delete_contact: Route = Route("DELETE", "/dialler/contacts/contact/{id}")
    delete_contact_by_user_data: Route = Route(
        "DELETE", "/dialler/contacts/contact?userData={user_data}"
    )
    lock_contact: Route = Route("GET", "/dialler/contacts/contact/{id}/lock")
    lock_contact_by_user_data: Route = Route(
        "GET", "/dialler/contacts/contact/lock?userData={user_data}"
    )
    unlock_contact: Route = Route("GET", "/dialler/contacts/contact/{id}/unlock")
    unlock_contact_by_user_data: Route = Route(
        "GET", "/dialler/contacts/contact/unlock?userData={user_data}"
    )
    reset_contact: Route = Route("GET", "/dialler/contacts/contact/{id}/reset")
    reset_contact_by_user_data: Route = Route(
        "GET", "/dialler/contacts/contact/reset?userData={user_data}"
    )
    contact_history: Route = Route("GET", "/dialler/contacts/contact/{id}/history")
    contact_history_by_user_data: Route = Route(
        "GET", "/dialler/contacts/contact/history?userData={user_data}"
    )
    list_campaigns: Route = Route("GET", "/dialler/campaigns")
    get_campaign: Route = Route("GET", "/dialler/campaigns/{id}")

    def replace(self, **overrides: Route | tuple[str, str]) -> Routes:
        """A copy with some operations' routes replaced (a ``Route`` or ``(method, path)``)."""
        unknown = overrides.keys() - set(self.operations())
        if unknown:
            raise ValueError(f"unknown operations {sorted(unknown)}; known: {self.operations()}")
        fixed = {k: v if isinstance(v, Route) else Route(*v) for k, v in overrides.items()}
        return attrs.evolve(self, **fixed)

    @classmethod
    def operations(cls) -> list[str]:
        return [a.name for a in attrs.fields(cls)]

    def items(self) -> list[tuple[str, Route]]:
        return [(name, getattr(self, name)) for name in self.operations()]

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any]) -> Routes:
        """Routes from ``{"op": "METHOD /path"}`` or ``{"op": ["METHOD", "/path"]}``."""
        parsed: dict[str, Route | tuple[str, str]] = {}
        for name, value in overrides.items():
            if isinstance(value, str):
                method, _, path = value.strip().partition(" ")
                parsed[name] = (method, path.strip())
            elif isinstance(value, list | tuple) and len(value) == 2:
                parsed[name] = (str(value[0]), str(value[1]))
            else:
                raise ValueError(f"route for {name!r} must be 'METHOD /path', got {value!r}")
        return cls().replace(**parsed)

    @classmethod
    def from_file(cls, path: str | Path) -> Routes:
        """Routes from a JSON file holding a mapping as for :meth:`from_mapping`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object of operation -> route")
        return cls.from_mapping(data)
