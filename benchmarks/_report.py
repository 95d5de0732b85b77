"""Targets (PASS/FAIL), the markdown tables printed at the end, and the plot."""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path
from typing import Any


def _target(name: str, value: float | None, goal: str, ok: bool | None) -> dict[str, Any]:
    status = "N/A" if ok is None else ("PASS" if ok else "FAIL")
    return {"target": name, "value": value, "goal": goal, "status": status}


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if ov := res.get("overhead"):
        best = ov["best_hand_loop"]
        # Issue 16's targets are against pool_orjson (its "worker-pool hand loop"); the best
        # hand loop of the run, when another, is held to the same goals.
        baselines = dict.fromkeys(("pool_orjson", best))
        for row, label, goal in (
            ("sdk", "SDK default options", 0.95),
            ("sdk_streaming", "SDK streaming options", 1.0),
            ("sdk_checkpoint", "SDK with checkpoint", 0.90),
        ):
            for base in baselines:
                thr = ov["ratios"][f"{row}/{base}"]["throughput"]["of_medians"]
                which = "best hand loop" if base == best else "issue 16's baseline"
                out.append(
                    _target(
                        f"throughput {label} / {which} ({base})", thr, f">= {goal}", thr >= goal
                    )
                )
        cpu = ov["ratios"][f"sdk/{best}"]["cpu_per_contact"]["of_medians"]
        out.append(_target(f"client CPU per contact SDK / {best}", cpu, "<= 1.20", cpu <= 1.2))
        hx = ov["ratios"]["sdk/httpx"]["throughput"]["of_medians"]
        out.append(_target("throughput SDK / httpx loop", hx, ">= 10", hx >= 10))
    if (ins := res.get("instructions")) and "per_row" in ins:
        for name, label, goal in (
            ("sdk", "SDK default options", 0.95),
            ("streaming", "SDK streaming options", 1.0),
            ("checkpoint", "SDK with checkpoint", 0.90),
        ):
            ratio = ins["cpu_ratio_to_pool_orjson"][name]
            out.append(
                _target(
                    f"client instructions per row, pool_orjson / {label} (callgrind)",
                    ratio,
                    f">= {goal}",
                    ratio >= goal,
                )
            )
    if lat := res.get("latency"):
        worst = min(p["contenders"]["sdk"]["vs_ceiling"] for p in lat["points"])
        top = max(p["concurrency"] for p in lat["points"])
        out.append(
            _target(
                f"latency-bound SDK / Little's-law ceiling, worst of c <= {top}",
                worst,
                ">= 0.95",
                worst >= 0.95,
            )
        )
    if mem := res.get("memory"):
        lo, hi = mem["sdk_growth_between"]
        growth = mem["sdk_growth_mb"]
        out.append(_target(f"peak RSS({hi:,}) - RSS({lo:,}), MB", growth, "<= 25", growth <= 25))
    if rate := res.get("rate"):
        free = [
            r
            for runs in rate["runs"].values()
            for r in runs
            if r["server_limit"] is None and not r.get("per_job_rate")
        ]
        per_job = [r for runs in rate["runs"].values() for r in runs if r.get("per_job_rate")]
        limited = [r for runs in rate["runs"].values() for r in runs if r["server_limit"]]
        excess = max(r["max_in_one_second"] - r["configured"] for r in free)
        achieved = min(r["achieved_client"] / r["configured"] for r in free)
        throttled = sum(r["throttled_429"] for r in limited)
        out.append(
            _target("most starts in a 1 s window - configured rate", excess, "<= 1", excess <= 1)
        )
        out.append(
            _target("achieved / configured rate (worst run)", achieved, ">= 0.97", achieved >= 0.97)
        )
        out.append(
            _target("429s with server limit = configured rate", throttled, "== 0", throttled == 0)
        )
        if per_job:
            worst = max(r["max_in_one_second"] - r["configured"] for r in per_job)
            out.append(
                _target(
                    "per-job rate, 30% 503s: most arrivals in a 1 s window - rate",
                    worst,
                    "<= 1",
                    worst <= 1,
                )
            )
    if faults := res.get("faults"):
        ok = all(v["all_accounted"] and v["no_duplicates"] for v in faults["levels"].values())
        out.append(_target("faults: every item accounted for, none twice", None, "all", ok))
    if ph := res.get("phones"):
        for key, what in (("latency", "server latency"), ("fast", "fast server")):
            run = ph[key]
            for pair, loop in (("aiohttp", "aiohttp loop"), ("pool_orjson", "pool_orjson loop")):
                ratios = run["ratios"].get(f"sdk+policy/{pair}")
                if ratios is None:
                    continue
                thr = ratios["throughput"]["of_medians"]
                name = f"throughput SDK with a phone policy / {loop}, {what}"
                if key == "latency":
                    name += f" {run['latency'] * 1000:g} ms"
                out.append(_target(name, thr, ">= 0.90", thr >= 0.9))
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _range(r: dict[str, float]) -> str:
    return f"{r['paired_min']:.3f}-{r['paired_max']:.3f}"


