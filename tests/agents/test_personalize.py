"""In-process tier: the real :class:`PersonalizeWorker` wiring driven through its batch handler (no broker).

The users table is replaced by a dict (a Faust table needs a running producer; the broker tier covers it) and the
dead-letter topic by a recorder; everything else is the worker the CLI runs.
"""

import asyncio
import itertools

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from stream_ctr.agents import faust_compat
from stream_ctr.agents.personalize import PersonalizeWorker
from stream_ctr.config import Settings
from stream_ctr.contracts.events import encode_event, partition_of


class _RecordingTopic:
    """Stands in for the dead-letter topic's producer: no broker in this tier."""

    def __init__(self):
        self.sent: list[dict] = []

    async def send(self, **record) -> None:
        self.sent.append(record)


@pytest.fixture
def worker(make_snapshot):
    settings = Settings.from_env(
        {}, kafka_bootstrap="127.0.0.1:9", features="category,segment", hash_buckets=2048, batch_size=16
    )
    worker = PersonalizeWorker.build(settings, follow=False, users={})
    worker.app.finalize()
    worker.follower.offer(make_snapshot(settings))
    worker.dead_letters.topic = _RecordingTopic()
    return worker


def _drive(worker: PersonalizeWorker, records, expect: int) -> None:
    """Hands ``(key, value)`` records to the handler the worker registered for its fetched batches, as fetched:
    on the key's partition (Kafka's default partitioner), offsets counting up per partition, in chunks."""
    topic, n = worker.events.get_topic_name(), worker.settings.events_partitions
    offsets = itertools.count()
    fetched = [
        ConsumerRecord(
            topic,
            partition_of(key, n) if key else 0,
            next(offsets),
            0,
            0,
            key,
            value,
            None,
            len(key or b""),
            len(value),
            [],
        )
        for key, value in records
    ]
    batched = faust_compat.drain_of(worker.app)
    assert batched.topic == topic

    async def run():
        for start in range(0, len(fetched), batched.batch_size):
            await batched.handler(fetched[start : start + batched.batch_size])

    asyncio.run(run())
    s = worker.stats()
    assert s["applied"] + s["dead_letters"] == expect


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
    records = [
        (b"u-x", b"{not json"),
        *[(e.user_id.encode(), encode_event(e)) for e in good],
        (b"u-y", bad_label),
        (None, null_key),
    ]
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


def _poisoned(worker, item: str) -> None:
    """The model in use raises for any batch holding ``item``: a stand-in for a bug one record meets."""
    encoder = worker.follower.holder.current.encoder
    encode = encoder.encode

    def encode_or_raise(rows):
        rows = list(rows)
        if any(r[1] == item for r in rows):
            raise ZeroDivisionError("float division by zero")
        return encode(rows)

    encoder.encode = encode_or_raise


def test_a_record_that_raises_is_dead_lettered_and_the_rest_of_its_batch_applied(worker, make_snapshot, make_events):
    events = make_events(users=4, events_per_user=20, seed=6).events
    poison = {events[5].event_id, events[37].event_id}
    records = [
        (
            e.user_id.encode(),
            encode_event(e if e.event_id not in poison else type(e)(**{**e.to_dict(), "item_id": "poison"})),
        )
        for e in events
    ]
    _poisoned(worker, "poison")
    _drive(worker, records, len(records))
    stats = worker.stats()
    assert (stats["applied"], stats["dead_letters"]) == (len(events) - 2, 2)
    dlq = worker.dead_letters.topic.sent
    assert [r["headers"]["reason"] for r in dlq] == [b"internal_error"] * 2
    assert all(r["headers"]["detail"].startswith(b"worker: ZeroDivisionError: float division by zero") for r in dlq)
    assert sorted(r["value"] for r in dlq) == sorted(v for _, v in records if b'"poison"' in v)
    assert 'stream_ctr_dead_letter_total{reason="internal_error"} 2.0' in worker.metrics.render().decode()

    # Every other event applied exactly once: the same states as a worker that never saw the two records.
    clean = PersonalizeWorker.build(worker.settings, follow=False, users={})
    clean.app.finalize()
    clean.follower.offer(make_snapshot(worker.settings))
    clean.dead_letters.topic = _RecordingTopic()
    kept = [(k, v) for k, v in records if b'"poison"' not in v]
    _drive(clean, kept, len(kept))
    for uid, state in clean.users.items():
        mine = worker.users[uid]
        assert (mine.ctr.n, mine.ctr.clicks, mine.ctr.window_labels) == (
            state.ctr.n,
            state.ctr.clicks,
            state.ctr.window_labels,
        )


