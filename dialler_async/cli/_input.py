"""Reading rows lazily: CSV (comma, semicolon, tab) or JSON Lines, from a file or stdin.

Every row becomes a :class:`Row`: a dict in the API's spelling (what the SDK gets) that also
carries the row exactly as it came in (``raw``, original column names) and its line number,
so a rejected row can be written back unchanged. Nothing is read ahead beyond one line: a
500k-row file costs the memory of the rows in flight.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

import orjson

from .. import _fields as F

Format = Literal["csv", "jsonl"]
JSONL_SUFFIXES = (".jsonl", ".ndjson")
#: Columns the CLI itself adds to a rejects file; ignored when that file is imported again.
ERROR_COLUMNS = ("error_status", "error_message")
_NUMBERISH = re.compile(r"[+-]\(?\d[\d ()./-]*")


def neutralise(cell: str) -> str:
    """Defuse a CSV cell a spreadsheet would evaluate (``=``, ``@``, tab, CR; ``+``/``-``
    unless the cell is a number such as a phone number, which must re-import unchanged) by a
    leading ``'``; a cell that starts with ``'`` itself gets one more, so :func:`unguard`
    undoes exactly what was added."""
    if not cell:
        return cell
    first = cell[0]
    if first in "=@\t\r'" or (first in "+-" and not _NUMBERISH.fullmatch(cell)):
        return "'" + cell
    return cell


def unguard(cell: str) -> str:
    """The cell :func:`neutralise` turned into ``cell`` (a rejects file read back)."""
    if cell[:1] == "'" and neutralise(cell[1:]) == cell:
        return cell[1:]
    return cell


_DELIMITERS = (",", ";", "\t", "|")
#: The longest CSV field read (the csv module's default, 131,072, is less than a long comment
#: field can be). A longer one makes its row INVALID; the job goes on.
FIELD_LIMIT = 8 * 1024 * 1024
_WIDE = ("utf-16", "utf-32")  # codecs.lookup() names of the encodings where NUL bytes are normal


class InputError(Exception):
    """The input cannot be read as asked (exit status 2)."""


class Row(dict[str, Any]):
    """One input row in the API's spelling; ``raw`` is the row as it came in."""

    __slots__ = ("line", "raw")

    def __init__(self, raw: dict[str, Any], line: int) -> None:
        super().__init__()
        self.raw = raw
        self.line = line


class KeyItem(str):
    """One key (ID or UserData) of a keyed command, remembering the row it came from."""

    raw: dict[str, Any]
    line: int


class UnparsableLine:
    """A JSON Lines line that is not a JSON object. The SDK rejects it as INVALID."""

    __slots__ = ("line", "problem", "raw")

    def __init__(self, text: str, line: int, problem: str) -> None:
        self.raw = {"line": text}
        self.line = line
        self.problem = problem

    def __repr__(self) -> str:
        return f"<line {self.line}: {self.problem}>"


def detect_format(path: str, given: str | None) -> Format | None:
    """``csv``/``jsonl`` from ``--format`` or the file's extension (None: look at stdin)."""
    if given in ("csv", "jsonl"):
        return given  # type: ignore[return-value]
    if path == "-":
        return None
    return "jsonl" if Path(path).suffix.lower() in JSONL_SUFFIXES else "csv"


def detect_delimiter(header_line: str) -> str:
    """The delimiter of a header line: the candidate it contains most often (``,`` if none)."""
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def count_lines(path: str, header: bool) -> int | None:
    """How many data rows a regular file holds, counted fast (None for stdin/pipes).

    Counts line breaks, so a CSV cell with an embedded line break makes this an estimate.
    """
    if path == "-" or not Path(path).is_file():
        return None
    lines = 0
    last = b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        lines += 1
    return max(0, lines - 1) if header else lines


