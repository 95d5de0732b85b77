"""Bulk-import generated contacts into the embedded emulator and print the account.

Run: ``python examples/bulk_import.py [N]``. Like the command-line tool it exits with status 1
when any row did not succeed (here: the one deliberately broken row), 0 when all did.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

from dialler_async import Limits
from dialler_async.emulator import Emulator


def contacts(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {
            "UserData": f"CRM-{i:06d}",
            "Name": f"Müller-{i}",
            "FirstName": "Anna",
            "PhoneNumber1": f"+4930{i:07d}",
            "City": "Berlin",
        }
    yield {"UserData": "CRM-broken", "FirstName": "no name, no phone"}


async def main(n: int) -> int:
    async with Emulator() as emulator, emulator.client(limits=Limits(max_concurrency=32)) as client:
        result = await client.import_contacts(
            contacts(n), campaign_name="Spring Campaign", keep_results=False
        )
    print(result.summary())
    for item in result.failures:
        print(f"  row {item.index} ({item.key}): {item.outcome.value}: {item.error}")
    return 0 if result.ok else 1  # ok: nothing failed, invalid, ambiguous or cancelled


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)))