def test_erasing_a_user_removes_its_state_metric_rows_and_pending_exposures(worker, make_events):
    from stream_ctr.experiments.attribution import Served

    events = make_events(users=6, events_per_user=10, seed=2).events
    _drive(worker, [(e.user_id.encode(), encode_event(e)) for e in events], len(events))
    gone, other = events[0].user_id, next(e.user_id for e in events if e.user_id != events[0].user_id)
    worker.pending.add("req-1", Served("global", True, 0.0, {"i1": 0.5}, gone))
    worker.pending.add("req-2", Served("global", True, 0.0, {"i1": 0.5}, other))
    rows_before = worker.metrics.online.summary("window")["n"]

    answer = worker.erase(gone)
    assert answer["erased"] and answer["pending_exposures"] == 1
    assert answer["metric_records"] == 1 + 2 * sum(e.user_id == gone for e in events)  # working set, window, sample
    assert gone not in worker.users and other in worker.users
    assert gone not in set(worker.metrics.active) and other in set(worker.metrics.active)
    assert worker.metrics.online.summary("window")["n"] == rows_before - sum(e.user_id == gone for e in events)
    assert len(worker.pending) == 1
    assert worker.erase(gone) == {
        "erased": False,
        "metric_records": 0,
        "pending_exposures": 0,
        "waiting_events": 0,
        "experiment_rows": 0,
    }


class _RecordingExposures:
    """Stands in for ``ctr.exposures``: what the ranker logs."""

    def __init__(self):
        self.records: list[dict] = []

    def send_soon(self, key: bytes, value: bytes, headers=None) -> None:
        self.records.append(orjson.loads(value))


def test_a_later_bandit_epoch_is_served_logged_with_its_propensities_and_counted_on_its_own(make_snapshot, tmp_path):
    from stream_ctr.contracts.events import Event
    from stream_ctr.experiments.bandit import ThompsonAllocation
    from stream_ctr.serving.scoring import Query

    path = tmp_path / "bandit.json"
    arms = [{"name": arm, "weight": 1} for arm in ("global", "ft", "ft_lc")]
    path.write_bytes(orjson.dumps({"name": "b", "salt": "s", "arms": arms, "bandit": {"cadence_s": 60, "start_ts": 0}}))
    settings = Settings.from_env(
        {}, kafka_bootstrap="127.0.0.1:9", features="category,segment", hash_buckets=2048, experiment_file=str(path)
    )
    worker = PersonalizeWorker.build(settings, follow=False, users={})
    worker.app.finalize()
    worker.follower.offer(make_snapshot(settings))
    worker.dead_letters.topic = _RecordingTopic()
    worker.scoring.ranker.exposures = logged = _RecordingExposures()
    zero = worker.experiment

    def rank(user: str, rid: str) -> dict:
        worker.scoring.ranker.rank([Query(user, rid, ["i1", "i2"], [{"category": "c1"}, {"category": "c2"}])])
        return logged.records[-1]

    old = rank("u-old", "r-old")  # served in epoch 0
    assert old["propensity"] == pytest.approx(zero.propensity(old["arm"]))
    one = ThompsonAllocation.of(zero).next_definition(zero, 1, {"ft": 90, "global": 10}, {"ft": 100, "global": 100})
    assert worker.registry.apply(one)  # what the follower does with the allocator's definition
    assert worker.experiment == worker.step.experiment == worker.scoring.ranker.experiment == one
    assert worker.results.experiment == one and worker.results.totals["ft"]["requests"] == 0  # reset per epoch

    served = [rank(f"u{n}", f"r{n}") for n in range(200)]
    assert [s["arm"] for s in served] == [one.assign(f"u{n}").arm for n in range(200)]
    assert all(s["propensity"] == pytest.approx(one.propensity(s["arm"])) for s in served)
    assert {round(s["propensity"], 4) for s in served} == {round(one.propensity(arm), 4) for arm in one.weights}
    assert sum(s["arm"] == "ft" for s in served) > 150 and one.propensity("ft") > 0.8
    # An event answering the finished epoch's exposure is not counted in the new epoch's results; one answering
    # this epoch's is.
    late, now = Event("e-old", "u-old", "i1", 1.0, 1, {}, "r-old"), Event("e-new", "u0", "i1", 1.0, 1, {}, "r0")
    _drive(worker, [(e.user_id.encode(), encode_event(e)) for e in (late, now)], 2)
    impressions = {arm: t["impressions"] for arm, t in worker.results.totals.items()}
    assert sum(impressions.values()) == 1 and impressions[served[0]["arm"]] == 1
