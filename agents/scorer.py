"""The scorer process (``stream-ctr scorer``): ``POST /v1/score`` served beside the workers, learning nothing.

A worker serves and learns on one event loop, so every request that arrives during a learning step waits for the
step to end; with events flowing that wait, not the ranking, is a worker's serving latency. A scorer only serves,
as many of them as there are cores to spare (docs/ARCHITECTURE.md, "Scorer processes"):

- **the model**: a :class:`~agents.snapshots.SnapshotFollower` on ``ctr.model`` and ``ctr.model.updates``, as a
  worker's, without the worker's catch-up steps (the trainer's model as published);
- **the users' heads**: a :class:`~stream_ctr.serving.replica.HeadsReplica` fed from every partition of the
  workers' users changelog (:meth:`Scorer.follow_heads`), so it serves every user, routing nothing;
- **the same serving code** as a worker: :class:`~agents.serving.ScoringView` (admission, deadlines,
  micro-batches) around a :class:`~agents.serving.Ranker` whose exposures go to ``ctr.exposures`` with the header
  :data:`~agents.serving.SERVED_BY`; the user's worker reads them there and attributes the user's events to them
  (:class:`~agents.attribution.ScorerExposures`);
- **the experiment**: the worker's definition at start, then every stop, resume or bandit epoch published on
  ``ctr.experiments`` (:class:`~agents.guardrails.ExperimentFollower`);
- **staleness**: how many events of ``ctr.events`` the model it serves has not learned, per request, as on a
  worker (:class:`~stream_ctr.monitoring.freshness.Staleness`, ``scored="request"``): against the end offsets of
  ``ctr.events`` (:func:`~agents.serving.follow_stream_ends`).

``/healthz`` answers 200 once there is a model and the replica has read the changelog up to where it ended when
the scorer started (before that a user's ranking would lack the user's head), with the model version and the
requests' staleness quantiles.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from functools import partial

from aiokafka import TopicPartition

from stream_ctr import topics
from stream_ctr.broker.admin import topic_partitions
from stream_ctr.broker.connection import Kafka
from stream_ctr.config import Settings
from stream_ctr.experiments.assignment import Experiment
from stream_ctr.experiments.attribution import ArmResults
from stream_ctr.monitoring.freshness import Staleness
from stream_ctr.monitoring.prometheus import ScorerMetrics
from stream_ctr.serving.replica import HeadsReplica

from . import views
from .app import create_app, raw_topic
from .guardrails import ExperimentFollower
from .personalize import api_keys, users_changelog
from .serving import Ranker, ScoringView, follow_stream_ends
from .snapshots import SnapshotFollower

log = logging.getLogger(__name__)

__all__ = ["Scorer"]

#: Most changelog records a scorer reads at once (a read between two batches of requests).
READ_RECORDS = 2000


class Scorer:
    """The Faust app of a scorer (no agents: its web server, its tasks and its exposure producer) and its units."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.app = create_app(settings, "scorer", settings.web_port)
        self.name = f"{settings.advertised_host}:{settings.web_port}"
        self.metrics = ScorerMetrics()
        self.staleness = Staleness(settings.events_partitions)
        self.metrics.registry.register(self.staleness)
        self.follower = SnapshotFollower(
            settings,
            (topics.model(settings).name, topics.model_updates(settings).name),
            self.metrics,
            window=2 * settings.full_snapshot_every + 2,
        )
        self.users = HeadsReplica(settings.scorer_users)
        self._evicted = 0  # the replica's evictions counted in the metrics so far
        self.changelog, self.app_id = users_changelog(settings), settings.app_id
        self.caught_up = asyncio.Event()  # the replica has read what the changelog held at start
        self.experiment = Experiment.configured(settings.experiment_file)
        # The follower reads and replaces the running experiment here; a scorer counts no results in it.
        self.current = ArmResults(self.experiment, window=1)
        self.registry = ExperimentFollower(
            settings, topics.experiments(settings).name, self.current, None, self.use, by=f"scorer {self.name}"
        )
        ranker = Ranker(
            self.follower.holder,
            self.users,
            self.experiment,
            pending=None,
            results=None,
            exposures=raw_topic(self.app, topics.exposures(settings)),
            staleness=self.staleness,
            metrics=self.metrics,
            served_by=f"scorer {self.name} ({socket.gethostname()})",
        )
        self.scoring = ScoringView(settings, self.metrics.serving, ranker, routing=None)

    @classmethod
    def build(cls, settings: Settings) -> Scorer:
        scorer = cls(settings)
        scorer._register()
        return scorer

    def use(self, experiment: Experiment) -> None:
        """Serve ``experiment`` from now on (a stop, a resume, a bandit's next epoch)."""
        self.experiment = self.current.experiment = self.scoring.ranker.experiment = experiment

    def _register(self) -> None:
        self.app.task(self.follower.run)
        self.app.task(self.follow_heads)
        self.app.task(partial(follow_stream_ends, self.settings, topics.events(self.settings).name, self.staleness))
        self.app.timer(self.settings.experiment_poll_s, name="follow_experiment")(self.registry.follow)
        views.register_scorer_views(
            self.app,
            metrics=self.metrics,
            ready=self.ready,
            details=self.details,
            scoring=self.scoring,
            keys=api_keys(self.settings),
        )

    def ready(self) -> str | None:
        """None when the scorer can serve; else why not."""
        if self.follower.holder.current is None:
            return "no model snapshot on ctr.model yet"
        if not self.caught_up.is_set():
            return f"reading the users' heads from {self.changelog}"
        return None

    def details(self) -> dict:
        """What a ready scorer's ``/healthz`` says: the model version and the staleness of the requests served."""
        model = self.follower.holder.current
        return {
            "model_version": None if model is None else model.version,
            "staleness": {**self.staleness.quantiles("request"), "requests": self.staleness.counted("request")},
        }

    async def follow_heads(self) -> None:
        """Read every partition of the users changelog from its start into the replica, forever."""
        kafka, loop = Kafka.of(self.settings), asyncio.get_running_loop()
        while True:  # a worker creates the changelog when it first starts: unhealthy, not failed, until then
            try:
                parts = await loop.run_in_executor(None, topic_partitions, kafka, self.changelog)
                break
            except RuntimeError:
                log.warning("waiting for %s: start a personalize worker of app id %s", self.changelog, self.app_id)
        consumer = kafka.aio_consumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tps = [TopicPartition(self.changelog, p) for p in parts]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            start_ends = await consumer.end_offsets(tps)
            lag_due = loop.time()
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=READ_RECORDS)
                read = 0
                for records in batches.values():
                    for msg in records:
                        self.users.apply(msg.key, msg.value)
                    read += len(records)
                self._replica_read(read)
                now = loop.time()
                if now >= lag_due:  # once a second: positions and high watermarks of every partition
                    lag_due = now + 1.0
                    self.metrics.replica_lag.set(await _behind(consumer, tps))
                if not self.caught_up.is_set() and await _reached(consumer, start_ends):
                    log.info("heads replica caught up: %d users from %s", len(self.users), self.changelog)
                    self.caught_up.set()
        finally:
            await consumer.stop()

    def _replica_read(self, records: int) -> None:
        m, evicted = self.metrics, self.users.evicted
        m.replica_records.inc(records)
        m.replica_users.set(len(self.users))
        m.replica_evicted.inc(evicted - self._evicted)
        self._evicted = evicted


async def _reached(consumer, ends) -> bool:
    """Whether ``consumer`` has read every partition up to its offset in ``ends``."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


async def _behind(consumer, tps) -> int:
    """Records of ``tps`` written and not yet read by ``consumer`` (by the high watermarks of its last fetches)."""
    behind = 0
    for tp in tps:
        highwater = consumer.highwater(tp)
        if highwater is not None:
            behind += max(highwater - await consumer.position(tp), 0)
    return behind
