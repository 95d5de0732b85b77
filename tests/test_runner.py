"""``dialler_async.run``: asyncio.run on uvloop where installed, with a way to opt out."""

from __future__ import annotations

import asyncio

import pytest

import dialler_async
from dialler_async._runner import ENV_SWITCH, loop_name


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_run_returns_the_result_on_the_standard_loop_when_asked() -> None:
    assert dialler_async.run(_loop_module(), use_uvloop=False).startswith("asyncio")


def test_run_uses_uvloop_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    assert loop_name() == "uvloop"
    assert dialler_async.run(_loop_module()).startswith("uvloop")
    assert dialler_async.run(_loop_module(), use_uvloop=True).startswith("uvloop")


def test_the_environment_switch_turns_uvloop_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert loop_name() == "asyncio"
    assert dialler_async.run(_loop_module()).startswith("asyncio")


def test_exceptions_propagate_and_the_loop_is_closed() -> None:
    async def boom() -> None:
        raise LookupError("from main")

    with pytest.raises(LookupError, match="from main"):
        dialler_async.run(boom())
