"""Bandit experiments in the service, the parts without a broker: the ``bandit`` block of the experiment file, the
epoch transitions check_transition allows and refuses, what a (re)starting worker runs, the allocator's counts and
weights, and the follower's choice between a later epoch and everything else."""

from __future__ import annotations

import dataclasses

import pytest

from stream_ctr.contracts.arms import ARMS
from stream_ctr.experiments.allocator import arm_counts
from stream_ctr.experiments.assignment import Arm, Experiment, ExperimentError, Stop, check_transition, later_epoch
from stream_ctr.experiments.bandit import ThompsonAllocation

BANDIT = {
    "name": "tl",
    "salt": "s1",
    "coverage": 0.8,
    "arms": [{"name": arm, "weight": 1} for arm in ARMS],
    "bandit": {"cadence_s": 60, "floor": 0.05, "prior": [1, 1], "start_ts": 1000.0},
}
CLICKS = {"global": 20, "ft": 60, "ft_lc": 21}
IMPRESSIONS = dict.fromkeys(ARMS, 200)


def _bandit(**bandit) -> Experiment:
    return Experiment.from_dict({**BANDIT, "bandit": {**BANDIT["bandit"], **bandit}})


def _epoch(n: int, clicks=CLICKS) -> Experiment:
    start = _bandit()
    return ThompsonAllocation.of(start).next_definition(start, n, clicks, IMPRESSIONS)


def test_the_bandit_block_is_parsed_round_trips_and_names_the_bad_key():
    exp = Experiment.from_dict(BANDIT)
    assert exp.bandit is not None and (exp.bandit.cadence_s, exp.bandit.floor, exp.bandit.prior) == (60, 0.05, (1, 1))
    assert (exp.epoch, exp.split_salt, exp.salt) == (0, "s1/epoch-0", "s1")
    assert Experiment.from_dict(exp.to_dict()) == exp
    assert Experiment.from_dict({**BANDIT, "bandit": {"cadence_s": 5}}).bandit.start_ts is None
    bad = {
        "experiment.bandit.cadence_s: missing": {"floor": 0.1},
        "experiment.bandit.cadence_s: must be": {"cadence_s": -1},
        "experiment.bandit.cadence_s: expected a number": {"cadence_s": "1h"},
        "experiment.bandit.floor: must be at most 1 / arms": {"cadence_s": 60, "floor": 0.4},
        "experiment.bandit.prior: expected [a, b]": {"cadence_s": 60, "prior": [1, 0]},
        "experiment.bandit.epoch: must be an integer": {"cadence_s": 60, "epoch": -1},
        "experiment.bandit.cadence: unknown key": {"cadence": 60},
        "experiment.bandit: expected dict": [60],
    }
    for message, block in bad.items():
        with pytest.raises(ExperimentError, match=message.replace("[", r"\[")):
            Experiment.from_dict({**BANDIT, "bandit": block})
    with pytest.raises(ExperimentError, match="a bandit needs two or more arms"):
        Experiment.from_dict({**BANDIT, "arms": [{"name": "ft", "weight": 1}]})


def test_a_later_epoch_is_a_new_split_of_the_same_run_and_check_transition_allows_it():
    zero, one = _bandit(), _epoch(1)
    assert one.weights["ft"] > 0.8 and min(one.weights.values()) >= 0.05  # ft got the clicks
    assert (one.name, one.salt, one.epoch, one.split_salt) == ("tl", "s1", 1, "s1/epoch-1")
    assert one.coverage == zero.coverage and one.bandit.start_ts == 1000.0
    check_transition(zero, one)
    check_transition(one, _epoch(3, {"global": 50, "ft": 10, "ft_lc": 10}))  # epochs may be skipped
    assert later_epoch(zero, one) and not later_epoch(one, zero) and not later_epoch(one, one)
    users = [str(u) for u in range(2000)]
    assert sum(zero.assign(u).arm != one.assign(u).arm for u in users) > 500  # reshuffled by the epoch's salt
    assert one.key != zero.key  # users are counted afresh per epoch


def _faster(bandit):
    return dataclasses.replace(bandit, cadence_s=30.0, epoch=2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda one: _epoch(0), "epoch 0 is over"),
        (lambda one: dataclasses.replace(one, arms=(Arm("global", 1), Arm("ft", 1))), "arms of running bandit"),
        (lambda one: dataclasses.replace(one, bandit=_faster(one.bandit)), "allocation of running"),
        (lambda one: dataclasses.replace(one, arms=tuple(Arm(a.name, 1.0) for a in one.arms)), "weights of running"),
        (lambda one: dataclasses.replace(one, bandit=None), "is a bandit; a fixed split needs a new salt"),
    ],
    ids=["back", "arms", "cadence", "weights-within-epoch", "fixed"],
)
def test_a_wrong_transition_of_a_bandit_run_is_refused(change, message):
    one = _epoch(1)
    with pytest.raises(ExperimentError, match=message):
        check_transition(one, change(one))
    check_transition(one, dataclasses.replace(change(one), salt="s2"))  # ... unless it is a new run


