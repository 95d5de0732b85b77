"""Do-not-call lists as a compact index: a sorted array of 64-bit integers.

An E.164 number has at most 15 digits, so its digits fit in a signed 64-bit integer: a list of
N numbers costs 8·N bytes (16 MB for two million), is searched by bisection in O(log N), and
is shared read-only by every worker. A Python ``set`` of the same strings would cost ~10 times
as much.

Numbers are normalised the way rows are (:func:`._phones.number_key`), so ``+49 30 1234567``,
``030 1234567`` (region DE) and ``0049301234567`` are one entry.
"""

from __future__ import annotations

import array
import bisect
import heapq
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Final

from ._policy import PhonePolicy

_CHUNK: Final = 1 << 18
# A build looks at its stop event once every _STOP_MASK + 1 (1,024) numbers read or merged.
_STOP_MASK: Final = (1 << 10) - 1


class BuildStopped(Exception):
    """A build whose ``_stop`` event was set gave up (the job that wanted it was cancelled)."""


def _check(stop: threading.Event, count: int) -> None:
    if not count & _STOP_MASK and stop.is_set():
        raise BuildStopped


class SuppressionList:
    """A do-not-call list, normalised with a :class:`PhonePolicy`'s region.

    ``numbers``: any iterable of numbers (text or int). Entries that are not phone numbers are
    counted in ``rejected`` and left out (they can never match a row's number). ``in`` takes an
    E.164 key (:attr:`Number.key`). Build it once and pass it to as many jobs as you like.
    """

    __slots__ = ("_keys", "region", "rejected")

    def __init__(
        self,
        numbers: Iterable[str | int | float],
        policy: PhonePolicy,
        *,
        _stop: threading.Event | None = None,
    ) -> None:
        self.region = policy.region
        self.rejected = 0
        self._keys = _sorted_unique(self._each_key(numbers, _stop), _stop)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        policy: PhonePolicy,
        *,
        encoding: str = "utf-8-sig",
        _stop: threading.Event | None = None,
    ) -> SuppressionList:
        """One number a line; blank lines and lines starting with ``#`` are skipped. UTF-8
        (with or without a BOM); a file that starts with a UTF-16 BOM (a spreadsheet's
        "Unicode text") is read as UTF-16."""
        if encoding == "utf-8-sig":
            with open(path, "rb") as raw:
                if raw.read(2) in (b"\xff\xfe", b"\xfe\xff"):
                    encoding = "utf-16"
        with open(path, encoding=encoding) as fh:
            lines = (line for line in fh if line.strip() and not line.lstrip().startswith("#"))
            return cls(lines, policy, _stop=_stop)

    def _each_key(
        self, numbers: Iterable[str | int | float], stop: threading.Event | None
    ) -> Iterator[int]:
        from ._phones import number_key  # brings phonenumbers: only once a list is built

        region = self.region
        for count, value in enumerate(numbers):
            if stop is not None:
                _check(stop, count)
            if isinstance(value, float) and value.is_integer() and value > 0:
                value = int(value)  # a spreadsheet's number: read as its digits, as rows are
            if isinstance(value, int) and not isinstance(value, bool):
                value = f"+{value}"  # an integer is taken as E.164 digits without the +
            key = number_key(value, region) if isinstance(value, str) else None
            if key is None:
                self.rejected += 1
            else:
                yield key

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, int):
            return False
        keys = self._keys
        i = bisect.bisect_left(keys, key)
        return i < len(keys) and keys[i] == key

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        """Bytes the index holds (8 per distinct number)."""
        return self._keys.itemsize * len(self._keys)

    def __repr__(self) -> str:
        return f"SuppressionList({len(self)} numbers, region={self.region!r})"


def _sorted_unique(keys: Iterator[int], stop: threading.Event | None) -> array.array[int]:
    """Sort in chunks and merge, so building never holds more than one chunk as Python ints
    (a plain ``sorted()`` of two million ints peaks near 90 MB; this stays near 2 x 16 MB)."""
    runs: list[array.array[int]] = []
    chunk: list[int] = []
    for key in keys:
        chunk.append(key)
        if len(chunk) == _CHUNK:
            chunk.sort()
            runs.append(array.array("q", chunk))
            chunk = []
    chunk.sort()
    runs.append(array.array("q", chunk))
    del chunk
    out = array.array("q")
    last = None
    for count, key in enumerate(heapq.merge(*runs)):
        if stop is not None:
            _check(stop, count)
        if key != last:
            out.append(key)
            last = key
    return out