def open_text(path: str, encoding: str) -> TextIO:
    """The input as text with universal newlines left to the csv module."""
    try:
        wide = codecs.lookup(encoding).name.startswith(_WIDE)
    except LookupError as exc:
        raise InputError(
            f"unknown encoding {encoding!r}; give --encoding a Python codec name such as "
            "utf-8, cp1252, latin-1 or utf-16"
        ) from exc
    if path == "-":
        stdin = sys.stdin.buffer
        peek = getattr(stdin, "peek", None)
        if not wide and peek is not None:
            _check_start(path, peek(4096)[:4096])
        return io.TextIOWrapper(stdin, encoding=encoding, newline="")
    try:
        if not wide:
            with open(path, "rb") as fh:
                _check_start(path, fh.read(4096))
        return open(path, encoding=encoding, newline="")
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror or exc}") from exc


def _check_start(path: str, head: bytes) -> None:
    """Refuse UTF-16/32 text read as a narrow encoding: it would not fail, just read as junk."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise InputError(
            f"{path} is UTF-32 text (it starts with a byte order mark): add --encoding utf-32"
        )
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError(
            f"{path} is UTF-16 text (it starts with a byte order mark): add --encoding utf-16"
        )
    if head.count(0) * 4 >= len(head) > 0:  # ASCII as UTF-16: every other byte is NUL
        guess = "utf-16-le" if head[1::2].count(0) > head[0::2].count(0) else "utf-16-be"
        raise InputError(
            f"{path} holds NUL bytes: it is probably UTF-16 text without a byte order mark "
            f"(add --encoding {guess}), or not a text file at all"
        )


def decode_error_line(path: str, encoding: str) -> int | None:
    """The line holding the first byte that is not ``encoding`` text (None for stdin).

    Only called after a decoding error: the text layer decodes ahead in chunks, so the row
    being read when it fails is not the row holding the bad byte.
    """
    if path == "-":
        return None
    decoder = codecs.getincrementaldecoder(encoding)()
    number = 0
    try:
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, 1):  # noqa: B007 - used after the loop
                decoder.decode(line)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return number
    except OSError:
        return None
    return None


class Columns:
    """How input column names map to API field names (one instance per command).

    A column is matched case-insensitively against the API names and the SDK's snake_case
    names of ``fields``; ``--map SOURCE=FIELD`` names the rest. Read-only server fields and
    ``--drop-column`` columns are not sent; unknown columns are passed through unchanged.
    """

    def __init__(
        self,
        fields: Sequence[F.Field],
        *,
        mapping: dict[str, str],
        drop: Sequence[str] = (),
    ) -> None:
        self.lookup: dict[str, str] = {}
        for field in fields:
            self.lookup[field.api.lower()] = field.api
            self.lookup[field.py.lower()] = field.api
        self.readonly = {
            name: f.api
            for f in F.CONTACT_FIELDS
            if f.api not in set(self.lookup.values())
            for name in (f.api.lower(), f.py.lower())
        }
        self.mapping: dict[str, str] = {}
        for source, target in mapping.items():
            api = self.lookup.get(target.strip().lower())
            if api is None:
                raise InputError(
                    f"--map {source}={target}: {target!r} is not a field that can be sent; "
                    f"fields: {', '.join(f.api for f in fields)}"
                )
            self.mapping[source.strip().lower()] = api
        self.drop = {d.strip().lower() for d in drop} | set(ERROR_COLUMNS)
        self.unknown: list[str] = []
        self.ignored: list[str] = []
        self._cache: dict[str, str | None] = {}

    def target(self, column: str) -> str | None:
        """The API name to send ``column`` as (itself when unknown), None to leave it out."""
        try:
            return self._cache[column]
        except KeyError:
            pass
        low = column.strip().lower()
        result: str | None
        if low in self.drop or not low:
            result = None
            if low and low not in ERROR_COLUMNS:
                self.ignored.append(column)
        elif low in self.mapping:
            result = self.mapping[low]
        elif low in self.lookup:
            result = self.lookup[low]
        elif low in self.readonly:
            result = None
            self.ignored.append(column)
        else:
            result = column
            self.unknown.append(column)
        self._cache[column] = result
        return result

    def plan(self, header: Sequence[str]) -> list[str | None]:
        """Targets for a CSV header; raises :class:`InputError` on clashes."""
        missing = [s for s in self.mapping if s not in {h.strip().lower() for h in header}]
        if missing:
            raise InputError(f"--map names columns the input does not have: {missing}")
        targets = [self.target(h) for h in header]
        seen: dict[str, str] = {}
        for column, api in zip(header, targets, strict=True):
            if api is None:
                continue
            if api in seen:
                raise InputError(f"columns {seen[api]!r} and {column!r} both mean {api}")
            seen[api] = column
        return targets


def _cell(value: Any, null_marker: str | None, empty_is_null: bool) -> tuple[bool, Any]:
    """(given, value) of one cell: the null marker means null; an empty cell means "not
    given", or null (no value) with ``empty_is_null`` (sync: the file is the whole truth)."""
    if isinstance(value, str):
        if null_marker is not None and value == null_marker:
            return True, None
        if not value.strip():
            return empty_is_null, None
    return True, value


