"""Memory stays flat with keep_results=False: no per-item state survives the item."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator

import pytest

from dialler_async import Limits
from dialler_async.emulator import Emulator, EmulatorConfig


def generated(n: int) -> Iterator[dict[str, object]]:
    for i in range(n):
        yield {
            "Name": f"N{i}",
            "PhoneNumber1": f"+49{i:09d}",
            "UserData": f"K{i:08d}",
            "DiallerCampaignsID": 538,
        }


@pytest.mark.slow
async def test_client_side_memory_does_not_grow_with_the_input() -> None:
    # The emulator runs in this process too: keep its arrival log tiny so only the client's
    # allocations can grow with the input. SQLite's own memory is not traced by tracemalloc.
    async with (
        Emulator(EmulatorConfig(arrivals_maxlen=10)) as emu,
        emu.client(limits=Limits(max_concurrency=16)) as client,
    ):
        peaks = []
        for n in (500, 4_000):
            gc.collect()
            tracemalloc.start()
            result = await client.import_contacts(
                generated(n), keep_results=False, detect_duplicates=False
            )
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            assert result.succeeded == n
    # 8x the rows, yet the peak grows by less than 0.5 MB (a kept result costs ~2 KB per row)
    assert peaks[1] - peaks[0] < 500_000, peaks
