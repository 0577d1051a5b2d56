"""A run over time: bounded samples of its progress and its throughput controls, for the report."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(slots=True)
class Sample:
    """The run's state at one moment: ``seconds`` since the start, rows with an outcome, the controls."""

    seconds: float
    done: int
    in_flight: int = 0
    limit: int = 0
    batch_size: int = 0


@dataclass(slots=True)
class Timeline:
    """Samples of a run, at most ``capacity`` of them however long it runs.

    When full, every other sample goes and the interval doubles: a long run keeps an even, coarser
    picture of itself in constant memory.
    """

    interval: float = 1.0
    capacity: int = 1000
    samples: list[Sample] = field(default_factory=list)
    _next: float = 0.0

    def maybe_sample(
        self, seconds: float, done: int, state: Callable[[], Mapping[str, int]] | None, force: bool = False
    ) -> None:
        """Take a sample if ``interval`` has passed since the last one (``force``: in any case)."""
        if seconds < self._next and not (force and (not self.samples or seconds > self.samples[-1].seconds)):
            return
        values = dict(state()) if state is not None else {}
        self.samples.append(Sample(round(seconds, 3), done, **values))
        if len(self.samples) >= self.capacity:
            self.samples = self.samples[::2]
            self.interval *= 2
        # From the last sample kept, so that the samples stay evenly spaced.
        self._next = self.samples[-1].seconds + self.interval

    def rates(self) -> list[tuple[float, float]]:
        """(seconds, keys/s between this sample and the one before)."""
        out = []
        for before, after in zip(self.samples, self.samples[1:], strict=False):
            span = after.seconds - before.seconds
            out.append((after.seconds, (after.done - before.done) / span if span > 0 else 0.0))
        return out