def _spread(s: dict[str, float]) -> str:
    return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"


def _spread_f(s: dict[str, float]) -> str:
    return f"{s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f})"


def markdown(res: dict[str, Any]) -> str:
    parts: list[str] = []
    if ov := res.get("overhead"):
        rows = [
            [name, f"{s['n']:,}", s["reps"], _spread(s["rate"]), _spread_f(s["cpu_us"])]
            for name, s in ov["contenders"].items()
        ]
        parts.append(
            f"### 1. Overhead (fast server, concurrency {ov['concurrency']}; "
            f"best hand loop: {ov['best_hand_loop']})\n"
        )
        parts.append(
            _table(
                [
                    "contender",
                    "contacts",
                    "reps",
                    "contacts/s median (min-max)",
                    "client CPU µs/contact median (min-max)",
                ],
                rows,
            )
        )
        ratio_rows = [
            [pair, kind, r["of_medians"], r["paired_median"], _range(r)]
            for pair, kinds in ov["ratios"].items()
            for kind, r in kinds.items()
        ]
        parts.append(
            "\n"
            + _table(
                ["ratio", "of", "ratio of medians", "per-rep ratio median", "per-rep range"],
                ratio_rows,
            )
        )
    if bd := res.get("breakdown"):
        parts.append(
            f"\n### 1b. Where the SDK's client CPU goes (concurrency {bd['concurrency']})\n"
        )
        rows = [
            [name, _spread(s["rate"]), _spread_f(s["cpu_us"])] for name, s in bd["steps"].items()
        ]
        parts.append(_table(["variant", "contacts/s median (min-max)", "CPU µs/contact"], rows))
        parts.append(
            "\n"
            + _table(
                ["layer added", "extra CPU µs/contact"],
                [[k, f"{v:+.1f}"] for k, v in bd["layer_cost_us"].items()],
            )
        )
    if lat := res.get("latency"):
        rtt = lat["round_trip_at_concurrency_1"] * 1000
        parts.append(
            f"\n### 2. Latency-bound ({lat['latency'] * 1000:.0f} ms added per request; "
            f"measured round trip one at a time {rtt:.2f} ms)\n"
        )
        rows = []
        for p in lat["points"]:
            for name, s in p["contenders"].items():
                rows.append(
                    [
                        p["concurrency"],
                        name,
                        p["ceiling"],
                        _spread(s["rate"]),
                        s["vs_ceiling"],
                        s["vs_practical_ceiling"],
                        s["cpu_bound_max"],
                    ]
                )
        parts.append(
            _table(
                [
                    "concurrency",
                    "contender",
                    "ceiling c/L per s",
                    "contacts/s median (min-max)",
                    "median / ceiling",
                    "median / (c / measured round trip)",
                    "1 core / CPU per contact",
                ],
                rows,
            )
        )
    if mem := res.get("memory"):
        parts.append(
            f"\n### 3. Memory (peak RSS, fresh process per run, concurrency {mem['concurrency']})\n"
        )
        rows = [
            [mode, f"{int(n):,}", f"{v['peak_rss_mb']:.1f}", f"{v['rss_before_mb']:.1f}", v["rate"]]
            for mode, sizes in mem["modes"].items()
            for n, v in sizes.items()
        ]
        parts.append(
            _table(
                ["contender", "contacts", "peak RSS MB", "RSS before run MB", "contacts/s"], rows
            )
        )
        parts.append(
            f"\nSDK growth {mem['sdk_growth_between']}: {mem['sdk_growth_mb']:.1f} MB;"
            f" naive growth {mem['naive_growth_between']}: "
            f"{_fmt(mem['naive_growth_mb'])} MB (naive capped at "
            f"{mem['naive_capped_at']:,} contacts)."
        )
    if rate := res.get("rate"):
        parts.append(f"\n### 4. Rate accuracy (emulator, concurrency {rate['concurrency']})\n")
        rows = [
            [
                key,
                f"{r['n']} ({r['server_arrivals']})",
                f"{r['achieved_client']:.1f}",
                f"{r['achieved_server']:.1f}",
                r["max_in_one_second"],
                r["client_max_in_one_second"],
                r["throttled_429"],
                r.get("retries", "-"),
            ]
            for key, runs in rate["runs"].items()
            for r in runs
        ]
        parts.append(
            _table(
                [
                    "configured",
                    "rows (server arrivals)",
                    "rows/s (client)",
                    "arrivals/s (server)",
                    "max starts in 1 s (server)",
                    "max starts in 1 s (client)",
                    "429s",
                    "retries",
                ],
                rows,
            )
        )
    if conv := res.get("conversion"):
        parts.append("\n### 5. Conversion (µs per contact, CPU)\n")
        rows = [[name, _spread_f(s)] for name, s in conv["steps_us"].items()]
        parts.append(_table(["step", "µs median (min-max)"], rows))
        share = conv["cattrs_share_of_sdk_cpu"]
        parts.append(
            f"\ncattrs total {conv['cattrs_total_us']:.1f} µs = "
            f"{_fmt(share and share * 100)} % of the SDK's "
            f"{_fmt(conv['sdk_cpu_us_per_contact'])} µs client CPU per contact (isolated, "
            "warm caches)."
        )
        if bd := res.get("breakdown"):
            layers = bd["layer_cost_us"]
            prep = layers.get("bulk_raw -> bulk_no_structure", 0.0)
            answer = layers.get("bulk_no_structure -> sdk", 0.0)
            full = bd["steps"]["sdk"]["cpu_us"]["median"]
            parts.append(
                f"In the real run (1b) preparing a row costs {prep:.1f} µs and structuring the "
                f"answer {answer:.1f} µs: {(prep + answer) / full:.0%} of the SDK's "
                f"{full:.0f} µs per contact."
            )
    if faults := res.get("faults"):
        parts.append(
            f"\n### 6. Faults (emulator, {faults['n']:,} contacts per run, "
            f"concurrency {faults['concurrency']})\n"
        )
        rows = [
            [
                f"{v['probability']:.0%}",
                _spread(v["rate"]),
                v["vs_clean"]["of_medians"],
                f"{v['vs_clean']['paired_median']:.3f} ({_range(v['vs_clean'])})",
                sum(v["retries"]) / len(v["retries"]),
                v["all_accounted"],
                v["all_succeeded"],
                v["no_duplicates"],
            ]
            for v in faults["levels"].values()
        ]
        parts.append(
            _table(
                [
                    "faults",
                    "contacts/s median (min-max)",
                    "vs clean (of medians)",
                    "vs clean, per rep: median (range)",
                    "retries/run",
                    "accounted",
                    "all succeeded",
                    "no duplicates",
                ],
                rows,
            )
        )
    if lim := res.get("limiter"):
        parts.append(
            f"\n### 7. Rate limiter: aiolimiter vs RateLimiter ({lim['tasks']} tasks, "
            f"{lim['seconds']:g} s of starts per run, {lim['reps']} interleaved reps)\n"
        )
        groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
        for r in lim["runs"]:
            groups.setdefault((r["limiter"], r["rate"]), []).append(r)
        rows = []
        for (name, rate), runs in groups.items():
            rows.append(
                [
                    name,
                    f"{rate:g}/s",
                    max(r["max_in_one_second"] for r in runs),
                    max(r["max_in_first_second"] for r in runs),
                    f"{statistics.median(r['achieved'] / rate for r in runs):.3f}",
                    f"{statistics.median(r['cpu_us_per_start'] for r in runs):.0f}",
                    f"{lim['uncontended_us_per_start'][name]:.2f}",
                    f"{lim['gap_after_cut_to_2_per_s'][name]:.2f}",
                ]
            )
        parts.append(
            _table(
                [
                    "limiter",
                    "R",
                    "most starts in any 1 s (worst rep)",
                    "starts in the first 1 s",
                    "achieved / R (median)",
                    "process CPU µs per start, paced (median)",
                    "µs per start, nobody waiting",
                    "gap between queued starts after a cut 10/s -> 2/s (s; 0.50 = cut applied)",
                ],
                rows,
            )
        )
    if ph := res.get("phones"):
        parts.append(_phones_md(ph))
    if (ins := res.get("instructions")) and "per_row" in ins:
        parts.append(
            f"\n### Client instructions per row (callgrind, {ins['reps']} counts each, "
            f"rows {ins['sizes'][0]:,} and {ins['sizes'][1]:,})\n"
        )
        to_orjson, to_bytes = ins["cpu_ratio_to_pool_orjson"], ins["cpu_ratio_to_pool_bytes"]
        parts.append(
            _table(
                [
                    "contender",
                    "instructions/row median (min-max)",
                    "CPU ratio to pool_orjson",
                    "CPU ratio to pool_bytes",
                ],
                [
                    [
                        name,
                        f"{c['median'] / 1e3:,.1f}k ({c['min'] / 1e3:,.1f}-{c['max'] / 1e3:,.1f}k)",
                        to_orjson.get(name),
                        to_bytes.get(name),
                    ]
                    for name, c in ins["per_row"].items()
                ],
            )
        )
    if tg := res.get("targets"):
        parts.append("\n### Targets\n")
        parts.append(
            _table(
                ["target", "value", "goal", "result"],
                [[t["target"], t["value"], t["goal"], t["status"]] for t in tg],
            )
        )
    return "\n".join(parts) + "\n"


