"""The global trainer: its own consumer group on ``ctr.events``, mini-batch torch training, snapshots to
``ctr.model`` every K samples (and when the stream goes quiet, so the newest weights are never held back)."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace

from prometheus_client import CONTENT_TYPE_LATEST

import topics
from stream_ctr.config import Settings
from stream_ctr.events import InvalidEvent, parse_event
from stream_ctr.monitoring import TrainerMetrics
from stream_ctr.trainer import GlobalTrainer

from .app import create_app
from .snapshots import read_latest_snapshot

log = logging.getLogger(__name__)

__all__ = ["build"]

#: Publish pending samples after this many seconds without new events.
QUIET_PUBLISH_S = 3.0


def build(settings: Settings, web_port: int | None = None):
    app = create_app(settings, "trainer", web_port=settings.web_port + 1 if web_port is None else web_port)
    events_topic = app.topic(topics.events(settings).name, key_serializer="raw", value_serializer="raw",
                             partitions=settings.events_partitions)
    model_topic = app.topic(topics.model(settings).name, key_serializer="raw", value_serializer="raw")
    trainer = GlobalTrainer(settings)
    metrics = TrainerMetrics()
    ready = asyncio.Event()
    last_event = {"t": time.monotonic()}
    app.ctr = SimpleNamespace(trainer=trainer, metrics=metrics, ready=ready)

    async def publish(snap) -> None:
        data = snap.to_bytes()
        await model_topic.send(key=b"global", value=data)
        metrics.model_version.set(snap.version)
        metrics.global_ctr.set(snap.global_ctr)
        metrics.snapshot_bytes.set(len(data))
        metrics.snapshots.inc()
        log.info("published model v%d (%d samples, global CTR %.4f, %d bytes)", snap.version, snap.samples,
                 snap.global_ctr, len(data))

    @app.task
    async def resume() -> None:
        latest = await read_latest_snapshot(settings.kafka_bootstrap, topics.model(settings).name)
        if latest is not None and latest.model_cfg == trainer.cfg:
            trainer.resume_from(latest)
            log.info("resumed from model v%d", latest.version)
        else:
            await publish(trainer.snapshot())  # v0: scorers can start before the first K samples
        ready.set()

    @app.agent(events_topic)
    async def train(stream):
        await ready.wait()
        async for batch in stream.take_events(settings.trainer_batch * 4, within=1.0):
            events = []
            for event in batch:
                try:
                    events.append(parse_event(event.value, event.key))
                except InvalidEvent:
                    metrics.skipped.inc()  # the personalize worker owns dead-lettering
            if not events:
                continue
            with metrics.step_seconds.time():
                trainer.learn_many(events)
            last_event["t"] = time.monotonic()
            metrics.samples.inc(len(events))
            metrics.loss.set(trainer.last_loss)
            snap = trainer.maybe_snapshot()
            if snap is not None:
                await publish(snap)

    @app.timer(1.0)
    async def publish_when_quiet() -> None:
        if ready.is_set() and trainer.pending and time.monotonic() - last_event["t"] > QUIET_PUBLISH_S:
            await publish(trainer.next_snapshot())

    @app.page("/metrics")
    async def metrics_view(web, request):
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web, request):
        if not ready.is_set():
            return web.json({"status": "starting"}, status=503)
        return web.json({"status": "ok", "model_version": trainer.version, "samples": trainer.samples})

    return app
