"""The logged exposures and the events that answer them, read back from the topics: what ``ab report`` and
``ab ope`` both analyse.

An event answers an exposure when it carries the exposure's ``request_id``, comes from the same user, is about one
of the items served, and arrived within the attribution window after it. An event without a ``request_id`` from
before its user's first exposure is history: it counts toward the user's click rate before the experiment (the
covariate of CUPED and of the doubly-robust reward model).

>>> index = ExposureIndex()
>>> index.add({"request_id": "r1", "user_id": "a", "arm": "ft", "ts": 10.0, "propensity": 0.5,
...            "items": [{"item_id": "i1", "score": 0.8, "position": 0}]})
>>> served, score = index.match({"request_id": "r1", "user_id": "a", "item_id": "i1"}, arrived=12.0, window_s=60)
>>> served.arm, served.propensity, score
('ft', 0.5, 0.8)
>>> index.match({"request_id": "r1", "user_id": "b", "item_id": "i1"}, arrived=12.0, window_s=60) is None
True
>>> index.first_arm_before({"user_id": "a", "ts": 3.0, "label": 1})
'ft'
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

import numpy as np

from stream_ctr.experiments.ope import Logged

__all__ = ["ExposureIndex", "Served", "logged_units", "read_logs"]

#: Record timestamps are whole milliseconds, possibly from another host's clock: an event may look a little
#: older than the exposure it answers.
SKEW_S = 1.0


class Served(NamedTuple):
    """What one exposure served: arm, user, time, ``item id -> score`` and the arm's propensity (None on records
    from before exposures carried one)."""

    arm: str
    user: str
    ts: float
    scores: dict[str, float]
    propensity: float | None


class ExposureIndex:
    """Exposures by request id, and each user's first exposure ``(arm, ts)``."""

    def __init__(self) -> None:
        self.served: dict[str, Served] = {}
        self.first: dict[str, tuple[str, float]] = {}

    def add(self, exposure: Mapping) -> None:
        user, ts = exposure["user_id"], exposure["ts"]
        if user not in self.first or ts < self.first[user][1]:
            self.first[user] = (exposure["arm"], ts)
        scores = {it["item_id"]: it["score"] for it in exposure["items"]}
        self.served[exposure["request_id"]] = Served(exposure["arm"], user, ts, scores, exposure.get("propensity"))

    def match(self, event: Mapping, arrived: float, window_s: float) -> tuple[Served, float] | None:
        """The exposure ``event`` answers and the score its item was served with; None when it answers none."""
        hit = self.served.get(event.get("request_id"))  # type: ignore[arg-type]
        if hit is None or hit.user != event["user_id"] or not -SKEW_S <= arrived - hit.ts <= window_s:
            return None
        score = hit.scores.get(event["item_id"])
        return None if score is None else (hit, score)

    def first_arm_before(self, event: Mapping) -> str | None:
        """The arm of the user's first exposure when ``event`` (one without a ``request_id``) came before it."""
        arm, since = self.first.get(event["user_id"], ("", 0.0))
        return arm if arm and event["ts"] < since else None


def logged_units(exposures: Iterable[Mapping], events: Iterable[tuple[Mapping, float]], window_s: float) -> Logged:
    """Every exposure with a propensity and at least one attributed impression as a unit of off-policy evaluation
    (:mod:`.ope`), its reward the clicks over the attributed impressions. All exposures count, inside coverage or
    not: the logged propensity of the control arm includes the users outside coverage. The covariate is the
    user's click rate before their first exposure (users without one get the mean rate), when any user has one."""
    index = ExposureIndex()
    for exposure in exposures:
        if exposure.get("propensity") is not None:
            index.add(exposure)
    counts: dict[str, list[int]] = {}  # request id -> [impressions, clicks]
    before: dict[str, list[int]] = {}  # user -> [impressions, clicks] before the first exposure
    for event, arrived in events:
        if event.get("request_id") is None:
            if index.first_arm_before(event):
                t = before.setdefault(event["user_id"], [0, 0])
                t[0], t[1] = t[0] + 1, t[1] + int(event["label"])
        elif index.match(event, arrived, window_s) is not None:
            t = counts.setdefault(event["request_id"], [0, 0])
            t[0], t[1] = t[0] + 1, t[1] + int(event["label"])
    if not counts:
        raise ValueError("no exposure with a propensity has an attributed event yet")
    units = [(index.served[rid], clicks / n) for rid, (n, clicks) in counts.items()]
    rate = {user: c / n for user, (n, c) in before.items()}
    fill = float(np.mean(list(rate.values()))) if rate else 0.0
    return Logged.from_units(
        users=[s.user for s, _ in units],
        arms=[s.arm for s, _ in units],
        propensities=[float(s.propensity) for s, _ in units],  # type: ignore[arg-type]
        rewards=[r for _, r in units],
        covariate=[rate.get(s.user, fill) for s, _ in units] if rate else None,
    )


def read_logs(settings, experiment_name: str) -> tuple[Iterator[dict], Iterator[tuple[dict, float]]]:
    """The experiment's records on the settings' ``ctr.exposures``, and every valid event on ``ctr.events`` with
    its arrival time (epoch seconds), as two lazy iterators."""
    import orjson

    from stream_ctr import topics
    from stream_ctr.broker.read import read_topic
    from stream_ctr.contracts.events import InvalidEvent, parse_record

    def exposures():
        for msg in read_topic(settings, topics.exposures(settings).name):
            record = orjson.loads(msg.value)
            if record.get("experiment") == experiment_name:
                yield record

    def events():
        for msg in read_topic(settings, topics.events(settings).name):
            try:
                # The worker's rule: an event it dead-letters (null key, off its partition, ...) is not counted.
                event = parse_record(msg.value, msg.key, msg.partition, settings.events_partitions)
            except InvalidEvent:
                continue
            yield event.to_dict(), msg.timestamp / 1000.0  # with no request_id: the pre-experiment rate

    return exposures(), events()
