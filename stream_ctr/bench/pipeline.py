"""The Kafka path measured against its own limit, in one run on one broker.

``ctr.events`` is filled once with MovieLens-100K (no process consumes it meanwhile). Then, over that same topic:

- **raw consume**: a plain aiokafka consumer (every partition assigned, no group) reads every record and parses
  its JSON with orjson, the Python-side limit of any consumer of this topic;
- **pipeline**: personalize worker processes of a fresh consumer group (durable per-user state: the users table
  and its changelog) drain it, 1 worker and then 2 (a new group each time); the clock runs from the moment every
  worker is healthy to the moment their applied counts sum to the topic's size;
- **trainer**: the global trainer learns the whole topic, as 1 rank and then as a group of 2
  (:mod:`stream_ctr.trainer.distributed`), each starting from an untrained snapshot published for it; the clock runs
  from the moment it is healthy to the moment its samples reach the topic's size.

While the workers drain, the global model is a fixed v0 snapshot published by the benchmark (no trainer), so the
worker path is what is measured. ``pipeline_ratio`` = pipeline events/s with one worker / raw consume events/s.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import orjson

from stream_ctr import topics
from stream_ctr.bench.state import publish_v0
from stream_ctr.broker.connection import Kafka
from stream_ctr.broker.replay import replay
from stream_ctr.config import Settings
from stream_ctr.data import load_dataset
from stream_ctr.service.stack import Stack, get_json

__all__ = ["run_pipeline_bench"]


def run_pipeline_bench(
    settings: Settings, limit: int | None = None, workers=(1, 2), ranks=(1, 2)
) -> tuple[list[str], dict]:
    """Markdown lines and ``{raw_consume_eps, pipeline_eps, pipeline_ratio, workers_eps, trainer_ranks_sps}``."""
    events = load_dataset("ml-100k", limit)
    tag = f"bench-pipe-{time.time_ns() % 10**9}"
    settings = settings.replace(topic_prefix=f"{tag}.", app_id=tag)
    logs = Path(tempfile.mkdtemp(prefix="stream-ctr-bench-pipeline-"))
    with Stack(settings, logs, trainer=False, worker=False) as stack:
        s = stack.settings
        replay(events, s, topics.events(s).name)
        publish_v0(s)
        raw = asyncio.run(_raw_consume(s, len(events)))
        drained = {n: _drain(stack, n, len(events)) for n in workers}
        trained = {n: _train(stack, n, len(events)) for n in ranks}
    one = drained[workers[0]]
    result = {
        "raw_consume_eps": raw,
        "pipeline_eps": one,
        "pipeline_ratio": one / raw,
        "workers_eps": {str(n): eps for n, eps in drained.items()},
        "trainer_ranks_sps": {str(n): sps for n, sps in trained.items()},
    }
    lines = [
        "",
        f"## Kafka path against its limit ({len(events):,} events pre-filled on {s.events_partitions} "
        "partitions, one broker)",
        "",
        "| consumer | events/s | ratio to raw consume |",
        "|---|---|---|",
        f"| raw aiokafka consume + orjson parse | {raw:,.0f} | 1.000 |",
    ]
    lines += [
        f"| personalize pipeline, {n} worker{'s' if n > 1 else ''} | {eps:,.0f} | {eps / raw:.3f} |"
        for n, eps in drained.items()
    ]
    lines += [
        f"| global trainer, {n} rank{'s' if n > 1 else ''} (samples/s) | {sps:,.0f} | {sps / raw:.3f} |"
        for n, sps in trained.items()
    ]
    return lines, result


async def _raw_consume(settings: Settings, expect: int) -> float:
    from aiokafka import TopicPartition

    topic = topics.events(settings).name
    consumer = Kafka.of(settings).aio_consumer(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(settings.events_partitions)])
        seen, t0 = 0, time.perf_counter()
        while seen < expect:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                for record in records:
                    orjson.loads(record.value)
                seen += len(records)
        return seen / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


def _drain(stack: Stack, n_workers: int, expect: int) -> float:
    """Events/s of ``n_workers`` workers of a fresh group draining the pre-filled topic."""
    group = f"{stack.settings.app_id}-w{n_workers}"
    names = [f"{group}-{i}" for i in range(n_workers)]
    for name in names:
        stack.spawn("worker", name, app_id=group)  # each on a port of its own, held by the stack
    try:
        for name in names:  # a worker consumes from the moment it is healthy: at 30,000 events/s ask often
            stack.wait_healthy(120, name, every=0.02)
        urls = [stack.url(name) for name in names]
        return _rate(lambda: _applied(urls), expect, f"{n_workers} worker(s)")
    finally:
        for name in names:
            proc = stack.procs.pop(name)
            proc.terminate()
            proc.wait(60)


def _train(stack: Stack, ranks: int, expect: int) -> float:
    """Samples/s of a trainer of ``ranks`` ranks learning the pre-filled topic from an untrained snapshot."""
    name = f"trainer-{ranks}"
    publish_v0(stack.settings, version=10**9 * ranks)  # newer than anything published before: it resumes here
    stack.spawn("trainer", name, trainer_world_size=ranks)
    try:
        stack.wait_healthy(180, name, every=0.05)
        url = stack.url(name)
        return _rate(
            lambda: get_json(f"{url}/healthz", timeout=30)[1].get("samples", 0),
            expect,
            f"the trainer of {ranks} rank(s)",
        )
    finally:
        proc = stack.procs.pop(name)
        proc.terminate()
        proc.wait(60)


def _rate(done, expect: int, who: str) -> float:
    """Per second, from now until ``done()`` reaches ``expect``. A process may start before it is healthy (or
    before the last of a group is): only what is done from now on counts."""
    t0, before = time.monotonic(), done()
    if before >= expect / 2:
        raise ValueError(
            f"{who} did {before} of {expect} before all were healthy: too few events to measure a "
            "rate (use a larger --limit)"
        )
    while (now := done()) < expect:
        if time.monotonic() - t0 > expect / 100 + 300:
            raise TimeoutError(f"{who} did {now} of {expect}")
        time.sleep(0.2)
    return (now - before) / (time.monotonic() - t0)


def _applied(urls: list[str]) -> int:
    return sum(get_json(f"{url}/v1/stats", timeout=30)[1].get("applied", 0) for url in urls)
