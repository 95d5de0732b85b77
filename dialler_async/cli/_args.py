"""The command line: one argparse parser with a subcommand per job."""

from __future__ import annotations

import argparse
import math
import textwrap
from collections.abc import Sequence

from .. import __version__
from ..emulator.__main__ import HelpFormatter as EmulatorFormatter
from ..emulator.__main__ import build_parser as emulator_parser
from ._probe import PROBE_ID, PROBE_USER_DATA

ENV_HELP = """\
environment:
  Set DIALLER_BASE_URL (the server's .../rest/v1.0 prefix), DIALLER_CLIENT_ID and
  DIALLER_TOKEN, or DIALLER_TOKEN_FILE naming a file that holds the token. The token is
  never taken as an argument and never printed. --emulator runs the built-in emulator
  in-process instead (in memory; --emulator-db FILE keeps its data across runs).
"""

EXIT_HELP = """\
exit status:
  0    every row succeeded (or was skipped as done by an earlier run)
  1    some rows failed (see --rejects / --report), or a lookup found nothing
  2    usage or configuration error (bad option, missing variables, wrong URL, 401,
       unreadable input, a --rejects or --report file that cannot be written)
  130  interrupted (Ctrl-C, SIGTERM); the checkpoint is flushed: run the same command to resume
"""

OVERWRITE_HELP = (
    "on (the default): a row whose UserData already exists overwrites that contact instead "
    "of creating a second one, i.e. import is an upsert by UserData. That makes a retried "
    "request and a re-run or resumed job safe: a row sent twice cannot create a duplicate. "
    "--no-overwrite-duplicates always creates new contacts; then only --checkpoint keeps a "
    "re-run from importing rows twice (rows without UserData cannot even be checked)"
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number such as 50 or 0.5, got {text!r}"
        ) from None
    if not math.isfinite(value) or value <= 0:  # nan/inf parse as floats, but mean nothing here
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


#: Names a shell user can type for the delimiters that are awkward to quote.
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def delimiter(text: str) -> str:
    """``--delimiter``: one character, or tab (also written ``\\t``), comma, semicolon, pipe."""
    value = DELIMITER_NAMES.get(text.lower() if len(text) > 1 else text, text)
    if len(value) != 1 or value in '\r\n"':
        raise argparse.ArgumentTypeError(
            f"expected one character, or tab, comma, semicolon or pipe; got {text!r}"
        )
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument(
        "--emulator",
        action="store_true",
        help="run the built-in emulator in-process instead of using DIALLER_* variables",
    )
    group.add_argument(
        "--emulator-db",
        metavar="FILE",
        help="SQLite file for the emulator's data, kept across runs (implies --emulator)",
    )
    group.add_argument(
        "--routes",
        metavar="FILE",
        help='JSON route overrides, e.g. {"find_contacts": "GET /dialler/contacts/search?'
        'userData={user_data}"} (see `probe`)',
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="per-request timeout (30)",
    )
    output = common.add_argument_group("output")
    output.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    output.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log level of the SDK's log lines on stderr (warning)",
    )
    return common


def _job() -> argparse.ArgumentParser:
    job = argparse.ArgumentParser(add_help=False)
    group = job.add_argument_group("job")
    add = group.add_argument
    add(
        "--concurrency", type=_positive_int, default=16, metavar="N", help="requests in flight (16)"
    )
    add(
        "--rate", type=_positive_float, metavar="R", help="at most R requests per second (no limit)"
    )
    add(
        "--adaptive",
        action="store_true",
        help="let the requests in flight follow the server's latency, at most --concurrency: "
        "fewer when a queue builds up inside the server (off)",
    )
    add(
        "--checkpoint",
        metavar="FILE",
        help="journal of done rows; after a crash or Ctrl-C, run the same command to resume",
    )
    add(
        "--rejects",
        metavar="FILE",
        help="write every row that did not succeed, as it came in, plus error_status and "
        "error_message (CSV; .jsonl for JSON Lines), ready to fix and re-import",
    )
    add("--report", metavar="FILE", help="write the full account as JSON")
    add("--max-failures", type=_positive_int, metavar="N", help="stop after N failed rows")
    add(
        "--dry-run",
        action="store_true",
        help="validate every row (and its campaign), send no writes; report and --rejects as usual",
    )
    return job


