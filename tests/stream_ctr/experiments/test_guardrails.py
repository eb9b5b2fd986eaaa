"""Guardrails: configuration, stoppable arms, live always-valid intervals from the worker's running sums, and the
decision that stops a planted bad arm (and not the harmless ones, however often it is read)."""

import json

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_ctr.contracts.arms import ARMS
from stream_ctr.experiments.assignment import Experiment, ExperimentError, Stop, check_transition
from stream_ctr.experiments.attribution import ArmResults
from stream_ctr.experiments.sequential import sequential_difference
from stream_ctr.monitoring.prometheus import WorkerMetrics


def _definition(**extra) -> dict:
    return {"name": "g", "salt": "s1", "arms": [{"name": a, "weight": 1} for a in ARMS], **extra}


GUARDED = _definition(guardrails={"tolerances": {"ctr": 0.02, "logloss": 0.05}, "min_users": 100}, planned_users=2000)


# --- the definition --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("guardrails", "message"),
    [
        ({"tolerances": {"ctr": -0.1}}, "experiment.guardrails.tolerances.ctr: must be a number >= 0"),
        ({"tolerances": {"ctr": "1"}}, "experiment.guardrails.tolerances.ctr: must be a number >= 0"),
        ({"tolerances": {"p99_latency": 0.1}}, "experiment.guardrails.tolerances.p99_latency: unknown metric"),
        ({"tolerances": {}}, "experiment.guardrails.tolerances: must map at least one metric"),
        ({"tolerances": {"ctr": 0.1}, "alpha": 1.5}, "experiment.guardrails.alpha: must be a number in (0, 1)"),
        ({"tolerances": {"ctr": 0.1}, "min_users": 1}, "experiment.guardrails.min_users: must be an integer >= 2"),
        ({"tolerances": {"ctr": 0.1}, "stop": True}, "experiment.guardrails.stop: unknown key"),
        ([], "experiment.guardrails: expected dict"),
    ],
)
def test_a_bad_guardrails_block_is_refused_naming_the_file_and_key(tmp_path, guardrails, message):
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(_definition(guardrails=guardrails)))
    with pytest.raises(ExperimentError) as err:
        Experiment.load(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)


def test_guardrails_and_stops_round_trip_and_an_old_definition_still_reads():
    exp = Experiment.from_dict(GUARDED)
    assert exp.guardrails.tolerances == (("ctr", 0.02), ("logloss", 0.05)) and exp.planned_users == 2000
    stopped = exp.stopping("ft", Stop(1.0, "harms ctr", "guardrail on w1", "2026-01-01T00:00:00.000Z", "ctr"))
    assert Experiment.from_dict(json.loads(json.dumps(stopped.to_dict()))) == stopped
    assert stopped.to_dict()["arms"][1] == {
        "name": "ft",
        "weight": 0.0,
        "stopped": {
            "weight": 1.0,
            "reason": "harms ctr",
            "by": "guardrail on w1",
            "at": "2026-01-01T00:00:00.000Z",
            "guardrail": "ctr",
        },
    }
    assert Experiment.from_dict(_definition()).to_dict() == {**_definition(), "coverage": 1.0}  # no new keys


