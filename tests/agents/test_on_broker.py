"""Broker tier: real Kafka, the real worker and trainer as processes, real replay."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter

import pytest
from kafka import KafkaConsumer

from stream_ctr import topics
from stream_ctr.broker.replay import MALFORMED_SAMPLES, replay
from stream_ctr.contracts.events import InvalidEvent, parse_record, partition_of
from stream_ctr.service.stack import Stack, get_json

pytestmark = pytest.mark.broker


def _wait_for(stack: Stack, applied: int, dead: int, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = stack.stats()
        if s["applied"] >= applied and s["dead_letters"] >= dead:
            return s
        time.sleep(0.5)
    raise AssertionError(f"worker stuck at {s['applied']}/{applied} applied, {s['dead_letters']}/{dead} dead")


def _expected_counts(events):
    n, clicks = Counter(), Counter()
    for e in events:
        n[e.user_id] += 1
        clicks[e.user_id] += e.label
    return n, clicks


def _dead_letters(settings, expect: int) -> list:
    consumer = KafkaConsumer(
        topics.dead_letters(settings).name,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10000,
        group_id=None,
    )
    records = []
    try:
        for msg in consumer:
            records.append(msg)
            if len(records) >= expect:
                break
    finally:
        consumer.close()
    return records


def test_replay_through_real_worker_counts_exactly_and_dead_letters(settings_factory, make_events, tmp_path):
    settings = settings_factory()
    events = make_events(users=60, events_per_user=50, seed=7).events  # 3000
    first, second = events[:2400], events[2400:]
    with Stack(settings, tmp_path / "logs") as stack:
        sent, bad = replay(first, stack.settings.kafka_bootstrap, topics.events(settings).name, malformed_every=300)
        assert (sent, bad) == (2400, len(MALFORMED_SAMPLES))
        stats = _wait_for(stack, 2400, bad)
        assert stats["applied"] == 2400 and stats["dead_letters"] == bad

        # Every malformed record is on the dead-letter topic, raw bytes intact, with its reason.
        # Order across source partitions is not defined (the bad records have different keys), so match by value.
        dlq = {m.value: m for m in _dead_letters(stack.settings, bad)}
        assert sorted(dlq) == sorted(v for _, v in MALFORMED_SAMPLES)
        for key, value in MALFORMED_SAMPLES:
            msg = dlq[value]
            headers = dict(msg.headers)
            with pytest.raises(InvalidEvent) as err:
                parse_record(
                    value, key, partition_of(key, settings.events_partitions) if key else 0, settings.events_partitions
                )
            assert headers["reason"].decode() == err.value.reason
            assert headers["topic"].decode() == topics.events(settings).name
            assert msg.key == key

        stack.stats(fresh=True)  # gAUC is recomputed on a timer; this recomputes it now
        with urllib.request.urlopen(f"{stack.worker_url}/metrics") as resp:
            text = resp.read().decode()
        assert 'stream_ctr_dead_letter_total{reason="not_json"} 1.0' in text
        assert 'stream_ctr_events_total{outcome="applied"} 2400.0' in text
        assert 'stream_ctr_arm_gauc{arm="ft_lc",scope="lifetime"}' in text
        assert not any(f'"{e.user_id}"' in text for e in first)  # never a user id in a label
        assert "process_resident_memory_bytes" in text and "process_open_fds" in text  # operators' basics
        assert 'stream_ctr_drift_detected{signal="logloss_ft_lc"}' in text and "stream_ctr_users_drifting " in text

        # Restart the worker: state comes back from the changelog, nothing is counted twice.
        stack.procs.pop("worker").terminate()
        time.sleep(1)
        stack.spawn("worker")
        stack.wait_healthy(120)
        replay(second, stack.settings.kafka_bootstrap, topics.events(settings).name)
        deadline = time.monotonic() + 180
        n, clicks = _expected_counts(events)
        while time.monotonic() < deadline:
            got = {u: get_json(f"{stack.worker_url}/v1/users/{u}")[1].get("events") for u in n}
            if got == dict(n):
                break
            time.sleep(1)
        _assert_user_views(stack, events, n, clicks)

        status, body = get_json(f"{stack.worker_url}/v1/users/nobody-here")
        assert status == 404 and "unknown user" in body["error"]


def _assert_user_views(stack: Stack, events, n, clicks) -> None:
    """Every user's ``/v1/users/{id}`` has exact counts, and says whether the user drifts and since when."""
    since = {}
    for uid in n:
        status, body = get_json(f"{stack.worker_url}/v1/users/{uid}")
        assert status == 200
        assert (body["events"], body["clicks"]) == (n[uid], clicks[uid]), uid
        assert body["last_applied_offset"] >= 0 and body["head_norm"]["ft_lc"] > 0
        assert body["drifting"] == (body["drifting_since"] is not None), body
        since[uid] = body["drifting_since"]
    # Users whose click rate sits far from the global one say so, and since which event time.
    stamps = {e.ts for e in events}
    assert 0 < sum(s is not None for s in since.values()) < len(since)
    assert all(s in stamps for s in since.values() if s is not None)