def _input(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="CSV or JSON Lines file; - for stdin")
    group = parser.add_argument_group("input")
    add = group.add_argument
    add("--format", choices=["csv", "jsonl"], help="default: by extension (.jsonl, .ndjson)")
    add("--encoding", default="utf-8-sig", help="text encoding (UTF-8, with or without BOM)")
    add(
        "--delimiter",
        type=delimiter,
        metavar="D",
        help="CSV delimiter: one character, or tab, comma, semicolon, pipe (default: detected "
        "from the header line)",
    )
    add(
        "--map",
        action="append",
        default=[],
        metavar="COLUMN=FIELD",
        help="read COLUMN as FIELD, e.g. --map Surname=Name (repeatable)",
    )
    add(
        "--drop-column",
        action="append",
        default=[],
        metavar="COLUMN",
        help="do not send COLUMN (repeatable)",
    )


def _phones(parser: argparse.ArgumentParser, *, import_only: bool = True) -> None:
    """The phone options; ``import_only=False`` (update): only the policy's three."""
    group = parser.add_argument_group("phone numbers")
    add = group.add_argument
    add(
        "--phone-region",
        metavar="CC",
        help="parse every PhoneNumber1..6 and FaxNumber, numbers without a country code being "
        "in region CC (e.g. DE); a row whose numbers all fail is invalid with the reason",
    )
    add(
        "--phone-format",
        choices=["e164", "e164-no-plus", "as-is"],
        default="e164",
        help="how numbers are sent: +49301234567 (e164, the default), 49301234567, or as given",
    )
    add(
        "--phone-check",
        choices=["possible", "valid"],
        default="possible",
        help="possible: a plausible length for its country (default); valid: also an assigned "
        "range (stricter; depends on the phonenumbers release, recorded in --report)",
    )
    if not import_only:
        return
    add(
        "--suppress",
        metavar="FILE",
        help="do-not-call list, one number a line: those numbers are removed from rows; a row "
        "left without a number is skipped ('suppressed'); needs --phone-region",
    )
    add(
        "--dedupe-phone",
        action="store_true",
        help="skip a row whose every number is already in an earlier row ('duplicate phone')",
    )
    add(
        "--results",
        metavar="FILE",
        help="write one CSV line per row: line, UserData, outcome, reason, warnings, the "
        "server's contact ID, the numbers as sent",
    )


