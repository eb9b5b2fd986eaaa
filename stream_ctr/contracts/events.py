"""The click event contract (value of ``ctr.events``) and its validation.

An event is JSON: ``event_id``, ``user_id``, ``item_id``, ``ts`` (epoch seconds), ``label`` (0/1) and
``features`` (a flat map of string or number values), and optionally ``request_id``: the scoring request
(``POST /v1/score``) whose ranking showed this item, which attributes the event to that exposure. :func:`parse_event`
turns raw bytes into an :class:`Event` or raises :class:`InvalidEvent` with one of a fixed set of reasons, so that the
dead-letter counter has bounded label values.

>>> e = parse_event(b'{"event_id":"e1","user_id":"7","item_id":"42","ts":1.0,"label":1,"features":{"g":"F"}}')
>>> (e.user_id, e.label, e.features["g"])
('7', 1, 'F')
>>> parse_event(b'{"event_id":"e1"}')
Traceback (most recent call last):
...
stream_ctr.contracts.events.InvalidEvent: missing_field: user_id
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from kafka.partitioner.default import murmur2

__all__ = [
    "DLQ_REASONS",
    "FIELDS",
    "MAX_FUTURE_S",
    "MAX_ID_CHARS",
    "Event",
    "InvalidEvent",
    "encode_event",
    "parse_event",
    "parse_record",
    "partition_of",
]

#: Every reason an event can be dead-lettered for. Closed set: it is a Prometheus label. ``internal_error``: the
#: event is valid, but processing it raised (a bug; the detail names the exception).
DLQ_REASONS = (
    "not_json",
    "not_object",
    "missing_field",
    "unknown_field",
    "bad_type",
    "too_long",
    "bad_label",
    "bad_ts",
    "missing_key",
    "key_mismatch",
    "wrong_partition",
    "internal_error",
)

#: Longest id (event, user, item, request) accepted, in characters.
MAX_ID_CHARS = 256
#: Range of an integer id (the signed 64-bit range of ``$defs/id`` in the schema).
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
#: Longest feature value, and most features, an event may carry.
MAX_FEATURE_CHARS = 1024
MAX_FEATURES = 256
#: Every field an event may have: anything else is a producer bug, dead-lettered rather than silently ignored.
FIELDS = frozenset({"event_id", "user_id", "item_id", "ts", "label", "features", "request_id"})
#: How far in the future an event's ``ts`` may be (clock skew between producers), in seconds.
MAX_FUTURE_S = 86400.0

_ID_FIELDS = ("event_id", "user_id", "item_id")


class InvalidEvent(ValueError):
    """Raised for an event that must go to the dead-letter topic."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in DLQ_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    user_id: str
    item_id: str
    ts: float
    label: int
    features: Mapping[str, str | float] = field(default_factory=dict)
    request_id: str | None = None

    def to_dict(self) -> dict:
        d = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "ts": self.ts,
            "label": self.label,
            "features": dict(self.features),
        }
        if self.request_id is not None:
            d["request_id"] = self.request_id
        return d


def encode_event(event: Event) -> bytes:
    return orjson.dumps(event.to_dict())


@functools.lru_cache(maxsize=1 << 16)
def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, in Java and in kafka-python) gives ``key``. Cached for
    the most recent 65,536 keys: murmur2 is pure Python, and a worker sees its active users' keys again and again."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def parse_record(raw: bytes, key: bytes | None, partition: int, partitions: int) -> Event:
    """Validate a record of ``ctr.events``: the value (:func:`parse_event`), a key equal to the user id, and the
    partition of that key. A user's events must all be on one partition: per-user offsets are compared within it,
    so an event of the user on another partition would otherwise be skipped as a redelivery."""
    if key is None:
        raise InvalidEvent("missing_key", "the record key must be the user id; it is null")
    event = parse_event(raw, key)
    expected = partition_of(key, partitions)
    if partition != expected:
        raise InvalidEvent(
            "wrong_partition",
            f"user {event.user_id[:64]!r} belongs on partition {expected}, "
            f"not {partition} (produce with the default partitioner)",
        )
    return event


