"""The global trainer as one typed object: its own consumer group on ``ctr.events``, mini-batch torch training,
snapshots to ``ctr.model`` every K samples (and when the stream goes quiet, so the newest weights are never held
back). On start it resumes from the newest snapshot on ``ctr.model`` or publishes v0, so scorers can start."""

from __future__ import annotations

import asyncio
import logging
import time

from stream_ctr import topics
from stream_ctr.config import Settings
from stream_ctr.events import InvalidEvent, parse_record
from stream_ctr.monitoring import TrainerMetrics
from stream_ctr.snapshot import Snapshot
from stream_ctr.trainer import GlobalTrainer

from . import views
from .app import create_app, raw_topic
from .snapshots import read_latest_snapshot

log = logging.getLogger(__name__)

__all__ = ["QUIET_PUBLISH_S", "TrainerWorker"]

#: Publish pending samples after this many seconds without new events.
QUIET_PUBLISH_S = 3.0


class TrainerWorker:
    """The Faust app of the trainer role: consumes ``events``, keeps a :class:`GlobalTrainer`, publishes to
    ``model_topic``, serves :mod:`.views`. Its HTTP port is the worker's + 1 unless given."""

    def __init__(self, settings: Settings, web_port: int | None = None):
        self.settings = settings
        self.app = create_app(settings, "trainer", settings.web_port + 1 if web_port is None else web_port)
        self.events = raw_topic(self.app, topics.events(settings), partitions=settings.events_partitions)
        self.model_topic = raw_topic(self.app, topics.model(settings))
        self.trainer = GlobalTrainer(settings)
        self.metrics = TrainerMetrics()
        self.ready = asyncio.Event()
        self.last_event = time.monotonic()

    @classmethod
    def build(cls, settings: Settings, web_port: int | None = None) -> "TrainerWorker":
        worker = cls(settings, web_port)
        app = worker.app
        app.task(worker.resume)

        @app.agent(worker.events, name="train")
        async def train(stream):
            await worker.ready.wait()
            async for batch in stream.take_events(settings.trainer_batch * 4, within=1.0):
                await worker.train_batch(batch)

        app.timer(1.0, name="publish_when_quiet")(worker.publish_when_quiet)
        views.register_trainer_views(worker)
        return worker

    async def publish(self, snap: Snapshot) -> None:
        data = snap.to_bytes()
        await self.model_topic.send(key=b"global", value=data)
        self.metrics.published(snap, len(data))
        log.info("published model v%d (%d samples, global CTR %.4f, %d bytes)", snap.version, snap.samples,
                 snap.global_ctr, len(data))

    async def resume(self) -> None:
        latest = await read_latest_snapshot(self.settings.kafka_bootstrap, topics.model(self.settings).name)
        if latest is not None and latest.model_cfg == self.trainer.cfg:
            self.trainer.resume_from(latest)
            log.info("resumed from model v%d", latest.version)
        else:
            await self.publish(self.trainer.snapshot())  # v0: scorers can start before the first K samples
        self.ready.set()

    async def train_batch(self, batch) -> None:
        events = []
        for record in batch:
            try:
                events.append(parse_record(record.value, record.key, record.message.partition,
                                           self.settings.events_partitions))
            except InvalidEvent:
                self.metrics.skipped.inc()  # the personalize worker owns dead-lettering
        if not events:
            return
        with self.metrics.step_seconds.time():
            self.trainer.learn_many(events)
        self.last_event = time.monotonic()
        self.metrics.samples.inc(len(events))
        self.metrics.loss.set(self.trainer.last_loss)
        snap = self.trainer.maybe_snapshot()
        if snap is not None:
            await self.publish(snap)

    async def publish_when_quiet(self) -> None:
        quiet = time.monotonic() - self.last_event > QUIET_PUBLISH_S
        if self.ready.is_set() and self.trainer.pending and quiet:
            await self.publish(self.trainer.next_snapshot())
