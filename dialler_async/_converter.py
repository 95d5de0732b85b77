"""Serialization rules: the only place that knows the API's PascalCase spelling.

Two cattrs converters share one set of hooks:

* ``input_converter`` structures what users hand us (dicts from CSV/CRM exports) with
  detailed validation, so a bad row is reported with every problem named;
* ``wire_converter`` structures server responses fast, and unstructures models to JSON bodies.

Value rules (both directions, from the field table in ``_fields.py``):

Values are never silently changed: what cannot be sent as given is INVALID with the reason.

* strings accept ``str``, integers and integral floats (a CSV ``PhoneNumber1`` read as
  ``4930123456.0`` is sent as ``"4930123456"``, never ``"4930123456.0"`` or ``"1e+16"``); any
  other value (a fraction, NaN, a bool) is refused;
* integers accept ``int`` and integral strings/floats; floats accept finite numbers and numeric
  strings (NaN, infinities and overflowing ``1e999`` are refused; a comma is a decimal comma
  only where that is unambiguous, see :func:`parse_number`); booleans accept ``bool``,
  ``0``/``1`` and ``"true"``/``"false"``;
* an empty string in a non-string field means null (CSV cells);
* date-times accept ``datetime`` and ISO-8601 strings (``T`` or space, fractional seconds,
  ``Z``/offsets) and are sent as ``YYYY-MM-DDTHH:MM:SS`` wall-clock time; an aware one is first
  converted to the client's ``server_timezone`` (:func:`in_zone`, applied by the operations);
* unknown keys are kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, tzinfo
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.errors import ClassValidationError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from . import _fields as F
from ._exceptions import ContactValidationError
from ._models import (
    UNSET,
    Campaign,
    Contact,
    ContactUpdate,
    HistoryEntry,
    NewContact,
    ResultCode,
    UnsetType,
)

T = TypeVar("T")
JSONDict = dict[str, Any]

_TRUE: Final = frozenset({"true", "1", "yes"})
_FALSE: Final = frozenset({"false", "0", "no"})


def _structure_str(value: Any, _: type) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 4930123456.0 -> "4930123456" (str() would keep ".0")
    if isinstance(value, float):
        raise ValueError(f"expected text, got the number {value!r} (send it as text)")
    raise ValueError(f"expected text, got {type(value).__name__}")


_DIGIT_GROUPS: Final = re.compile(r"[+-]?[1-9]\d{0,2}(,\d{3})+")


def parse_number(text: str, *, thousands: str | None = None) -> float:
    """A finite number from text. ``thousands``: the thousands separator in use ("," or "."),
    if one is; then the other one is the decimal mark.

    Without ``thousands``, a comma is a decimal comma only where it cannot be a thousands
    separator: ``"12,50"`` is 12.5, but ``"1,234"`` (1234 or 1.234?) and ``"1,234.5"`` are
    refused. Raises ``ValueError`` naming the problem.
    """
    raw = text.strip()
    if thousands is not None:
        decimal = "." if thousands == "," else ","
        cleaned = raw.replace(thousands, "").replace(decimal, ".")
    elif "," in raw:
        if "." in raw or raw.count(",") > 1 or _DIGIT_GROUPS.fullmatch(raw):
            raise ValueError(
                f"{text!r} is ambiguous (a decimal comma or a thousands separator?); "
                "write it without grouping or configure the thousands separator"
            )
        cleaned = raw.replace(",", ".")
    else:
        cleaned = raw
    try:
        number = float(cleaned)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {text!r}")
    return number


def _structure_int(value: Any, _: type) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {value!r}")


def _structure_float(value: Any, _: type) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        return number
    if isinstance(value, str):
        return parse_number(value)
    raise ValueError(f"expected a number, got {value!r}")


def _structure_bool(value: Any, _: type) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if value == "":
        return None
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_datetime(value: Any) -> datetime | None:
    """Parse an API date-time (or pass a ``datetime`` through); ``None``/``""`` → ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a date-time like 2026-05-01T09:30:00, got {value!r}")


def in_zone(obj: T, zone: tzinfo | None) -> T:
    """``obj`` (an attrs model) with every aware date-time converted to ``zone``'s wall-clock
    time (None: the machine's local zone), so ``09:30+02:00`` and ``07:30Z`` are sent alike."""
    model: Any = obj
    names = _DATETIME_FIELDS.get(type(model))
    if names is None:
        names = _DATETIME_FIELDS[type(model)] = tuple(
            a.name for a in attrs.fields(type(model)) if "datetime" in str(a.type)
        )
    changes = {}
    for name in names:
        value = getattr(model, name)
        if isinstance(value, datetime) and value.tzinfo is not None:
            changes[name] = value.astimezone(zone).replace(tzinfo=None)
    return attrs.evolve(model, **changes) if changes else obj


_DATETIME_FIELDS: dict[type, tuple[str, ...]] = {}


def format_datetime(value: datetime) -> str:
    """The API's ``YYYY-MM-DDTHH:MM:SS`` form (wall-clock time; sub-seconds and offset dropped)."""
    return value.strftime(F.DATETIME_FORMAT)


def _structure_datetime(value: Any, _: type) -> datetime | None:
    return parse_datetime(value)


def _unstructure_unset(value: UnsetType) -> None:  # pragma: no cover - always omitted
    raise TypeError("UNSET must be omitted, not serialized")


def _with_unset(hook: Callable[[Any, type], Any]) -> Callable[[Any, type], Any]:
    def structure(value: Any, type_: type) -> Any:
        return UNSET if value is UNSET else hook(value, type_)

    return structure


_VALUE_HOOKS: Final[dict[Any, Callable[[Any, type], Any]]] = {
    str | None: _structure_str,
    int | None: _structure_int,
    float | None: _structure_float,
    bool | None: _structure_bool,
    datetime | None: _structure_datetime,
}


