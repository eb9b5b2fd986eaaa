import numpy as np
import pytest

from stream_ctr.contracts.arms import ARMS
from stream_ctr.quality.metrics import gauc
from stream_ctr.quality.online_metrics import OnlineMetrics


def _stream(n=4000, users=40, seed=0):
    rng = np.random.default_rng(seed)
    u = np.array([f"u{i % users}" for i in range(n)], dtype=object)
    y = (rng.random(n) < 0.4).astype(np.float32)
    base = rng.random(n).astype(np.float32)
    return u, y, {"global": base, "ft": np.clip(base + 0.4 * y * rng.random(n), 0, 1).astype(np.float32), "ft_lc": base}


def test_window_keeps_only_the_newest_rows_and_lifetime_keeps_all():
    u, y, p = _stream()
    m = OnlineMetrics(ARMS, window=1000)
    for lo in range(0, len(y), 300):
        m.record(u[lo : lo + 300], y[lo : lo + 300], {a: v[lo : lo + 300] for a, v in p.items()})
    win, life = m.summary("window"), m.summary("lifetime")
    assert (win["n"], life["n"]) == (1000, len(y))
    assert win["arms"]["ft"]["gauc"] == pytest.approx(gauc(u[-1000:], y[-1000:], p["ft"][-1000:]))
    assert life["arms"]["global"]["gauc"] == pytest.approx(gauc(u, y, p["global"]))


def test_paired_differences_have_bootstrap_cis():
    u, y, p = _stream()
    m = OnlineMetrics(ARMS)
    m.record(u, y, p)
    assert m.summary("lifetime")["paired"] == {}  # a refresh does not pay for the bootstrap
    paired = m.summary("lifetime", paired=True)["paired"]
    same = paired["ft_lc - global"]
    assert same["delta"] == 0 and same["ci"] == [0.0, 0.0]
    better = paired["ft - global"]
    assert better["ci"][0] > 0 and better["ci"][0] <= better["delta"] <= better["ci"][1]
    assert paired["ft_lc - ft"]["delta"] == pytest.approx(-better["delta"])


def test_auto_serves_ft_until_the_corrected_head_is_significantly_better():
    u, y, p = _stream()
    m = OnlineMetrics(ARMS)
    m.record(u, y, p)  # ft ranks better than ft_lc
    assert "auto" not in m.summary("lifetime")
    keep = m.summary("lifetime", paired=True)["auto"]
    assert (keep["arm"], keep["switched"]) == ("ft", False)
    m = OnlineMetrics(ARMS)
    m.record(u, y, {**p, "ft": p["ft_lc"], "ft_lc": p["ft"]})  # now the corrected head ranks better
    switch = m.summary("lifetime", paired=True)["auto"]
    assert (switch["arm"], switch["switched"]) == ("ft_lc", True) and "CI above 0" in switch["reason"]


def test_per_user_auc_in_one_pass_equals_auc_user_by_user():
    from stream_ctr.quality.metrics import auc, per_user_auc

    rng = np.random.default_rng(3)
    users, labels = rng.integers(0, 40, 3000), rng.integers(0, 2, 3000)
    scores = rng.integers(0, 6, 3000) / 5.0  # many ties within a user
    got_users, got_auc, got_n = per_user_auc(users, labels, scores)
    want = [(x, auc(labels[users == x], scores[users == x]), (users == x).sum()) for x in np.unique(users)]
    want = [w for w in want if not np.isnan(w[1])]
    assert got_users.tolist() == [w[0] for w in want] and got_n.tolist() == [w[2] for w in want]
    assert np.allclose(got_auc, [w[1] for w in want], atol=1e-12)


def test_lifetime_pooled_metrics_are_running_sums_over_every_prediction():
    from stream_ctr.quality.metrics import auc, calibration, logloss

    u, y, p = _stream(n=20_000, users=2_000, seed=1)
    m = OnlineMetrics(ARMS, window=100, lifetime_users=50, lifetime_rows=1_000)  # the sample holds few users
    for lo in range(0, len(y), 512):
        m.record(u[lo : lo + 512], y[lo : lo + 512], {a: v[lo : lo + 512] for a, v in p.items()})
    life = m.summary("lifetime")
    assert life["n"] == len(y)
    for arm in ARMS:
        got = life["arms"][arm]
        assert got["auc"] == pytest.approx(auc(y, p[arm]), abs=2e-4)  # ties only within a 1/10,000 bin
        assert got["logloss"] == pytest.approx(logloss(y, p[arm]), rel=1e-6)
        assert got["calibration"] == pytest.approx(calibration(y, p[arm]), rel=1e-5)


def test_lifetime_gauc_is_exact_on_a_hash_sample_of_users_that_halves_to_stay_bounded():
    from stream_ctr.quality.metrics import user_key

    u, y, p = _stream(n=20_000, users=2_000, seed=2)
    m = OnlineMetrics(ARMS, window=100, lifetime_users=300, lifetime_rows=5_000)
    for lo in range(0, len(y), 512):
        m.record(u[lo : lo + 512], y[lo : lo + 512], {a: v[lo : lo + 512] for a, v in p.items()})
    life = m.summary("lifetime")
    share = life["lifetime_user_share"]
    assert share in (1 / 8, 1 / 16)  # 2,000 users into at most 300: halved 3 or 4 times
    sampled = np.array([user_key(x) % round(1 / share) == 0 for x in u])
    assert 0 < len(set(u[sampled])) <= 300 and sampled.sum() <= 5_000
    for arm in ARMS:  # every prediction of every sampled user, and no other
        assert life["arms"][arm]["gauc"] == pytest.approx(gauc(u[sampled], y[sampled], p[arm][sampled]))


def test_worker_metrics_forget_users_a_rebalance_moves_away():
    from stream_ctr.learning.loop import BatchResult
    from stream_ctr.monitoring.prometheus import WorkerMetrics

    m = WorkerMetrics(ARMS, window=100)
    result = BatchResult(gaps={"a": 0.1, "b": -0.3, "c": 0.05}, z={"a": 1.0, "b": -4.0, "c": 0.5})
    m.observe(result, {"a": 0, "b": 1, "c": 2})
    assert "stream_ctr_users_drifting 1.0" in m.render().decode()  # b: 4 sampling stds below p_g
    assert m.keep_partitions({0, 2}) == 1
    assert sorted(m.active) == ["a", "c"]
    text = m.render().decode()
    assert "stream_ctr_users 2.0" in text
    assert "stream_ctr_user_ctr_drift_count 2.0" in text
    assert "stream_ctr_users_drifting 0.0" in text  # b, the one beyond 3 stds, moved away


def test_worker_metrics_hold_a_bounded_working_set_of_users():
    from stream_ctr.learning.loop import BatchResult
    from stream_ctr.monitoring.prometheus import WorkerMetrics

    m = WorkerMetrics(ARMS, window=100, idle_s=3600, active_max=1000)
    for lo in range(0, 50_000, 500):  # 50,000 distinct users, 1,000 at most are kept
        users = [f"u{i}" for i in range(lo, lo + 500)]
        m.observe(BatchResult(gaps=dict.fromkeys(users, 0.1), z=dict.fromkeys(users, 1.0)), {})
    assert len(m.active) == 1000 and sorted(m.active)[:2] == ["u49000", "u49001"]
    assert "stream_ctr_users 1000.0" in m.render().decode()
