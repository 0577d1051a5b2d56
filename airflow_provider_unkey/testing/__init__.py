"""Test tooling for code that talks to Unkey: a local emulator of its API and a pytest fixture.

The names below are loaded lazily, so importing this package (as the pytest plugin does in every
pytest session) costs nothing until the emulator is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_unkey.testing.emulator import (
        DEFAULT_ROOT_KEY_PERMISSIONS,
        Faults,
        Load,
        ProductionBurst,
        ProductionStats,
        RequestRecord,
        Stats,
        StoredKey,
        UnkeyEmulator,
        seam_hash,
        sha256_base64,
    )

__all__ = [
    "DEFAULT_ROOT_KEY_PERMISSIONS",
    "Faults",
    "Load",
    "ProductionBurst",
    "ProductionStats",
    "RequestRecord",
    "Stats",
    "StoredKey",
    "UnkeyEmulator",
    "seam_hash",
    "sha256_base64",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("airflow_provider_unkey.testing.emulator"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
