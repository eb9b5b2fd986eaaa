"""``stream-ctr ab bandit``: the allocator that publishes a bandit experiment's epochs on ``ctr.experiments``.

One allocator per deployment, beside the workers (it needs the broker only, no GPU and little memory). At each
epoch boundary (``bandit.start_ts + n * bandit.cadence_s``, plus :data:`GRACE_S` for records in flight) it

1. counts clicks and impressions per arm of the run so far: the in-experiment exposures on ``ctr.exposures``
   served since the run started and before the boundary, joined with the events on ``ctr.events`` that arrived
   before the boundary (the join of ``ab report``, :func:`.report.collect`, attribution window included);
2. computes the next epoch's weights (:meth:`.bandit.ThompsonAllocation.next_definition`: Thompson sampling's
   probability that each arm is best, at least ``floor`` each, stopped arms kept stopped);
3. publishes the epoch's definition with an audit record (epoch, counts, weights before and after)
   (:func:`.registry.publish_epoch`); every worker applies it within ``STREAM_CTR_EXPERIMENT_POLL_S``.

Two allocators running by mistake do no harm: the counts are cut at the boundary, so both count the same
records (unless one landed late, timestamped before the boundary), the draws are seeded by name, salt and epoch,
so the same counts give the same weights, and an allocator that finds the epoch published already publishes
nothing. An allocator that was down catches up with the epoch of now (epochs it missed are skipped: the workers
kept serving the last one).

>>> exposures = [{"request_id": "r1", "user_id": "a", "arm": "ft", "in_experiment": True, "ts": 10.0,
...               "items": [{"item_id": "i1", "score": 0.8, "position": 0}, {"item_id": "i2", "score": 0.1,
...               "position": 1}]},
...              {"request_id": "r2", "user_id": "b", "arm": "global", "in_experiment": True, "ts": 70.0,
...               "items": [{"item_id": "i1", "score": 0.5, "position": 0}]}]
>>> events = [({"request_id": "r1", "user_id": "a", "item_id": "i1", "label": 1}, 12.0),
...           ({"request_id": "r1", "user_id": "a", "item_id": "i2", "label": 0}, 13.0),
...           ({"request_id": "r2", "user_id": "b", "item_id": "i1", "label": 1}, 71.0)]
>>> arm_counts(exposures, events, window_s=60, since=0.0, until=60.0)
({'ft': 1}, {'ft': 2})
"""

from __future__ import annotations

import getpass
import logging
import socket
import threading
import time
from collections.abc import Iterable, Mapping

from stream_ctr.experiments import registry
from stream_ctr.experiments.assignment import Experiment, ExperimentError
from stream_ctr.experiments.bandit import ThompsonAllocation
from stream_ctr.experiments.exposures import read_logs
from stream_ctr.experiments.report import collect

__all__ = ["GRACE_S", "allocate", "arm_counts", "run"]

log = logging.getLogger(__name__)

#: Seconds after a boundary before the allocator counts: records produced just before it are readable by then.
GRACE_S = 5.0
#: Longest sleep between two checks of the running definition (a new run, a restart of the topic).
CHECK_S = 60.0


def arm_counts(
    exposures: Iterable[Mapping], events: Iterable[tuple[Mapping, float]], window_s: float, since: float, until: float
) -> tuple[dict[str, int], dict[str, int]]:
    """``(clicks, impressions)`` per arm of the in-experiment exposures served in ``[since, until)``, joined with
    the ``(event, arrival)`` pairs that arrived before ``until``."""
    arms = collect(
        (e for e in exposures if since <= e["ts"] < until), ((e, t) for e, t in events if t < until), window_s
    )
    clicks = {arm: int(sum(u[1] for u in data.users.values())) for arm, data in arms.items() if data.users}
    impressions = {arm: int(sum(u[0] for u in data.users.values())) for arm, data in arms.items() if data.users}
    return clicks, impressions


def _by() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} (stream-ctr ab bandit)"


def allocate(settings, topic: str, name: str, now: float | None = None) -> Experiment | None:
    """Publish the definition of the epoch of ``now`` (less :data:`GRACE_S`) of the bandit run ``name`` on
    ``topic``, if it is due and not published yet; returns it (None: nothing to do)."""
    current = registry.last_definition(settings, topic, name)
    if current is None or current.bandit is None:
        raise ExperimentError(f"experiment.bandit: {name!r} on {topic} is not a bandit experiment")
    alloc = ThompsonAllocation.of(current)
    epoch = alloc.epoch((time.time() if now is None else now) - GRACE_S)
    if epoch <= current.epoch:
        return None
    until = alloc.boundary(epoch)
    exposures, events = read_logs(settings, name)
    clicks, impressions = arm_counts(exposures, events, settings.attribution_window_s, alloc.start_ts, until)
    new = alloc.next_definition(current, epoch, clicks, impressions)
    audit = {
        "experiment": name,
        "salt": new.salt,
        "action": "epoch",
        "epoch": epoch,
        "arm": "",
        "reason": f"Thompson sampling on the counts before {until:.3f}",
        "by": _by(),
        "at": registry.utc_now(),
        "counts": {a: {"clicks": clicks.get(a, 0), "impressions": impressions.get(a, 0)} for a in new.weights},
        "weights_before": {a.name: a.weight for a in current.arms},
        "weights_after": {a.name: a.weight for a in new.arms},
    }
    if not registry.publish_epoch(settings, topic, new, audit):
        log.info("experiment %r: epoch %d was published already", name, epoch)
        return None
    log.info("experiment %r: epoch %d published, weights %s", name, epoch, audit["weights_after"])
    return new


def run(settings, topic: str, experiment: Experiment, once: bool = False, stop: threading.Event | None = None):
    """Register ``experiment`` (the configured file: the running epoch is kept), then publish each epoch at its
    boundary until ``stop`` is set; with ``once``, publish the epoch due now (if any) and return it."""
    if experiment.bandit is None:
        raise ExperimentError(f"experiment.bandit: {experiment.name!r} has no bandit block to allocate by")
    current = registry.registered(settings, topic, experiment)
    stop = stop or threading.Event()
    while True:
        try:
            published = allocate(settings, topic, current.name)
            current = published or registry.last_definition(settings, topic, current.name) or current
        except ExperimentError:
            raise
        except Exception as exc:  # the broker is away: try again at the next check
            if once:
                raise
            log.warning("allocating %r failed: %s", current.name, exc)
            published = None
        if once:
            return published
        if current.bandit is None or current.bandit.start_ts is None:
            raise ExperimentError(f"experiment.bandit: {current.name!r} is no longer a bandit run on {topic}")
        due = ThompsonAllocation.of(current).boundary(current.epoch + 1) + GRACE_S
        if stop.wait(min(CHECK_S, max(1.0, due - time.time()))):
            return None
