"""The multi-seed summary's CI (stream_ctr.evaluate.seeds): two-level bootstrap over seeds and users."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ctr.evaluate.seeds import SeedUserBootstrap, summarise
from stream_ctr.quality.bootstrap import UserBootstrap


def _world(rng, seeds: int, users: int, seed_sd: float, user_sd: float, mean: float = 0.0):
    """Per-user values of a hierarchical model: mean + a per-seed effect + per-user noise; new users per seed."""
    ids = [[f"u{i}" for i in range(users)] for _ in range(seeds)]
    weights = [rng.integers(5, 30, users).astype(float) for _ in range(seeds)]
    values = [mean + rng.normal(0, seed_sd) + rng.normal(0, user_sd, users) for _ in range(seeds)]
    return ids, weights, values


def _width(ci) -> float:
    return ci[1] - ci[0]


def test_point_estimate_is_the_mean_over_seeds_of_weighted_user_means():
    users = [["a", "b"], ["a", "c", "d"]]
    weights = [np.array([1.0, 3.0]), np.array([2.0, 2.0, 4.0])]
    values = [np.array([0.0, 1.0]), np.array([1.0, 0.0, 0.5])]
    boot = SeedUserBootstrap(users, weights, n_boot=100)
    assert boot.mean(values) == pytest.approx((0.75 + 0.5) / 2)
    lo, hi = boot.ci(values)
    assert lo <= boot.mean(values) <= hi


def test_ci_widens_when_seeds_disagree():
    rng = np.random.default_rng(0)
    ids, weights, noise = _world(rng, 5, 200, 0.0, 0.05)
    agree = SeedUserBootstrap(ids, weights, n_boot=500, seed=1)
    offsets = np.array([-0.02, -0.01, 0.0, 0.01, 0.02])  # same mean, seeds far apart
    disagree = [v + o for v, o in zip(noise, offsets)]
    assert agree.mean(disagree) == pytest.approx(agree.mean(noise), abs=1e-12)
    assert _width(agree.ci(disagree)) > 2 * _width(agree.ci(noise))


def test_ci_covers_a_known_mean_where_a_users_only_ci_does_not():
    """Simulated: mean 0.01, per-seed effects (sd 0.01) and per-user noise (sd 0.05, 80 users, 5 seeds).
    The two-level CI covers the mean in most worlds; pooling every seed's users into one user bootstrap treats
    five seeds as five times the evidence and misses it far more often."""
    rng = np.random.default_rng(0)
    two_level = users_only = 0
    worlds = 100
    for k in range(worlds):
        ids, weights, values = _world(rng, 5, 80, 0.01, 0.05, mean=0.01)
        lo, hi = SeedUserBootstrap(ids, weights, n_boot=400, seed=k).ci(values)
        two_level += lo <= 0.01 <= hi
        lo, hi = UserBootstrap(np.concatenate(weights), 400, k).ci(np.concatenate(values))
        users_only += lo <= 0.01 <= hi
    assert two_level / worlds >= 0.82
    assert users_only / worlds <= 0.75
    assert two_level > users_only + 15


def test_the_same_users_in_every_seed_do_not_count_as_new_evidence():
    """Crossed design (ML-100K: every seed has the same users): five identical seeds carry the evidence of one,
    so the CI is about as wide as one seed's user bootstrap, not sqrt(5) narrower."""
    rng = np.random.default_rng(3)
    users = [f"u{i}" for i in range(300)]
    w = rng.integers(5, 30, 300).astype(float)
    v = rng.normal(0.01, 0.05, 300)
    one = UserBootstrap(w, 1000, 0).ci(v)
    five = SeedUserBootstrap([users] * 5, [w] * 5, n_boot=1000, seed=0).ci([v] * 5)
    assert 0.85 < _width(five) / _width(one) < 1.15


class _Users:
    def __init__(self, users, weights, auc):
        self.users, self.weights, self.auc = users, weights, auc


class _Result:
    def __init__(self, seed, users, weights, auc):
        self.per_user = {"head": _Users(users, weights, auc)}
        self.rows = [
            {
                "model": "lr",
                "scope": "head",
                "mode": m,
                "logloss": 0.5,
                "calibration": 1.0,
                "n_users": 3,
                **({"chosen": {"pick": "ft"}} if m != "cloud" else {}),
            }
            for m in auc["lr"]
        ]


def test_summary_rows_carry_means_cis_and_per_seed_deltas():
    w = np.array([1.0, 1.0, 2.0])
    results = [
        _Result(
            s,
            ["a", "b", "c"],
            w,
            {"lr": {"cloud": np.full(3, 0.6), "ft": np.full(3, 0.6 + d), "ft_lc": np.full(3, 0.6 + 2 * d)}},
        )
        for s, d in enumerate((0.01, 0.03))
    ]
    rows = {r["mode"]: r for r in summarise(results, n_boot=200)}
    assert set(rows) == {"cloud", "ft", "ft_lc"} and "vs_cloud" not in rows["cloud"]
    assert rows["ft"]["vs_cloud"]["delta"] == pytest.approx(0.02)
    assert rows["ft"]["vs_cloud"]["per_seed"] == pytest.approx([0.01, 0.03])
    assert rows["ft_lc"]["vs_ft"]["delta"] == pytest.approx(0.02) and "vs_ft" not in rows["ft"]
    lo, hi = rows["ft_lc"]["vs_ft"]["ci"]
    assert 0.01 - 1e-9 <= lo <= hi <= 0.03 + 1e-9 and hi - lo > 0.005  # the seeds disagree: a real width
    assert rows["ft"]["picks"] == ["ft", "ft"]


def test_cli_seeds_writes_one_folder_per_seed_and_a_summary(tmp_path, monkeypatch):
    import json

    import stream_ctr.evaluate.datasets as ds
    from stream_ctr.data import SyntheticConfig

    from .test_experiment import _cli

    monkeypatch.setattr(
        ds, "SYNTHETIC", SyntheticConfig(users=40, items=60, events_per_user=30, dim=2, categories=6, taste=3.0)
    )
    out = tmp_path / "out"
    rc = _cli(
        [
            "--dataset",
            "synthetic",
            "--models",
            "lr",
            "--modes",
            "ft,ft_lc",
            "--seeds",
            "0,1",
            "--max-epochs",
            "2",
            "--bootstrap",
            "50",
            "--no-progress",
            "--no-plots",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["seeds"] == [0, 1] and [p["seed"] for p in res["per_seed"]] == [0, 1]
    assert (out / "seed-0" / "results.json").exists() and (out / "seed-1" / "results.md").exists()
    lc = next(r for r in res["rows"] if r["mode"] == "ft_lc")
    assert len(lc["vs_ft"]["per_seed"]) == 2 and lc["vs_ft"]["ci"][0] <= lc["vs_ft"]["delta"] <= lc["vs_ft"]["ci"][1]
    assert "| lr | head | ft_lc |" in (out / "results.md").read_text()
    assert _cli(["--dataset", "synthetic", "--seeds", "0,x", "--out", str(out)]) == 2