def _renames(fields: Iterable[F.Field], cls: type) -> dict[str, Any]:
    names = {a.name for a in attrs.fields(cls)}
    return {f.py: override(rename=f.api) for f in fields if f.py in names}


# Nested classes first: a generated hook captures the hooks of its field types when built.
_SPECS: Final[dict[type, tuple[F.Field, ...]]] = {
    ResultCode: F.RESULT_CODE_FIELDS,
    HistoryEntry: F.HISTORY_FIELDS,
    NewContact: F.IMPORT_FIELDS,
    ContactUpdate: (F.SERVER_FIELDS[0], *F.IMPORT_FIELDS),
    Contact: F.CONTACT_FIELDS,
    Campaign: F.CAMPAIGN_FIELDS,
}
_NESTED: Final[dict[type, dict[str, str]]] = {
    Contact: {"result_code": F.RESULT_CODE_KEY, "history": F.HISTORY_KEY},
    HistoryEntry: {"statistics": F.STATISTICS_KEY},
}


def _known_keys(cls: type) -> frozenset[str]:
    return frozenset({f.api for f in _SPECS[cls]} | set(_NESTED.get(cls, {}).values()))


def _build(detailed: bool) -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=detailed)
    for type_, hook in _VALUE_HOOKS.items():
        conv.register_structure_hook(type_, hook)
        conv.register_structure_hook(type_ | UnsetType, _with_unset(hook))
    conv.register_unstructure_hook(datetime, format_datetime)
    conv.register_unstructure_hook(UnsetType, _unstructure_unset)

    for cls, spec in _SPECS.items():
        overrides = _renames(spec, cls)
        overrides.update({py: override(rename=api) for py, api in _NESTED.get(cls, {}).items()})
        overrides["extra"] = override(omit=True)
        base_structure: Callable[[Mapping[str, Any], Any], Any] = make_dict_structure_fn(
            cls, conv, **overrides
        )
        # Requests send only what the user set: None (NewContact) / UNSET (ContactUpdate)
        # are the defaults, so "omit if default" drops exactly the unset fields.
        base_unstructure: Callable[[Any], JSONDict] = make_dict_unstructure_fn(
            cls, conv, _cattrs_omit_if_default=cls in (NewContact, ContactUpdate), **overrides
        )
        conv.register_structure_hook(cls, _keeping_extra(base_structure, _known_keys(cls)))
        conv.register_unstructure_hook(cls, _writing_extra(base_unstructure))
    return conv


def _keeping_extra(
    base: Callable[[Mapping[str, Any], Any], T], known: frozenset[str]
) -> Callable[[Mapping[str, Any], Any], T]:
    def structure(data: Mapping[str, Any], type_: Any) -> T:
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        obj = base(data, type_)
        unknown = data.keys() - known
        if unknown:
            # The models are frozen; setting the one field cattrs was told to skip is the
            # cheapest way to attach the leftovers without copying the whole dict first.
            object.__setattr__(obj, "extra", {k: data[k] for k in unknown})
        return obj

    return structure


def _writing_extra(base: Callable[[Any], JSONDict]) -> Callable[[Any], JSONDict]:
    def unstructure(obj: Any) -> JSONDict:
        out = base(obj)
        if obj.extra:
            for key, value in obj.extra.items():
                out.setdefault(key, value)
        return out

    return unstructure


input_converter: Final = _build(detailed=True)
wire_converter: Final = _build(detailed=False)

_PY_TO_API: Final = {f.py: f.api for f in F.CONTACT_FIELDS}
_API_KEYS: Final = frozenset(F.BY_API)


def _api_spelling(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept the SDK's snake_case names in user dicts too (``name`` → ``Name``)."""
    if data.keys() <= _API_KEYS:
        return data
    return {_PY_TO_API.get(k, k) if k not in _API_KEYS else k: v for k, v in data.items()}


def _problems(exc: ClassValidationError) -> list[str]:
    out: list[str] = []
    for sub in exc.exceptions:
        notes = getattr(sub, "__notes__", [])
        name = getattr(notes[0], "name", None) if notes else None
        field = F.BY_PY[name].api if name in F.BY_PY else (name or "?")
        out.append(f"{field}: {sub}")
    return out


def _structure_input(data: Any, cls: type[T], key_field: str) -> T:
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ContactValidationError(
            [f"expected a mapping or {cls.__name__}, got {type(data).__name__}"]
        )
    data = _api_spelling(data)
    try:
        return input_converter.structure(data, cls)
    except ClassValidationError as exc:
        key = data.get(key_field)
        raise ContactValidationError(
            _problems(exc), key=key if isinstance(key, str | int) else None
        ) from exc


def to_new_contact(data: NewContact | Mapping[str, Any]) -> NewContact:
    """A :class:`NewContact` from itself or a dict in the API's (or the SDK's) spelling."""
    return _structure_input(data, NewContact, "UserData")


def to_update(data: ContactUpdate | Mapping[str, Any]) -> ContactUpdate:
    """A :class:`ContactUpdate` from itself or a dict; keys absent from the dict stay UNSET."""
    return _structure_input(data, ContactUpdate, "UserData")


def unstructure(obj: Any) -> JSONDict:
    """A model as the API's JSON object (request body or round trip)."""
    result: JSONDict = wire_converter.unstructure(obj)
    return result


def structure(data: Any, cls: type[T]) -> T:
    """A model from the server's JSON object; raises ``ValueError``/``TypeError`` on bad shapes."""
    try:
        return wire_converter.structure(data, cls)
    except (KeyError, AttributeError) as exc:
        raise ValueError(f"malformed {cls.__name__} record: {exc!r}") from exc
