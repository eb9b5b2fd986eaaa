"""In-process tier: what a scorer process logs is what its users' worker attributes. A ranker without pending
exposures (a scorer's) writes each exposure with the ``served-by`` header; the worker's ``ScorerExposures`` takes
it into its pending exposures exactly as the worker's own ranker would have put it there, and leaves alone its own
exposures, other workers' partitions and records it cannot read."""

from __future__ import annotations

import time

import orjson
import pytest

from stream_ctr.agents.attribution import ScorerExposures
from stream_ctr.agents.serving import SERVED_BY, Ranker
from stream_ctr.contracts.events import partition_of
from stream_ctr.experiments.assignment import Experiment
from stream_ctr.experiments.attribution import ArmResults, PendingExposures
from stream_ctr.models.snapshot import SnapshotHolder
from stream_ctr.monitoring.freshness import Staleness
from stream_ctr.monitoring.prometheus import ScorerMetrics, WorkerMetrics
from stream_ctr.serving.scoring import parse_score_request

PARTITIONS = 4


class _Exposures:
    """The exposures topic as a recorder of (partition, headers, value), partitioned as Kafka would."""

    def __init__(self):
        self.sent: list[tuple[int, list, bytes]] = []

    def send_soon(self, key: bytes, value: bytes, headers=None) -> None:
        self.sent.append((partition_of(key, PARTITIONS), headers or [], value))


def _queries(n: int):
    return [
        parse_score_request(
            orjson.dumps(
                {
                    "user_id": f"u{k}",
                    "request_id": f"r{k}",
                    "candidates": [
                        {"item_id": f"i{j}", "features": {"category": f"c{j % 5}", "segment": "s1"}} for j in range(12)
                    ],
                }
            )
        )
        for k in range(n)
    ]


def _ranker(holder, pending, results, exposures, served_by=None, experiment=None):
    metrics = ScorerMetrics() if served_by else WorkerMetrics(("global", "ft", "ft_lc"), 100)
    return Ranker(
        holder,
        {},
        experiment or Experiment.default(),
        pending=pending,
        results=results,
        exposures=exposures,
        staleness=Staleness(PARTITIONS),
        metrics=metrics,
        served_by=served_by,
    )


@pytest.fixture
def holder(make_snapshot):
    holder = SnapshotHolder()
    holder.offer(make_snapshot())
    return holder


def test_a_scorer_exposure_is_pending_on_the_users_worker_as_if_the_worker_had_served_it(holder):
    queries = _queries(30)
    own_pending, own_results = PendingExposures(1000, 600.0), ArmResults(Experiment.default())
    _ranker(holder, own_pending, own_results, _Exposures()).rank(queries)

    log = _Exposures()
    _ranker(holder, None, None, log, served_by="scorer a").rank(queries)
    assert all(headers == [(SERVED_BY, b"scorer a")] for _, headers, _ in log.sent)

    pending, results = PendingExposures(1000, 600.0), ArmResults(Experiment.default())
    taken = ScorerExposures(None, "ctr.exposures", pending, results)
    taken.owned = set(range(PARTITIONS))
    assert all(taken.take(*record) for record in log.sent)
    now = time.time()
    for q in queries:
        mine, theirs = (p.match(q.request_id, q.item_ids[0], now) for p in (own_pending, pending))
        assert isinstance(mine, tuple) and isinstance(theirs, tuple), (mine, theirs)
        assert theirs[0]._replace(ts=mine[0].ts) == mine[0]  # arm, coverage, every item's score, user, epoch
    assert {arm: t["requests"] for arm, t in results.totals.items()} == {
        arm: t["requests"] for arm, t in own_results.totals.items()
    }


def test_only_scorer_exposures_of_owned_partitions_are_taken(holder):
    log = _Exposures()
    _ranker(holder, None, None, log, served_by="scorer a").rank(_queries(40))
    owned = {0, 2}
    pending = PendingExposures(1000, 600.0)
    taken = ScorerExposures(None, "ctr.exposures", pending, ArmResults(Experiment.default()))
    taken.owned = owned
    kept = [taken.take(*record) for record in log.sent]
    assert kept == [partition in owned for partition, _, _ in log.sent] and any(kept) and not all(kept)
    assert len(pending) == sum(kept)
    # The worker's own exposures (no header) are pending already: never taken twice.
    assert not any(taken.take(partition, [], value) for partition, _, value in log.sent)
    assert len(pending) == sum(kept)


@pytest.mark.parametrize("value", [b"{", b"[]", b'{"request_id": "r"}', b'{"items": 3}'])
def test_an_unreadable_scorer_exposure_is_skipped_and_counted(value):
    pending = PendingExposures(10, 600.0)
    taken = ScorerExposures(None, "ctr.exposures", pending, ArmResults(Experiment.default()))
    taken.owned = {0}
    assert not taken.take(0, [(SERVED_BY, b"scorer a")], value)
    assert len(pending) == 0 and taken.unreadable == 1


def _bandit_epoch(n: int) -> Experiment:
    arms = [{"name": arm, "weight": 1} for arm in ("global", "ft", "ft_lc")]
    return Experiment.from_dict({"name": "b", "salt": "s", "arms": arms, "bandit": {"cadence_s": 60, "epoch": n}})


def test_a_scorer_exposure_keeps_the_epoch_it_was_served_in_when_the_worker_has_moved_on(holder):
    log = _Exposures()
    _ranker(holder, None, None, log, served_by="scorer a", experiment=_bandit_epoch(1)).rank(_queries(20))
    pending = PendingExposures(1000, 600.0)
    taken = ScorerExposures(None, "ctr.exposures", pending, ArmResults(_bandit_epoch(2)))
    taken.owned = set(range(PARTITIONS))
    assert all(taken.take(*record) for record in log.sent)
    now = time.time()
    served = [pending.match(f"r{k}", "i0", now) for k in range(20)]
    assert {s[0].epoch for s in served if isinstance(s, tuple)} == {1} and all(isinstance(s, tuple) for s in served)

    # A record written before exposures named their epoch is taken in the worker's current one.
    partition, headers, value = log.sent[0]
    record = {k: v for k, v in orjson.loads(value).items() if k != "epoch"} | {"request_id": "old"}
    assert taken.take(partition, headers, orjson.dumps(record))
    assert pending.match("old", "i0", now)[0].epoch == 2
