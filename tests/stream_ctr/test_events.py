import orjson
import pytest

from stream_ctr.events import DLQ_REASONS, Event, InvalidEvent, encode_event, parse_event
from stream_ctr.replay import MALFORMED_SAMPLES

GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": 10, "label": 0, "features": {"g": "F", "x": 1.5}}


def _bad(**changes):
    obj = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in obj.items() if v is not ...})


@pytest.mark.parametrize("raw,reason", [
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
])
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
            parse_event(value, key)
        reasons.add(err.value.reason)
    assert len(reasons) == len(MALFORMED_SAMPLES)
    assert reasons <= set(DLQ_REASONS)
