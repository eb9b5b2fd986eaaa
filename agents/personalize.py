"""The personalize worker: per-user test-then-train on ``ctr.events``, dead letters, and the HTTP views.

``build(settings)`` returns the Faust app; ``app.ctr`` holds the pieces tests and views read (the snapshot
holder, the metrics, the users table).
"""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST

import topics
from stream_ctr.config import Settings
from stream_ctr.events import InvalidEvent, parse_event
from stream_ctr.learning import ARMS, HeadParams, test_then_train
from stream_ctr.monitoring import DRIFT_BUCKETS, WorkerMetrics
from stream_ctr.snapshot import SnapshotHolder

from .app import USER_STATE_CODEC, create_app
from .snapshots import follow_snapshots

log = logging.getLogger(__name__)

__all__ = ["build"]


def build(settings: Settings, follow: bool = True):
    app = create_app(settings, "personalize")
    events_topic = app.topic(topics.events(settings).name, key_serializer="raw", value_serializer="raw",
                             partitions=settings.events_partitions)
    dlq_topic = app.topic(topics.dead_letters(settings).name, key_serializer="raw", value_serializer="raw")
    # use_partitioner: changelog records go to the partition of the key, which is the user's events partition
    # (same key bytes, same murmur2 partitioner), so batches that mix partitions keep tables co-partitioned.
    # Faust derives a table's serializers from its types (JSON otherwise), so the changelog topic is declared
    # here: keys as utf-8 (the same bytes as the events' keys), values in the compact state codec.
    changelog = app.topic(f"{app.conf.id}-users-changelog", key_type=str, key_serializer="raw",
                          value_serializer=USER_STATE_CODEC, partitions=settings.events_partitions,
                          compacting=True, deleting=False, acks=False, internal=True)
    users = app.Table("users", key_type=str, partitions=settings.events_partitions, use_partitioner=True,
                      changelog_topic=changelog)
    users.key_serializer, users.value_serializer = "raw", USER_STATE_CODEC
    holder = SnapshotHolder()
    metrics = WorkerMetrics(ARMS, settings.metrics_window)
    params = HeadParams.from_settings(settings)
    # The agent and views reach state through app.ctr.users, so the in-process test tier can give it a dict.
    app.ctr = SimpleNamespace(holder=holder, metrics=metrics, users=users, settings=settings, dlq_topic=dlq_topic)

    def on_snapshot(snap) -> None:
        if holder.offer(snap):
            metrics.swaps.inc()
            metrics.swap_time.set_to_current_time()
            metrics.model_version.set(snap.version)
            metrics.global_ctr.set(snap.global_ctr)
            log.info("model v%d swapped in (global CTR %.4f, %d samples)", snap.version, snap.global_ctr,
                     snap.samples)

    app.ctr.on_snapshot = on_snapshot

    if follow:
        @app.task
        async def follow_model() -> None:
            await follow_snapshots(settings.kafka_bootstrap, topics.model(settings).name, on_snapshot)

    async def dead_letter(event, err: InvalidEvent) -> None:
        msg = event.message
        headers = {"reason": err.reason.encode(), "detail": err.detail.encode(), "topic": msg.topic.encode(),
                   "partition": str(msg.partition).encode(), "offset": str(msg.offset).encode()}
        await dlq_topic.send(key=event.key, value=event.value or b"", headers=headers)
        metrics.dead_lettered(err.reason)

    @app.agent(events_topic)
    async def personalize(stream):
        while holder.current is None:  # nothing can be scored before the first snapshot
            await asyncio.sleep(0.1)
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            records, partition_of = [], {}
            for event in batch:
                try:
                    parsed = parse_event(event.value, event.key)
                except InvalidEvent as err:
                    await dead_letter(event, err)
                    continue
                records.append((parsed, event.message.offset))
                partition_of[parsed.user_id] = event.message.partition
            model = holder.current  # one model for the whole batch: swaps are atomic per batch
            with metrics.batch_seconds.time():
                result = test_then_train(records, model, app.ctr.users, params)
            metrics.observe(result, partition_of)

    @app.on_partitions_assigned.connect
    async def forget_moved_users(sender, assigned, **kwargs) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == events_topic.get_topic_name()}
        forgotten = metrics.keep_partitions(mine)
        if forgotten:
            log.info("rebalance: %d users moved to other workers", forgotten)

    @app.timer(settings.metrics_refresh_s)
    async def refresh_metrics() -> None:
        await asyncio.get_running_loop().run_in_executor(None, metrics.refresh)

    @app.page("/metrics")
    async def metrics_view(web, request):
        return web.bytes(metrics.render(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web, request):
        if holder.current is None:
            return web.json({"status": "waiting", "reason": "no model snapshot on ctr.model yet"}, status=503)
        return web.json({"status": "ok", "model_version": holder.current.version})

    @app.page("/v1/users/{user_id}")
    @app.table_route(table=users, match_info="user_id")
    async def user_view(web, request, user_id: str):
        state = app.ctr.users.get(user_id)
        if state is None:
            return web.json({"error": f"unknown user {user_id!r}: no event of this user was applied"}, status=404)
        return web.json({"user_id": user_id, **state.summary()})

    @app.page("/v1/stats")
    async def stats_view(web, request):
        if request.query.get("fresh") == "1":  # the demo's final report: recompute now, off the loop
            await asyncio.get_running_loop().run_in_executor(None, metrics.refresh)
        return web.json(stats(app))

    return app


def _count(counter, label: str) -> int:
    return int(counter.labels(label)._value.get())


def stats(app, fresh: bool = False) -> dict:
    """Progress and quality of this worker, for ``stream-ctr demo`` and operators."""
    m, holder = app.ctr.metrics, app.ctr.holder
    if fresh:
        m.refresh()
    drift = np.fromiter(m.drift.values(), dtype=float, count=len(m.drift))
    return {
        "applied": _count(m.events, "applied"),
        "duplicates": _count(m.events, "duplicate"),
        "dead_letters": _count(m.events, "dead_letter"),
        "users": len(drift),
        "model_version": holder.current.version if holder.current else None,
        "metrics_refreshed_at": m.refreshed_at,
        "global_ctr": holder.current.snapshot.global_ctr if holder.current else None,
        "window": m.summary("window"),
        "lifetime": m.summary("lifetime"),
        "drift": {
            "buckets": list(DRIFT_BUCKETS),
            "counts": np.histogram(drift, bins=[0.0, *DRIFT_BUCKETS, np.inf])[0].tolist(),
            "quantiles": {q: float(np.quantile(drift, float(q))) if len(drift) else None
                          for q in ("0.1", "0.5", "0.9")},
        },
    }
