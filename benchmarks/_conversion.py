"""(5) Conversion: the cattrs work per contact, in µs, as a share of the SDK's client CPU.

Measured in this process without a server: ``to_new_contact`` (user dict -> NewContact, with
detailed validation), ``new_contact_problems`` (the pre-flight checks), ``unstructure``
(NewContact -> JSON dict), ``structure(record, Contact)`` (the answer -> Contact); for
comparison the same dict through the fast ``wire_converter`` (no detailed validation) and
orjson encoding/decoding for scale. Each step runs over the same contacts, interleaved,
``reps`` times.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import orjson

from benchmarks._config import Sizes
from benchmarks._payloads import contact_record, contacts, envelope_bytes
from benchmarks._stats import Log, spread
from dialler_async._converter import structure, to_new_contact, unstructure, wire_converter
from dialler_async._models import Contact, NewContact
from dialler_async._validation import new_contact_problems

CATTRS_STEPS = ("to_new_contact", "unstructure", "structure_contact")


def _timed(fn: Callable[[Any], Any], items: list[Any]) -> float:
    """µs per item of ``fn`` over ``items`` (CPU time)."""
    gc.collect()
    t0 = time.process_time()
    for item in items:
        fn(item)
    return (time.process_time() - t0) / len(items) * 1e6


def run(sizes: Sizes, log: Log, sdk_cpu_us: float | None) -> dict[str, Any]:
    raw = list(contacts(sizes.conversion_n, "conversion"))
    models = [to_new_contact(c) for c in raw]
    bodies = [unstructure(m) for m in models]
    records = [contact_record(i) for i in range(sizes.conversion_n)]
    envelope = envelope_bytes()
    envelopes = [envelope] * sizes.conversion_n
    steps: dict[str, tuple[Callable[[Any], Any], list[Any]]] = {
        "to_new_contact": (to_new_contact, raw),
        "to_new_contact_wire_converter": (lambda c: wire_converter.structure(c, NewContact), raw),
        "new_contact_problems": (new_contact_problems, models),
        "unstructure": (unstructure, models),
        "structure_contact": (lambda r: structure(r, Contact), records),
        "orjson_dumps_body": (orjson.dumps, bodies),
        "orjson_loads_envelope": (orjson.loads, envelopes),
    }
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for rep in range(-1, sizes.reps):
        for name, (fn, items) in steps.items():
            us = _timed(fn, items)
            if rep >= 0:
                samples[name].append(us)
    out: dict[str, Any] = {"n": sizes.conversion_n, "steps_us": {}}
    for name, values in samples.items():
        out["steps_us"][name] = spread(values)
        log(f"    {name:<24} {out['steps_us'][name]['median']:7.2f} µs per contact")
    cattrs_us = sum(out["steps_us"][s]["median"] for s in CATTRS_STEPS)
    out["cattrs_total_us"] = cattrs_us
    out["sdk_cpu_us_per_contact"] = sdk_cpu_us
    out["cattrs_share_of_sdk_cpu"] = cattrs_us / sdk_cpu_us if sdk_cpu_us else None
    prep = out["steps_us"]["new_contact_problems"]["median"]
    out["conversion_and_validation_share"] = (cattrs_us + prep) / sdk_cpu_us if sdk_cpu_us else None
    return out
