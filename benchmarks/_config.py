"""Sizes of the full run and of the ``--quick`` smoke run."""

from __future__ import annotations

from typing import NamedTuple

#: The fast server accepts any token; the emulator wrapper prints its own.
TOKEN = "bench-token"  # noqa: S105  (not a secret: the fast server checks none)


class Sizes(NamedTuple):
    reps: int
    concurrency: int
    overhead_n: int
    overhead_httpx_n: int
    latency: float
    latency_concurrencies: tuple[int, ...]
    latency_rounds: int
    latency_httpx_at: tuple[int, ...]
    latency_httpx_rounds: int
    memory_sizes: tuple[int, ...]
    memory_naive_max: int
    memory_reps: int
    rate_rates: tuple[float, ...]
    rate_seconds: float
    rate_reps: int
    fault_n: int
    fault_probabilities: tuple[float, ...]
    fault_reps: int
    conversion_n: int
    profile_n: int
    limiter_rates: tuple[float, ...]
    limiter_seconds: float
    limiter_uncontended_n: int
    limiter_reps: int
    limiter_cut_callers: int
    phone_cpu_n: int
    suppress_n: int
    suppress_national_n: int
    #: callgrind counts per contender (section "instructions"; 0: skipped)
    instruction_reps: int


FULL = Sizes(
    reps=5,
    concurrency=32,
    overhead_n=10_000,
    overhead_httpx_n=1_500,
    latency=0.02,
    latency_concurrencies=(16, 32, 64, 128, 256),
    latency_rounds=40,
    latency_httpx_at=(16, 64),
    latency_httpx_rounds=10,
    memory_sizes=(10_000, 100_000, 1_000_000),
    memory_naive_max=100_000,
    memory_reps=2,
    rate_rates=(50.0, 200.0),
    rate_seconds=4.0,
    rate_reps=2,
    fault_n=5_000,
    fault_probabilities=(0.01, 0.05),
    fault_reps=7,
    conversion_n=5_000,
    profile_n=5_000,
    limiter_rates=(50.0, 200.0),
    limiter_seconds=3.0,
    limiter_uncontended_n=100_000,
    limiter_reps=3,
    limiter_cut_callers=8,
    phone_cpu_n=5_000,
    suppress_n=2_000_000,
    suppress_national_n=50_000,
    instruction_reps=3,
)

QUICK = Sizes(
    reps=2,
    concurrency=16,
    overhead_n=300,
    overhead_httpx_n=60,
    latency=0.02,
    latency_concurrencies=(16, 64),
    latency_rounds=5,
    latency_httpx_at=(16,),
    latency_httpx_rounds=3,
    memory_sizes=(1_000, 3_000),
    memory_naive_max=3_000,
    memory_reps=1,
    rate_rates=(50.0,),
    rate_seconds=1.0,
    rate_reps=1,
    fault_n=200,
    fault_probabilities=(0.05,),
    fault_reps=1,
    conversion_n=300,
    profile_n=300,
    limiter_rates=(50.0,),
    limiter_seconds=0.3,
    limiter_uncontended_n=1_000,
    limiter_reps=1,
    limiter_cut_callers=3,
    phone_cpu_n=200,
    suppress_n=10_000,
    suppress_national_n=300,
    instruction_reps=0,
)
