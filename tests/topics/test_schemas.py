"""The published JSON Schemas agree with the code that reads and writes the records."""

import jsonschema
import orjson
import pytest

from stream_ctr import topics
from stream_ctr.broker.replay import MALFORMED_SAMPLES
from stream_ctr.contracts.events import InvalidEvent, encode_event, parse_event, parse_record, partition_of
from stream_ctr.data import load_dataset
from stream_ctr.serving.scoring import Exposure

EVENT = jsonschema.Draft202012Validator(topics.schema("event"))


def test_schemas_are_valid_json_schema():
    for name in ("event", "exposure"):
        jsonschema.Draft202012Validator.check_schema(topics.schema(name))


def test_every_event_we_produce_is_valid(make_events):
    events = make_events(users=30, events_per_user=20).events + load_dataset("ml-100k", 2000)
    for event in events:
        EVENT.validate(orjson.loads(encode_event(event)))


def _json(value: bytes) -> bool:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


@pytest.mark.parametrize("key,value", [s for s in MALFORMED_SAMPLES if _json(s[1])])
def test_the_schema_refuses_what_the_worker_dead_letters(key, value):
    with pytest.raises(InvalidEvent) as err:
        parse_record(value, key, partition_of(key, 4) if key else 0, 4)
    record = orjson.loads(value)
    if (
        err.value.reason in ("missing_key", "key_mismatch") or err.value.reason == "bad_ts" and record["ts"] >= 0
    ):  # the key is not in the value: the schema cannot see it
        assert EVENT.is_valid(record)
    else:
        assert not EVENT.is_valid(record), err.value.reason


@pytest.mark.parametrize(
    "record",
    [
        {"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1, "label": 1, "request_id": ""},
        {"event_id": "e", "user_id": "u", "item_id": "i", "ts": 1, "label": 1, "features": {"a": None}},
        {"event_id": "e", "user_id": True, "item_id": "i", "ts": 1, "label": 1},
        {"event_id": "e", "user_id": "u", "item_id": "i", "ts": "1", "label": 0},
    ],
)
def test_schema_and_parser_agree_on_edge_cases(record):
    with pytest.raises(InvalidEvent):
        parse_event(orjson.dumps(record))
    assert not EVENT.is_valid(record)


def test_exposure_schema_file_is_the_model_schema():
    published = topics.schema("exposure")
    assert {k: v for k, v in published.items() if k not in ("$schema", "$id")} == Exposure.model_json_schema()
