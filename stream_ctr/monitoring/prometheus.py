"""Prometheus metrics of the personalize worker and the trainer. No user id ever becomes a label.

Distributions across users (the local-vs-global CTR gap |p_u - p_g|, and each user's window CTR against p_g in
units of its binomial std, :func:`~stream_ctr.learning.drift.user_z`) are exported as histograms computed at scrape time
from one number per user; per-arm quality is exported per ``arm`` and ``scope`` (``window`` | ``lifetime``); the
drift detectors (:mod:`stream_ctr.learning.drift`) per ``signal``.
Each process owns a :class:`~prometheus_client.CollectorRegistry` (not the global one) so tests can build many.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from stream_ctr.contracts.events import DLQ_REASONS
from stream_ctr.learning.drift import DriftMonitor, DriftParams, signals
from stream_ctr.monitoring.active_users import ActiveUsers
from stream_ctr.quality.online_metrics import OnlineMetrics

__all__ = [
    "DRIFT_BUCKETS",
    "Z_BUCKETS",
    "ModelMetrics",
    "ScorerMetrics",
    "ServingMetrics",
    "TrainerMetrics",
    "WorkerMetrics",
]

log = logging.getLogger(__name__)

disable_created_metrics()  # the *_created series only add noise to every counter and histogram

#: Upper bounds of |p_u - p_g| buckets.
DRIFT_BUCKETS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7)
#: Upper bounds of |z| buckets (:func:`stream_ctr.learning.drift.user_z`: the gap in the user's own sampling stds).
DEFAULT_DRIFT = DriftParams()
Z_BUCKETS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0)


def _scrape_histogram(name: str, doc: str, values: np.ndarray, buckets) -> HistogramMetricFamily:
    h = HistogramMetricFamily(name, doc)
    h.add_metric(
        [], [(str(b), int((values <= b).sum())) for b in buckets] + [("+Inf", len(values))], float(values.sum())
    )
    return h


class _LagGauge:
    """``stream_ctr_consumer_lag_events{topic, group, partition}``: end offset minus the consumer's position, for
    the partitions of the last reading only (a partition that moved away leaves the gauge)."""

    def __init__(self, registry: CollectorRegistry):
        self.gauge = Gauge(
            "stream_ctr_consumer_lag_events",
            "Events on a topic not yet consumed (end offset - committed offset, per partition this process owns)",
            ["topic", "group", "partition"],
            registry=registry,
        )
        self._labels: set[tuple[str, str, str]] = set()

    def read(self, topic: str, group: str, lags: dict[int, tuple[int, int]]) -> None:
        """A reading ``{partition: (committed, end)}`` of ``group`` on ``topic``."""
        labels = {(topic, group, str(p)) for p in lags}
        for gone in {lab for lab in self._labels if lab[:2] == (topic, group)} - labels:
            self.gauge.remove(*gone)
        self._labels = {lab for lab in self._labels if lab[:2] != (topic, group)} | labels
        for partition, (committed, end) in lags.items():
            self.gauge.labels(topic, group, str(partition)).set(max(end - committed, 0))


class _WorkerCollector:
    """Collects the scrape-time families: drift histogram and per-arm online metrics."""

    def __init__(self, owner: WorkerMetrics):
        self.owner = owner

    def collect(self):
        owner = self.owner
        drift, z = owner.active.drifts(), owner.active.zscores()
        yield _scrape_histogram(
            "stream_ctr_user_ctr_drift",
            "|local CTR - global CTR| across active users: a "
            "point-in-time distribution rebuilt at every scrape (one sample per user), so rate() "
            "over it means nothing",
            drift,
            DRIFT_BUCKETS,
        )
        yield _scrape_histogram(
            "stream_ctr_user_drift_z",
            "|window CTR - global CTR| / sqrt(p_g (1 - p_g) / n) "
            "of active users, n their window events (point in time, like "
            "stream_ctr_user_ctr_drift)",
            z,
            Z_BUCKETS,
        )
        yield GaugeMetricFamily(
            "stream_ctr_users",
            "Users active on this worker within STREAM_CTR_USER_IDLE_S (at most STREAM_CTR_ACTIVE_USERS_MAX)",
            value=len(drift),
        )
        yield GaugeMetricFamily(
            "stream_ctr_users_drifting",
            "Active users whose window CTR lies beyond STREAM_CTR_USER_DRIFT_Z sampling stds of the global CTR",
            value=owner.users_drifting(),
        )
        yield from self._detectors(owner.drift.state(time.time()))

        gauc = GaugeMetricFamily(
            "stream_ctr_arm_gauc", "Online gAUC per arm (test-then-train)", labels=["arm", "scope"]
        )
        loss = GaugeMetricFamily("stream_ctr_arm_logloss", "Online logloss per arm", labels=["arm", "scope"])
        rows = GaugeMetricFamily("stream_ctr_arm_predictions", "Predictions in the scope", labels=["scope"])
        for scope in ("window", "lifetime"):
            summary = self.owner.summary(scope)
            rows.add_metric([scope], summary["n"])
            for arm, m in summary["arms"].items():
                if not np.isnan(m["gauc"]):
                    gauc.add_metric([arm, scope], m["gauc"])
                if not np.isnan(m["logloss"]):
                    loss.add_metric([arm, scope], m["logloss"])
        yield from (gauc, loss, rows)

    @staticmethod
    def _detectors(state: dict[str, dict]):
        detected = GaugeMetricFamily(
            "stream_ctr_drift_detected",
            "1 while a drift detector's signal is drifting (an alarm within STREAM_CTR_DRIFT_HOLD_S), else 0",
            labels=["signal"],
        )
        since = GaugeMetricFamily(
            "stream_ctr_drift_since_timestamp_seconds",
            "Unix time the signal's current drifting episode began (only while drifting)",
            labels=["signal"],
        )
        for signal, s in state.items():
            detected.add_metric([signal], float(s["drifting"]))
            if s["drifting"]:
                since.add_metric([signal], s["since"])
        yield from (detected, since)


#: The ``bound`` label of the live differences: the estimate, the always-valid (confidence-sequence) and the
#: fixed-horizon 95% bounds, and the bounds a guardrail decides on (its Bonferroni share of the guardrails' alpha).
BOUNDS = (
    "estimate",
    "always_valid_lower",
    "always_valid_upper",
    "fixed_horizon_lower",
    "fixed_horizon_upper",
    "guardrail_lower",
    "guardrail_upper",
)


def _bounds(diff, guard: tuple[float, float] | None) -> dict[str, float]:
    """The finite values of the :data:`BOUNDS` of one difference."""
    values = dict(zip(BOUNDS, (diff.delta, *diff.sequence, *diff.fixed, *(guard or (np.nan, np.nan)))))
    return {k: float(v) for k, v in values.items() if np.isfinite(v)}


class _ExperimentCollector:
    """Per-arm results of the online experiment (:class:`~stream_ctr.experiments.attribution.ArmResults`), read at
    scrape time from its running totals and its last refresh. Labels: ``arm``, the closed set of unattributed
    ``reason``s, the :data:`BOUNDS` of the live differences and the ``guardrail`` metrics (``ctr``, ``logloss``)."""

    _COUNTERS = (
        ("requests", "Scoring requests served per arm (users inside coverage)"),
        ("impressions", "Events attributed to a served ranking, per arm"),
        ("clicks", "Clicks attributed to a served ranking, per arm"),
        ("users", "Users counted once per arm (the sample-ratio check's units)"),
    )
    _GAUGES = (
        ("logloss", "Logloss of the served scores on attributed events, per arm"),
        ("calibration", "Sum of served scores over attributed clicks (1 = calibrated), per arm"),
        ("gauc", "Windowed gAUC of the served scores on attributed events, per arm"),
    )

    def __init__(self, results):
        self.results = results

    def collect(self):
        summary = self.results.summary()
        for name, doc in self._COUNTERS:
            c = CounterMetricFamily(f"stream_ctr_ab_{name}", doc, labels=["arm"])
            for arm, m in summary["arms"].items():
                c.add_metric([arm], m[name])
            yield c
        for name, doc in self._GAUGES:
            g = GaugeMetricFamily(f"stream_ctr_ab_{name}", doc, labels=["arm"])
            for arm, m in summary["arms"].items():
                if m[name] is not None:
                    g.add_metric([arm], m[name])
            yield g
        un = CounterMetricFamily(
            "stream_ctr_ab_unattributed",
            "Events naming a request that could not be attributed, by reason",
            labels=["reason"],
        )
        for reason, n in summary["unattributed"].items():
            un.add_metric([reason], n)
        yield un
        yield GaugeMetricFamily(
            "stream_ctr_ab_srm_p_value",
            "Always-valid sample-ratio-mismatch p-value (Dirichlet-multinomial) of this worker's users per arm "
            "against the configured weights (alarm below 0.001)",
            value=summary["srm"]["p_value"],
        )
        yield from self._live()

    def _live(self):
        """The live differences with the control, the guardrails' states and the stopped arms."""
        results = self.results
        for metric in ("ctr", "logloss"):
            g = GaugeMetricFamily(
                f"stream_ctr_ab_{metric}_difference",
                f"{metric} of the arm minus the control's on this worker's users (per-user delta method), by bound: "
                "estimate, always_valid_* (confidence sequence: may be watched and stopped on), fixed_horizon_* "
                "(95%, valid only read once at a planned size), guardrail_* (what a guardrail decides on)",
                labels=["arm", "bound"],
            )
            for arm, metrics in results.live.items():
                for bound, value in _bounds(metrics[metric], results.guarded.get(arm, {}).get(metric)).items():
                    g.add_metric([arm, bound], value)
            yield g
        state = GaugeMetricFamily(
            "stream_ctr_ab_guardrail_state",
            "Guardrail state per treatment arm and metric: -1 waiting (too few users), 0 holding, 1 breached (the arm "
            "was stopped by it)",
            labels=["arm", "guardrail"],
        )
        for (arm, metric), value in results.guardrail_states().items():
            state.add_metric([arm, metric], value)
        yield state
        stopped = GaugeMetricFamily(
            "stream_ctr_ab_arm_stopped",
            "1 while the arm is stopped (weight 0 on ctr.experiments: its users get the control arm), else 0",
            labels=["arm"],
        )
        for arm in results.totals:
            stopped.add_metric([arm], float(arm in results.experiment.stopped))
        yield stopped


