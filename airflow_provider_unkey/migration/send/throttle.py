"""Throughput that finds its own speed: how many requests to keep in flight, and how many keys to put
in each.

Nothing here imports Airflow. The engine feeds every HTTP attempt (:class:`~airflow_provider_unkey.retries.Attempt`,
seen through :attr:`UnkeyClient.observers <airflow_provider_unkey.client.UnkeyClient.observers>`) to
its controls:

* :class:`ConcurrencyLimiter` — requests in flight, found the way TCP Vegas and Netflix's
  concurrency-limits find a window: grow while latency stays near its floor (doubling at first, then
  one at a time), back off in proportion when latency rises (a server queueing requests), and by a
  quarter on a 408, 5xx or a request without an answer. ``max_concurrency`` is only its cap.
* the workspace rate limit, which :class:`~airflow_provider_unkey.migration.send.pacing.RatePacer`
  keeps, apart from these;
* :class:`BatchSizer` — keys per request. From the start it doubles the batch while the latency per
  key falls (a latency mostly fixed per request makes bigger requests nearly free), and settles when it
  no longer does. When the rate limit, not the server, is what holds the run back, more keys per
  request is more keys per second: the batch doubles while the observed time per key says a request
  still ends well inside the server's 60 s timeout. It halves when a request comes near it.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable

from airflow_provider_unkey.rules import SERVER_TIMEOUT_SECONDS

#: Requests in flight a run starts with (slow start doubles from there each round). A server that
#: queues even these shows it in the probe rounds, which measure the latency floor at half the limit.
INITIAL_CONCURRENCY = 8
#: Every this many rounds, one round runs at half the limit to measure the floor afresh.
PROBE_EVERY = 50
#: Full answers at one batch size before the sizer judges its latency per key.
SAMPLES = 8
#: The share by which the latency per key must fall from one batch size to its double to keep growing.
GAIN = 0.1
#: A doubling that took the latency per key to at most this share of the size before: grow 4x next.
STEEP = 0.6
#: Growth for the latency per key keeps a request at most this many seconds: a batch Unkey rejects as
#: a whole is split and sent again, so a rejection costs about twice the batch's time.
LATENCY_GROWTH_BUDGET = 1.0


class ConcurrencyLimiter:
    """How many requests to keep in flight: additive increase, latency-proportional decrease.

    Latency is judged on requests of at least half the current batch size (a small tail batch or a
    split half is faster, and says nothing about the server's queue). A *round* is as many answers as
    the limit; at its end the round's median latency is compared with the floor (the lowest latency
    seen; every :data:`PROBE_EVERY` rounds one round runs at half the limit and its median becomes the
    floor, so that it follows a server that became slower without creeping up with this run's own
    queue):

    * at most ``grow_below`` times the floor: grow (double while the round's throughput still rose
      by a tenth, then one at a time);
    * up to ``shrink_above`` times the floor: grow by one while the last increase raised throughput
      by 5 % (a busy server that still serves more), else hold;
    * above ``shrink_above`` times the floor: shrink in proportion, towards ``grow_below``.

    A 408, a 5xx or an attempt without an answer shrinks the limit by a quarter, at most once a round.
    A 429 is the rate limit's business (:class:`RatePacer`), not a sign of a queue.

    :param initial: the limit to start from.
    :param maximum: the cap (``max_concurrency``).
    :param minimum: the floor of the limit.
    :param grow_below: latency ratio to the floor under which the limit grows.
    :param shrink_above: latency ratio to the floor above which it shrinks.
    :param clock: monotonic seconds.
    """

    def __init__(
        self,
        initial: int = INITIAL_CONCURRENCY,
        maximum: int = 32,
        *,
        minimum: int = 1,
        grow_below: float = 1.2,
        shrink_above: float = 1.4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got {minimum} and {maximum}")
        self.minimum, self.maximum = minimum, maximum
        self.grow_below, self.shrink_above = grow_below, shrink_above
        self._clock = clock
        self._limit = float(min(max(initial, minimum), maximum))
        self._floor = math.inf
        self._rounds = 0
        self._probing: float | None = None  # the limit to return to after a probe round
        self._slow_start = True
        self._latencies: list[float] = []
        self._answers = 0
        self._keys = 0
        self._round_started = clock()
        self._last_throughput = 0.0
        self._before_increase = 0.0
        self._cut_this_round = False
        self._changed_at = -math.inf
        self._lock = threading.Lock()
        #: The highest limit reached, for the summary.
        self.peak = self.limit
        #: Rounds that ended near the latency floor with the limit at its cap: the cap binds.
        self.capped_rounds = 0

    @property
    def limit(self) -> int:
        """Requests to keep in flight now."""
        return max(self.minimum, min(self.maximum, int(self._limit)))

    def forget_floor(self) -> None:
        """Start the latency floor afresh (the batch size changed, so latencies do too).

        The next round runs at half the limit, as a probe round does: a floor learnt at the full limit
        would take in whatever queue a busy server already holds, and the limiter would grow into it.
        """
        with self._lock:
            self._floor = math.inf
            self._latencies.clear()
            self._answers = self._keys = 0
            self._round_started = self._clock()
            if self._probing is None and self._limit >= 2:
                self._probing = self._limit
                self._set(self._limit / 2)

    def on_answer(
        self, seconds: float, keys: int, status: int | None, full: bool, started: float | None = None
    ) -> None:
        """Learn from one attempt.

        :param seconds: its latency.
        :param keys: keys it carried.
        :param status: its HTTP status, ``None`` for no answer.
        :param full: it carried at least half the current batch size.
        :param started: when it was sent (the limiter's clock). An attempt sent before the limit last
            changed tells of the old limit's queue, not the new one's: it is left out.
        """
        with self._lock:
            if started is not None and started < self._changed_at:
                return
            overloaded = status is None or status == 408 or status >= 500
            if overloaded and not self._cut_this_round:
                self._set(self._limit * 0.75)
                self._slow_start = False
                self._cut_this_round = True
            if status == 200:
                self._keys += keys
                if full:
                    self._latencies.append(seconds)
                    self._floor = min(self._floor, seconds)
            self._answers += 1
            # In slow start half a round's answers suffice to judge: the limit doubles sooner.
            if self._answers >= (max(1, self.limit // 2) if self._slow_start else self.limit):
                self._end_round()
            self.peak = max(self.peak, self.limit)

    def _set(self, limit: float) -> None:
        limit = max(float(self.minimum), min(float(self.maximum), limit))
        if int(limit) != int(self._limit):
            self._changed_at = self._clock()
        self._limit = limit

    def _end_round(self) -> None:
        now = self._clock()
        elapsed = max(now - self._round_started, 1e-9)
        throughput = self._keys / elapsed
        self._rounds += 1
        if self._probing is not None:
            # A probe round, at half the limit: its latency is the floor now.
            if self._latencies:
                self._floor = statistics.median(self._latencies)
            self._set(self._probing)
            self._probing = None
        elif self._latencies and not self._cut_this_round:
            ratio = statistics.median(self._latencies) / self._floor
            gained = throughput >= 1.05 * self._before_increase
            if ratio <= self.grow_below and self._limit >= self.maximum:
                self.capped_rounds += 1  # it would grow, but the cap binds
            if ratio <= self.grow_below or (ratio <= self.shrink_above and gained):
                # Near the floor, or queueing a little while the last increase still paid off.
                self._before_increase = throughput
                if (
                    self._slow_start
                    and ratio <= self.grow_below
                    and throughput >= 1.1 * self._last_throughput
                ):
                    self._set(self._limit * 2)
                else:
                    self._slow_start = False
                    self._set(self._limit + 1)
            elif ratio > self.shrink_above:
                # Towards the latency where growth stops, by at most 30 % a round: the queue the old
                # limit built drains over the next rounds, and a harder cut would overshoot.
                self._slow_start = False
                self._set(self._limit * max(0.7, self.grow_below / ratio))
                self._before_increase = 0.0
            self._last_throughput = throughput
        if self._rounds % PROBE_EVERY == 0 and self._probing is None and self._limit >= 2:
            self._probing = self._limit
            self._set(self._limit / 2)
        self._latencies.clear()
        self._answers = self._keys = 0
        self._round_started = now
        self._cut_this_round = False


class BatchSizer:
    """Keys per request, found with two reasons to grow and two to shrink.

    * **While the latency per key falls** (from the start of a run): when a request's latency is
      mostly fixed (the network, the server's per-request work), more keys in it cost little more
      time, and fewer requests carry the same keys: less of the rate limit, less client work, fewer
      requests in flight for the same keys/s. The size doubles after :data:`SAMPLES` full answers at
      the current size while their median time per key fell by at least :data:`GAIN` from the size
      before (four times when it fell to :data:`STEEP` of it or less), and settles when it did not
      (back to the size before when it rose). Growth of this kind
      keeps a request within ``latency_budget`` (a batch Unkey rejects as a whole is split and sent
      again, so its cost grows with its size) and stops for good at the first split. The engine
      :meth:`reopens <reopen>` it when the concurrency cap binds: more keys per request is then the
      way to more keys in flight.
    * **While the rate limit binds** (:meth:`grow`, called by the engine): requests are the scarce
      thing, so the size doubles while a request stays within ``budget``, whatever the time per key.
    * It halves on a 408 or a request near the server's timeout, never below an eighth of the
      configured size. Every size respects ``maximum``; the byte cap still applies to each request.

    :param initial: the configured ``batch_size``; the size never falls below an eighth of it.
    :param maximum: the largest batch (the byte cap still applies to each request).
    :param budget: a request should take at most this long (a quarter of the server's 60 s timeout).
    :param latency_budget: growth for the latency per key keeps a request at most this long.
    :param explore: grow while the latency per key falls (``False``: only :meth:`grow`).
    """

    def __init__(
        self,
        initial: int,
        maximum: int,
        budget: float = SERVER_TIMEOUT_SECONDS / 4,
        *,
        latency_budget: float = LATENCY_GROWTH_BUDGET,
        explore: bool = True,
    ) -> None:
        self.initial = initial
        self.minimum = max(1, initial // 8)
        self.maximum = max(initial, maximum)
        self.budget = budget
        self.latency_budget = latency_budget
        self.size = initial
        self._per_key: float | None = None
        self._lock = threading.Lock()
        self._exploring = explore
        self._final = not explore  # a split, a timeout or the rate limit: never explore again
        self._samples: list[float] = []  # seconds per key of full answers at the current size
        self._before: tuple[int, float] | None = None  # the size before, and its median per key
        #: Sizes the latency per key took the batch to, with their median seconds per key, in order.
        self.explored: list[tuple[int, float]] = []

    @property
    def exploring(self) -> bool:
        """Whether the size may still grow for the latency per key."""
        return self._exploring

    def on_answer(self, seconds: float, keys: int, status: int | None) -> bool:
        """Learn from an attempt; ``True`` when the size changed."""
        with self._lock:
            if status == 408 or seconds > 2 * self.budget:
                self._exploring, self._final = False, True
                if self.size > self.minimum:
                    self.size = max(self.minimum, self.size // 2)
                    return True
                return False
            if status == 200 and keys >= max(1, self.size // 2):
                per_key = seconds / keys
                self._per_key = per_key if self._per_key is None else 0.8 * self._per_key + 0.2 * per_key
                # Only answers of the current size judge it: those of the size before are still
                # arriving for a while after a doubling.
                if self._exploring and keys > 3 * self.size // 4:
                    self._samples.append(per_key)
                    if len(self._samples) >= SAMPLES:
                        return self._judge(statistics.median(self._samples))
            return False

    def _judge(self, per_key: float) -> bool:
        self._samples.clear()
        self.explored.append((self.size, per_key))
        before = self._before
        if before is not None and per_key > (1 - GAIN) * before[1]:
            self._exploring = False  # the fixed part no longer dominates: stay, or go back
            if per_key > before[1]:
                self.size = before[0]
                return True
            return False
        # Four times the size when doubling nearly halved the time per key (the fixed part dominates
        # still): fewer rounds to the size that pays, and a step too far is undone at the next judgement.
        steep = before is not None and per_key <= STEEP * before[1]
        bigger = min(self.maximum, self.size * (4 if steep else 2))
        if bigger <= self.size or per_key * bigger > min(self.latency_budget, self.budget):
            self._exploring = False
            return False
        self._before = (self.size, per_key)
        self.size = bigger
        return True

    def on_split(self) -> None:
        """A batch was rejected as a whole and split: bigger batches would cost more such resends."""
        with self._lock:
            if self._exploring and self._before is not None:
                self.size = self._before[0]
            self._exploring, self._final = False, True
            self._samples.clear()

    def reopen(self) -> bool:
        """Try bigger batches again from the current size (the concurrency cap binds, so more keys per
        request is the way to more keys in flight); ``False`` when it explores already, or may not."""
        with self._lock:
            if self._exploring or self._final or self.size >= self.maximum:
                return False
            self._exploring = True
            self._before = None
            self._samples.clear()
            return True

    def grow(self) -> bool:
        """Double the size if a request of the new size should still end within the budget."""
        with self._lock:
            if self._per_key is None or self.size >= self.maximum:
                return False
            bigger = min(self.maximum, self.size * 2)
            if self._per_key * bigger > self.budget:
                return False
            self.size = bigger
            self._exploring, self._final = False, True  # the rate limit decides the size from now on
            self._samples.clear()
            return True