def can_plot() -> bool:
    """Whether matplotlib is installed (the bench extra; the test extra leaves it out)."""
    return importlib.util.find_spec("matplotlib") is not None


def _phones_md(ph: dict[str, Any]) -> str:
    cpu, sup, nat = ph["cpu"], ph["suppression"], ph["suppression_national"]
    parts = [
        f"\n### 9. Phone numbers (concurrency {ph['concurrency']}, numbers typed nationally)\n"
    ]
    for key in ("fast", "latency"):
        run = ph[key]
        rows = [
            [name, f"{s['n']:,}", s["reps"], _spread(s["rate"]), _spread_f(s["cpu_us"])]
            for name, s in run["contenders"].items()
        ]
        rows += [
            [
                pair,
                "",
                "",
                f"{r['throughput']['of_medians']:.3f} ({_range(r['throughput'])})",
                f"{r['cpu_per_contact']['of_medians']:.3f} ({_range(r['cpu_per_contact'])})",
            ]
            for pair, r in run["ratios"].items()
        ]
        latency = f"{run['latency'] * 1000:g} ms latency" if run["latency"] else "fast server"
        parts += [
            f"\n{latency}:\n",
            _table(["contender / ratio", "contacts", "reps", "contacts/s", "CPU µs/contact"], rows),
        ]
    parts += [
        "",
        _table(
            ["preparing one contact (2 numbers)", "µs CPU median (min-max)"],
            [
                *(
                    [f"Import.prepare, {name.replace('_', ' ')}", _spread_f(cpu[f"{name}_us"])]
                    for form in ("national", "e164", "switchboard")
                    for name in (f"{form}_without_policy", f"{form}_with_policy")
                ),
                ["added by the policy, national", _spread_f(cpu["added_national_us"])],
                ["added by the policy, E.164", _spread_f(cpu["added_e164_us"])],
                ["added by the policy, switchboard", _spread_f(cpu["added_switchboard_us"])],
                [
                    "normalisation alone, 2 national numbers",
                    _spread_f(cpu["normalise_only_national_us"]),
                ],
            ],
        ),
        "",
        _table(
            [
                "suppression list",
                "numbers",
                "index MB",
                "peak RSS growth MB",
                "build s",
                "µs/number",
                "lookup µs",
            ],
            [
                [
                    f"{d['form']} lines",
                    f"{d['numbers']:,}",
                    d["index_mb"],
                    d["peak_growth_mb"],
                    d["build_s"],
                    d["build_us_per_number"],
                    d["lookup_us"],
                ]
                for d in (sup, nat)
            ],
        ),
    ]
    if dd := ph.get("dedupe"):
        parts += [
            "",
            _table(
                ["dedupe_phone set", "numbers", "tables MB", "B/number", "RSS MB", "plain set MB"],
                [
                    [
                        "DigestSet",
                        f"{dd['numbers']:,}",
                        dd["digest_set_tables_mb"],
                        dd["bytes_per_number"],
                        dd["digest_set_rss_mb"],
                        dd["python_set_rss_mb"],
                    ]
                ],
            ),
        ]
    return "\n".join(parts)


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib  # here, not at the top: only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = res["latency"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    conc = [p["concurrency"] for p in lat["points"]]
    ax.plot(conc, [p["ceiling"] for p in lat["points"]], "k--", label="Little's-law ceiling")
    for name, style in (("sdk", "o-"), ("aiohttp", "s-"), ("httpx", "^-")):
        xs = [p["concurrency"] for p in lat["points"] if name in p["contenders"]]
        stats = [p["contenders"][name]["rate"] for p in lat["points"] if name in p["contenders"]]
        if not xs:
            continue
        med = [s["median"] for s in stats]
        err = [
            [m - s["min"] for m, s in zip(med, stats, strict=True)],
            [s["max"] - m for m, s in zip(med, stats, strict=True)],
        ]
        label = {"sdk": "dialler_async SDK", "aiohttp": "aiohttp loop", "httpx": "httpx loop"}
        ax.errorbar(xs, med, yerr=err, fmt=style, capsize=3, label=label[name])
    ax.set_xscale("log", base=2)
    ax.set_xticks(conc, [str(c) for c in conc])
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel("contacts / s")
    ax.set_title(f"Import throughput, {lat['latency'] * 1000:.0f} ms server latency")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
