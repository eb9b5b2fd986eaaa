"""In-process agent tests: the Faust personalize agent driven through ``agent.test_context()`` (no broker)."""

import asyncio

import orjson
import pytest

from agents import personalize
from stream_ctr.config import Settings
from stream_ctr.data import SyntheticConfig, generate_synthetic
from stream_ctr.events import encode_event
from stream_ctr.trainer import GlobalTrainer


@pytest.fixture
def app():
    settings = Settings.from_env({}, kafka_bootstrap="127.0.0.1:9", features="category,segment",
                                 hash_buckets=2048, batch_size=16, batch_within_s=0.05)
    app = personalize.build(settings, follow=False)
    app.finalize()
    app.ctr.on_snapshot(GlobalTrainer(settings).snapshot())
    app.ctr.dead_lettered = []
    app.ctr.users = {}  # the Faust table needs a running producer; the broker tier covers it

    async def capture(**record):  # stands in for the producer: no broker in this tier
        app.ctr.dead_lettered.append(record)

    app.ctr.dlq_topic.send = capture
    return app


def _drive(app, records, expect: int) -> None:
    async def run():
        agent = app.agents["agents.personalize.personalize"]
        async with agent.test_context() as ctx:
            for key, value in records:
                await ctx.put(value, key=key, partition=0, wait=False)
            for _ in range(200):
                s = personalize.stats(app)
                if s["applied"] + s["dead_letters"] >= expect:
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"agent processed {s['applied'] + s['dead_letters']} of {expect}")

    asyncio.run(run())


def test_agent_applies_events_and_keeps_exact_counts(app):
    events = generate_synthetic(SyntheticConfig(users=5, events_per_user=12, seed=4)).events
    _drive(app, [(e.user_id.encode(), encode_event(e)) for e in events], len(events))
    stats = personalize.stats(app, fresh=True)
    assert stats["applied"] == len(events) and stats["dead_letters"] == 0
    for uid in {e.user_id for e in events}:
        state = app.ctr.users[uid]
        assert state.ctr.n == sum(e.user_id == uid for e in events)
        assert state.ctr.clicks == sum(e.label for e in events if e.user_id == uid)
    assert stats["lifetime"]["n"] == len(events)


def test_agent_dead_letters_bad_records_and_keeps_going(app):
    good = generate_synthetic(SyntheticConfig(users=2, events_per_user=3, seed=5)).events
    bad_label = orjson.dumps({"event_id": "1", "user_id": "u-y", "item_id": "i", "ts": 1, "label": 5})
    records = [(b"u-x", b"{not json"), *[(e.user_id.encode(), encode_event(e)) for e in good], (b"u-y", bad_label)]
    _drive(app, records, len(records))
    stats = personalize.stats(app)
    assert (stats["applied"], stats["dead_letters"]) == (len(good), 2)
    dlq = app.ctr.dead_lettered
    assert [r["headers"]["reason"] for r in dlq] == [b"not_json", b"bad_label"]
    assert [r["value"] for r in dlq] == [b"{not json", bad_label]  # the raw bytes, untouched
    assert dlq[0]["key"] == b"u-x"
    text = app.ctr.metrics.render().decode()
    assert 'stream_ctr_dead_letter_total{reason="not_json"} 1.0' in text
    assert 'stream_ctr_dead_letter_total{reason="bad_label"} 1.0' in text
