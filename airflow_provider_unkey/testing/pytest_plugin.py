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
        "fixture, e.g. rate_limit=100, rate_limit_window=60, rate_limit_clock=<fake clock>, "
        "production_per_minute=20, production_burst=ProductionBurst(...), algorithm='seam', "
        "faults=Faults(...), capacity=8, server_timeout=60",
    )


@pytest.fixture
def unkey_emulator(request: pytest.FixtureRequest) -> Iterator[UnkeyEmulator]:
    """A running :class:`~airflow_provider_unkey.testing.UnkeyEmulator`, stopped after the test.

    Root key ``unkey_root_test`` (create, verify and read permissions on every API) of workspace
    ``ws_default``, API ``api_test`` and migration ``mig_test`` (``sha256``), no rate limit, no
    production traffic. Use ``.url`` as the base URL; configure more (faults, other workspaces,
    ``set_rate_limit``, ``set_production_traffic``, ``surge_production``, ``delete_api``) on the
    fixture's value, or from the start with the marker, whose keyword arguments go to
    :meth:`UnkeyEmulator.quick`::

        # Unkey's sliding-window limit: 100 requests a minute, windows aligned to Unix time.
        @pytest.mark.unkey_emulator(rate_limit=100, rate_limit_window=60)
        def test_something(unkey_emulator): ...

        # The workspace's own services verify 20 keys a minute against the same limit meanwhile;
        # unkey_emulator.production counts what they sent and what was refused.
        @pytest.mark.unkey_emulator(rate_limit=60, production_per_minute=20)
        def test_production_keeps_working(unkey_emulator): ...

        # A saturated server: 8 requests processed at once, 50 ms each, the rest queued.
        @pytest.mark.unkey_emulator(capacity=8, faults=Faults(latency=0.05))
        def test_under_load(unkey_emulator): ...

    The rate limiter's windows follow the wall clock (``time.time``); pass
    ``rate_limit_clock=<a callable you advance>`` for exact numbers at a window's edges, and run
    production to a time with :meth:`UnkeyEmulator.advance_production`.
    """
    from airflow_provider_unkey.testing.emulator import UnkeyEmulator

    marker = request.node.get_closest_marker("unkey_emulator")
    if marker is not None and marker.args:
        raise TypeError("the unkey_emulator marker takes keyword arguments only")
    options = {**FIXTURE_DEFAULTS, **(marker.kwargs if marker is not None else {})}
    with UnkeyEmulator.quick(**options) as emu:
        yield emu