class Reader:
    """An open input file: its format, header and a lazy iterator of :class:`Row`."""

    def __init__(
        self,
        path: str,
        *,
        fmt: str | None,
        encoding: str,
        delimiter: str | None = None,
        strict_header: bool = True,
    ) -> None:
        self.path = path
        self.encoding = encoding
        self.stream = open_text(path, encoding)
        self.first_line = self._readline()
        found = detect_format(path, fmt)
        if found is None:
            found = "jsonl" if self.first_line.lstrip().startswith("{") else "csv"
        self.format: Format = found
        self.header: list[str] = []
        self.delimiter = delimiter or ","
        self.extra_cells_warned = False
        self.guarded = False
        if self.format == "csv":
            csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
            if not self.first_line.strip():
                self.close()
                raise InputError(f"{path}: no header line (the file is empty)")
            self.delimiter = delimiter or detect_delimiter(self.first_line)
            header = next(csv.reader([self.first_line], delimiter=self.delimiter))
            self.header = [h.strip().lstrip("\ufeff") for h in header]
            # Our own rejects file: undo the formula guard, so a re-import sends the originals.
            self.guarded = [h.lower() for h in self.header[-2:]] == list(ERROR_COLUMNS)
            if self.guarded:
                self.header = [unguard(h) for h in self.header]
            dupes = {h for h in self.header if self.header.count(h) > 1}
            if dupes and strict_header:
                self.close()
                raise InputError(f"{path}: duplicate columns {sorted(dupes)}")

    def _readline(self) -> str:
        try:
            return self.stream.readline()
        except UnicodeDecodeError as exc:
            self.close()
            raise self.decode_error(exc) from exc

    def decode_error(self, exc: UnicodeDecodeError) -> InputError:
        """The message for a byte that is not text in the input's encoding."""
        line = decode_error_line(self.path, self.encoding)
        where = "stdin" if self.path == "-" else self.path
        where += f" line {line}" if line is not None else ""
        name = (
            "UTF-8"
            if codecs.lookup(self.encoding).name in ("utf-8", "utf-8-sig")
            else (self.encoding)
        )
        byte = exc.object[exc.start : exc.start + 1].hex()
        return InputError(
            f"{where} is not {name} text (byte 0x{byte}: {exc.reason}); give the file's "
            "encoding with --encoding, e.g. --encoding cp1252 (Excel on Windows) or latin-1"
        )

    def close(self) -> None:
        if self.path == "-" and isinstance(self.stream, io.TextIOWrapper):
            self.stream.detach()
        else:
            self.stream.close()

    def records(self) -> Iterator[tuple[int, Any]]:
        """``(line, raw)`` per data row: a dict for CSV and JSON objects, else the text."""
        try:
            if self.format == "csv":
                yield from self._csv_records()
            else:
                yield from self._jsonl_records()
        except UnicodeDecodeError as exc:
            raise self.decode_error(exc) from exc

    def _csv_records(self) -> Iterator[tuple[int, Any]]:
        reader = csv.reader(self.stream, delimiter=self.delimiter)
        width = len(self.header)
        previous = 0
        while True:
            line = previous + 2  # +1 for the header, +1 for 1-based
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a field over FIELD_LIMIT: this row only, not the job
                if reader.line_num == previous:  # nothing consumed: it would fail forever
                    raise
                previous = reader.line_num
                problem = f"line {line} is not a readable CSV row ({exc})"
                if "field limit" in str(exc):
                    problem = (
                        f"line {line} has a field longer than {FIELD_LIMIT:,} characters; "
                        "the row is not read"
                    )
                unreadable = UnparsableLine("", line, problem)
                unreadable.raw = {}  # nothing of it is kept: the rejects row is the reason only
                yield line, unreadable
                continue
            previous = reader.line_num
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if (
                len(cells) > width
                and not self.extra_cells_warned
                and any(c.strip() for c in cells[width:])
            ):
                self.extra_cells_warned = True
                print(
                    f"warning: {self.path} line {line} has more cells than the header; "
                    "the surplus cells are ignored (reported once)",
                    file=sys.stderr,
                )
            cells = cells[:width] + [""] * (width - len(cells))
            if self.guarded:
                cells = [unguard(c) for c in cells]
            yield line, dict(zip(self.header, cells, strict=True))

    def _jsonl_records(self) -> Iterator[tuple[int, Any]]:
        line = 0
        text = self.first_line
        while text:
            line += 1
            if text.strip():
                try:
                    value = orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    yield line, UnparsableLine(text.rstrip("\r\n"), line, f"not valid JSON: {exc}")
                else:
                    if isinstance(value, dict):
                        yield line, value
                    else:
                        yield line, UnparsableLine(text.rstrip("\r\n"), line, "not a JSON object")
            text = self.stream.readline()

    def rows(
        self, columns: Columns, *, null_marker: str | None = None, empty_is_null: bool = False
    ) -> Iterator[Any]:
        """:class:`Row` per data row (or :class:`UnparsableLine`), mapped by ``columns``;
        cells read by :func:`_cell`."""
        targets = columns.plan(self.header) if self.format == "csv" else None
        for line, raw in self.records():
            if not isinstance(raw, dict):
                yield raw
                continue
            row = Row(raw, line)
            if targets is not None:
                for api, value in zip(targets, raw.values(), strict=True):
                    if api is not None:
                        given, cell = _cell(value, null_marker, empty_is_null)
                        if given:
                            row[api] = cell
            else:
                for key, value in raw.items():
                    api = columns.target(key)
                    if api is None:
                        continue
                    if value is None:  # JSON null: sent as null (clears in an update)
                        row[api] = None
                        continue
                    given, cell = _cell(value, null_marker, empty_is_null)
                    if given:
                        row[api] = cell
            yield row


