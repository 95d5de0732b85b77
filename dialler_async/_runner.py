"""``dialler_async.run``: ``asyncio.run`` on uvloop where it is installed (the ``speed`` extra).

uvloop's event loop does the same socket work with less CPU per request; the SDK's hot path is
CPU-bound on one core at high concurrency, so a faster loop is a faster job. It stays optional:
the SDK runs on any asyncio loop, and nothing changes unless the caller (or the CLI) opts in.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Coroutine
from types import ModuleType
from typing import Any, TypeVar

T = TypeVar("T")

#: Set to ``0`` to run the CLI (and :func:`run`) on the standard asyncio loop even where
#: uvloop is installed.
ENV_SWITCH = "DIALLER_ASYNC_UVLOOP"


def _uvloop() -> ModuleType | None:
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        return importlib.import_module("uvloop")
    except ImportError:
        return None


def loop_name(use_uvloop: bool | None = None) -> str:
    """``"uvloop"`` if :func:`run` with this ``use_uvloop`` would run on uvloop, else
    ``"asyncio"``."""
    return "uvloop" if use_uvloop is not False and _uvloop() is not None else "asyncio"


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool | None = None) -> T:
    """Run ``main`` to completion in a new event loop and return its result.

    ``use_uvloop``: None (default) uses uvloop where it is installed (``pip install
    "dialler-async[speed]"``) unless the environment sets ``DIALLER_ASYNC_UVLOOP=0``; False
    always uses asyncio's own loop; True requires uvloop (ImportError when it is missing).
    Otherwise it behaves like :func:`asyncio.run`.
    """
    if use_uvloop is False:
        return asyncio.run(main)
    uvloop = importlib.import_module("uvloop") if use_uvloop else _uvloop()
    if uvloop is None:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
