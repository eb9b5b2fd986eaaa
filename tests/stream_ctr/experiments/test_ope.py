"""Off-policy estimators (stream_ctr.experiments.ope) against hand computations and a seeded coverage study, the
join of exposures to events that feeds them, and the closed-loop validation: the simulator's true CTR of an arm
the logging policy served rarely lies in every estimator's CI, and IPS with a wrong propensity misses it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_ctr.cli import main
from stream_ctr.experiments.exposures import logged_units
from stream_ctr.experiments.ope import (
    Logged,
    doubly_robust,
    evaluate,
    ips,
    on_policy,
    policy_vector,
    reward_model,
    snips,
)
from stream_ctr.experiments.ope_sim import OPESimConfig, covers, run_simulation
from stream_ctr.experiments.stats import ratio_estimate

USERS = ["a", "a", "b", "c", "c", "d"]
ARMS = ["ft", "ft", "global", "ft_lc", "ft_lc", "ft"]
PROPENSITY = [0.5, 0.5, 0.3, 0.2, 0.2, 0.5]
REWARD = [0.2, 0.6, 0.4, 1.0, 0.0, 0.4]


def small() -> Logged:
    return Logged.from_units(USERS, ARMS, PROPENSITY, REWARD)


def test_ips_and_snips_by_hand():
    log = small()
    # ft: weights 2, 2, 2 on rewards 0.2, 0.6, 0.4 over 6 units; SNIPS divides by the weights' sum instead.
    assert ips(log, "ft").value == pytest.approx(2 * 1.2 / 6)
    assert snips(log, "ft").value == pytest.approx(1.2 / 3)
    # a mix: ft_lc half the time, global half the time
    w = np.array([0, 0, 0.5 / 0.3, 0.5 / 0.2, 0.5 / 0.2, 0])
    assert ips(log, {"ft_lc": 1, "global": 1}).value == pytest.approx(w @ REWARD / 6)
    assert snips(log, {"ft_lc": 1, "global": 1}).value == pytest.approx(w @ REWARD / w.sum())
    e = ips(log, "ft_lc")
    assert (e.matched, e.units, e.users, e.ess) == (2, 6, 4, pytest.approx(2.0))


def test_the_standard_error_is_clustered_by_user():
    log = small()
    w = np.array([2, 2, 0, 0, 0, 2.0])
    per_user_num = np.array([2 * 0.2 + 2 * 0.6, 0, 0, 2 * 0.4])  # a, b, c, d
    per_user_units = np.array([2, 1, 2, 1.0])
    expected = ratio_estimate(per_user_num, per_user_units)
    got = ips(log, "ft")
    assert (got.value, got.se, *got.ci) == pytest.approx((expected.value, expected.se, *expected.ci))
    got = snips(log, "ft")
    assert got.se == pytest.approx(ratio_estimate(per_user_num, np.array([4, 0, 0, 2.0])).se)
    assert w.sum() == 6  # the weights above


def test_dr_with_a_zero_model_is_ips_and_with_the_exact_model_has_no_variance():
    log = small()
    zero = np.zeros((log.units, len(log.arms)))
    assert doubly_robust(log, "ft", zero).value == pytest.approx(ips(log, "ft").value)
    assert doubly_robust(log, "ft", zero).se == pytest.approx(ips(log, "ft").se)
    # every unit's reward known under every arm: DR returns the model's value, whatever the weights
    exact = np.tile(np.array([[0.3, 0.5, 0.7]]), (log.units, 1))  # arms sorted: ft, ft_lc, global
    exact[np.arange(log.units), log.arm] = log.reward
    dr = doubly_robust(log, "ft_lc", exact)
    assert dr.value == pytest.approx(exact[:, 1].mean())


def test_snips_ignores_a_propensity_off_by_one_factor_and_ips_does_not():
    log = small()
    scaled = Logged.from_units(USERS, ARMS, [p / 2 for p in PROPENSITY], REWARD)
    assert snips(scaled, "ft").value == pytest.approx(snips(log, "ft").value)
    assert ips(scaled, "ft").value == pytest.approx(2 * ips(log, "ft").value)


def test_policies_and_logs_are_checked():
    assert policy_vector("ft", ("ft", "global")).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="never logged"):
        ips(small(), "nope")
    with pytest.raises(ValueError, match=">= 0"):
        policy_vector({"ft": -1, "global": 2}, ("ft", "global"))
    with pytest.raises(ValueError, match="propensities"):
        Logged.from_units(["a"], ["ft"], [0.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        Logged.from_units(["a"], ["ft"], [0.5], [float("nan")])
    with pytest.raises(ValueError, match="one user, arm"):
        Logged.from_units(["a", "b"], ["ft"], [0.5], [1.0])


def test_on_policy_reads_only_the_units_the_arm_served():
    e = on_policy(small(), "ft")
    assert e.value == pytest.approx((0.2 + 0.6 + 0.4) / 3)
    assert (e.matched, e.units, e.users) == (3, 3, 2)


def test_reward_model_is_cross_fitted_and_uses_the_covariate():
    rng = np.random.default_rng(0)
    users = [f"u{n}" for n in range(400)]
    x = rng.random(400)
    arms = np.where(rng.random(400) < 0.5, "ft", "global")
    reward = np.where(arms == "ft", 0.1 + 0.8 * x, 0.3 * x)
    log = Logged.from_units(users, list(arms), [0.5] * 400, list(reward), covariate=list(x))
    model = reward_model(log)
    assert model[:, 0] == pytest.approx(0.1 + 0.8 * x)  # ft: exact line, fit on the other fold's users
    assert model[:, 1] == pytest.approx(0.3 * x)
    # a user's own reward must not move their prediction: change one and only the other fold's predictions move
    bumped = Logged.from_units(users, list(arms), [0.5] * 400, list(reward + (np.arange(400) == 0)), list(x))
    moved = np.abs(reward_model(bumped) - model).max(axis=1) > 1e-12
    assert not moved[0] and moved.any()


LIFT = {"global": 0.8, "ft": 1.0, "ft_lc": 1.25}


def _rates(rng, users: int) -> np.ndarray:
    """Users' own click rates (logit-normal)."""
    return 1 / (1 + np.exp(-(rng.normal(-0.5, 1.5, users))))


