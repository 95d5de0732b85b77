"""(3) Memory: peak RSS streaming 10k / 100k / 1M contacts, each size in a fresh process."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from typing import Any

import orjson

from benchmarks._config import Sizes
from benchmarks._procs import ROOT, fast_server
from benchmarks._stats import Log


def _child(mode: str, n: int, base: str, concurrency: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks._memory_child", mode, str(n), base, str(concurrency)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, capture_output=True, cwd=ROOT, env=env, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv} failed: {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def run(sizes: Sizes, log: Log) -> dict[str, Any]:
    c = sizes.concurrency
    plan: list[tuple[str, int]] = []
    for n in sizes.memory_sizes:
        plan.append(("sdk", n))
        if n <= sizes.memory_naive_max:
            plan.append(("naive", n))
    results: dict[str, dict[int, list[dict[str, Any]]]] = {"sdk": {}, "naive": {}}
    with fast_server() as server:
        base = server.url + "/rest/v1.0"
        for rep in range(sizes.memory_reps):
            for mode, n in plan:
                # The largest size runs once: it alone takes minutes.
                if rep > 0 and n == max(sizes.memory_sizes):
                    continue
                r = _child(mode, n, base, c)
                log(
                    f"    rep {rep + 1} {mode:<6} {n:>9,} contacts: peak RSS "
                    f"{r['peak_rss_mb']:7.1f} MB (before run {r['rss_before_mb']:.1f} MB), "
                    f"{r['rate']:.0f}/s"
                )
                results[mode].setdefault(n, []).append(r)
    table: dict[str, dict[str, Any]] = {}
    for mode, by_size in results.items():
        table[mode] = {
            str(n): {
                "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
                "peak_rss_mb_runs": [r["peak_rss_mb"] for r in rs],
                "rss_before_mb": statistics.median(r["rss_before_mb"] for r in rs),
                "rate": statistics.median(r["rate"] for r in rs),
                "elapsed": statistics.median(r["elapsed"] for r in rs),
            }
            for n, rs in sorted(by_size.items())
        }
    failures = _child("failures", 1000, "-", c)
    log(f"    1,000 kept failures (1 MiB answers): {failures['bytes_per_failure']:.0f} B each")
    smallest, largest = str(min(sizes.memory_sizes)), str(max(sizes.memory_sizes))
    growth = table["sdk"][largest]["peak_rss_mb"] - table["sdk"][smallest]["peak_rss_mb"]
    naive_sizes = sorted(int(n) for n in table["naive"])
    naive_growth = (
        table["naive"][str(naive_sizes[-1])]["peak_rss_mb"]
        - table["naive"][str(naive_sizes[0])]["peak_rss_mb"]
        if len(naive_sizes) > 1
        else None
    )
    return {
        "concurrency": c,
        "sizes": list(sizes.memory_sizes),
        "naive_capped_at": sizes.memory_naive_max,
        "modes": table,
        "sdk_growth_mb": growth,
        "sdk_growth_between": [int(smallest), int(largest)],
        "naive_growth_mb": naive_growth,
        "naive_growth_between": [naive_sizes[0], naive_sizes[-1]] if naive_sizes else None,
        "kept_failures": failures,
    }
