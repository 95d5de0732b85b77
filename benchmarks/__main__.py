"""``python -m benchmarks`` (full run) or ``python -m benchmarks --quick`` (smoke run).

Writes ``OUT/latest.json`` (``quick.json`` with ``--quick``), the markdown tables next to it,
``OUT/throughput_vs_concurrency.png`` and cProfile listings. OUT is ``benchmarks/results``
(``benchmarks/results/quick`` with ``--quick``, so a smoke run never overwrites a full one).
Exits 1 only when a benchmark broke (an exception, a lost item), never because a number missed
its target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson

from benchmarks import (
    _breakdown,
    _conversion,
    _faults,
    _instructions,
    _latency,
    _limiter,
    _memory,
    _overhead,
    _phone,
    _profile,
    _rate,
    _report,
)
from benchmarks._config import FULL, QUICK, Sizes
from benchmarks._procs import pin_client

SECTIONS = (
    "overhead",
    "breakdown",
    "conversion",
    "latency",
    "memory",
    "rate",
    "faults",
    "profile",
    "limiter",
    "phones",
    "instructions",
)
RESULTS = Path(__file__).resolve().parent / "results"
_PACKAGES = (
    "aiohttp",
    "yarl",
    "multidict",
    "httpx",
    "httpcore",
    "cattrs",
    "attrs",
    "orjson",
    "phonenumbers",
    "psutil",
    "matplotlib",
    "aiolimiter",
    "uvloop",
    "pyinstrument",
)


def log(message: str) -> None:
    print(message, flush=True)


def revision() -> dict[str, Any]:
    """The git commit the SDK was measured at, and whether dialler_async/ had local changes."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
            )
        except OSError:
            return ""
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "sdk_dirty": bool(git("status", "--porcelain", "--", "dialler_async")),
    }


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": packages,
    }


def _section(name: str, sizes: Sizes, res: dict[str, Any], out: Path) -> Any:
    runners: dict[str, Callable[[], Any]] = {
        "overhead": lambda: asyncio.run(_overhead.run(sizes, log)),
        "breakdown": lambda: asyncio.run(_breakdown.run(sizes, log)),
        "conversion": lambda: _conversion.run(
            sizes,
            log,
            res.get("overhead", {})
            .get("contenders", {})
            .get("sdk", {})
            .get("cpu_us", {})
            .get("median"),
        ),
        "latency": lambda: asyncio.run(_latency.run(sizes, log)),
        "memory": lambda: _memory.run(sizes, log),
        "rate": lambda: asyncio.run(_rate.run(sizes, log)),
        "faults": lambda: asyncio.run(_faults.run(sizes, log)),
        "profile": lambda: asyncio.run(_profile.run(sizes, log, out)),
        "limiter": lambda: asyncio.run(_limiter.run(sizes, log)),
        "phones": lambda: asyncio.run(_phone.run(sizes, log)),
        "instructions": lambda: _instructions.run(sizes.instruction_reps, log),
    }
    return runners[name]()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run for CI")
    parser.add_argument(
        "--out",
        type=Path,
        help="directory for the results (default: benchmarks/results, or its quick/ with --quick)",
    )
    parser.add_argument(
        "--only", help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin client and server to separate CPUs"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    chosen = args.only.split(",") if args.only else list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    out: Path = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    stem = "quick" if args.quick else "latest"
    started = time.perf_counter()
    host = machine()  # before pinning narrows this process's CPU set
    pinned = None if args.no_pin else pin_client()
    res: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "cpu_pinning": pinned,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": host,
        "revision": revision(),
        "sizes": sizes._asdict(),
        "errors": {},
    }
    for name in SECTIONS:
        if name not in chosen:
            continue
        log(f"== {name} ({time.perf_counter() - started:.0f} s)")
        t0 = time.perf_counter()
        try:
            res[name] = _section(name, sizes, res, out)
        except Exception:
            traceback.print_exc()
            res["errors"][name] = traceback.format_exc()
        res.setdefault("durations", {})[name] = time.perf_counter() - t0
        (out / f"{stem}.json").write_bytes(_dump(res))
    res["targets"] = _report.targets(res)
    res["total_seconds"] = time.perf_counter() - started
    (out / f"{stem}.json").write_bytes(_dump(res))
    text = _report.markdown(res)
    (out / f"{stem}.md").write_text(text, encoding="utf-8")
    if "latency" in res and _report.can_plot():
        _report.plot(res, out / "throughput_vs_concurrency.png")
    elif "latency" in res:
        log("no plot: matplotlib is not installed (pip install -e '.[bench]')")
    log("\n" + text)
    log(f"wrote {out / (stem + '.json')} in {res['total_seconds']:.0f} s")
    return 1 if res["errors"] else 0


def _dump(res: dict[str, Any]) -> bytes:
    return orjson.dumps(res, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


if __name__ == "__main__":
    sys.exit(main())
