import numpy as np
import pytest

from stream_ctr.learning.correction import Targets
from stream_ctr.learning.heads import UserHead
from stream_ctr.quality.metrics import auc


def _taste(seed=0, n=400, dim=8):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, dim)).astype(np.float32)
    taste = rng.normal(size=dim)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * h @ taste))).astype(np.float32)
    return h, y, taste


def test_head_learns_a_users_taste_on_top_of_a_flat_global_model():
    h, y, _ = _taste()
    g = np.zeros(len(y), np.float32)
    head = UserHead(h.shape[1], lr=0.2, l2=0.0, steps=5)
    before = auc(y[300:], head.predict_proba_many(g[300:], h[300:]))
    for lo in range(0, 300, 20):
        head.learn_many(g[lo : lo + 20], h[lo : lo + 20], y[lo : lo + 20])
    after = auc(y[300:], head.predict_proba_many(g[300:], h[300:]))
    assert before == 0.5  # an untrained head is the global model (constant here)
    assert after > 0.75


def test_untrained_head_is_the_global_model():
    h, _, _ = _taste()
    g = np.linspace(-2, 2, len(h)).astype(np.float32)
    p = UserHead(h.shape[1]).predict_proba_many(g, h)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-g)), rtol=1e-6)


def test_l2_pulls_back_toward_the_global_model():
    h, y, _ = _taste()
    g = np.zeros(len(y), np.float32)
    strong, weak = UserHead(8, lr=0.2, l2=1.0, steps=3), UserHead(8, lr=0.2, l2=0.0, steps=3)
    for head in (strong, weak):
        head.learn_many(g, h, y)
    assert strong.norm < weak.norm


def test_soft_targets_and_weights_move_the_bias_as_expected():
    g = np.zeros(10, np.float32)
    h = np.zeros((10, 2), np.float32)
    head = UserHead(2, lr=1.0, l2=0.0, steps=50)
    head.learn_many(g, h, Targets(np.full(10, 0.25, np.float32), np.ones(10, np.float32)))
    assert head.predict_proba_many(g[:1], h[:1])[0] == pytest.approx(0.25, abs=0.01)


def test_learn_one_equals_learn_many_of_one_and_bytes_roundtrip():
    h, y, _ = _taste(n=5, dim=3)
    a, b = UserHead(3, lr=0.3), UserHead(3, lr=0.3)
    for i in range(5):
        a.learn_one((0.1, h[i]), y[i])
        b.learn_many(np.array([0.1], np.float32), h[i : i + 1], y[i : i + 1])
    np.testing.assert_allclose(a.w, b.w)
    c = UserHead(0)
    assert c.load_bytes(a.to_bytes()) == len(a.to_bytes())
    np.testing.assert_array_equal(c.w, a.w)
    assert c.b == pytest.approx(a.b)


@pytest.mark.parametrize("method", ["none", "lc", "lc_bias", "logit"])
def test_heads_learned_together_equal_each_learned_alone(method):
    """learn_rows steps every user's head on its own events only: the batch is a speed-up, not a mixing."""
    from stream_ctr.learning.correction import correct
    from stream_ctr.learning.heads import learn_rows

    rng = np.random.default_rng(1)
    counts = np.array([1, 7, 3, 12])
    h = rng.normal(size=(counts.sum(), 5)).astype(np.float32)
    g = rng.normal(size=counts.sum()).astype(np.float32)
    y = (rng.random(counts.sum()) < 0.4).astype(np.float32)
    p_u = np.repeat([0.2, 0.7, 0.5, 0.35], counts)
    b = rng.normal(size=len(counts)).astype(np.float32)
    w = rng.normal(size=(len(counts), 5)).astype(np.float32)
    alone = []
    for u, (lo, hi) in enumerate(zip(np.cumsum(counts) - counts, np.cumsum(counts))):
        head = UserHead(5, lr=0.3, l2=0.05, steps=3)
        head.b, head.w = float(b[u]), w[u].copy()
        head.learn_many(g[lo:hi], h[lo:hi], correct(y[lo:hi], p_u[lo], 0.4, method, hi - lo))
        alone.append(head)
    learn_rows(b, w, counts, g, h, correct(y, p_u, 0.4, method, np.repeat(counts, counts)), 0.3, 0.05, 3)
    np.testing.assert_allclose(b, [head.b for head in alone], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w, np.stack([head.w for head in alone]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["none", "lc", "lc_bias", "logit", "reweight"])
def test_one_event_a_head_steps_as_each_head_alone(method):
    """learn_rows' path for one event a head (test-then-train's waves) against the segment-sum path: each head
    alone on its event twice (the mean of two equal gradients is the one)."""
    from stream_ctr.learning.correction import correct
    from stream_ctr.learning.heads import learn_rows

    rng = np.random.default_rng(4)
    n, d = 5, 3
    g, h = rng.normal(size=n).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.random(n) < 0.4).astype(np.float32)
    targets = correct(y, rng.uniform(0.1, 0.9, n), 0.45, method, np.full(n, 30.0))
    b, w = rng.normal(size=n).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)
    fast_b, fast_w = b.copy(), w.copy()
    learn_rows(fast_b, fast_w, np.ones(n, dtype=np.int64), g, h, targets, 0.1, 0.01, 3)
    for i in range(n):
        one = type(targets)(
            *(None if v is None else np.asarray(v)[[i, i]] if np.ndim(v) else v for v in vars(targets).values())
        )
        bb, ww = b[[i]].copy(), w[[i]].copy()
        learn_rows(bb, ww, np.array([2]), g[[i, i]], h[[i, i]], one, 0.1, 0.01, 3)
        np.testing.assert_allclose(fast_b[i], bb[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fast_w[i], ww[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("methods", [("none", "lc"), ("none", "lc_bias"), ("logit", "reweight"), ("lc", "none")])
def test_arms_stepped_together_step_as_each_arm_alone(methods):
    """learn_wave (every arm of a wave at once, test-then-train's hot path) against learn_rows for each arm on its
    own targets: the arms do not mix, offsets and the bias's own labels stay with their arm, steps > 1 included."""
    from stream_ctr.learning.correction import correct
    from stream_ctr.learning.heads import head_logits, learn_rows, learn_wave

    rng = np.random.default_rng(7)
    n, d = 6, 4
    g, h = rng.normal(size=n).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.random(n) < 0.4).astype(np.float32)
    targets = [correct(y, rng.uniform(0.1, 0.9, n), 0.45, m, np.full(n, 30.0)) for m in methods]
    b = rng.normal(size=(len(methods), n)).astype(np.float32)
    w = rng.normal(size=(len(methods), n, d)).astype(np.float32)
    together_b, together_w = b.copy(), w.copy()
    logit = np.stack([head_logits(b[a], w[a], slice(None), g, h) for a in range(len(methods))])
    learn_wave(together_b, together_w, g, h, logit, targets, 0.1, 0.01, 3)
    for a, t in enumerate(targets):
        alone_b, alone_w = b[a].copy(), w[a].copy()
        learn_rows(alone_b, alone_w, np.ones(n, dtype=np.int64), g, h, t, 0.1, 0.01, 3)
        np.testing.assert_allclose(together_b[a], alone_b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(together_w[a], alone_w, rtol=1e-5, atol=1e-6)
    assert not np.allclose(together_b, b)  # they did learn
