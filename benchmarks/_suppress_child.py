"""Child process of the phone benchmark: build a suppression list of N numbers, report its
memory (peak RSS while building, over the RSS before) and speed as one JSON line on stdout.

Run in a fresh process so the peak is this list's alone: ``python -m benchmarks._suppress_child
N``; ``N dedupe`` measures ``dedupe_phone``'s set of numbers seen instead. The numbers are
generated lazily (never held as a list), as a file would be read.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import orjson

from dialler_async import PhonePolicy, SuppressionList


def _status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    """Start ``VmHWM`` again from the current RSS (Linux: 5 > /proc/self/clear_refs), so the
    peak is the build's, not the imports' before it."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def numbers(n: int, national: bool) -> Iterator[str]:
    for i in range(n):
        # Spread over Berlin and mobile ranges, in the forms a DNC export has them.
        digits = f"{(i * 7_919) % 100_000_000:08d}"
        if national:
            yield f"030 {digits}\n"
        else:
            yield f"+4930{digits}\n" if i % 2 else f"+49171{digits[:7]}\n"


def dedupe(n: int) -> dict[str, float | int]:
    """Memory of ``dedupe_phone``'s numbers-seen set (a DigestSet) after ``n`` distinct
    numbers, against the plain ``set`` of ints it replaced (both measured here, one after the
    other, each as the RSS it adds)."""
    from dialler_async._digests import DigestSet, key_digest

    keys = (4930_0000_0000 + (i * 7_919) % 10**9 for i in range(n))
    _reset_peak()
    before = _status_mb("VmRSS")
    seen = DigestSet()
    for key in keys:
        seen.add(key_digest(key))
    digest_mb = _status_mb("VmRSS") - before
    digest_peak = _status_mb("VmHWM") - before
    tables = seen.nbytes() / 2**20
    del seen
    before = _status_mb("VmRSS")
    plain = {4930_0000_0000 + (i * 7_919) % 10**9 for i in range(n)}
    set_mb = _status_mb("VmRSS") - before
    return {
        "numbers": n,
        "digest_set_rss_mb": digest_mb,
        "digest_set_peak_mb": digest_peak,
        "digest_set_tables_mb": tables,
        "bytes_per_number": tables * 2**20 / n,
        "python_set_rss_mb": set_mb if len(plain) else 0.0,
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[2] == "dedupe":
        sys.stdout.write(orjson.dumps(dedupe(int(sys.argv[1]))).decode() + "\n")
        return
    n, national = int(sys.argv[1]), len(sys.argv) > 2 and sys.argv[2] == "national"
    policy = PhonePolicy("DE")
    SuppressionList(["+49301234567"], policy)  # load the metadata before measuring
    _reset_peak()
    before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    dnc = SuppressionList(numbers(n, national), policy)
    build = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    after = _status_mb("VmRSS")
    keys = [4930_0000_0000 + i for i in range(100_000)]
    t0 = time.perf_counter()
    hits = sum(1 for k in keys if k in dnc)
    lookup = (time.perf_counter() - t0) / len(keys)
    result = {
        "numbers": n,
        "distinct": len(dnc),
        "form": "national" if national else "e164",
        "index_mb": dnc.nbytes / 2**20,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "peak_rss_mb": peak,
        "peak_growth_mb": peak - before,
        "build_s": build,
        "build_us_per_number": build / n * 1e6,
        "lookup_us": lookup * 1e6,
        "hits": hits,
    }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
