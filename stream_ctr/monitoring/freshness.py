"""How far the model in use is behind the stream: the staleness of every scored event and scoring request.

A model's weights have learned ``ctr.events`` up to ``offsets[q]`` (the next offset to train) on each partition
``q`` and events up to event time ``trained_ts`` (:class:`~stream_ctr.models.snapshot.Snapshot`,
:class:`~stream_ctr.models.delta.Delta`). For an event at offset ``o`` of partition ``p`` the worker scores with it:

- **samples**: the events before it that the worker has read and the model has not learned,
  ``max(0, o - offsets[p]) + sum over the other partitions q of max(0, read[q] - offsets[q])``, where ``read[q]``
  is the next offset after the newest event of ``q`` this worker has read. With one worker reading every
  partition this is exact; a worker that reads ``k`` of the ``P`` partitions scales its sum by ``P / k`` (the
  default partitioner spreads users evenly), so it estimates the whole stream's count;
- **seconds**: ``ts - trained_ts`` in event time (0 if the model is ahead; not defined before it learned anything).

An event the model has already learned (``offsets[p] > o``: the trainer ran ahead of this worker) is not scored
before it is learned, so its prediction flatters the progressive metrics; such events are counted as **ahead**
(``stream_ctr_model_ahead_events_total``), and a report of quality says how many there were.

A scoring request is answered at the end of the stream: its samples are the same sum over every partition, of
the newer of the read position and the partition's end offset when it was last read (:meth:`Staleness.stream_ends`,
every 0.1 s by :func:`agents.serving.follow_stream_ends`), so events written and not yet read count too (a worker
behind the stream, or a scorer, which reads none); its seconds are the newest event time read minus
``trained_ts``.

:class:`Staleness` keeps both as Prometheus histograms (``stream_ctr_model_staleness_samples`` and ``..._seconds``,
label ``scored`` = ``event`` | ``request``) in fixed memory: exact counts of every sample staleness up to
:data:`EXACT_UP_TO` (so quantiles of the demo's range are exact), buckets beyond.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

__all__ = ["EXACT_UP_TO", "SAMPLE_BUCKETS", "SECOND_BUCKETS", "Staleness"]

#: Sample stalenesses below this are counted one by one (quantiles are exact); larger ones in one overflow count.
EXACT_UP_TO = 1 << 16
#: Upper bounds of the exported samples histogram.
SAMPLE_BUCKETS = (0, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000, 50000)
#: Upper bounds of the exported seconds histogram (event time: a minute to a month).
SECOND_BUCKETS = (60, 600, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400)
SCORED = ("event", "request")


class _Counts:
    """One label's counts: samples exactly below EXACT_UP_TO (+ an overflow), seconds in SECOND_BUCKETS."""

    def __init__(self):
        self.samples = np.zeros(EXACT_UP_TO + 1, dtype=np.int64)
        self.samples_sum = 0.0
        self.seconds = np.zeros(len(SECOND_BUCKETS) + 1, dtype=np.int64)
        self.seconds_sum = 0.0

    def add(self, samples: np.ndarray, seconds: np.ndarray) -> None:
        np.add.at(self.samples, np.minimum(samples, EXACT_UP_TO), 1)
        self.samples_sum += float(samples.sum())
        seconds = seconds[~np.isnan(seconds)]
        np.add.at(self.seconds, np.searchsorted(SECOND_BUCKETS, seconds, side="left"), 1)
        self.seconds_sum += float(seconds.sum())


