"""The global trainer as one typed object: mini-batch torch training on all of ``ctr.events``, a model delta on
``ctr.model.updates`` every K samples (or every ``delta_interval_s``), and a full snapshot on ``ctr.model`` and
the update chain every ``full_snapshot_every`` deltas and when the stream goes quiet.

Its position in the stream is the newest full snapshot's, not a consumer group's: each snapshot carries the next
offset per partition its weights have trained up to, and a starting trainer resumes from those weights *at* those
offsets (or publishes v0 and starts at the beginning), numbering on past any delta published after them. Killed
at any point, it neither skips samples the full snapshot never saw nor trains a sample twice into it. The consumer
is a plain aiokafka one with every partition assigned (one trainer, one global model); Faust runs the producer,
the timer and the HTTP views.

In a group of ranks (:mod:`stream_ctr.trainer.distributed`, ``stream-ctr trainer --world-size N`` or torchrun) each rank
runs this worker on its share of the partitions and takes its part of every step (:meth:`TrainerWorker.run_rounds`);
rank 0 resumes, hands its weights and position to the others, publishes, and serves the group's figures. Ranks
other than a machine's first serve no HTTP."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from functools import partial

from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_ctr import topics
from stream_ctr.broker.connection import Kafka
from stream_ctr.config import Settings
from stream_ctr.contracts.events import InvalidEvent, parse_record
from stream_ctr.models.delta import Delta
from stream_ctr.models.snapshot import Snapshot
from stream_ctr.monitoring.prometheus import TrainerMetrics
from stream_ctr.topics import MAX_RECORD_BYTES
from stream_ctr.trainer.distributed import Group
from stream_ctr.trainer.global_trainer import GlobalTrainer

from . import views
from .app import create_app, raw_topic
from .dead_letters import FATAL, DeadLetters
from .snapshots import read_latest_snapshot, read_newest_version

log = logging.getLogger(__name__)

__all__ = ["QUIET_PUBLISH_S", "TrainerWorker"]

#: Publish pending samples after this many seconds without new events.
QUIET_PUBLISH_S = 3.0
#: In a group, how long a rank waits for records before it joins a step while the whole group had none.
ROUND_WAIT_MS = 100


class TrainerWorker:
    """The Faust app of the trainer role: consumes ``events``, keeps a :class:`GlobalTrainer`, publishes to
    ``model_topic``, serves :mod:`.views`. Its HTTP port is ``settings.trainer_port`` unless given."""

    def __init__(self, settings: Settings, web_port: int | None = None, group: Group | None = None):
        self.settings = settings
        self.group = group
        #: Whether this process publishes the model (the only trainer, or rank 0 of a group).
        self.speaks = group is None or group.publishes
        port = settings.trainer_port if web_port is None else web_port
        role = "trainer" if group is None or group.rank == 0 else f"trainer-rank{group.rank}"
        self.app = create_app(settings, role, port if group is None or group.local_rank == 0 else None)
        self.model_topic = raw_topic(self.app, topics.model(settings))
        self.updates_topic = raw_topic(self.app, topics.model_updates(settings))
        self.trainer = GlobalTrainer(settings, group)
        self.metrics = TrainerMetrics()
        self.ready = asyncio.Event()
        self.last_event = time.monotonic()
        # A fetch holds up to 16 of the largest mini-batches: while the trainer keeps up, fetches are small (what
        # arrived since the last one); with a backlog, a fetch is trained in big steps (GlobalTrainer.batch_for).
        self._fetch = 16 * settings.trainer_batch_max
        self._highwater: dict[int, int] = {}  # partition -> end offset, as of the last fetch
        self._lag_read_at = 0.0
        self.dead_letters = DeadLetters(raw_topic(self.app, topics.dead_letters(settings)), self.metrics, "trainer")

    @classmethod
    def build(cls, settings: Settings, web_port: int | None = None, group: Group | None = None) -> TrainerWorker:
        worker = cls(settings, web_port, group)
        app = worker.app
        app.task(worker.run)
        if worker.speaks:
            app.timer(settings.delta_interval_s, name="publish_on_time")(worker.publish_on_time)
        if app.conf.web_enabled:
            views.register_trainer_views(app, metrics=worker.metrics, ready=worker.ready, trainer=worker.trainer)
        return worker

    async def publish(self, snap: Snapshot) -> None:
        """A full snapshot: to ``ctr.model`` (where starting scorers and trainers begin) and to the update chain."""
        data = snap.to_bytes()
        await self.model_topic.send(key=b"global", value=data)
        await self.updates_topic.send(key=b"global", value=data)
        self.metrics.published(snap, len(data))
        log.info(
            "published model v%d (%d samples, global CTR %.4f, %d bytes)",
            snap.version,
            snap.samples,
            snap.global_ctr,
            len(data),
        )

    async def publish_delta(self, delta: Delta) -> None:
        data = delta.to_bytes()
        await self.updates_topic.send(key=b"global", value=data)
        self.metrics.delta_published(delta, len(data))

    async def publish_due(self, now: float | None) -> None:
        """Publish a delta if one is due at monotonic ``now`` (None: by samples only), then a full snapshot if
        that is due."""
        delta = self.trainer.maybe_delta(now)
        if delta is not None:
            await self.publish_delta(delta)
            if self.trainer.full_due:
                await self.publish(self.trainer.snapshot())

    async def resume(self) -> None:
        """Resume from the newest full snapshot of the same model config, or start afresh. Either way the versions
        move forward: a scorer may hold any version published before, and only a newer one replaces it."""
        latest = await read_latest_snapshot(self.settings, topics.model(self.settings).name)
        newest = await read_newest_version(self.settings, topics.model_updates(self.settings).name)
        if latest is not None and latest.model_cfg == self.trainer.cfg:
            self.trainer.resume_from(latest, newest)
            log.info("resumed from model v%d (newest published v%s)", latest.version, newest)
            if self.trainer.version > latest.version:  # deltas past it were dropped: supersede them
                await self.publish(self.trainer.snapshot())
        else:  # nothing published, or another model: its first version supersedes whatever scorers hold
            published = [v for v in (newest, latest.version if latest else None) if v is not None]
            self.trainer.version = max(published, default=-1) + 1
            await self.publish(self.trainer.snapshot())
        self.ready.set()

    async def run(self) -> None:
        """Resume, then train on every partition of ``ctr.events`` (in a group: this rank's share) from the
        resumed snapshot's offsets."""
        if self.group is not None:
            await asyncio.to_thread(self.group.join, self.trainer.device)
        if self.speaks:
            await self.resume()
        if self.group is not None:
            await asyncio.to_thread(self.trainer.sync_group)
            self.ready.set()
        topic = topics.events(self.settings).name
        consumer = Kafka.of(self.settings).aio_consumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=MAX_RECORD_BYTES,
            fetch_max_bytes=MAX_RECORD_BYTES,
        )
        await consumer.start()
        try:
            tps = [
                TopicPartition(topic, p)
                for p in range(self.settings.events_partitions)
                if self.group is None or self.group.owns(p)
            ]
            consumer.assign(tps)
            for tp in tps:
                if tp.partition in self.trainer.offsets:
                    consumer.seek(tp, self.trainer.offsets[tp.partition])
                else:
                    await consumer.seek_to_beginning(tp)
            await (self.run_alone(consumer, tps) if self.group is None else self.run_rounds(consumer, tps))
        finally:
            await consumer.stop()
            if self.group is not None:
                self.group.leave()

    async def run_alone(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        while True:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=self._fetch)
            self._highwater = {tp.partition: end for tp in tps if (end := consumer.highwater(tp)) is not None}
            if fetched:
                await self.train_batch([r for records in fetched.values() for r in records])
            self._read_lag()

    async def run_rounds(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        """A rank's loop: one group step per round, this rank's part being up to its share of the mini-batch
        (:meth:`GlobalTrainer.batch_for` of the group's backlog, split over the ranks). Every rank joins every
        step; while the whole group had nothing, each waits up to ``ROUND_WAIT_MS`` for records first."""
        assert self.group is not None, "a rank's loop runs in a group"
        world = self.group.world
        buffer: collections.deque = collections.deque()
        idle = False
        while True:
            share = -(-self.trainer.batch_for(self._backlog()) // world)
            if len(buffer) < share:
                wait = ROUND_WAIT_MS if idle and not buffer else 0
                fetched = await consumer.getmany(timeout_ms=wait, max_records=self._fetch)
                for records in fetched.values():
                    buffer.extend(records)
            part = [buffer.popleft() for _ in range(min(share, len(buffer)))]
            ends = {tp.partition: end for tp in tps if (end := consumer.highwater(tp)) is not None}
            samples = self.trainer.samples
            await self._learn(part, partial(self.trainer.learn_round, ends=ends))
            idle = self.trainer.samples == samples
            self._highwater = self.trainer.ends
            if self.speaks:
                self._read_lag()

    def _read_lag(self) -> None:
        """Lag per partition: the end offset the last fetch saw against the position trained up to. The trainer
        has no consumer group (its position lives in its snapshots), so its ``group`` label is ``trainer``."""
        now = time.monotonic()
        if now - self._lag_read_at < 1.0:
            return
        self._lag_read_at = now
        self.metrics.lag.read(
            topics.events(self.settings).name,
            "trainer",
            {p: (self.trainer.offsets.get(p, 0), end) for p, end in self._highwater.items()},
        )

    async def train_batch(self, records) -> None:
        """Learn the valid events of ``records`` (aiokafka records, any partitions) and advance past all of them,
        in slices of ``delta_every`` samples or one mini-batch (:meth:`GlobalTrainer.batch_for` of the backlog),
        whichever is larger: each slice is learned, recorded as trained up to its records, and published as a delta
        when one is due, so the model leaves the trainer a slice at a time, never a whole fetch at once."""
        backlog = max(len(records), self._backlog())
        size = max(self.settings.delta_every, self.trainer.batch_for(backlog))
        for lo in range(0, len(records), size):
            await self._train_slice(records[lo : lo + size], backlog - lo)

    async def _train_slice(self, records, backlog: int) -> None:
        """One slice of :meth:`train_batch`. A valid event whose training raises is dead-lettered with reason
        ``internal_error``; the rest are learned."""
        await self._learn(records, lambda parsed, positions: self._learn_many(parsed, positions, backlog))

    def _learn_many(self, parsed, positions, backlog: int):
        failed = self.trainer.learn_many(parsed, backlog=backlog) if parsed else []
        self.trainer.advance(positions)
        return failed

    async def _learn(self, records, learn) -> None:
        """Parse ``records``, ``learn(events, positions)`` (returns the events that failed, with their exceptions),
        dead-letter those, count and publish what is due. Invalid records are skipped (the personalize worker owns
        dead-lettering them)."""
        parsed, positions, record_of = [], {}, {}
        for record in records:
            positions[record.partition] = record.offset + 1
            try:
                parsed.append(parse_record(record.value, record.key, record.partition, self.settings.events_partitions))
            except InvalidEvent:
                self.metrics.skipped.inc()
                continue
            except FATAL:
                raise
            except Exception as exc:
                await self.dead_letters.internal_error(record, exc)
                continue
            record_of[id(parsed[-1])] = record
        samples, unknown = self.trainer.samples, self.trainer.encoder.unknown_features
        with self.metrics.step_seconds.time():
            failed = learn(parsed, positions)
        self.metrics.batch_size.set(self.trainer.last_batch)
        self.metrics.unknown_features.inc(self.trainer.encoder.unknown_features - unknown)
        for event, error in failed:
            await self.dead_letters.internal_error(record_of[id(event)], error)
        learned = self.trainer.samples - samples
        if not learned:
            return
        self.last_event = time.monotonic()
        self.metrics.loss.set(self.trainer.last_loss)
        if self.speaks:  # in a group, rank 0 counts the group's samples
            self.metrics.samples.inc(learned)
            await self.publish_due(self.last_event)

    def _backlog(self) -> int:
        """Samples between the position trained up to and the end of each partition, as of the last fetch."""
        offsets = self.trainer.offsets
        return sum(max(0, end - offsets.get(p, 0)) for p, end in self._highwater.items())

    async def publish_on_time(self) -> None:
        """Every ``delta_interval_s``: pending samples go out as a delta; once the stream has been quiet for
        ``QUIET_PUBLISH_S``, a full snapshot holds everything trained (where a restart begins)."""
        if not self.ready.is_set() or self.app.should_stop:
            return  # not started, or shutting down (the producer may be gone; restarts begin at the full snapshot)
        now = time.monotonic()
        await self.publish_due(now)
        if now - self.last_event > QUIET_PUBLISH_S and self.trainer.deltas_since_full:
            await self.publish(self.trainer.snapshot())
