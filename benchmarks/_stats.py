"""Interleaved repetitions and their summaries: medians, spreads and ratios."""

from __future__ import annotations

import gc
import statistics
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from benchmarks._contenders import Run

Contender = Callable[[], Awaitable[Run]]
Log = Callable[[str], None]


async def interleave(
    contenders: Mapping[str, Contender], reps: int, *, warmup: bool = True, log: Log = print
) -> dict[str, list[Run]]:
    """Run A, B, C, A, B, C, ... ``reps`` times (after one unrecorded warm-up round)."""
    runs: dict[str, list[Run]] = {name: [] for name in contenders}
    for rep in range(-1 if warmup else 0, reps):
        for name, contender in contenders.items():
            gc.collect()
            run = await contender()
            if run.ok != run.n:
                raise RuntimeError(f"{name}: only {run.ok} of {run.n} succeeded")
            if rep >= 0:
                runs[name].append(run)
            label = "warm-up" if rep < 0 else f"rep {rep + 1}/{reps}"
            log(f"    {label:<10} {name:<12} {run.rate:9.0f} contacts/s {run.cpu_us:8.1f} µs CPU")
    return runs


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and the relative spread ``(max - min) / median`` in percent."""
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    return {
        "median": med,
        "min": lo,
        "max": hi,
        "spread_pct": (hi - lo) / med * 100 if med else 0.0,
    }


def summarize(runs: Sequence[Run]) -> dict[str, Any]:
    return {
        "n": runs[0].n,
        "reps": len(runs),
        "rate": spread([r.rate for r in runs]),
        "cpu_us": spread([r.cpu_us for r in runs]),
        "elapsed": spread([r.elapsed for r in runs]),
    }


def ratio(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """``a / b``: of the medians, and the median/min/max of the per-repetition ratios."""
    paired = [x / y for x, y in zip(a, b, strict=True) if y]
    mb = statistics.median(b)
    return {
        "of_medians": statistics.median(a) / mb if mb else 0.0,
        "paired_median": statistics.median(paired),
        "paired_min": min(paired),
        "paired_max": max(paired),
    }


def rates(runs: Sequence[Run]) -> list[float]:
    return [r.rate for r in runs]


def cpus(runs: Sequence[Run]) -> list[float]:
    return [r.cpu_us for r in runs]
