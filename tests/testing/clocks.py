"""A fake clock for the emulator's rate limiter and production traffic: time moves when a test says."""

from __future__ import annotations

#: A Unix time on the edge of a window of 2, 30, 60 and 600 seconds alike.
W0 = 1_700_000_400.0


class FakeClock:
    """Unix seconds, moved by the test: windows end when the test says, not with time."""

    def __init__(self, now: float = W0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
