import time

import orjson
import pytest

from stream_ctr.broker.replay import MALFORMED_SAMPLES
from stream_ctr.contracts.events import (
    DLQ_REASONS,
    MAX_ID_CHARS,
    Event,
    InvalidEvent,
    encode_event,
    parse_event,
    parse_record,
    partition_of,
)

GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": 10, "label": 0, "features": {"g": "F", "x": 1.5}}


def _bad(**changes):
    obj = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in obj.items() if v is not ...})


@pytest.mark.parametrize(
    "raw,reason",
    [
        (b"", "not_json"),
        (b"{oops", "not_json"),
        (b"[1]", "not_object"),
        (_bad(user_id=...), "missing_field"),
        (_bad(label=...), "missing_field"),
        (_bad(user_id=""), "bad_type"),
        (_bad(item_id=[1]), "bad_type"),
        (_bad(features=[1]), "bad_type"),
        (_bad(features={"a": {"b": 1}}), "bad_type"),
        (_bad(label=2), "bad_label"),
        (_bad(label=True), "bad_label"),
        (_bad(ts=-1), "bad_ts"),
        (_bad(ts="yesterday"), "bad_ts"),
        (_bad(ts=1e15), "bad_ts"),
        (_bad(ts=time.time() + 3 * 86400), "bad_ts"),
        (_bad(user_id="u" * (MAX_ID_CHARS + 1)), "too_long"),
        (_bad(item_id="x" * 1_000_000), "too_long"),
        (_bad(request_id="r" * (MAX_ID_CHARS + 1)), "too_long"),
        (_bad(colour="red"), "unknown_field"),
        (_bad(features={"g": "x" * 2000}), "too_long"),
        (_bad(features={f"f{i}": 1 for i in range(300)}), "too_long"),
    ],
)
def test_each_invalid_event_has_its_reason(raw, reason):
    with pytest.raises(InvalidEvent) as err:
        parse_event(raw)
    assert err.value.reason == reason


def test_key_must_be_the_user_id():
    with pytest.raises(InvalidEvent, match="key_mismatch"):
        parse_event(orjson.dumps(GOOD), key=b"u2")
    assert parse_event(orjson.dumps(GOOD), key=b"u1").user_id == "u1"


def test_roundtrip_and_integer_ids_are_normalised():
    e = Event("e1", "7", "42", 3.0, 1, {"g": "F"})
    assert parse_event(encode_event(e)) == e
    assert parse_event(_bad(user_id=7)).user_id == "7"


def test_replay_malformed_samples_cover_distinct_reasons():
    reasons = set()
    for key, value in MALFORMED_SAMPLES:
        with pytest.raises(InvalidEvent) as err:
            parse_record(value, key, partition_of(key, 4) if key else 0, 4)
        reasons.add(err.value.reason)
    assert len(reasons) == len(MALFORMED_SAMPLES)
    assert reasons <= set(DLQ_REASONS)


def test_a_kafka_record_needs_the_user_id_as_key_and_the_keys_partition():
    raw = orjson.dumps({**GOOD, "user_id": 7})
    home = partition_of(b"7", 4)
    assert parse_record(raw, b"7", home, 4).user_id == "7"
    for key, partition, reason in (
        (None, home, "missing_key"),
        (b"8", partition_of(b"8", 4), "key_mismatch"),
        (b"7", (home + 1) % 4, "wrong_partition"),
    ):
        with pytest.raises(InvalidEvent) as err:
            parse_record(raw, key, partition, 4)
        assert err.value.reason == reason, (key, partition)


def test_partition_of_matches_the_producers_default_partitioner():
    from aiokafka.partitioner import DefaultPartitioner  # what Faust (aiokafka) producers use

    for n in range(200):
        key = f"user-{n}".encode()
        assert partition_of(key, 8) == DefaultPartitioner()(key, list(range(8)), list(range(8)))
