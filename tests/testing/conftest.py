"""Fixtures shared by the emulator's tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_unkey.testing import UnkeyEmulator


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., UnkeyEmulator]]:
    """Started ``UnkeyEmulator.quick(**kw)`` emulators, all stopped after the test."""
    started: list[UnkeyEmulator] = []

    def make(**kw: Any) -> UnkeyEmulator:
        emu = UnkeyEmulator.quick(**kw).start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()
