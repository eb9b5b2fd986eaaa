"""Which p_g correction aligns to offline: the cloud part's click share or the running global CTR (the service's)."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ctr.data import SyntheticConfig, generate_synthetic
from stream_ctr.data.synthetic import Change
from stream_ctr.evaluate.experiment import EvalConfig, run_experiment
from stream_ctr.evaluate.split import split_events

from .test_experiment import FAST, SPEC

RAMP = SyntheticConfig(
    users=60,
    items=60,
    events_per_user=30,
    dim=2,
    categories=6,
    taste=3.0,
    seed=3,
    change=Change("ramp", at=0.2, size=2.0, over=0.5),
)


def test_global_ctr_until_is_the_click_share_of_every_event_so_far():
    data = split_events(generate_synthetic(RAMP).events, SPEC)
    rng = np.random.default_rng(0)
    t = np.r_[rng.uniform(data.ts.min(), data.ts.max(), 50), data.ts[:20], data.ts.min() - 1]
    expect = [data.labels[data.ts <= x].mean() if (data.ts <= x).any() else 0.5 for x in t]
    np.testing.assert_allclose(data.global_ctr_until(t), expect, rtol=1e-6)


def test_aligned_prior_is_taken_at_each_users_last_training_event_and_follows_a_rising_click_rate():
    data = split_events(generate_synthetic(RAMP).events, SPEC)
    parts = [data.ft(k) for k in range(len(data.evaluated))]
    aligned = data.priors(parts, "aligned")
    for k in (0, 7, 33):
        last = data.ts[parts[k]].max()
        assert aligned[k] == pytest.approx(data.labels[data.ts <= last].mean(), rel=1e-6)
    assert (data.priors(parts, "cloud") == data.global_ctr).all()
    assert aligned.mean() > data.global_ctr + 0.02  # the click rate rises: the cloud part's share lags behind
    with pytest.raises(ValueError, match="unknown p_g"):
        data.priors(parts, "rolling")


def test_p_g_changes_the_corrected_modes_only():
    events = generate_synthetic(RAMP).events
    base = dict(models=("lr",), modes=("cloud", "ft", "ft_lc"), scopes=("head",), seed=1, **FAST)
    rows = {
        pg: {r["mode"]: r for r in run_experiment(events, SPEC, EvalConfig(pg=pg, **base)).rows}
        for pg in ("cloud", "aligned")
    }
    assert rows["cloud"]["ft"]["gauc"] == rows["aligned"]["ft"]["gauc"]  # raw labels ignore p_g
    assert rows["cloud"]["ft_lc"]["logloss"] != rows["aligned"]["ft_lc"]["logloss"]
    with pytest.raises(ValueError, match="unknown p_g"):
        EvalConfig(pg="rolling")