def parse_event(raw: bytes, key: bytes | None = None, now: float | None = None) -> Event:
    """Validate ``raw`` (and, when given, that the record key is the user id) and return the event. ``ts`` may be
    at most :data:`MAX_FUTURE_S` ahead of ``now`` (default: the clock)."""
    if not raw:
        raise InvalidEvent("not_json", "empty value")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", str(exc)[:120]) from None
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", type(obj).__name__)
    for name in (*_ID_FIELDS, "ts", "label"):
        if name not in obj:
            raise InvalidEvent("missing_field", name)
    unknown = obj.keys() - FIELDS
    if unknown:
        raise InvalidEvent("unknown_field", ", ".join(sorted(str(k)[:64] for k in unknown)[:5]))
    ids = []
    for name in _ID_FIELDS:
        value = obj[name]
        # Integer ids are accepted and normalised to strings: producers in the wild send both.
        if type(value) is not str:
            value = _integer_id(name, value)
        if not value:
            raise InvalidEvent("bad_type", f"{name} must be a non-empty string or integer")
        ids.append(_checked_id(name, value))
    label = obj["label"]
    if isinstance(label, bool) or label not in (0, 1):
        raise InvalidEvent("bad_label", f"label must be 0 or 1, got {label!r}")
    ts = obj["ts"]
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
        raise InvalidEvent("bad_ts", f"ts must be non-negative epoch seconds, got {ts!r}")
    if ts > (time.time() if now is None else now) + MAX_FUTURE_S:
        raise InvalidEvent("bad_ts", f"ts {ts!r} is more than {MAX_FUTURE_S:.0f}s in the future")
    features = obj.get("features", {})
    if not isinstance(features, dict):
        raise InvalidEvent("bad_type", "features must be an object")
    if len(features) > MAX_FEATURES:
        raise InvalidEvent("too_long", f"{len(features)} features; at most {MAX_FEATURES}")
    for name, value in features.items():  # the hot loop of every event: one type() per value
        kind = type(value)
        if kind is str:
            if len(value) > MAX_FEATURE_CHARS:
                raise InvalidEvent("too_long", f"feature {name[:64]!r}: at most {MAX_FEATURE_CHARS} characters")
        elif kind is float:
            if not math.isfinite(value):
                raise InvalidEvent("bad_type", f"feature {name[:64]!r} must be finite")
        elif kind is not int:  # a bool, a list, an object, null
            raise InvalidEvent("bad_type", f"feature {name[:64]!r} must be a string or number")
        if len(name) > MAX_FEATURE_CHARS:
            raise InvalidEvent("too_long", f"feature {name[:64]!r}: at most {MAX_FEATURE_CHARS} characters")
    request_id = obj.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or request_id == ""):
        raise InvalidEvent("bad_type", "request_id must be a non-empty string")
    if request_id is not None:
        _checked_id("request_id", request_id)
    if key is not None and key.decode("utf-8", "replace") != ids[1]:
        raise InvalidEvent("key_mismatch", "record key must equal user_id")
    return Event(ids[0], ids[1], ids[2], float(ts), int(label), features, request_id)


def _integer_id(name: str, value) -> str:
    """An integer id as its decimal string. An integer is what the schema's ``integer`` is: a number without a
    fraction however it is written (``7`` and ``7.0`` are both the id ``"7"``, as a JSON Schema validator reads
    them), within the signed 64-bit range the schema states (Kafka's ``long``; orjson reads a bigger integer as an
    inexact float). Anything else, a bool included (orjson gives exact types), is ``bad_type``."""
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
        raise InvalidEvent("bad_type", f"{name} must be a non-empty string or an integer in the signed 64-bit range")
    return str(value)


def _checked_id(name: str, value: str) -> str:
    if len(value) > MAX_ID_CHARS:
        raise InvalidEvent("too_long", f"{name} has {len(value)} characters; at most {MAX_ID_CHARS}")
    return value