#: ft_lc's CTR over the population the users are drawn from (what the intervals estimate: users are the sample).
TRUTH = float(np.mean(np.clip(_rates(np.random.default_rng(123), 2_000_000) * LIFT["ft_lc"], 0, 1)))


def _synthetic_log(rng, users=300, units=3000) -> Logged:
    """Users with their own click rate, each assigned an arm per epoch with unequal weights (two epochs), requests
    from random users; the reward is the request's CTR over 5 items."""
    rate, lift = _rates(rng, users), LIFT
    names = np.array(list(lift))
    epochs = [np.array([0.6, 0.3, 0.1]), np.array([0.3, 0.5, 0.2])]
    arm_of = np.stack([rng.choice(3, size=users, p=p) for p in epochs])
    user = rng.integers(users, size=units)
    epoch = (np.arange(units) >= units // 2).astype(int)
    arm = arm_of[epoch, user]
    p_true = np.clip(rate[user] * np.array(list(lift.values()))[arm], 0, 1)
    reward = rng.binomial(5, p_true) / 5
    propensity = np.array([epochs[e][a] for e, a in zip(epoch, arm)])
    pre = rng.binomial(20, rate) / 20
    return Logged.from_units(
        [f"u{u}" for u in user], list(names[arm]), list(propensity), list(reward), covariate=list(pre[user])
    )


def test_the_intervals_cover_the_truth_at_their_level_and_a_wrong_propensity_does_not():
    rng = np.random.default_rng(7)
    runs, hits, wrong_hits, widths = 150, np.zeros(3), 0, np.zeros(3)
    for _ in range(runs):
        log, truth = _synthetic_log(rng), TRUTH
        estimates = evaluate(log, "ft_lc")
        hits += [covers(e, truth) for e in estimates]
        widths += [e.ci[1] - e.ci[0] for e in estimates]
        wrong_hits += covers(ips(Logged(**{**log.__dict__, "propensity": np.full(log.units, 1 / 3)}), "ft_lc"), truth)
    coverage = hits / runs
    assert ((coverage >= 0.88) & (coverage <= 0.995)).all(), coverage  # 95% nominal, Monte Carlo SE ~0.018
    assert wrong_hits / runs < 0.2
    ips_w, snips_w, dr_w = widths
    assert dr_w < snips_w < ips_w  # the covariate model and the self-normalisation each narrow the interval


def test_logged_units_join_exposures_and_events():
    def exposure(rid, user, arm, ts, propensity=0.5, in_experiment=True):
        items = [{"item_id": "i1", "score": 0.9, "position": 0}, {"item_id": "i2", "score": 0.1, "position": 1}]
        record = {"request_id": rid, "user_id": user, "arm": arm, "ts": ts, "in_experiment": in_experiment}
        return {**record, "items": items, **({"propensity": propensity} if propensity else {})}

    exposures = [
        exposure("r1", "a", "ft", 100.0),
        exposure("r2", "b", "global", 100.0, 0.75, in_experiment=False),  # outside coverage: still a unit
        exposure("r3", "c", "ft", 100.0, propensity=None),  # an old record without a propensity: skipped
        exposure("r4", "d", "ft", 100.0),  # no attributed event: no unit
    ]
    ev = lambda rid, user, item, label, ts=101.0: ({"request_id": rid, "user_id": user, "item_id": item,
                                                    "label": label, "ts": ts}, ts)  # fmt: skip
    events = [
        ev("r1", "a", "i1", 1), ev("r1", "a", "i2", 0), ev("r2", "b", "i1", 0),
        ev("r3", "c", "i1", 1), ev("r4", "x", "i1", 1), ev("r4", "d", "i9", 1), ev("r4", "d", "i1", 1, ts=9999.0),
        ev(None, "a", "i7", 1, ts=50.0), ev(None, "a", "i8", 0, ts=60.0), ev(None, "a", "i8", 1, ts=200.0),
    ]  # fmt: skip
    log = logged_units(exposures, events, window_s=60)
    assert log.units == 2 and log.arms == ("ft", "global")
    assert sorted(zip(log.arm.tolist(), log.reward.tolist(), log.propensity.tolist())) == [(0, 0.5, 0.5), (1, 0, 0.75)]
    # the covariate: a's rate before their first exposure (1 of 2); b has none and gets the mean
    assert sorted(log.covariate.tolist()) == [0.5, 0.5]
    with pytest.raises(ValueError, match="no exposure"):
        logged_units(exposures[2:3], events, window_s=60)


def test_the_closed_loop_truth_lies_in_every_ci_and_a_wrong_propensity_misses_it():
    out = run_simulation(OPESimConfig(users=400, requests=6000, truth_requests=8000, seed=3), "ft_lc")
    truth = out["truth"]
    assert out["served_share"]["ft_lc"] < 0.2  # the target arm was served rarely
    assert out["truth_se"] < 0.01
    for e in out["estimates"]:
        assert covers(e, truth), (e, truth)
    ips_e, snips_e, dr_e = out["estimates"]
    assert dr_e.se < snips_e.se < ips_e.se
    wrong = out["wrong_propensity_ips"]
    assert not covers(wrong, truth) and wrong.value < truth  # weights 3 instead of 12.5 and 5: far too low


def test_the_cli_simulates_without_kafka(tmp_path, capsys):
    path = tmp_path / "ope.json"
    code = main(["ab", "ope", "--arm", "ft=1,ft_lc=1", "--simulate", "--requests", "1500", "--users", "150",
                 "--truth-requests", "2000", "--json", str(path)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "| SNIPS |" in text and "| DR |" in text and "CI holds the truth" in text
    out = json.loads(path.read_text())
    assert out["policy"] == {"ft": 0.5, "ft_lc": 0.5}
    assert {e["estimator"] for e in out["estimates"]} == {"IPS", "SNIPS", "DR"}
    assert out["on_policy"] is None and 0 < out["truth"] < 1
