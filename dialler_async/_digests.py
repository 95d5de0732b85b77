"""Compact sets of 64-bit digests: "have I seen this key before?" for millions of keys.

A Python ``set`` of ints costs ~70 bytes per key, so a million-row job would hold ~70 MB just to
notice repeated UserData. :class:`DigestSet` stores each key as one unsigned 64-bit digest in
open-addressed ``array('Q')`` tables: ~11-21 bytes per key, ~15 on average. The keys are spread
over 256 tables by their top byte, so growing one table copies 1/256 of the set, never the whole
of it: the memory peak while growing stays small too. A table doubles when it grows: every key
is then copied about once in all (a smaller step saves a few bytes per key but copies each key
four times, and a bulk job adds one or two keys per row).

Digests are exact for integer keys (IDs) and, for strings, collide with probability ~2^-64 per
pair (Python's 64-bit SipHash, salted per process; a per-job set never outlives its process).
"""

from __future__ import annotations

import hashlib
from array import array
from typing import Final

import orjson

_MASK: Final = (1 << 64) - 1
# An odd multiplier is a bijection modulo 2^64 (so distinct hashes stay distinct) that spreads
# sequential IDs over every table (Fibonacci hashing).
_SPREAD: Final = 0x9E3779B97F4A7C15
_TABLES: Final = 256
_MIN_SLOTS: Final = 16
_MAX_LOAD: Final = 0.75
_GROWTH: Final = 2.0
_SORTED: Final = orjson.OPT_SORT_KEYS
_SORTED_ANY_KEYS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def key_digest(key: object) -> int:
    """A process-local digest of a UserData or ID, for :class:`DigestSet`."""
    # hash() of an int is reduced modulo 2**61 - 1 (and hash(-1) == hash(-2)): an ID in 64
    # bits is its own (spread) digest instead, so distinct IDs never share one.
    value = key if type(key) is int and 0 <= key < 1 << 64 else hash(key)
    return ((value & _MASK) * _SPREAD) & _MASK


def stable_digest(*parts: object) -> int:
    """A digest that is the same in every process and every run (for checkpoints).

    Raises ``TypeError`` for values that have no JSON form."""
    try:
        # Text keys only (every request body): the same bytes as with OPT_NON_STR_KEYS, which
        # takes orjson's slower path for every dict (tests/test_checkpoint.py compares them).
        data = orjson.dumps(parts, option=_SORTED)
    except TypeError:
        data = orjson.dumps(parts, option=_SORTED_ANY_KEYS)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class DigestSet:
    """A set of unsigned 64-bit integers at ~11-21 bytes each (see the module docstring)."""

    __slots__ = ("_counts", "_has_zero", "_tables")

    def __init__(self) -> None:
        self._tables = [array("Q", bytes(8 * _MIN_SLOTS)) for _ in range(_TABLES)]
        self._counts = [0] * _TABLES
        self._has_zero = False  # 0 marks an empty slot, so the digest 0 is kept aside

    def __len__(self) -> int:
        return sum(self._counts) + self._has_zero

    def add(self, digest: int) -> bool:
        """Add ``digest``; True if it was new, False if it was already in the set."""
        if digest == 0:
            new = not self._has_zero
            self._has_zero = True
            return new
        number = digest >> 56
        table = self._tables[number]
        size = len(table)
        slot = digest % size
        while True:
            present = table[slot]
            if present == 0:
                break
            if present == digest:
                return False
            slot += 1
            if slot == size:
                slot = 0
        table[slot] = digest
        count = self._counts[number] = self._counts[number] + 1
        if count > size * _MAX_LOAD:
            self._tables[number] = _rehashed(table, int(size * _GROWTH) + 1)
        return True

    def __contains__(self, digest: int) -> bool:
        if digest == 0:
            return self._has_zero
        table = self._tables[digest >> 56]
        size = len(table)
        slot = digest % size
        while True:
            present = table[slot]
            if present == 0:
                return False
            if present == digest:
                return True
            slot += 1
            if slot == size:
                slot = 0

    def nbytes(self) -> int:
        """The bytes held by the tables (for memory tests and benchmarks)."""
        return sum(t.itemsize * len(t) for t in self._tables)


def _rehashed(table: array[int], size: int) -> array[int]:
    grown = array("Q", bytes(8 * size))
    for digest in table:
        if digest:
            slot = digest % size
            while grown[slot]:
                slot += 1
                if slot == size:
                    slot = 0
            grown[slot] = digest
    return grown