def key_file_has_header(reader: Reader, column: str | None, default_column: str) -> bool:
    """Whether a key file is a table (JSON Lines, ``--column``, or a CSV header naming
    ``default_column``) rather than a plain list of keys."""
    if reader.format == "jsonl" or column is not None:
        return True
    return default_column.lower() in (h.lower() for h in reader.header)


def key_items(reader: Reader, column: str | None, default_column: str) -> Iterator[Any]:
    """The keys of a key file: one a line, or one column of a CSV (``--column``).

    Without ``--column`` a file whose header line names ``default_column`` (ID or UserData)
    is read as a CSV; any other file is a plain list, every non-blank line one key.
    """
    if reader.format == "jsonl":
        name = column or default_column
        for line, raw in reader.records():
            if not isinstance(raw, dict):
                yield raw
                continue
            value = next((v for k, v in raw.items() if k.lower() == name.lower()), None)
            yield _key(value, raw, line)
        return
    if key_file_has_header(reader, column, default_column):
        header_lower = [h.lower() for h in reader.header]
        wanted = (column or default_column).lower()
        if wanted not in header_lower:
            raise InputError(f"{reader.path} has no column {column!r}; columns: {reader.header}")
        position = header_lower.index(wanted)
        name = reader.header[position]
        for line, raw in reader.records():
            yield _key(raw[name], raw, line) if isinstance(raw, dict) else raw
        return
    # A plain list: the line taken for a header is the first key.
    try:
        for number, text in enumerate(itertools.chain([reader.first_line], reader.stream), 1):
            key = text.strip()
            if key:
                yield _key(key, {default_column: key}, number)
    except UnicodeDecodeError as exc:
        raise reader.decode_error(exc) from exc


def _key(value: Any, raw: dict[str, Any], line: int) -> KeyItem:
    text = "" if value is None else str(value).strip()
    item = KeyItem(text)
    item.raw = raw
    item.line = line
    return item
