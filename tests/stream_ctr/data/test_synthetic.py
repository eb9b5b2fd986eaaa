"""The synthetic world (stream_ctr.data.synthetic): its probabilities and features are the generator's, and the
generator's output is pinned, since offline evaluation tables depend on each seed giving the same events."""

from __future__ import annotations

import numpy as np
import pytest

from stream_ctr.data.synthetic import SyntheticConfig, SyntheticWorld, generate_synthetic

CFG = SyntheticConfig(users=50, events_per_user=30, seed=3, drift=0.5)
WIDE = SyntheticConfig(users=20, items=60, events_per_user=40, dim=8, taste=3.0, seed=11)


def _index(entity_id: str) -> int:
    return int(entity_id[1:])


@pytest.mark.parametrize("cfg", [CFG, WIDE])
def test_world_prob_and_features_reproduce_the_generated_events(cfg):
    data = generate_synthetic(cfg)
    world = SyntheticWorld.from_config(cfg)
    users = np.array([_index(e.user_id) for e in data.events])
    items = np.array([_index(e.item_id) for e in data.events])
    prob = np.array([world.prob(u, [i])[0] for u, i in zip(users, items)])
    np.testing.assert_allclose(prob, data.true_prob, rtol=1e-12, atol=0)
    assert all(world.features(u, i) == e.features for u, i, e in zip(users, items, data.events))
    for user_id, prior in data.user_prior.items():
        assert prior == pytest.approx(prob[users == _index(user_id)].mean(), rel=1e-12)


def test_generator_output_is_pinned():
    """Values taken from the generator before the world was factored out: the RNG draw order is a contract."""
    data = generate_synthetic(CFG)
    head = [(e.user_id, e.item_id, round(e.ts, 3), e.label, dict(e.features)) for e in data.events[:3]]
    assert head == [
        ("u38", "i170", 1827.354, 1, {"category": "c11", "segment": "s3"}),
        ("u29", "i112", 4232.782, 0, {"category": "c11", "segment": "s1"}),
        ("u17", "i105", 5084.172, 1, {"category": "c10", "segment": "s3"}),
    ]
    assert float(data.true_prob.sum()) == pytest.approx(509.5407356063009, rel=1e-12)
    assert sum(e.label for e in data.events) == 514
    assert data.user_prior["u7"] == pytest.approx(0.4588690768598735, rel=1e-12)


def test_world_shape_ids_and_determinism():
    cfg = SyntheticConfig(users=7, items=9, dim=3, categories=4, seed=5)
    world = SyntheticWorld.from_config(cfg)
    assert world.user_ids == tuple(f"u{n}" for n in range(7))
    assert world.item_ids == tuple(f"i{n}" for n in range(9))
    assert world.u.shape == (7, 3) and world.v.shape == (9, 3) and world.b.shape == (7,)
    assert set(world.category) <= set(range(4))
    again = SyntheticWorld.from_config(cfg)
    other = SyntheticWorld.from_config(SyntheticConfig(users=7, items=9, dim=3, categories=4, seed=6))
    assert np.array_equal(world.prob(3, range(9)), again.prob(3, range(9)))
    assert not np.array_equal(world.prob(3, range(9)), other.prob(3, range(9)))


def test_prob_follows_the_model():
    world = SyntheticWorld.from_config(SyntheticConfig(users=4, items=6, taste=2.0, seed=1))
    logits = world.b[2] + 2.0 * world.v @ world.u[2]
    np.testing.assert_allclose(world.prob(2, np.arange(6)), 1 / (1 + np.exp(-logits)), rtol=1e-12)
    assert world.prob(2, []).shape == (0,)


def test_drift_spreads_the_user_priors():
    """drift 0 gives every user the same prior logit; a large drift spreads the users' mean true CTR."""
    flat = SyntheticWorld.from_config(SyntheticConfig(drift=0.0))
    assert np.ptp(flat.b) == 0
    priors = [generate_synthetic(SyntheticConfig(users=80, drift=d)).user_prior for d in (0.0, 2.0)]
    flat_spread, drifted_spread = (np.std(list(p.values())) for p in priors)
    assert drifted_spread > 2 * flat_spread