def _metric(url: str, name: str) -> float:
    """One unlabelled sample of ``url``'s /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported by {url}")


def _worker_catches_up(stack: Stack, trainer_url: str, samples: int, timeout: float = 60.0) -> float:
    """Wait until the trainer learned ``samples`` and the worker's model version is the trainer's newest; returns
    that version."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _metric(trainer_url, "stream_ctr_trainer_samples_total") < samples:
            time.sleep(0.5)
            continue
        newest = _metric(trainer_url, "stream_ctr_model_version")
        if _metric(stack.worker_url, "stream_ctr_model_version") == newest:
            return newest
        time.sleep(0.5)
    raise AssertionError(f"worker at v{_metric(stack.worker_url, 'stream_ctr_model_version')}, trainer at v{newest}")


def test_worker_follows_the_trainers_deltas_and_a_restarted_trainers_chain(settings_factory, make_events, tmp_path):
    settings = settings_factory(delta_every=32, full_snapshot_every=25)
    events = make_events(users=40, events_per_user=50, seed=9).events  # 2000: ~62 deltas, 2 full snapshots
    with Stack(settings, tmp_path / "logs") as stack:
        trainer_url = stack.url("trainer")
        replay(events[:1000], settings.kafka_bootstrap, topics.events(settings).name)
        _wait_for(stack, 1000, 0)
        version = _worker_catches_up(stack, trainer_url, 1000)
        # A delta goes out once 32 samples are pending and a fetch brings at most 32: under 64 samples a delta.
        assert version >= 1000 // 63
        assert _metric(stack.worker_url, "stream_ctr_model_deltas_total") >= version - 2  # fulls are the rest
        assert _metric(stack.worker_url, "stream_ctr_model_delta_gaps_total") == 0
        assert 0 <= _metric(stack.worker_url, "stream_ctr_model_age_seconds") < 60
        assert _metric(trainer_url, "process_resident_memory_bytes") > 0
        # The worker's own steps on those events are taken out as the trainer's deltas cover them (the last few
        # samples within delta_interval_s): its model in use is the trainer's again.
        deadline = time.monotonic() + 30
        while (held := _metric(stack.worker_url, "stream_ctr_catch_up_events")) > 0:
            assert time.monotonic() < deadline, f"the worker still holds {held} events of its own steps"
            time.sleep(0.5)

        # A restarted trainer resumes from its newest full snapshot and numbers on past every published delta.
        stack.kill("trainer")
        stack.spawn("trainer")
        stack.wait_healthy(120, "trainer")
        replay(events[1000:], settings.kafka_bootstrap, topics.events(settings).name)
        _wait_for(stack, 2000, 0)
        after = _worker_catches_up(stack, trainer_url, 1000, timeout=120)  # trained again from the last full
        assert after > version
        assert _metric(stack.worker_url, "stream_ctr_model_delta_gaps_total") == 0
