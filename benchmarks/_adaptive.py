"""Adaptive concurrency against a server with a fixed capacity (issue 15).

``python -m benchmarks._adaptive [--n 20000] [--reps 2] [--drop-n 12000] [--drop-adaptive-only]
[--fixed 4,8,16,64]``

The emulator runs in its own process with the capacity model on: ``capacity`` requests in
service at once, ``service_time`` each, the rest queued inside the server (capacity 8 x 20 ms:
a ceiling of 400 requests/s). Latency is what the SERVER measured, from arrival to answer,
queueing included, so a loaded client machine does not colour it.

1. *Steady*: fixed concurrency 4, 8, 16, 64 and adaptive (``Limits(max_concurrency=64,
   adaptive_concurrency=True)``, starting from its default limit), ``n`` imports each,
   interleaved, ``reps`` rounds: throughput and p50/p95 latency.
2. *Capacity drop*: capacity 16, dropped to 4 after ``drop_at`` seconds, back to 16 after
   ``restore_at``: adaptive, fixed 16 and fixed 4 (the drop's capacity known in advance: the
   best any limit can do), with the p95 during the drop, the time until the p95 (per 0.5 s of
   arrivals) is back under 2 x the service time, and the throughput per phase.

Every run also reports the client's and the emulator's CPU (share of one core) and the client
event loop's lag, and is called CPU-starved (:func:`starvation`) when either says the machine,
not the limiter, set the pace.

Results go to ``benchmarks/results/adaptive.json``, ``adaptive.md`` and a plot of limit and
latency over time, ``adaptive_concurrency.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks._payloads import CAMPAIGN_ID, contacts
from benchmarks._procs import ServerProcess, emulator, pin_client
from dialler_async import DiallerClient, Limits

RESULTS = Path(__file__).resolve().parent / "results"
SERVICE = 0.02
CAPACITY = 8
FIXED = (4, 8, 16, 64)
CEILING = 64
BUCKET = 0.5
#: A process busier than this share of one core is CPU-bound: its own queue for the CPU, not
#: the capacity model, sets the pace, and latencies measured through it say little.
STARVED_CPU = 0.85
#: The client's event loop running its timers this late (median) is starved for CPU too: every
#: round trip it measures includes that much of its own waiting.
STARVED_LAG_MS = 5.0


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (None where /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def starvation(run: dict[str, Any]) -> list[str]:
    """Why this run cannot judge the limiter (empty: it can): which side was CPU-bound."""
    found = []
    if run["client_cpu"] >= STARVED_CPU:
        found.append(f"client CPU {run['client_cpu']:.0%} of a core")
    if run["loop_lag_ms"] >= STARVED_LAG_MS:
        found.append(f"client loop lag {run['loop_lag_ms']:.1f} ms")
    if run["server_cpu"] is not None and run["server_cpu"] >= STARVED_CPU:
        found.append(f"server CPU {run['server_cpu']:.0%} of a core")
    return found


def log(message: str) -> None:
    print(message, flush=True)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def _limits(name: str) -> Limits:
    if name == "adaptive":
        return Limits(max_concurrency=CEILING, adaptive_concurrency=True)
    return Limits(max_concurrency=int(name.removeprefix("fixed ")))


async def _job(
    server: ServerProcess,
    name: str,
    n: int,
    tag: str,
    schedule: tuple[tuple[float, dict[str, Any]], ...] = (),
) -> dict[str, Any]:
    """One import job of ``n`` contacts; ``schedule``: (seconds after start, configure changes)."""
    server.command("reset")
    trace: list[tuple[float, int, float | None]] = []
    lags: list[float] = []
    assert server.proc is not None
    pid = server.proc.pid
    load_before = _load()
    async with DiallerClient(server.url, 1, server.token, limits=_limits(name)) as client:
        governor = client.transport.governor

        async def sample() -> None:
            while True:
                now = time.monotonic()
                trace.append((now, governor.concurrency_limit, governor.baseline_rtt))
                await asyncio.sleep(0.05)
                # how late the loop ran this timer: the client's own wait for a CPU
                lags.append(time.monotonic() - now - 0.05)

        async def steer(t0: float) -> None:
            for at, changes in schedule:
                await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
                await asyncio.to_thread(server.command, "configure", changes=changes)

        t0 = time.monotonic()
        cpu0, server_cpu0 = time.process_time(), _cpu_seconds(pid)
        tasks = [asyncio.create_task(sample()), asyncio.create_task(steer(t0))]
        result = await client.import_contacts(
            contacts(n, tag), campaign_id=CAMPAIGN_ID, keep_results=False
        )
        elapsed = time.monotonic() - t0
        cpu1, server_cpu1 = time.process_time(), _cpu_seconds(pid)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if result.succeeded != n:
        raise RuntimeError(f"{name}: {result.succeeded} of {n} succeeded ({result.summary()})")
    answers = server.command("latencies")["latencies"]
    ok = [(a - t0, s) for a, s, status in answers if status == 200]
    seconds = [s for _, s in ok]
    return {
        "name": name,
        "n": n,
        "elapsed": elapsed,
        "throughput": n / elapsed,
        "p50_ms": _pct(seconds, 50) * 1000,
        "p95_ms": _pct(seconds, 95) * 1000,
        "p99_ms": _pct(seconds, 99) * 1000,
        "non_200": len(answers) - len(ok),
        "requests": result.requests,
        "retries": result.retries,
        "client_cpu": (cpu1 - cpu0) / elapsed,
        "client_cpu_us_per_contact": (cpu1 - cpu0) / n * 1e6,
        "server_cpu": (
            None
            if server_cpu0 is None or server_cpu1 is None
            else (server_cpu1 - server_cpu0) / elapsed
        ),
        "loop_lag_ms": (statistics.median(lags) if lags else 0.0) * 1000,
        "load": (load_before, _load()),
        "trace": [(t - t0, limit, base) for t, limit, base in trace],
        "answers": ok,
    }


def _buckets(answers: list[tuple[float, float]]) -> list[tuple[float, float, float]]:
    """``(bucket start, p95 ms, answers/s)`` per ``BUCKET`` seconds of arrivals."""
    grouped: dict[int, list[float]] = {}
    for at, seconds in answers:
        grouped.setdefault(int(at // BUCKET), []).append(seconds)
    return [(k * BUCKET, _pct(v, 95) * 1000, len(v) / BUCKET) for k, v in sorted(grouped.items())]


def _recovered(
    buckets: list[tuple[float, float, float]], drop_at: float, restore_at: float, limit_ms: float
) -> float | None:
    """Seconds from the drop to the end of the first bucket from which every bucket until the
    capacity returns has its p95 under ``limit_ms`` (None: never)."""
    during = [(start, p95) for start, p95, _ in buckets if drop_at <= start < restore_at]
    for i, (start, _) in enumerate(during):
        if all(p95 <= limit_ms for _, p95 in during[i:]):
            return start + BUCKET - drop_at
    return None


#: fixed 4 is the oracle of the drop: the capacity while it lasts, known in advance. Its p95
#: then is the best any limit can do on this machine (the server's own jitter included).
DROP_CONTENDERS = ("adaptive", "fixed 16", "fixed 4")

_MEDIANS = ("throughput", "p50_ms", "p95_ms", "p99_ms")


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _cpu_text(run: dict[str, Any]) -> str:
    server = "?" if run["server_cpu"] is None else f"{run['server_cpu']:.0%}"
    return (
        f"client CPU {run['client_cpu']:.0%} ({run['client_cpu_us_per_contact']:.0f} us/contact)"
        f"  loop lag {run['loop_lag_ms']:.1f} ms  server CPU {server}"
    )


async def steady(
    server: ServerProcess, n: int, reps: int, fixed: tuple[int, ...] = FIXED
) -> dict[str, Any]:
    server.command("configure", changes={"capacity": CAPACITY, "service_time": SERVICE})
    names = [f"fixed {c}" for c in fixed] + ["adaptive"]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names:
            tag = f"adaptive-{rep}-{name.replace(' ', '')}-{time.monotonic_ns()}"
            run = await _job(server, name, n, tag)
            runs[name].append(run)
            starved = starvation(run)
            log(
                f"    rep {rep + 1}/{reps} {name:<9} {run['throughput']:6.0f}/s  "
                f"p50 {run['p50_ms']:6.1f} ms  p95 {run['p95_ms']:6.1f} ms  "
                f"{_cpu_text(run)}{'  STARVED: ' + ', '.join(starved) if starved else ''}"
            )
    summary = {
        name: {
            key: statistics.median(r[key] for r in rs)
            for key in (*_MEDIANS, "client_cpu", "loop_lag_ms")
        }
        | {
            "server_cpu": _median_or_none([r["server_cpu"] for r in rs]),
            "starved_runs": sum(1 for r in rs if starvation(r)),
        }
        for name, rs in runs.items()
    }
    best = max(summary[f"fixed {c}"]["throughput"] for c in fixed)
    adaptive = summary["adaptive"]
    return {
        "n": n,
        "reps": reps,
        "summary": summary,
        "targets": {
            "throughput_vs_best_fixed": adaptive["throughput"] / best,
            "throughput_ok": adaptive["throughput"] >= 0.9 * best,
            "p95_over_service": adaptive["p95_ms"] / (SERVICE * 1000),
            "p95_ok": adaptive["p95_ms"] <= 2 * SERVICE * 1000,
            "best_fixed": f"fixed {max(fixed, key=lambda c: summary[f'fixed {c}']['throughput'])}",
            "starved_runs": sum(row["starved_runs"] for row in summary.values()),
            "runs_total": reps * len(names),
        }
        | (
            {
                "fixed64_p95_over_service": summary["fixed 64"]["p95_ms"] / (SERVICE * 1000),
                # fixed 64 keeps the server's queue full: short of the modelled ceiling, the
                # server process (its CPU), not the capacity model, was the bottleneck
                "fixed64_vs_ceiling": summary["fixed 64"]["throughput"] / (CAPACITY / SERVICE),
            }
            if 64 in fixed
            else {}
        ),
        # the last round's runs, for the plot
        "plot": {
            name: {"trace": rs[-1]["trace"], "buckets": _buckets(rs[-1]["answers"])}
            for name, rs in runs.items()
        },
        "runs": {
            name: [{k: v for k, v in r.items() if k not in ("trace", "answers")} for r in rs]
            for name, rs in runs.items()
        },
    }


async def drop(
    server: ServerProcess,
    n: int,
    drop_at: float,
    restore_at: float,
    names: tuple[str, ...] = DROP_CONTENDERS,
) -> dict[str, Any]:
    schedule = ((drop_at, {"capacity": 4}), (restore_at, {"capacity": 16}))
    found: dict[str, Any] = {}
    for name in names:
        server.command("configure", changes={"capacity": 16, "service_time": SERVICE})
        tag = f"adaptive-drop-{name.replace(' ', '')}-{time.monotonic_ns()}"
        run = await _job(server, name, n, tag, schedule)
        buckets = _buckets(run["answers"])
        limit_ms = 2 * SERVICE * 1000
        recovered = _recovered(buckets, drop_at, restore_at, limit_ms)

        def rate(lo: float, hi: float, got: list[tuple[float, float]] = run["answers"]) -> float:
            inside = [at for at, _ in got if lo <= at < hi]
            return len(inside) / (hi - lo) if hi > lo else 0.0

        end = max((at for at, _ in run["answers"]), default=restore_at)
        found[name] = {
            "throughput": run["throughput"],
            "p95_ms": run["p95_ms"],
            "recovered_after_s": recovered,
            "rate_before": rate(1.0, drop_at),
            "rate_during": rate(drop_at + 1.0, restore_at),
            "rate_after": rate(restore_at + 1.0, end),
            # after the first second of the drop (the queue built at 16 drains), until it ends
            "p95_during_ms": _pct(
                [s for at, s in run["answers"] if drop_at + 1.0 <= at < restore_at], 95
            )
            * 1000,
            "buckets": buckets,
            "trace": run["trace"],
            "client_cpu": run["client_cpu"],
            "server_cpu": run["server_cpu"],
            "loop_lag_ms": run["loop_lag_ms"],
            "starved": starvation(run),
        }
        log(
            f"    {name:<9} before {found[name]['rate_before']:5.0f}/s  during "
            f"{found[name]['rate_during']:5.0f}/s  after {found[name]['rate_after']:5.0f}/s  "
            f"p95 during {found[name]['p95_during_ms']:.1f} ms, back under {limit_ms:.0f} ms "
            f"{recovered} s after the drop  {_cpu_text(run)}"
        )
    return {"n": n, "drop_at": drop_at, "restore_at": restore_at, "runs": found}


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8))
    steady_plot = res["steady"]["plot"]
    for name, colour in (
        ("adaptive", "tab:blue"),
        ("fixed 64", "tab:red"),
        ("fixed 8", "tab:gray"),
    ):
        if name not in steady_plot:
            continue
        buckets = steady_plot[name]["buckets"]
        top.plot(
            [b[0] for b in buckets],
            [b[1] for b in buckets],
            color=colour,
            label=f"{name}: p95 latency",
        )
    top.axhline(2 * SERVICE * 1000, color="black", linestyle=":", label="2 x service time")
    top.set_ylabel("server-measured p95 latency (ms, per 0.5 s)")
    top.set_yscale("log")
    right = top.twinx()
    trace = steady_plot["adaptive"]["trace"]
    right.step(
        [t for t, _, _ in trace],
        [lim for _, lim, _ in trace],
        color="tab:green",
        where="post",
        label="adaptive: limit",
    )
    right.set_ylabel("adaptive concurrency limit")
    right.set_ylim(0, max(lim for _, lim, _ in trace) * 1.2)
    top.set_title(f"Capacity {CAPACITY} x {SERVICE * 1000:.0f} ms: adaptive vs fixed concurrency")
    top.set_xlabel("seconds")
    lines = top.get_legend_handles_labels()
    extra = right.get_legend_handles_labels()
    top.legend(lines[0] + extra[0], lines[1] + extra[1], loc="upper right", fontsize=8)

    drop_res = res["drop"]
    for name, colour in (
        ("adaptive", "tab:blue"),
        ("fixed 16", "tab:red"),
        ("fixed 4", "tab:gray"),
    ):
        if name not in drop_res["runs"]:
            continue
        run = drop_res["runs"][name]
        bottom.plot(
            [b[0] for b in run["buckets"]],
            [b[1] for b in run["buckets"]],
            color=colour,
            label=f"{name}: p95 latency",
        )
    bottom.axhline(2 * SERVICE * 1000, color="black", linestyle=":", label="2 x service time")
    bottom.axvspan(
        drop_res["drop_at"],
        drop_res["restore_at"],
        color="orange",
        alpha=0.15,
        label="capacity 4 (else 16)",
    )
    bottom.set_ylabel("server-measured p95 latency (ms, per 0.5 s)")
    bottom.set_xlabel("seconds")
    right = bottom.twinx()
    trace = drop_res["runs"]["adaptive"]["trace"]
    right.step(
        [t for t, _, _ in trace],
        [lim for _, lim, _ in trace],
        color="tab:green",
        where="post",
        label="adaptive: limit",
    )
    right.set_ylabel("adaptive concurrency limit")
    right.set_ylim(0, max(lim for _, lim, _ in trace) * 1.2)
    bottom.set_title("Capacity drops from 16 to 4 and returns")
    lines = bottom.get_legend_handles_labels()
    extra = right.get_legend_handles_labels()
    bottom.legend(lines[0] + extra[0], lines[1] + extra[1], loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(res: dict[str, Any]) -> str:
    st = res["steady"]
    lines = [
        f"Steady: capacity {CAPACITY} x {SERVICE * 1000:.0f} ms, {st['n']:,} imports per run, "
        f"{st['reps']} interleaved rounds, medians; latency as the server measured it.",
        "",
        "| contender | throughput (/s) | p50 (ms) | p95 (ms) | p99 (ms) "
        "| client CPU | loop lag (ms) | server CPU | starved runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in st["summary"].items():
        server = "?" if row.get("server_cpu") is None else f"{row['server_cpu']:.0%}"
        lines.append(
            f"| {name} | {row['throughput']:.0f} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} "
            f"| {row['p99_ms']:.1f} | {row.get('client_cpu', float('nan')):.0%} "
            f"| {row.get('loop_lag_ms', float('nan')):.1f} | {server} "
            f"| {row.get('starved_runs', '?')} |"
        )
    t = st["targets"]
    lines += [
        "",
        f"Adaptive throughput / best fixed ({t.get('best_fixed', '?')}): "
        f"{t['throughput_vs_best_fixed']:.2f} (target ≥ 0.90); "
        f"adaptive p95 / service time: {t['p95_over_service']:.2f} (target ≤ 2)"
        + (
            f"; fixed 64 p95 / service time: {t['fixed64_p95_over_service']:.1f}."
            if "fixed64_p95_over_service" in t
            else "."
        ),
        "",
    ]
    if "fixed64_vs_ceiling" in t:
        lines += [
            f"Fixed 64 reached {t['fixed64_vs_ceiling']:.2f} of the modelled ceiling "
            f"({CAPACITY / SERVICE:.0f}/s); {t['starved_runs']} of {t['runs_total']} runs were "
            f"CPU-starved (a process above {STARVED_CPU:.0%} of a core, or a client loop "
            f"lag of {STARVED_LAG_MS:.0f} ms or more): such runs measure the machine, not the "
            "limiter.",
            "",
        ]
    dr = res["drop"]
    lines += [
        f"Capacity drop: 16 → 4 at {dr['drop_at']:.0f} s, back to 16 at {dr['restore_at']:.0f} s, "
        f"{dr['n']:,} imports.",
        "",
        "| contender | /s before | /s during | /s after | p95 during (ms) "
        "| p95 back under 40 ms after | starved |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, row in dr["runs"].items():
        rec = row["recovered_after_s"]
        starved = ", ".join(row.get("starved", ())) or "no"
        lines.append(
            f"| {name} | {row['rate_before']:.0f} | {row['rate_during']:.0f} | "
            f"{row['rate_after']:.0f} | {row.get('p95_during_ms', float('nan')):.1f} "
            f"| {'never' if rec is None else f'{rec:.1f} s'} | {starved} |"
        )
    return "\n".join(lines) + "\n"


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_at_start": _load(),
    }
    with emulator() as server:
        if args.reuse_steady:
            log(f"== steady: reused from {args.reuse_steady}")
            res["steady"] = orjson.loads(args.reuse_steady.read_bytes())["steady"]
        else:
            log(f"== steady ({args.n} imports, {args.reps} rounds)")
            res["steady"] = await steady(server, args.n, args.reps, args.fixed)
        log("== capacity drop")
        names = ("adaptive",) if args.drop_adaptive_only else DROP_CONTENDERS
        res["drop"] = await drop(server, args.drop_n, args.drop_at, args.restore_at, names)
    return res


def _concurrencies(text: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in text.split(","))
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive concurrencies, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._adaptive", description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="imports per steady run")
    parser.add_argument("--reps", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--drop-n", type=int, default=12_000, help="imports in the drop run")
    parser.add_argument("--drop-at", type=float, default=8.0)
    parser.add_argument("--restore-at", type=float, default=18.0)
    parser.add_argument(
        "--drop-adaptive-only",
        action="store_true",
        help="run the drop scenario for adaptive only (no fixed 16 to compare: a quick check)",
    )
    parser.add_argument(
        "--fixed",
        type=_concurrencies,
        default=FIXED,
        metavar="4,8,16,64",
        help="the fixed concurrencies of the steady scenario (fewer: a quicker look at the rule)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument(
        "--reuse-steady",
        type=Path,
        metavar="JSON",
        help="take the steady scenario from an earlier adaptive.json; run the drop only",
    )
    args = parser.parse_args(argv)
    pinned = None if args.no_pin else pin_client()
    res = asyncio.run(_main(args))
    res["cpu_pinning"] = pinned
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adaptive.json").write_bytes(
        orjson.dumps(res, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    text = markdown(res)
    (args.out / "adaptive.md").write_text(text, encoding="utf-8")
    plot(res, args.out / "adaptive_concurrency.png")
    log("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