class ServingMetrics:
    """The scoring endpoint's load: requests held, time queued before ranking, requests per forward pass, and
    requests shed (``over_capacity``: refused 429 at the door; ``deadline``: dropped 503 after waiting too long)."""

    SHED_REASONS = ("over_capacity", "deadline")

    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.in_flight = Gauge("stream_ctr_serving_in_flight", "Scoring requests held by this worker now", registry=r)
        self.loop_lag = Gauge(
            "stream_ctr_serving_loop_lag_seconds",
            "How late the worker's event loop ran its "
            "last 5 ms probe (requests are shed past STREAM_CTR_SERVING_MAX_LAG_MS)",
            registry=r,
        )
        self.queue_seconds = Histogram(
            "stream_ctr_serving_queue_seconds",
            "Time a scoring request waited between its body being read and its ranking starting",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=r,
        )
        self.batch_requests = Histogram(
            "stream_ctr_serving_batch_requests",
            "Scoring requests ranked in one forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.shed = Counter(
            "stream_ctr_serving_shed", "Scoring requests shed instead of served, per reason", ["reason"], registry=r
        )
        for reason in self.SHED_REASONS:
            self.shed.labels(reason)


class ModelMetrics:
    """The model a process scores with (a worker's, a scorer's) as its snapshot follower reports it."""

    def _declare_model(self, r: CollectorRegistry) -> None:
        """The model in use: its global CTR, version and age, and the snapshots and deltas that moved it."""
        self.global_ctr = Gauge("stream_ctr_global_ctr", "Global CTR p_g of the model in use", registry=r)
        self.model_version = Gauge("stream_ctr_model_version", "Version of the model snapshot in use", registry=r)
        self.swaps = Counter("stream_ctr_model_swaps", "Model snapshots swapped in", registry=r)
        self.deltas = Counter("stream_ctr_model_deltas", "Model deltas applied to the model in use", registry=r)
        self.gaps = Counter(
            "stream_ctr_model_delta_gaps",
            "Model deltas skipped because one before them was missed (the model waits for the next full snapshot)",
            registry=r,
        )
        self.model_age = Gauge(
            "stream_ctr_model_age_seconds",
            "Seconds since the trainer published the model version in use (NaN before the first)",
            registry=r,
        )
        self.model_age.set_function(self._model_age)
        self._published_at = float("nan")
        for gauge in (self.global_ctr, self.model_version):
            gauge.set(float("nan"))  # no model yet: 0 would read as a real CTR or version

    def model_swapped(self, snapshot) -> None:
        """A newer :class:`~stream_ctr.models.snapshot.Snapshot` is in use."""
        self.swaps.inc()
        self._model_is(snapshot)

    def delta_applied(self, delta) -> None:
        """The model in use moved by a :class:`~stream_ctr.models.delta.Delta`."""
        self.deltas.inc()
        self._model_is(delta)

    def _model_is(self, update) -> None:
        self.model_version.set(update.version)
        self.global_ctr.set(update.global_ctr)
        self._published_at = update.published_at or float("nan")

    def _model_age(self) -> float:
        return time.time() - self._published_at


