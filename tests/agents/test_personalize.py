"""In-process tier: the real :class:`PersonalizeWorker` wiring driven through ``agent.test_context()`` (no broker).

The users table is replaced by a dict (a Faust table needs a running producer; the broker tier covers it) and the
dead-letter topic by a recorder; everything else is the worker the CLI runs.
"""

import asyncio

import orjson
import pytest

from stream_ctr.agents.personalize import PersonalizeWorker
from stream_ctr.config import Settings
from stream_ctr.events import encode_event, partition_of


class _RecordingTopic:
    """Stands in for the dead-letter topic's producer: no broker in this tier."""

    def __init__(self):
        self.sent: list[dict] = []

    async def send(self, **record) -> None:
        self.sent.append(record)


@pytest.fixture
def worker(make_snapshot):
    settings = Settings.from_env({}, kafka_bootstrap="127.0.0.1:9", features="category,segment",
                                 hash_buckets=2048, batch_size=16, batch_within_s=0.05)
    worker = PersonalizeWorker.build(settings, follow=False, users={})
    worker.app.finalize()
    worker.follower.offer(make_snapshot(settings))
    worker.dead_letters.topic = _RecordingTopic()
    return worker


def _drive(worker: PersonalizeWorker, records, expect: int) -> None:
    async def run():
        agent = worker.app.agents["personalize"]
        async with agent.test_context() as ctx:
            for key, value in records:  # on the key's partition, as Kafka's default partitioner puts it
                partition = partition_of(key, worker.settings.events_partitions) if key else 0
                await ctx.put(value, key=key, partition=partition, wait=False)
            for _ in range(200):
                s = worker.stats()
                if s["applied"] + s["dead_letters"] >= expect:
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"agent processed {s['applied'] + s['dead_letters']} of {expect}")

    asyncio.run(run())


def test_agent_applies_events_and_keeps_exact_counts(worker, make_events):
    events = make_events(users=5, events_per_user=12, seed=4).events
    _drive(worker, [(e.user_id.encode(), encode_event(e)) for e in events], len(events))
    worker.metrics.refresh()
    stats = worker.stats()
    assert stats["applied"] == len(events) and stats["dead_letters"] == 0
    for uid in {e.user_id for e in events}:
        state = worker.users[uid]
        assert state.ctr.n == sum(e.user_id == uid for e in events)
        assert state.ctr.clicks == sum(e.label for e in events if e.user_id == uid)
    assert stats["lifetime"]["n"] == len(events)


def test_agent_dead_letters_bad_records_and_keeps_going(worker, make_events):
    good = make_events(users=2, events_per_user=3, seed=5).events
    bad_label = orjson.dumps({"event_id": "1", "user_id": "u-y", "item_id": "i", "ts": 1, "label": 5})
    null_key = encode_event(good[0])
    records = [(b"u-x", b"{not json"), *[(e.user_id.encode(), encode_event(e)) for e in good], (b"u-y", bad_label),
               (None, null_key)]
    _drive(worker, records, len(records))
    stats = worker.stats()
    assert (stats["applied"], stats["dead_letters"]) == (len(good), 3)
    dlq = worker.dead_letters.topic.sent
    assert [r["headers"]["reason"] for r in dlq] == [b"not_json", b"bad_label", b"missing_key"]
    assert [r["value"] for r in dlq] == [b"{not json", bad_label, null_key]  # the raw bytes, untouched
    assert dlq[0]["key"] == b"u-x"
    text = worker.metrics.render().decode()
    assert 'stream_ctr_dead_letter_total{reason="not_json"} 1.0' in text
    assert 'stream_ctr_dead_letter_total{reason="bad_label"} 1.0' in text
