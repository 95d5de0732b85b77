"""Pytest fixtures for the emulator. Load with::

    pytest_plugins = ["dialler_async.emulator.pytest_plugin"]

``dialler_emulator`` is a started in-memory ``Emulator`` per test. ``dialler_emulator_factory``
builds more (same keyword arguments as ``Emulator``) as async context managers::

    async def test_limit(dialler_emulator_factory):
        async with dialler_emulator_factory(config=EmulatorConfig(rate_limit=5)) as emu:
            ...

Emulators from the factory that a test leaves running are stopped at teardown. The
fixtures are ``pytest_asyncio`` fixtures, so they work in auto and strict mode alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio

from dialler_async.emulator._emulator import Emulator

__all__ = ["EmulatorFactory", "dialler_emulator", "dialler_emulator_factory"]

#: ``factory(**kwargs)`` returns an unstarted ``Emulator``; ``async with`` starts it.
EmulatorFactory = Callable[..., Emulator]


@pytest_asyncio.fixture
async def dialler_emulator() -> AsyncIterator[Emulator]:
    """A running emulator with an in-memory database and default configuration."""
    async with Emulator() as emu:
        yield emu


@pytest_asyncio.fixture
async def dialler_emulator_factory() -> AsyncIterator[EmulatorFactory]:
    """A factory of emulators: ``async with factory(config=..., db=...) as emu:``."""
    made: list[Emulator] = []

    def factory(*args: Any, **kwargs: Any) -> Emulator:
        emu = Emulator(*args, **kwargs)
        made.append(emu)
        return emu

    yield factory
    for emu in made:
        if emu.running:
            await emu.stop()