def test_a_restarting_worker_runs_the_newest_epoch_and_keeps_stops_within_it():
    file = Experiment.from_dict({**BANDIT, "bandit": {"cadence_s": 60, "floor": 0.05}})  # no start: from the topic
    three = _epoch(3)
    assert file.continuing(three) == three
    assert file.continuing(None) == file
    assert file.continuing(dataclasses.replace(three, salt="s0")) == file  # another run: the file's
    stopped = three.stopping("ft_lc", Stop(1.0, "harms ctr", "test", "2026-01-01T00:00:00Z"))
    assert file.continuing(stopped) == stopped
    assert three.keeping_stops_of(stopped) == stopped
    ramped = Experiment.from_dict({**BANDIT, "coverage": 1.0, "bandit": {"cadence_s": 60}}).continuing(three)
    assert (ramped.coverage, ramped.arms, ramped.bandit) == (1.0, three.arms, three.bandit)  # coverage may ramp
    check_transition(three, ramped)
    zero = _bandit()
    assert file.continuing(zero) == zero  # the same epoch: the run's registered start is kept
    with pytest.raises(ExperimentError, match="weights of running"):  # epoch 0's weights changed in the file
        check_transition(zero, Experiment.from_dict({**BANDIT, "arms": [{"name": a, "weight": 2 if a == "ft" else 1}
                                                                       for a in ARMS]}).continuing(zero))  # fmt: skip
    with pytest.raises(ExperimentError, match="allocation of running"):  # the file's cadence changed
        check_transition(three, Experiment.from_dict({**BANDIT, "bandit": {"cadence_s": 30}}).continuing(three))


def test_the_allocators_counts_cut_at_the_boundary_and_give_the_same_weights_every_time():
    def exposure(rid, user, arm, ts, inside=True):
        items = [{"item_id": "i1", "score": 0.5, "position": 0}, {"item_id": "i2", "score": 0.4, "position": 1}]
        return {"request_id": rid, "user_id": user, "arm": arm, "in_experiment": inside, "ts": ts, "items": items}

    exposures = [
        exposure("before", "u0", "ft", 990.0),  # before the run started
        exposure("a", "u1", "ft", 1010.0),
        exposure("b", "u2", "global", 1020.0),
        exposure("out", "u3", "global", 1020.0, inside=False),  # outside coverage
        exposure("late", "u4", "ft_lc", 1065.0),  # served in epoch 1
    ]

    def event(rid, user, item, label, arrived):
        return {"request_id": rid, "user_id": user, "item_id": item, "label": label}, arrived

    events = [
        event("before", "u0", "i1", 1, 995.0),
        event("a", "u1", "i1", 1, 1011.0),
        event("a", "u1", "i2", 1, 1012.0),
        event("b", "u2", "i1", 0, 1021.0),
        event("b", "u2", "i2", 1, 1061.0),  # arrived after the boundary
        event("out", "u3", "i1", 1, 1021.0),
        event("late", "u4", "i1", 1, 1066.0),
    ]
    clicks, impressions = arm_counts(exposures, events, window_s=600, since=1000.0, until=1060.0)
    assert (clicks, impressions) == ({"ft": 2, "global": 0}, {"ft": 2, "global": 1})
    alloc = ThompsonAllocation.of(_bandit())
    assert alloc.epoch(1059.9) == 0 and alloc.epoch(1060.0) == 1 and alloc.boundary(1) == 1060.0
    one = alloc.next_definition(_bandit(), 1, CLICKS, IMPRESSIONS)
    assert one == ThompsonAllocation.of(_bandit()).next_definition(_bandit(), 1, CLICKS, IMPRESSIONS)
    assert max(one.weights, key=one.weights.get) == "ft"
    for arm in ARMS:  # the propensity logged with each exposure: coverage, the epoch's weight, the control's rest
        assert one.propensity(arm) == pytest.approx(0.8 * one.weights[arm] + (0.2 if arm == "global" else 0.0))


def test_the_follower_applies_a_later_epoch_only(offline_settings):
    from stream_ctr.agents.guardrails import ExperimentFollower
    from stream_ctr.experiments.attribution import ArmResults
    from stream_ctr.monitoring.prometheus import WorkerMetrics

    zero, one = _bandit(), _epoch(1)
    results, used = ArmResults(zero), []

    def use(exp):
        results.experiment = exp
        used.append(exp)

    follower = ExperimentFollower(offline_settings, "t", results, WorkerMetrics(ARMS, 100), use, by="w")
    assert follower.apply(one) and used == [one]
    assert not follower.apply(zero) and not follower.apply(dataclasses.replace(_epoch(2), salt="other"))
    stopped = one.stopping("ft", Stop(1.0, "harms ctr", "test", "2026-01-01T00:00:00Z"))
    assert follower.apply(stopped) and follower.apply(_epoch(2)) and used == [one, stopped, _epoch(2)]


@pytest.fixture
def offline_settings():
    from stream_ctr.config import Settings

    return Settings.from_env({}, kafka_bootstrap="127.0.0.1:9")


def test_the_allocator_refuses_an_experiment_without_a_bandit_block(offline_settings):
    from stream_ctr.experiments.allocator import run

    with pytest.raises(ExperimentError, match="experiment.bandit: 'label-correction' has no bandit block"):
        run(offline_settings, "t", Experiment.default(), once=True)
    with pytest.raises(ExperimentError, match="not a registered bandit"):
        ThompsonAllocation.of(Experiment.from_dict({**BANDIT, "bandit": {"cadence_s": 60}}))  # no start yet
