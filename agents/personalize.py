"""The personalize worker: per-user test-then-train on ``ctr.events``, as one typed object.

:meth:`PersonalizeWorker.build` wires the units: what the worker consumes (``events``), what it keeps (``table``
of :class:`~stream_ctr.learning.state.UserState`, the snapshot ``follower``, ``metrics``, the ``experiment`` it runs
with its ``pending`` exposures and per-arm ``results``), what it does per batch (``step``), where bad records go
(``dead_letters``), what it serves (:mod:`.views`, ``scoring``) and where exposures go (``exposures``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import MutableMapping
from functools import partial

import faust
import numpy as np

from stream_ctr import topics
from stream_ctr.broker.lag import StallDetector, group_lag
from stream_ctr.config import ConfigError, Settings
from stream_ctr.contracts.arms import ARMS
from stream_ctr.experiments.assignment import Experiment
from stream_ctr.experiments.attribution import ArmResults, PendingExposures
from stream_ctr.learning.catch_up import CatchUp
from stream_ctr.learning.drift import DriftParams
from stream_ctr.learning.heads import HeadParams
from stream_ctr.learning.state import UserState
from stream_ctr.models.snapshot import ModelSource
from stream_ctr.monitoring.freshness import Staleness
from stream_ctr.monitoring.prometheus import DRIFT_BUCKETS, WorkerMetrics
from stream_ctr.serving.keys import ApiKeys

from . import views
from .app import USER_STATE_CODEC, create_app, raw_topic
from .attribution import ScorerExposures
from .batch import PersonalizeStep
from .batched import consume_in_batches
from .dead_letters import DeadLetters
from .guardrails import ExperimentFollower
from .sensors import TimingSensor
from .serving import Ranker, Routing, ScoringView, follow_stream_ends
from .snapshots import SnapshotFollower

log = logging.getLogger(__name__)

__all__ = ["PersonalizeWorker", "users_changelog"]


def api_keys(settings: Settings) -> ApiKeys | None:
    """The API keys of ``STREAM_CTR_API_KEYS_FILE`` (None: no authentication, on a loopback bind only)."""
    if not settings.api_keys_file:
        return None
    try:
        return ApiKeys.load(settings.api_keys_file, settings.api_key_rate)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"STREAM_CTR_API_KEYS_FILE: {exc}") from None


def users_changelog(settings: Settings) -> str:
    """The users table's changelog topic (compacted: each user's newest state; read by scorer processes too)."""
    return f"{settings.app_id}-personalize-users-changelog"


def _users_table(app: faust.App, settings: Settings) -> faust.Table:
    # use_partitioner: changelog records go to the partition of the key, which is the user's events partition
    # (same key bytes, same murmur2 partitioner), so batches that mix partitions keep tables co-partitioned.
    # Faust derives a table's serializers from its types (JSON otherwise), so the changelog topic is declared
    # here: keys as utf-8 (the same bytes as the events' keys), values in the compact state codec. acks=False is
    # Faust's own setting for changelogs: no consumer offsets are tracked for them (producer acks are "all").
    changelog = app.topic(
        users_changelog(settings),
        key_type=str,
        key_serializer="raw",
        value_serializer=USER_STATE_CODEC,
        partitions=settings.events_partitions,
        compacting=True,
        deleting=False,
        acks=False,
        internal=True,
    )
    table = app.Table(
        "users", key_type=str, partitions=settings.events_partitions, use_partitioner=True, changelog_topic=changelog
    )
    table.key_serializer, table.value_serializer = "raw", USER_STATE_CODEC
    return table


class PersonalizeWorker:
    """The Faust app of the personalize role and the typed units it is made of."""

    def __init__(self, settings: Settings, users: MutableMapping[str, UserState] | None = None):
        self.settings = settings
        self.app = create_app(settings, "personalize", settings.web_port)
        self.events = raw_topic(self.app, topics.events(settings), partitions=settings.events_partitions)
        self.table = _users_table(self.app, settings)
        self.metrics = WorkerMetrics(
            ARMS,
            settings.metrics_window,
            settings.user_idle_s,
            settings.active_users_max,
            DriftParams.from_settings(settings),
        )
        self.staleness = Staleness(settings.events_partitions)
        self.metrics.registry.register(self.staleness)
        self.follower, self.catch_up = self._follow_model(settings)
        self.dead_letters = DeadLetters(raw_topic(self.app, topics.dead_letters(settings)), self.metrics, "worker")
        self.experiment = Experiment.configured(settings.experiment_file)
        self.pending = PendingExposures(settings.pending_exposures, settings.attribution_window_s)
        self.results = ArmResults(self.experiment, settings.metrics_window)
        self.metrics.track_experiment(self.results)
        self.app.sensors.add(TimingSensor(self.metrics))
        self.exposures = raw_topic(self.app, topics.exposures(settings))
        users = self.table if users is None else users
        self.step = PersonalizeStep(
            users,
            self.models,
            self.metrics,
            self.dead_letters,
            HeadParams.from_settings(settings),
            self.experiment,
            self.pending,
            self.results,
            settings.events_partitions,
            self.staleness,
            self.catch_up,
        )
        self.scoring = self._scoring_view(users)
        self.scorer_exposures = ScorerExposures(
            settings, topics.exposures(settings).name, self.pending, self.results, self.step.exposure_arrived
        )
        self.registry = ExperimentFollower(
            settings,
            topics.experiments(settings).name,
            self.results,
            self.metrics,
            self.use,
            by=f"guardrail on worker {settings.web_host or socket.gethostname()}:{settings.web_port}",
        )
        self.stalls = StallDetector(settings.stall_after_s)
        self.partitions: dict[str, dict] = {}  # owned partition -> lag and stalled, as of the last lag check

    def _scoring_view(self, users: MutableMapping[str, UserState]) -> ScoringView:
        ranker = Ranker(
            self.models,
            users,
            self.experiment,
            pending=self.pending,
            results=self.results,
            exposures=self.exposures,
            staleness=self.staleness,
            metrics=self.metrics,
        )
        return ScoringView(self.settings, self.metrics.serving, ranker, Routing(self.app, self.table.name))

    def _follow_model(self, settings: Settings) -> tuple[SnapshotFollower, CatchUp | None]:
        """The trainer's model as published (the follower's holder), and the model in use: the trainer's plus the
        worker's own steps on what it scored since (the catch-up; None: off)."""
        follower = SnapshotFollower(
            settings,
            (topics.model(settings).name, topics.model_updates(settings).name),
            self.metrics,
            window=2 * settings.full_snapshot_every + 2,
            gate=self.staleness.covers,
        )
        catch_up = CatchUp.from_settings(settings)
        if catch_up is not None:
            follower.holder.listeners.append(catch_up.rebase)
            self.metrics.catch_up_events.set_function(lambda: catch_up.held_events)
        return follower, catch_up

    def use(self, experiment: Experiment) -> None:
        """Run ``experiment`` from now on: the same run with other stops (a stopped arm's users get the control), or
        a later epoch of a bandit, whose per-arm results start afresh (:meth:`ArmResults.reset`)."""
        if experiment.split_salt != self.experiment.split_salt:
            self.results.reset(experiment)
        self.experiment = self.step.experiment = self.results.experiment = experiment
        self.scoring.ranker.experiment = experiment

    @property
    def models(self) -> ModelSource:
        """Where batches and requests take the model in use."""
        return self.follower.holder if self.catch_up is None else self.catch_up

    @property
    def users(self) -> MutableMapping[str, UserState]:
        return self.step.users

    @classmethod
    def build(
        cls, settings: Settings, follow: bool = True, users: MutableMapping[str, UserState] | None = None
    ) -> PersonalizeWorker:
        """The wired worker. ``follow=False`` leaves ``ctr.model`` alone (tests offer snapshots themselves);
        ``users`` replaces the Faust table with any mapping (the in-process tests, which have no broker)."""
        worker = cls(settings, users)
        worker._register(follow)
        return worker

    def _register(self, follow: bool) -> None:
        app, step, holder, models = self.app, self.step, self.follower.holder, self.models
        if follow:
            app.task(self.follower.run)
            app.task(self.scorer_exposures.run)
            app.task(partial(follow_stream_ends, self.settings, topics.events(self.settings).name, self.staleness))

        async def personalize(records) -> None:
            while models.current is None:  # nothing can be scored before the first snapshot
                await asyncio.sleep(0.1)
            await step(records)

        consume_in_batches(app, self.events, personalize, self.settings.batch_size, self.settings.step_events)

        app.on_partitions_assigned.connect(self._forget_moved_users)
        app.timer(self.settings.metrics_refresh_s, name="refresh_metrics")(self.refresh_metrics)
        app.timer(self.settings.experiment_poll_s, name="follow_experiment")(self.registry.follow)
        app.timer(min(10.0, self.settings.stall_after_s / 3), name="check_lag")(self.check_lag)
        views.register_worker_views(
            app,
            metrics=self.metrics,
            holder=holder,
            table=self.table,
            users=self.users,
            scoring=self.scoring,
            results=self.results,
            stats=self.stats,
            erase=self.erase,
            keys=api_keys(self.settings),
        )

    async def _forget_moved_users(self, sender, assigned, **kwargs) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == self.events.get_topic_name()}
        self.scorer_exposures.owned = mine
        self.staleness.keep(mine)
        forgotten = self.metrics.keep_partitions(mine)
        if forgotten:
            log.info("rebalance: %d users moved to other workers", forgotten)

    async def refresh_metrics(self) -> None:
        """Recompute the per-arm online metrics off the event loop (gAUC over a large scope takes seconds)."""
        await asyncio.get_running_loop().run_in_executor(None, self.metrics.refresh)
        self.results.refresh()
        await self.registry.enforce()  # a significant guardrail breach stops its arm through ctr.experiments
        self.metrics.active.evict(time.monotonic())  # users who went idle while no batch came (on the loop)

    async def check_lag(self) -> None:
        """Read the owned partitions' lag from the broker (not from Faust's consumer) and report stalled ones."""
        topic = self.events.get_topic_name()
        owned = sorted(tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic)
        try:
            lags = await asyncio.get_running_loop().run_in_executor(
                None, group_lag, self.settings, self.app.conf.id, topic, owned
            )
        except Exception as exc:  # the broker is away: no reading this time, the next one will tell
            log.warning("lag check failed: %s", exc)
            return
        stalled = self.stalls.update(lags, time.monotonic())
        if stalled:
            log.error(
                "partitions %s of %s: events waiting, no committed progress for %.0fs",
                sorted(stalled),
                topic,
                self.settings.stall_after_s,
            )
        self.metrics.lag_read(topic, self.app.conf.id, lags, stalled)
        self.partitions = {
            str(p): {"lag": end - committed, "stalled": p in stalled} for p, (committed, end) in lags.items()
        }

    def erase(self, user_id: str) -> dict:
        """Erase ``user_id`` from this worker, its owner: its state in the users table (heads, rolling CTR, drift
        state; deleting it writes a tombstone to the table's compacted changelog, so neither a restart nor the
        partition's next owner brings it back), its rows in the online metrics and the working set, its pending
        exposures and its impressions in the experiment's windows. Returns what there was of each."""
        state = self.users.pop(user_id, None)
        return {
            "erased": state is not None,
            "metric_records": self.metrics.forget_user(user_id),
            "pending_exposures": self.pending.forget_user(user_id),
            "waiting_events": self.step.waiting.forget_user(user_id),
            "experiment_rows": self.results.forget_user(user_id),
        }

    def stats(self) -> dict:
        """Progress and quality of this worker, for ``stream-ctr demo`` and operators (``GET /v1/stats``)."""
        m, current = self.metrics, self.follower.holder.current
        drift = m.active.drifts()
        return {
            "applied": m.count("applied"),
            "duplicates": m.count("duplicate"),
            "dead_letters": m.count("dead_letter"),
            "users": len(drift),
            "model_version": current.version if current else None,
            "partitions": self.partitions,
            "metrics_refreshed_at": m.refreshed_at,
            "global_ctr": current.snapshot.global_ctr if current else None,
            "staleness": {
                **self.staleness.quantiles(),
                "scored": self.staleness.scored,
                "ahead": self.staleness.ahead,
                "catch_up_events": self.catch_up.held_events if self.catch_up else None,
            },
            "window": m.summary("window"),
            "lifetime": m.summary("lifetime"),
            "detectors": m.drift.state(time.time()),
            "users_drifting": m.users_drifting(),
            "drift": {
                "buckets": list(DRIFT_BUCKETS),
                "counts": np.histogram(drift, bins=[0.0, *DRIFT_BUCKETS, np.inf])[0].tolist(),
                "quantiles": {
                    q: float(np.quantile(drift, float(q))) if len(drift) else None for q in ("0.1", "0.5", "0.9")
                },
            },
        }
