"""``probe``: which operations of the route table does this server really serve?

Several routes of :class:`~dialler_async.Routes` are inferred (the API notes do not show them).
Each operation gets one harmless request, sent once without retries: reads and keyed actions
name a contact that does not exist, import and update send ``{}`` (which the server must
refuse with 400), the batch asks for a nonexistent ID. The answer is classified:

* 404 with an EMPTY body: the server has no such endpoint -> MISSING;
* 200, 400 or 404 with a JSON body: the endpoint exists -> PRESENT;
* 401: the token is refused -> stop (exit 2);
* anything else (405, 5xx, HTML from a proxy, no answer) -> UNKNOWN.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._client import DiallerClient
from .._exceptions import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    DiallerError,
    NotFoundError,
)
from .._routes import Route
from ._connect import UsageError, connect, wrong_base_url
from ._progress import out_console

PRESENT, MISSING, UNKNOWN = "present", "MISSING", "unknown"
#: A contact ID and a UserData that no real server should have.
PROBE_ID, PROBE_USER_DATA = 999_999_999, "__dialler_async_probe__"
_STYLE = {PRESENT: "green", MISSING: "bold red", UNKNOWN: "yellow"}

OVERRIDE_HINT = """\
A route is MISSING: this server serves that operation elsewhere (or not at all). Find its
method and path in your server's API documentation and put them in a JSON file, e.g.
routes.json (this is the current, wrong entry; change method and path):
  {{"{name}": "{method} {path}"}}
then pass --routes routes.json to every command, and probe again. Placeholders are {{id}}
and {{user_data}}; paths are relative to .../rest/v1.0/CLIENT_ID. In Python:
  DiallerClient(..., routes=Routes.from_file("routes.json"))
"""


def _json_body(text: str | None) -> bool:
    if not text:
        return False
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return text.lstrip().startswith("{")  # a long body is cut to a snippet
    return True


def request_for(name: str, route: Route, probe_id: int, probe_user_data: str) -> tuple[Any, Any]:
    """(fill-ins, body) of the harmless request for operation ``name``."""
    fill: dict[str, Any] = {}
    if "id" in route.placeholders:
        fill["id"] = probe_id
    if "user_data" in route.placeholders:
        fill["user_data"] = probe_user_data
    body: Any = None
    if name in ("import_contact", "update_contact"):
        body = {}
    elif name == "get_contacts_batch":
        body = {"IDList": [probe_id]}
    return fill, body


async def probe_one(
    client: DiallerClient, name: str, route: Route, probe_id: int, probe_user_data: str
) -> dict[str, Any]:
    fill, body = request_for(name, route, probe_id, probe_user_data)
    transport = client.transport
    query = {"diallerCampaignsID": probe_id} if name == "list_contacts" else None
    path = transport.url_path(route, query=query, **fill)
    row: dict[str, Any] = {"operation": name, "method": route.method, "path": route.path}
    try:
        await transport.send(route.method, path, body)
    except AuthenticationError:
        raise
    except NotFoundError as exc:
        missing = exc.route_missing
        row.update(result=MISSING if missing else PRESENT, status=404)
        row["detail"] = "404 with an empty body: no such endpoint" if missing else exc.error
    except (BadRequestError, APIStatusError) as exc:
        known = exc.status in (400, 404) and _json_body(exc.body)
        row.update(result=PRESENT if known else UNKNOWN, status=exc.status)
        row["detail"] = exc.error or exc.body or ""
    except DiallerError as exc:
        row.update(result=UNKNOWN, status=None, detail=str(exc))
    else:
        row.update(result=PRESENT, status=200, detail="")
    return row


async def probe(args: argparse.Namespace, console: Console) -> int:
    rows: list[dict[str, Any]] = []
    async with connect(args, console) as client:
        for name, route in client.routes.items():
            try:
                rows.append(
                    await probe_one(client, name, route, args.probe_id, args.probe_user_data)
                )
            except AuthenticationError as exc:
                raise UsageError(
                    f"the server refused the token ({exc}); check DIALLER_TOKEN and "
                    "DIALLER_CLIENT_ID, then probe again"
                ) from exc
    missing = [r for r in rows if r["result"] == MISSING]
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    else:
        out = out_console()
        table = Table(box=box.SIMPLE_HEAD, title="routes", title_justify="left")
        for column in ("operation", "method", "path", "status", "result", "detail"):
            table.add_column(column, overflow="fold")
        for r in rows:
            style = _STYLE[r["result"]]
            table.add_row(
                r["operation"],
                r["method"],
                escape(r["path"]),
                str(r["status"] or "-"),
                f"[{style}]{r['result']}[/]",
                escape(str(r["detail"] or "")),
            )
        out.print(table)
        unknown = sum(r["result"] == UNKNOWN for r in rows)
        out.print(
            f"{len(rows) - len(missing) - unknown} present, {len(missing)} missing, "
            f"{unknown} unknown",
            markup=False,
        )
        if rows and len(missing) == len(rows):
            pass  # not a route problem: the message below says what is
        elif missing:
            first = missing[0]
            hint = OVERRIDE_HINT.format(
                name=first["operation"], method=first["method"], path=first["path"]
            )
            console.print(hint, markup=False, highlight=False)
    if rows and len(missing) == len(rows):
        raise UsageError(
            wrong_base_url(
                client.base_url,
                f"every one of the {len(rows)} routes answered 404 with an empty body",
            )
        )
    return 1 if missing else 0