class WorkerMetrics(ModelMetrics):
    def __init__(
        self, arms, window: int, idle_s: float = 3600.0, active_max: int = 250_000, drift: DriftParams = DEFAULT_DRIFT
    ):
        self.registry = CollectorRegistry()
        r = self.registry
        # Declared in this order, which is the exposition's order.
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds
        self._declare_events(r)
        self._declare_model(r)
        self.catch_up_events = Gauge(
            "stream_ctr_catch_up_events",
            "Events the worker's model in use has learned by its own steps and the trainer's model not yet "
            "(STREAM_CTR_CATCH_UP_EVENTS at most)",
            registry=r,
        )
        self._declare_timings(r)
        self.lag = _LagGauge(r)
        self.serving = ServingMetrics(r)
        self.stalled = Gauge(
            "stream_ctr_partitions_stalled",
            "Owned partitions with events waiting and no committed progress for STREAM_CTR_STALL_AFTER_S",
            registry=r,
        )
        self._declare_drift(r, arms, drift)
        self._declare_quality(arms, window, idle_s, active_max)
        r.register(_WorkerCollector(self))

    def _declare_events(self, r: CollectorRegistry) -> None:
        """What became of the events consumed: outcome, dead-letter reason, and unknown features."""
        self.events = Counter("stream_ctr_events", "Events consumed by outcome", ["outcome"], registry=r)
        self.dead_letters = Counter(
            "stream_ctr_dead_letter", "Events sent to the dead-letter topic", ["reason"], registry=r
        )
        for reason in DLQ_REASONS:
            self.dead_letters.labels(reason)
        for outcome in ("applied", "duplicate", "dead_letter"):
            self.events.labels(outcome)
        self.unknown_features = Counter(
            "stream_ctr_unknown_features",
            "Features of applied events and scored candidates that the feature spec does not name (ignored)",
            registry=r,
        )

    def _declare_timings(self, r: CollectorRegistry) -> None:
        """How long a batch, an offset commit and a rebalance take."""
        self.batch_seconds = Histogram(
            "stream_ctr_batch_seconds",
            "Time to test-then-train one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "stream_ctr_commit_seconds",
            "Time Faust takes to commit the consumer's offsets (after the changelog writes they cover are durable)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=r,
        )
        self.rebalance_seconds = Histogram(
            "stream_ctr_rebalance_seconds",
            "Consumer-group rebalances of this worker, from start to table recovery done",
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )

    def _declare_drift(self, r: CollectorRegistry, arms, drift: DriftParams) -> None:
        """The label shift of the ft_lc arm, the drift detectors and the alarms they raised per signal."""
        self.label_shift = Counter(
            "stream_ctr_label_shift",
            "Sum over learned events of |label-corrected target - "
            "label| of the ft_lc arm (divided by applied events: the mean correction)",
            registry=r,
        )
        self.drift, self.band_z = DriftMonitor(arms, drift), drift.user_z
        self.drift_alarms = Counter(
            "stream_ctr_drift_alarms", "Alarms raised by the drift detectors, per signal", ["signal"], registry=r
        )
        for signal in signals(arms):
            self.drift_alarms.labels(signal)

    def _declare_quality(self, arms, window: int, idle_s: float, active_max: int) -> None:
        """The state the scrape-time families (:class:`_WorkerCollector`) read: per-arm online metrics and their
        last summaries (NaN until the first refresh), and the active users."""
        self.online = OnlineMetrics(arms, window)
        self.active = ActiveUsers(idle_s, active_max)  # per-user |p_u - p_g| and |z|: histograms and a count
        empty = {
            "n": 0,
            "arms": {
                arm: dict.fromkeys(("gauc", "auc", "logloss", "calibration"), float("nan")) for arm in self.online.arms
            },
        }
        self._summaries: dict[str, dict] = {"window": empty, "lifetime": {**empty, "lifetime_user_share": 1.0}}
        self.refreshed_at = 0.0

    def track_experiment(self, results) -> None:
        """Export the per-arm results of the worker's experiment, and count the guardrails' stops."""
        self.guardrail_stops = Counter(
            "stream_ctr_ab_guardrail_stops",
            "Arms this worker stopped because a guardrail was breached significantly, per arm and guardrail",
            ["arm", "guardrail"],
            registry=self.registry,
        )
        for arm, metric in results.guardrail_states():  # every configured (arm, guardrail) exported from the start
            self.guardrail_stops.labels(arm, metric)
        self.registry.register(_ExperimentCollector(results))

    def count(self, outcome: str) -> int:
        """Events consumed with ``outcome`` (``applied``, ``duplicate``, ``dead_letter``) so far."""
        return int(self.registry.get_sample_value("stream_ctr_events_total", {"outcome": outcome}) or 0)

    def observe(self, result, partition_of: dict[str, int] | None = None) -> None:
        """Account for one :class:`~stream_ctr.learning.loop.BatchResult` (predictions, drift, outcome counts);
        ``partition_of`` maps the batch's users to their source partitions."""
        if result.applied:
            users, labels, preds = result.arrays()
            self.online.record(users, labels, preds)
            for signal in self.drift.observe_predictions(labels, preds, time.time()):
                self.drift_alarms.labels(signal).inc()
                log.warning("drift detected on signal %s", signal)
        self.active.touch(result.gaps, result.z, partition_of or {}, time.monotonic())
        self.label_shift.inc(result.label_shift)
        self.events.labels("applied").inc(result.applied)
        self.events.labels("duplicate").inc(result.duplicates)

    def users_drifting(self) -> int:
        """Active users beyond their band (|z| > ``band_z``)."""
        return int((self.active.zscores() > self.band_z).sum())

    def forget_user(self, user_id: str) -> int:
        """Erase a user from every in-memory per-user record of these metrics (the working set, the scored rows of
        the online metrics); returns how many records went."""
        return int(self.active.forget(user_id)) + self.online.forget(user_id)

    def keep_partitions(self, partitions: set[int]) -> int:
        """After a rebalance: forget the users of partitions this worker no longer owns."""
        return self.active.keep_partitions(partitions)

    def lag_read(self, topic: str, group: str, lags: dict[int, tuple[int, int]], stalled: set[int]) -> None:
        """A reading of the owned partitions' ``{partition: (committed, end)}`` of ``group`` on ``topic`` and which
        of them are stalled; partitions no longer owned leave the lag gauge."""
        self.lag.read(topic, group, lags)
        self.stalled.set(len(stalled))

    def dead_lettered(self, reason: str) -> None:
        self.dead_letters.labels(reason).inc()
        self.events.labels("dead_letter").inc()

    def refresh(self, paired: bool = False) -> None:
        """Recompute the per-arm summaries (with ``paired``: and the bootstrap CIs of the arms' gAUC differences).
        gAUC over a large scope takes a while, so the worker calls this off the event loop on a timer; scrapes
        and ``/v1/stats`` only read the last result."""
        self._summaries = {scope: self.online.summary(scope, paired) for scope in ("window", "lifetime")}
        self.refreshed_at = time.time()

    def summary(self, scope: str) -> dict:
        return self._summaries[scope]

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ScorerMetrics(ModelMetrics):
    """A scorer process's metrics (``stream-ctr scorer``): the model it scores with, its scoring load
    (:class:`ServingMetrics`, the same series a worker exports) and its replica of the users' heads."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self._declare_model(r)
        self.serving = ServingMetrics(r)
        self.unknown_features = Counter(
            "stream_ctr_unknown_features",
            "Features of scored candidates that the feature spec does not name (ignored)",
            registry=r,
        )
        self.replica_users = Gauge(
            "stream_ctr_scorer_replica_users",
            "Users whose heads this scorer holds (STREAM_CTR_SCORER_USERS at most)",
            registry=r,
        )
        self.replica_records = Counter(
            "stream_ctr_scorer_replica_records", "Users changelog records this scorer has read", registry=r
        )
        self.replica_evicted = Counter(
            "stream_ctr_scorer_replica_evicted",
            "Users dropped from this scorer's replica to stay within its bound",
            registry=r,
        )
        self.replica_lag = Gauge(
            "stream_ctr_scorer_replica_lag_records",
            "Users changelog records written and not yet read by this scorer, all partitions (at its last read)",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class TrainerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.samples = Counter("stream_ctr_trainer_samples", "Samples the global model trained on", registry=r)
        self.skipped = Counter("stream_ctr_trainer_skipped", "Invalid events the trainer skipped", registry=r)
        self.dead_letters = Counter(
            "stream_ctr_dead_letter",
            "Events the trainer sent to the dead-letter topic (valid events whose training raised)",
            ["reason"],
            registry=r,
        )
        self.dead_letters.labels("internal_error")
        self.batch_size = Gauge(
            "stream_ctr_trainer_minibatch_size",
            "Mini-batch size of the last training step (grows with the backlog)",
            registry=r,
        )
        self.unknown_features = Counter(
            "stream_ctr_unknown_features",
            "Features of trained events that the feature spec does not name (ignored)",
            registry=r,
        )
        self.loss = Gauge("stream_ctr_trainer_loss", "Training logloss of the last mini-batch", registry=r)
        self.global_ctr = Gauge("stream_ctr_global_ctr", "Global CTR p_g the trainer publishes", registry=r)
        self.model_version = Gauge("stream_ctr_model_version", "Newest snapshot version published", registry=r)
        self.snapshot_bytes = Gauge("stream_ctr_snapshot_bytes", "Size of the newest full snapshot", registry=r)
        self.snapshots = Counter("stream_ctr_trainer_snapshots", "Full snapshots published", registry=r)
        self.deltas = Counter("stream_ctr_trainer_deltas", "Model deltas published", registry=r)
        self.published_bytes = Counter(
            "stream_ctr_model_published_bytes",
            "Bytes the trainer wrote to the model topics, by kind (delta, full)",
            ["kind"],
            registry=r,
        )
        for gauge in (self.loss, self.global_ctr, self.model_version, self.snapshot_bytes):
            gauge.set(float("nan"))
        self.lag = _LagGauge(r)
        self.step_seconds = Histogram(
            "stream_ctr_trainer_batch_seconds",
            "Time to train on one consumed batch",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )

    def dead_lettered(self, reason: str) -> None:
        self.dead_letters.labels(reason).inc()

    def published(self, snapshot, size: int) -> None:
        """The trainer published full ``snapshot`` (``size`` bytes, written to ``ctr.model`` and to the update
        chain)."""
        self._published(snapshot)
        self.snapshot_bytes.set(size)
        self.snapshots.inc()
        self.published_bytes.labels("full").inc(2 * size)

    def delta_published(self, delta, size: int) -> None:
        self._published(delta)
        self.deltas.inc()
        self.published_bytes.labels("delta").inc(size)

    def _published(self, update) -> None:
        self.model_version.set(update.version)
        self.global_ctr.set(update.global_ctr)

    def render(self) -> bytes:
        return generate_latest(self.registry)
