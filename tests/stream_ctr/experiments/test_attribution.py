"""Attribution of events to exposures, per-arm running results, and the report read back from records."""

import numpy as np
import pytest

from stream_ctr.experiments.assignment import Experiment
from stream_ctr.experiments.attribution import ArmResults, PendingExposures, Served
from stream_ctr.experiments.report import analyse, collect, render_markdown


def test_pending_exposures_are_bounded_by_count_and_age():
    pending = PendingExposures(capacity=100, window_s=10)
    for n in range(1000):
        pending.add(f"r{n}", Served("ft", True, ts=float(n), items={"i": 0.5}))
    assert len(pending) == 100
    assert pending.match("r0", "i", now=999.0) == "unknown_request"  # pushed out by newer requests
    assert pending.match("r995", "i", now=999.0)[1] == 0.5
    assert pending.match("r990", "i", now=1001.0) == "expired"
    pending.match("r999", "i", now=5000.0)
    assert len(pending) == 0  # all far past the window: dropped


def test_arm_results_count_impressions_clicks_users_and_score_quality():
    results = ArmResults(Experiment.default(), window=50)
    rng = np.random.default_rng(0)
    for n in range(400):
        p = rng.uniform(0.05, 0.95)
        results.impression("ft", f"u{n % 20}", int(rng.random() < p), p)
    results.requested("ft")
    for _ in range(20):
        results.new_user("ft")
    results.refresh()
    s = results.summary()["arms"]["ft"]
    assert (s["impressions"], s["requests"], s["users"]) == (400, 1, 20)
    assert s["ctr"] == pytest.approx(s["clicks"] / 400)
    assert 0.8 < s["calibration"] < 1.25 and s["logloss"] < 0.69 and s["gauc"] > 0.6  # informative scores
    assert results.windows["ft"].size == results.windows["ft"].capacity == 50  # window bounded: the newest 50 of 400


def test_srm_alarm_on_a_skewed_user_split():
    results = ArmResults(Experiment.default())
    for arm, n in (("global", 3600), ("ft", 3300), ("ft_lc", 3100)):
        for _ in range(n):
            results.new_user(arm)
    assert results.summary()["srm"]["alarm"]


def _records(n_users: int, arms, lift: float, seed: int = 0):
    """Exposures and events of a simulated experiment where arm ``ft`` has ``lift`` more clicks."""
    rng = np.random.default_rng(seed)
    exposures, events = [], []
    for u in range(n_users):
        arm = arms[u % len(arms)]
        base = rng.uniform(0.1, 0.5)
        for r in range(10):
            rid = f"{u}-{r}"
            exposures.append(
                {
                    "request_id": rid,
                    "user_id": f"u{u}",
                    "arm": arm,
                    "in_experiment": True,
                    "ts": 100.0,
                    "items": [{"item_id": f"i{k}", "score": base, "position": k} for k in range(3)],
                }
            )
            for k in range(3):
                p = base + (lift if arm == "ft" else 0.0)
                events.append(
                    ({"request_id": rid, "user_id": f"u{u}", "item_id": f"i{k}", "label": int(rng.random() < p)}, 110.0)
                )
    return exposures, events


def test_report_finds_a_real_lift_and_no_lift_where_there_is_none():
    exposures, events = _records(900, ("global", "ft", "ft_lc"), lift=0.1)
    result = analyse(collect(exposures, events, window_s=60), Experiment.default().weights)
    arms = result["arms"]
    assert arms["global"]["impressions"] == 300 * 30 and arms["ft"]["users"] == 300
    ft, lc = arms["ft"]["vs_control"], arms["ft_lc"]["vs_control"]
    assert ft.ci[0] > 0.05 and lc.ci[0] < 0 < lc.ci[1]
    assert not result["srm"].alarm
    text = render_markdown(result)
    assert "| ft | 300 |" in text and "no sample-ratio mismatch" in text


def test_report_ignores_late_events_foreign_users_and_users_outside_coverage():
    exposures, events = _records(6, ("global", "ft", "ft_lc"), lift=0.0)
    exposures[2] = {**exposures[2], "in_experiment": False}  # u0's third request: outside coverage
    late = [(e, 110.0 + 3600) for e, _ in events[:3]]  # u0's first request: its events came too late
    foreign = [({**e, "user_id": "someone-else"}, t) for e, t in events[3:6]]  # u0's second: another user's
    arms = collect(exposures, late + foreign + events[6:], window_s=60)
    assert sum(a.users.get("u0", [0])[0] for a in arms.values()) == 30 - 9
    assert sum(int(np.sum([t[0] for t in a.users.values()])) for a in arms.values()) == len(events) - 9


def test_report_reads_each_users_clicks_before_the_experiment_as_cupeds_covariate():
    exposures, events = _records(900, ("global", "ft", "ft_lc"), lift=0.0, seed=1)
    base = {e["user_id"]: e["items"][0]["score"] for e in exposures}  # each user's own click rate
    rng = np.random.default_rng(2)
    before = [
        ({"user_id": user, "item_id": f"old{k}", "ts": 50.0, "label": int(rng.random() < p)}, 60.0)
        for user, p in base.items()
        for k in range(40)
    ]
    after = [({"user_id": "u0", "item_id": "later", "ts": 500.0, "label": 1}, 500.0)]  # not before: not counted
    arms = collect(exposures, before + after + events, window_s=60)
    assert arms["global"].before["u0"][0] == 40 and sum(n for n, _ in arms["global"].before.values()) == 300 * 40
    result = analyse(arms, Experiment.default().weights)
    plain = analyse(collect(exposures, events, window_s=60), Experiment.default().weights)
    with_cuped, without = result["arms"]["ft"]["vs_control_sequence"], plain["arms"]["ft"]["vs_control_sequence"]
    assert with_cuped.cuped and not without.cuped and with_cuped.variance_reduction > 0.3
    width = [s.sequence[1] - s.sequence[0] for s in (with_cuped, without)]
    assert width[0] < width[1] and not with_cuped.significant  # no lift planted: the interval holds 0
    assert "always-valid 95%" in render_markdown(result) and "CUPED -" in render_markdown(result)


def test_events_wait_for_their_exposure_a_while_and_then_count_as_unknown():
    from stream_ctr.experiments.attribution import WaitingEvents

    waiting = WaitingEvents(wait_s=5.0, capacity=3)
    for n, rid in enumerate(["r1", "r2", "r2", "r3"]):  # the 4th pushes r1's event out: gone, counted
        waiting.park(rid, f"e{n}", f"u{rid}", now=100.0 + n)
    assert len(waiting) == 3 and waiting.expire(now=103.0) == 1
    assert waiting.take("r1") == [] and waiting.take("r2") == ["e1", "e2"] and len(waiting) == 1
    assert waiting.forget_user("ur3") == 1 and len(waiting) == 0
    waiting.park("r4", "e4", "u4", now=200.0)
    assert waiting.expire(now=204.9) == 0 and waiting.expire(now=205.0) == 1 and waiting.take("r4") == []
