"""pytest plugin (entry point ``pytest11``): the ``unkey_emulator`` fixture and its marker.

It loads in every pytest session of an environment where this provider is installed, so it imports
nothing heavy until a test asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_unkey.testing.emulator import UnkeyEmulator

#: The fixture's set-up, which the marker's keyword arguments override.
FIXTURE_DEFAULTS: dict[str, Any] = {
    "root_key": "unkey_root_test",
    "api_id": "api_test",
    "migration_id": "mig_test",
}


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``unkey_emulator`` marker (``--strict-markers`` would refuse it otherwise)."""
    config.addinivalue_line(
        "markers",
        "unkey_emulator(**kwargs): keyword arguments of UnkeyEmulator.quick() for the unkey_emulator "
        "fixture, e.g. rate_limit=100, rate_limit_window=60, algorithm='seam', faults=Faults(...), "
        "capacity=8, server_timeout=60",
    )


@pytest.fixture
def unkey_emulator(request: pytest.FixtureRequest) -> Iterator[UnkeyEmulator]:
    """A running :class:`~airflow_provider_unkey.testing.UnkeyEmulator`, stopped after the test.

    Root key ``unkey_root_test`` (create, verify and read permissions on every API) of workspace
    ``ws_default``, API ``api_test`` and migration ``mig_test`` (``sha256``), no rate limit. Use
    ``.url`` as the base URL; configure more (faults, other workspaces, ``set_rate_limit``) on the
    fixture's value, or from the start with the marker, whose keyword arguments go to
    :meth:`UnkeyEmulator.quick`::

        @pytest.mark.unkey_emulator(rate_limit=100, rate_limit_window=60)
        def test_something(unkey_emulator): ...

        # A saturated server: 8 requests processed at once, 50 ms each, the rest queued.
        @pytest.mark.unkey_emulator(capacity=8, faults=Faults(latency=0.05))
        def test_under_load(unkey_emulator): ...
    """
    from airflow_provider_unkey.testing.emulator import UnkeyEmulator

    marker = request.node.get_closest_marker("unkey_emulator")
    if marker is not None and marker.args:
        raise TypeError("the unkey_emulator marker takes keyword arguments only")
    options = {**FIXTURE_DEFAULTS, **(marker.kwargs if marker is not None else {})}
    with UnkeyEmulator.quick(**options) as emu:
        yield emu