class Staleness:
    """Per-worker staleness accounting over ``partitions`` partitions of ``ctr.events``."""

    def __init__(self, partitions: int):
        self.partitions = partitions
        self.read = np.full(partitions, -1, dtype=np.int64)  # next offset after the newest read; -1: not read
        self.written = np.full(partitions, -1, dtype=np.int64)  # each partition's end offset, as last read
        self.newest_ts = 0.0
        self.counts = {scored: _Counts() for scored in SCORED}
        self.scored = 0  # events counted
        self.ahead = 0  # of which the model had already learned

    def keep(self, partitions: set[int]) -> None:
        """Forget the read positions of partitions this worker no longer reads (after a rebalance)."""
        for p in range(self.partitions):
            if p not in partitions:
                self.read[p] = -1

    def events(
        self,
        model_offsets: Mapping[int, int],
        trained_ts: float,
        partitions: Sequence[int],
        offsets: Sequence[int],
        ts: Sequence[float],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The staleness of events read in this order (``partitions``, ``offsets``, ``ts`` aligned) and scored by
        a model at ``model_offsets`` / ``trained_ts``: ``(samples, seconds)``, counted and returned."""
        part = np.asarray(partitions, dtype=np.int64)
        off = np.asarray(offsets, dtype=np.int64)
        n = len(part)
        if not n:
            return np.zeros(0, np.int64), np.zeros(0)
        trained = self._trained(model_offsets)
        after = np.full((n, self.partitions), -1, dtype=np.int64)
        after[np.arange(n), part] = off + 1
        after = np.maximum.accumulate(np.vstack([self.read, after]), axis=0)  # row i: read after i - 1 events
        before = after[:-1].copy()
        before[np.arange(n), part] = np.maximum(before[np.arange(n), part], off)
        samples = self._behind(before, trained)
        times = np.asarray(ts, dtype=np.float64)
        seconds = np.maximum(times - trained_ts, 0.0) if trained_ts > 0 else np.full(n, np.nan)
        self.read = after[-1]
        self.newest_ts = max(self.newest_ts, float(times.max()))
        self.counts["event"].add(samples, seconds)
        self.scored += n
        self.ahead += int((trained[part] > off).sum())
        return samples, seconds

    def passed(self, partitions: Sequence[int], offsets: Sequence[int]) -> None:
        """Records at ``offsets`` of ``partitions`` were read (valid or not, scored or dead-lettered)."""
        part, off = np.asarray(partitions, dtype=np.int64), np.asarray(offsets, dtype=np.int64)
        mine = (part >= 0) & (part < self.partitions)
        np.maximum.at(self.read, part[mine], off[mine] + 1)

    def stream_ends(self, ends: Mapping[int, int]) -> None:
        """The end offsets of partitions of ``ctr.events``, just read: the position a request is answered at."""
        for p, end in ends.items():
            if 0 <= p < self.partitions:
                self.written[p] = max(self.written[p], end)

    def covers(self, model_offsets: Mapping[int, int]) -> bool:
        """Whether this worker has read every event that a model at ``model_offsets`` learned, on each partition it
        reads: a worker that applies only such models scores every event before its model learns it."""
        return all(
            o <= self.read[p] for p, o in model_offsets.items() if 0 <= p < self.partitions and self.read[p] >= 0
        )

    def request(self, model_offsets: Mapping[int, int], trained_ts: float, n: int = 1) -> tuple[int, float]:
        """The staleness of ``n`` scoring requests answered now with that model, counted and returned."""
        samples = self._behind(np.maximum(self.read, self.written)[None, :], self._trained(model_offsets))
        seconds = max(self.newest_ts - trained_ts, 0.0) if trained_ts > 0 and self.newest_ts else float("nan")
        self.counts["request"].add(np.repeat(samples, n), np.full(n, seconds))
        return int(samples[0]), seconds

    def _trained(self, model_offsets: Mapping[int, int]) -> np.ndarray:
        trained = np.zeros(self.partitions, dtype=np.int64)
        for p, o in model_offsets.items():
            if 0 <= p < self.partitions:
                trained[p] = o
        return trained

    def _behind(self, read: np.ndarray, trained: np.ndarray) -> np.ndarray:
        """Per row of read positions ``[n, P]``: the unlearned events summed over read partitions, scaled to all."""
        known = read >= 0
        behind = np.where(known, np.maximum(read - trained, 0), 0).sum(axis=1)
        k = known.sum(axis=1)
        return np.where(k > 0, behind * self.partitions // np.maximum(k, 1), 0)

    def quantile(self, q: float, scored: str = "event") -> float:
        """The ``q`` quantile of the sample stalenesses counted (exact below :data:`EXACT_UP_TO`); NaN if none."""
        counts = self.counts[scored].samples
        total = int(counts.sum())
        if not total:
            return float("nan")
        return float(np.searchsorted(np.cumsum(counts), q * total, side="left"))

    def quantiles(self, scored: str = "event") -> dict[str, float | None]:
        """p50, p90 and p99 of the sample stalenesses counted (None before the first), for a JSON answer."""
        values = {f"p{q}": self.quantile(q / 100, scored) for q in (50, 90, 99)}
        return {k: None if math.isnan(v) else v for k, v in values.items()}

    def counted(self, scored: str = "event") -> int:
        """How many stalenesses of ``scored`` were counted."""
        return int(self.counts[scored].samples.sum())

    def collect(self):
        """The two histograms, for a Prometheus collector."""
        samples = HistogramMetricFamily(
            "stream_ctr_model_staleness_samples",
            "Events the model in use had not learned when it scored an event or a request",
            labels=["scored"],
        )
        seconds = HistogramMetricFamily(
            "stream_ctr_model_staleness_seconds",
            "Event time between the newest "
            "event the model in use learned and the event (or the newest read, for a "
            "request) it scored",
            labels=["scored"],
        )
        for scored, c in self.counts.items():
            cum = np.cumsum(c.samples)
            samples.add_metric(
                [scored], [(str(b), int(cum[b])) for b in SAMPLE_BUCKETS] + [("+Inf", int(cum[-1]))], c.samples_sum
            )
            cum_s = np.cumsum(c.seconds)
            seconds.add_metric(
                [scored],
                [(str(b), int(cum_s[i])) for i, b in enumerate(SECOND_BUCKETS)] + [("+Inf", int(cum_s[-1]))],
                c.seconds_sum,
            )
        yield samples
        yield seconds
        ahead = CounterMetricFamily(
            "stream_ctr_model_ahead_events",
            "Events scored by a model that had already "
            "learned them (the trainer ran ahead of this worker): not test-then-train",
        )
        ahead.add_metric([], self.ahead)
        yield ahead
