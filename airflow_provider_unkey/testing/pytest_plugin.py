"""pytest plugin (entry point ``pytest11``): the ``unkey_emulator`` fixture.

It loads in every pytest session of an environment where this provider is installed, so it imports
nothing heavy until a test asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from airflow_provider_unkey.testing.emulator import UnkeyEmulator


@pytest.fixture
def unkey_emulator() -> Iterator[UnkeyEmulator]:
    """A running :class:`~airflow_provider_unkey.testing.UnkeyEmulator`, stopped after the test.

    Root key ``unkey_root_test`` (create, verify and read permissions on every API) of workspace
    ``ws_default``, API ``api_test`` and migration ``mig_test`` (``sha256``). Use ``.url`` as the base
    URL; configure more (faults, other workspaces) on the fixture's value.
    """
    from airflow_provider_unkey.testing.emulator import UnkeyEmulator

    with UnkeyEmulator.quick(root_key="unkey_root_test", api_id="api_test", migration_id="mig_test") as emu:
        yield emu