@pytest.mark.parametrize(
    ("arm", "message"),
    [
        ({"name": "ft", "weight": 0}, "experiment.arms[1].weight: must be > 0"),
        (
            {"name": "ft", "weight": 1, "stopped": {"weight": 1, "reason": "r", "by": "b", "at": "t"}},
            "stopped arm has weight 0",
        ),
        (
            {"name": "ft", "weight": 0, "stopped": {"weight": 1, "reason": "", "by": "b", "at": "t"}},
            "experiment.arms[1].stopped.reason",
        ),
        (
            {"name": "ft", "weight": 0, "stopped": {"weight": 0, "reason": "r", "by": "b", "at": "t"}},
            "experiment.arms[1].stopped.weight",
        ),
    ],
)
def test_a_malformed_stop_is_refused(arm, message):
    d = _definition()
    d["arms"][1] = arm
    with pytest.raises(ExperimentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Experiment.from_dict(d)


def test_stopping_an_arm_moves_only_its_users_to_the_control_and_resuming_brings_them_back():
    exp = Experiment.from_dict({**_definition(), "coverage": 0.8})
    stop = Stop(1.0, "harms ctr", "test", "2026-01-01T00:00:00.000Z", "ctr")
    stopped = exp.stopping("ft_lc", stop)
    check_transition(exp, stopped)  # a legal change of the running experiment
    check_transition(stopped, stopped.resuming("ft_lc"))
    users = [str(u) for u in range(3000)]
    before, after = [exp.assign(u) for u in users], [stopped.assign(u) for u in users]
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    assert moved and all(b.arm == "ft_lc" and b.in_experiment for b, _ in moved)
    assert all(a.arm == "global" and not a.in_experiment for _, a in moved)
    assert sum(b.arm == "ft_lc" and b.in_experiment for b in before) == len(moved)  # every one of them moved
    assert [stopped.resuming("ft_lc").assign(u) for u in users] == before
    assert stopped.propensity("ft_lc") == 0 and sum(stopped.propensity(a) for a in ARMS) == pytest.approx(1)
    assert stopped.live_weights == {"global": 0.5, "ft": 0.5}
    with pytest.raises(ExperimentError, match="control arm"):
        exp.stopping("global", stop)
    with pytest.raises(ExperimentError, match="not stopped"):
        exp.resuming("ft")
    with pytest.raises(ExperimentError, match="new salt"):  # stopping does not open the door to reweighting
        check_transition(
            stopped,
            Experiment.from_dict(
                {**_definition(), "arms": [{"name": "global", "weight": 2}, {"name": "ft", "weight": 1}]}
            ),
        )


def test_a_restart_with_the_original_file_keeps_the_stop_of_the_running_definition():
    exp = Experiment.from_dict(GUARDED)
    stopped = exp.stopping("ft", Stop(1.0, "r", "b", "t"))
    assert exp.keeping_stops_of(stopped) == stopped
    assert exp.keeping_stops_of(None) == exp
    new_salt = Experiment.from_dict({**GUARDED, "salt": "s2"})
    assert new_salt.keeping_stops_of(stopped) == new_salt  # another run starts with every arm


# --- the worker's running sums and live intervals --------------------------------------------------------------------


def _feed(results: ArmResults, ctr: dict[str, float], users: int, per_user: int = 8, seed: int = 0, scores=None):
    """``users`` simulated users per arm, each with ``per_user`` impressions: a user's own click rate drawn around
    the arm's CTR (users differ), their scores the true rate unless ``scores`` fixes an arm's."""
    rng = np.random.default_rng(seed)
    for arm, mean in ctr.items():
        for u in range(users):
            p = float(np.clip(rng.beta(4, 4) * 2 * mean, 0.01, 0.99))
            for _ in range(per_user):
                score = (scores or {}).get(arm, p)
                results.impression(arm, f"{arm}-{u}-{seed}", int(rng.random() < p), score)
    results.refresh()


def test_live_intervals_are_the_reports_per_user_delta_method():
    results = ArmResults(Experiment.from_dict(GUARDED))
    _feed(results, {"global": 0.3, "ft": 0.3, "ft_lc": 0.25}, users=300)
    rows = {arm: results.tallies[arm].rows() for arm in ARMS}
    for arm in ("ft", "ft_lc"):
        oracle = sequential_difference(
            (rows["global"][:, 1], rows["global"][:, 0]), (rows[arm][:, 1], rows[arm][:, 0]), t_star=2000
        )
        live = results.live[arm]["ctr"]
        assert live.delta == pytest.approx(oracle.delta) and live.sequence == pytest.approx(oracle.sequence)
        assert live.sequence[0] < live.fixed[0] < live.delta < live.fixed[1] < live.sequence[1]
        assert live.users == 600
    # the per-user sums agree with the worker's running totals
    for arm in ARMS:
        assert rows[arm][:, 0].sum() == results.totals[arm]["impressions"] == 300 * 8
        assert rows[arm][:, 1].sum() == results.totals[arm]["clicks"]
    assert results.live["ft_lc"]["ctr"].delta == pytest.approx(-0.05, abs=0.02)
    erased = results.forget_user("ft-0-0")
    assert erased > 0 and len(results.tallies["ft"].rows()) == 299


def test_a_planted_bad_arm_breaches_and_the_harmless_one_holds():
    results = ArmResults(Experiment.from_dict(GUARDED))
    _feed(results, {"global": 0.30, "ft": 0.30, "ft_lc": 0.20}, users=600)
    breaches = results.breaches()
    assert [(b.arm, b.metric) for b in breaches] == [("ft_lc", "ctr")]
    assert breaches[0].interval[1] < -0.02 and "ft_lc" in breaches[0].reason
    states = results.guardrail_states()
    assert states[("ft", "ctr")] == states[("ft", "logloss")] == 0 == states[("ft_lc", "ctr")]
    # once stopped, the arm is not breached again, and its state says which guardrail stopped it
    results.experiment = results.experiment.stopping("ft_lc", Stop(1.0, breaches[0].reason, "t", "now", "ctr"))
    assert results.breaches() == [] and results.guardrail_states()[("ft_lc", "ctr")] == 1


def test_a_badly_calibrated_arm_breaches_the_logloss_guardrail():
    results = ArmResults(Experiment.from_dict(GUARDED))
    _feed(results, {"global": 0.3, "ft": 0.3, "ft_lc": 0.3}, users=400, scores={"ft": 0.9})
    assert [(b.arm, b.metric) for b in results.breaches()] == [("ft", "logloss")]


def test_no_decision_before_min_users_and_none_without_guardrails():
    results = ArmResults(Experiment.from_dict(GUARDED))
    _feed(results, {"global": 0.5, "ft": 0.5, "ft_lc": 0.05}, users=60)  # a huge harm, but 60 < 100 users
    assert results.breaches() == [] and set(results.guardrail_states().values()) == {-1}
    assert "ft_lc" in results.live  # the intervals are shown meanwhile
    plain = ArmResults(Experiment.from_dict(_definition()))
    _feed(plain, {"global": 0.5, "ft": 0.5, "ft_lc": 0.05}, users=300)
    assert plain.breaches() == [] and plain.guardrail_states() == {}


def test_harmless_arms_read_continuously_are_not_stopped():
    """Identical arms, the guardrails read after every 50 users per arm up to 1,000, in 40 runs: the always-valid
    test at family-wise alpha 0.05 and tolerance 0 should stop none (the fixed-horizon interval, read as often,
    crosses 0 in a good share of runs: the test can tell the two apart)."""
    exp = Experiment.from_dict(_definition(guardrails={"tolerances": {"ctr": 0.0, "logloss": 0.0}, "min_users": 50}))
    stopped_runs = naive_runs = 0
    for seed in range(40):
        results, stopped, naive = ArmResults(exp), False, False
        for step in range(20):
            _feed(results, dict.fromkeys(ARMS, 0.3), users=50, per_user=4, seed=1000 * seed + step)
            stopped |= bool(results.breaches())
            naive |= any(d["ctr"].fixed[1] < 0 or d["logloss"].fixed[0] > 0 for d in results.live.values())
        stopped_runs += stopped
        naive_runs += naive
    assert stopped_runs <= 1, stopped_runs
    assert naive_runs >= 4, naive_runs


def test_srm_counts_only_the_arms_still_serving():
    exp = Experiment.from_dict(_definition()).stopping("ft_lc", Stop(1.0, "r", "b", "t"))
    results = ArmResults(exp)
    for arm, n in (("global", 5000), ("ft", 5000), ("ft_lc", 800)):  # ft_lc stopped early: few users
        for _ in range(n):
            results.new_user(arm)
    assert not results.srm()["alarm"]


def test_live_intervals_and_guardrails_are_exported_with_arm_and_bound_labels_only():
    results = ArmResults(Experiment.from_dict(GUARDED))
    metrics = WorkerMetrics(ARMS, 100)
    metrics.track_experiment(results)
    _feed(results, {"global": 0.30, "ft": 0.30, "ft_lc": 0.20}, users=600)
    results.experiment = results.experiment.stopping("ft_lc", Stop(1.0, "r", "b", "t", "ctr"))
    metrics.guardrail_stops.labels("ft_lc", "ctr").inc()
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    diff = {(s.labels["arm"], s.labels["bound"]): s.value for s in families["stream_ctr_ab_ctr_difference"].samples}
    assert {label for s in families["stream_ctr_ab_ctr_difference"].samples for label in s.labels} == {"arm", "bound"}
    assert diff[("ft_lc", "estimate")] == pytest.approx(results.live["ft_lc"]["ctr"].delta)
    assert diff[("ft_lc", "always_valid_upper")] == pytest.approx(results.live["ft_lc"]["ctr"].sequence[1])
    assert diff[("ft_lc", "guardrail_lower")] < diff[("ft_lc", "always_valid_lower")]  # Bonferroni: wider
    assert {b for a, b in diff if a == "ft"} >= {"fixed_horizon_lower", "fixed_horizon_upper", "guardrail_upper"}
    assert "stream_ctr_ab_logloss_difference" in families
    state = {
        (s.labels["arm"], s.labels["guardrail"]): s.value for s in families["stream_ctr_ab_guardrail_state"].samples
    }
    assert state == {("ft", "ctr"): 0, ("ft", "logloss"): 0, ("ft_lc", "ctr"): 1, ("ft_lc", "logloss"): 0}
    stopped = {s.labels["arm"]: s.value for s in families["stream_ctr_ab_arm_stopped"].samples}
    assert stopped == {"global": 0, "ft": 0, "ft_lc": 1}
    stops = {
        (s.labels["arm"], s.labels["guardrail"]): s.value for s in families["stream_ctr_ab_guardrail_stops"].samples
    }
    assert stops == {("ft", "ctr"): 0, ("ft", "logloss"): 0, ("ft_lc", "ctr"): 1, ("ft_lc", "logloss"): 0}