def _keys(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("keys")
    which = group.add_mutually_exclusive_group(required=True)
    which.add_argument("--ids", metavar="FILE", help="contact IDs, one a line (- for stdin)")
    which.add_argument("--user-data", metavar="FILE", help="UserData values, one a line")
    group.add_argument(
        "--column",
        metavar="NAME",
        help="read the keys from this column of a CSV (a CSV whose header has an ID or "
        "UserData column is recognised without it)",
    )
    group.add_argument("--encoding", default="utf-8-sig", help="text encoding (UTF-8)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dialler-async",
        description="Bulk import, update and maintenance of jtel ACD dialler contacts.",
        epilog=ENV_HELP + "\n" + EXIT_HELP,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common, job = _common(), _job()

    def command(
        name: str, help: str, description: str, parents: Sequence[argparse.ArgumentParser]
    ) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=textwrap.fill(description, 96),
            parents=list(parents),
            formatter_class=_Formatter,
            epilog=ENV_HELP + "\n" + EXIT_HELP,
        )

    p = command(
        "import",
        "import contacts from a CSV or JSON Lines file",
        "Import contacts. Columns are API field names (Name, PhoneNumber1, "
        "DiallerCampaignsID ...; any case) or the SDK's names (name, phone_number1 ...); "
        "--map names the rest. Unknown columns are sent as they are (with a warning); "
        "read-only columns such as ID are ignored. An empty cell means 'not given'.",
        [common, job],
    )
    _input(p)
    group = p.add_argument_group("campaign and duplicates")
    campaign = group.add_mutually_exclusive_group()
    campaign.add_argument(
        "--campaign-id", type=int, metavar="N", help="campaign for rows that have none"
    )
    campaign.add_argument("--campaign-name", metavar="NAME", help="campaign for rows without one")
    group.add_argument(
        "--overwrite-duplicates",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=OVERWRITE_HELP,
    )
    _phones(p)

    p = command(
        "update",
        "change fields of existing contacts",
        "Update contacts found by the ID or UserData column; only the non-empty cells are "
        "sent. To clear a field, give --null-marker (e.g. NULL) and put it in the cell.",
        [common, job],
    )
    _input(p)
    p.add_argument("--null-marker", metavar="TEXT", help="a cell holding exactly TEXT clears")
    _phones(p, import_only=False)

    p = command(
        "sync",
        "make a campaign hold exactly a file's contacts, sending only what changed",
        "Read the campaign once (streamed), compare it with the file by UserData, and send "
        "only what differs: new rows are imported, changed rows update just their changed "
        "fields, unchanged rows cost no request. Rows without UserData are invalid; a UserData "
        "that several contacts of the campaign hold is a conflict (reported, not touched). "
        "Contacts of the campaign missing from the file are kept, locked or deleted "
        "(--missing); locking or deleting more than --max-missing of the campaign is refused "
        "(exit 2) unless --force. --dry-run prints the plan and writes nothing. An empty cell "
        "means the field has no value: the contact's value is cleared (--empty-cells keep "
        "leaves it as it is; then --null-marker clears).",
        [common, job],
    )
    _input(p)
    group = p.add_argument_group("empty cells")
    group.add_argument(
        "--empty-cells",
        choices=["clear", "keep"],
        default="clear",
        help="clear: an empty cell means 'no value' and clears the field (the file is the "
        "whole truth for its columns; default); keep: an empty cell means 'not given' and "
        "leaves the field as the campaign has it (for files that fill only some cells)",
    )
    group.add_argument(
        "--null-marker", metavar="TEXT", help="a cell holding exactly TEXT clears the field"
    )
    group = p.add_argument_group("campaign and missing contacts")
    campaign = group.add_mutually_exclusive_group(required=True)
    campaign.add_argument("--campaign-id", type=int, metavar="N", help="the campaign to sync")
    campaign.add_argument("--campaign-name", metavar="NAME", help="the campaign to sync")
    group.add_argument(
        "--missing",
        choices=["keep", "lock", "delete"],
        default="keep",
        help="what to do with contacts of the campaign that the file does not have (keep)",
    )
    group.add_argument(
        "--max-missing",
        type=_share,
        default=0.10,
        metavar="SHARE",
        help="refuse to lock/delete when more than this share of the campaign is missing "
        "(0.10: a truncated export must never wipe a campaign)",
    )
    group.add_argument("--force", action="store_true", help="lock/delete even beyond --max-missing")

    for name, what in (
        ("delete", "delete contacts (and their history)"),
        ("lock", "lock contacts so the dialler skips them"),
        ("unlock", "unlock contacts"),
        ("reset", "reset contacts' dialling state (tries, next try, result code)"),
    ):
        p = command(
            name, what, f"{what[0].upper()}{what[1:]}, by ID or by UserData.", [common, job]
        )
        _keys(p)

    p = command(
        "export",
        "write contacts as CSV or JSON Lines",
        "Write every contact (of one campaign) with API field names as columns. The output "
        "re-imports with `import` (the ID column is ignored there).",
        [common],
    )
    p.add_argument("--campaign-id", type=int, metavar="N", help="only this campaign")
    p.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="csv (default)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument(
        "--all-fields", action="store_true", help="add the server's fields (tries, locks ...)"
    )

    p = command("get", "show one contact", "Show one contact by ID.", [common])
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        "find", "find contacts by UserData", "Show every contact with this UserData.", [common]
    )
    p.add_argument("user_data", metavar="USERDATA")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        "history",
        "show a contact's call history",
        "Show call attempts by ID or UserData.",
        [common],
    )
    p.add_argument("id", type=int, nargs="?", metavar="ID")
    p.add_argument("--user-data", metavar="USERDATA", help="instead of an ID")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("campaigns", "list the dialler campaigns", "List the campaigns.", [common])
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command(
        "probe",
        "check which API routes the server serves",
        "Send one harmless request per operation of the route table (a nonexistent ID or "
        "UserData, an invalid body for import/update) and classify the answer: a 404 with an "
        "empty body means the route is MISSING on this server; any JSON answer means PRESENT. "
        "Override a missing route with --routes FILE on every command.",
        [common],
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--probe-id", type=int, default=PROBE_ID, help=f"an ID that does not exist ({PROBE_ID})"
    )
    p.add_argument(
        "--probe-user-data",
        default=PROBE_USER_DATA,
        help=f"a UserData that does not exist ({PROBE_USER_DATA})",
    )

    emulator = emulator_parser()
    sub.add_parser(
        "emulator",
        help="serve the local emulator of the API",
        description=emulator.description,
        epilog=emulator.epilog,  # the fault kinds and operations its options refer to
        parents=[emulator],
        add_help=False,
        formatter_class=EmulatorFormatter,
    )
    return parser


def parse_map(values: Sequence[str]) -> dict[str, str]:
    """``["Surname=Name", ...]`` as ``{"Surname": "Name"}``."""
    mapping: dict[str, str] = {}
    for value in values:
        source, sep, target = value.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f"--map expects COLUMN=FIELD, got {value!r}")
        mapping[source.strip()] = target.strip()
    return mapping
