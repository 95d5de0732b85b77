"""The adaptive benchmark's judgement, on canned numbers: which runs were CPU-starved, when the
latency recovered, and that the report names both (no timing here)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from benchmarks import _adaptive as bench


def run(
    client_cpu: float = 0.2, lag_ms: float = 1.0, server_cpu: float | None = 0.2
) -> dict[str, Any]:
    return {"client_cpu": client_cpu, "loop_lag_ms": lag_ms, "server_cpu": server_cpu}


@pytest.mark.parametrize(
    ("kwargs", "starved"),
    [
        ({}, []),
        ({"client_cpu": 0.9}, ["client CPU 90% of a core"]),
        ({"lag_ms": 7.5}, ["client loop lag 7.5 ms"]),
        ({"server_cpu": 0.95}, ["server CPU 95% of a core"]),
        ({"server_cpu": None}, []),  # no /proc: unknown is not starved
        (
            {"client_cpu": 1.0, "server_cpu": 0.99},
            ["client CPU 100% of a core", "server CPU 99% of a core"],
        ),
    ],
)
def test_starvation(kwargs: dict[str, Any], starved: list[str]) -> None:
    assert bench.starvation(run(**kwargs)) == starved


def test_cpu_seconds_of_this_process() -> None:
    if not os.path.exists(f"/proc/{os.getpid()}/stat"):
        pytest.skip("no /proc")
    seconds = bench._cpu_seconds(os.getpid())
    assert seconds is not None and seconds > 0
    assert bench._cpu_seconds(2**22 + 12345) is None  # no such process


def test_recovered() -> None:
    # drop at 8 s, restore at 18 s; 40 ms limit; the buckets are (start, p95 ms, answers/s)
    late = [(8.0, 90.0, 100.0), (8.5, 45.0, 100.0)] + [
        (8.0 + 0.5 * k, 30.0, 100.0) for k in range(2, 20)
    ]
    assert bench._recovered(late, 8.0, 18.0, 40.0) == 1.5  # the end of the 9.0 s bucket
    never = [(8.0 + 0.5 * k, 30.0, 100.0) for k in range(19)] + [(17.5, 41.0, 100.0)]
    assert bench._recovered(never, 8.0, 18.0, 40.0) is None


def test_markdown_names_the_starved_runs_and_the_oracle() -> None:
    row = {
        "throughput": 300.0,
        "p50_ms": 22.0,
        "p95_ms": 30.0,
        "p99_ms": 35.0,
        "client_cpu": 0.3,
        "loop_lag_ms": 1.0,
        "server_cpu": 0.2,
        "starved_runs": 0,
    }
    res = {
        "steady": {
            "n": 100,
            "reps": 1,
            "summary": {"fixed 64": row, "adaptive": row | {"starved_runs": 1}},
            "targets": {
                "throughput_vs_best_fixed": 1.0,
                "p95_over_service": 1.5,
                "fixed64_p95_over_service": 1.5,
                "fixed64_vs_ceiling": 0.75,
                "starved_runs": 1,
                "runs_total": 2,
            },
        },
        "drop": {
            "n": 100,
            "drop_at": 8.0,
            "restore_at": 18.0,
            "runs": {
                "adaptive": {
                    "rate_before": 1.0,
                    "rate_during": 1.0,
                    "rate_after": 1.0,
                    "p95_during_ms": 38.0,
                    "recovered_after_s": 1.5,
                    "starved": [],
                },
                "fixed 4": {
                    "rate_before": 1.0,
                    "rate_during": 1.0,
                    "rate_after": 1.0,
                    "p95_during_ms": 25.0,
                    "recovered_after_s": None,
                    "starved": ["client loop lag 6.0 ms"],
                },
            },
        },
    }
    text = bench.markdown(res)
    assert "1 of 2 runs were CPU-starved" in text
    assert "0.75 of the modelled ceiling" in text
    assert "| adaptive | 1 | 1 | 1 | 38.0 | 1.5 s | no |" in text
    assert "| fixed 4 | 1 | 1 | 1 | 25.0 | never | client loop lag 6.0 ms |" in text
