import numpy as np
import pytest

from stream_ctr.learning.correction import METHODS, correct, shrunk_ctr

GRID = [(pu, pg) for pu in (0.02, 0.1, 0.3, 0.5, 0.8, 0.95) for pg in (0.05, 0.3, 0.55, 0.9)]


def _labels(n_pos, n_neg):
    return np.array([1] * n_pos + [0] * n_neg)


@pytest.mark.parametrize("n_pos,n_neg,pg", [(1, 9, 0.5), (8, 2, 0.3), (5, 5, 0.5), (1, 1, 0.9), (37, 463, 0.55)])
def test_corrected_labels_average_to_global_ctr(n_pos, n_neg, pg):
    y = _labels(n_pos, n_neg)
    t = correct(y, p_u=y.mean(), p_g=pg, method="lc")
    assert t.labels.mean() == pytest.approx(pg, abs=1e-6)


@pytest.mark.parametrize("pu,pg", GRID)
def test_positives_stay_above_negatives(pu, pg):
    y = _labels(3, 7)
    t = correct(y, pu, pg, "lc")
    assert t.labels[y == 1].min() > t.labels[y == 0].max()
    assert ((t.labels >= 0) & (t.labels <= 1)).all()


def test_mapping_matches_design():
    y = _labels(1, 1)
    hi = correct(y, 0.8, 0.4, "lc").labels  # p_u > p_g: pos -> p_g/p_u, neg -> 0
    assert hi.tolist() == pytest.approx([0.5, 0.0])
    lo = correct(y, 0.2, 0.6, "lc").labels  # p_u < p_g: pos -> 1, neg -> (p_g-p_u)/(1-p_u)
    assert lo.tolist() == pytest.approx([1.0, 0.5])
    same = correct(y, 0.4, 0.4, "lc").labels
    assert same.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("pu", [0.0, 1.0])
def test_extreme_local_ctr_keeps_classes_apart(pu):
    y = _labels(2, 2)
    t = correct(y, pu, 0.5, "lc")
    assert np.isfinite(t.labels).all()
    assert t.labels[y == 1].min() > t.labels[y == 0].max()


def test_shrinkage_handles_tiny_n():
    assert shrunk_ctr(0, 0, 0.3, 20) == pytest.approx(0.3)  # no events: the global prior
    assert shrunk_ctr(1, 1, 0.3, 20) == pytest.approx((1 + 6) / 21)  # one click is not a CTR of 1
    assert shrunk_ctr(1, 1, 0.3, 0) == 1.0
    assert shrunk_ctr(900, 1000, 0.3, 20) == pytest.approx((900 + 6) / 1020)
    # A single click with shrinkage gives a corrected positive label that is still above the negatives.
    t = correct(np.array([1, 0]), shrunk_ctr(1, 1, 0.3, 20), 0.3, "lc")
    assert t.labels[0] > t.labels[1]


def test_reweight_balances_priors():
    y = _labels(8, 2)
    t = correct(y, 0.8, 0.4, "reweight")
    assert t.labels.tolist() == y.tolist()
    weighted_ctr = (t.weights * y).sum() / t.weights.sum()
    assert weighted_ctr == pytest.approx(0.4, abs=1e-6)


def test_logit_offset_sign():
    assert correct(_labels(1, 1), 0.8, 0.4, "logit").logit_offset > 0
    assert correct(_labels(1, 1), 0.1, 0.4, "logit").logit_offset < 0
    assert correct(_labels(1, 1), 0.4, 0.4, "logit").logit_offset == pytest.approx(0.0)


def test_none_is_identity_and_unknown_is_refused():
    y = _labels(2, 3)
    assert correct(y, 0.9, 0.1, "none").labels.tolist() == y.tolist()
    assert set(METHODS) == {"none", "lc", "reweight", "logit", "lc_evidence", "lc_significant", "lc_bias"}
    with pytest.raises(ValueError, match="unknown correction"):
        correct(y, 0.5, 0.5, "bogus")


# --- the variants of lc ---------------------------------------------------------------------------------------------


def test_lc_evidence_corrects_part_way_and_more_with_more_events():
    from stream_ctr.learning.correction import EVIDENCE_EVENTS

    y = _labels(8, 2)  # p_u 0.8
    for n, strength in ((0, 0.0), (EVIDENCE_EVENTS, 0.5), (9 * EVIDENCE_EVENTS, 0.9)):
        t = correct(y, 0.8, 0.2, "lc_evidence", n=n)
        assert float(t.labels.mean()) == pytest.approx(0.8 + strength * (0.2 - 0.8), abs=1e-6)
        assert t.labels[y > 0.5].min() >= t.labels[y < 0.5].max()


def test_lc_significant_leaves_a_gap_within_sampling_noise_alone():
    y = _labels(6, 4)  # p_u 0.6 against p_g 0.5
    assert correct(y, 0.6, 0.5, "lc_significant", n=10).labels.tolist() == y.tolist()  # 0.1 < 2 x 0.158
    assert correct(y, 0.6, 0.5, "lc_significant", n=1000).labels.tolist() == correct(y, 0.6, 0.5, "lc").labels.tolist()


def test_lc_bias_ranks_like_lc_and_keeps_the_users_own_prior():
    from stream_ctr.learning.heads import UserHead

    rng = np.random.default_rng(0)
    h = rng.normal(size=(400, 4)).astype(np.float32)
    y = (rng.random(400) < 1 / (1 + np.exp(-(1.4 + 2 * h[:, 0])))).astype(np.float32)  # p_u about 0.75
    g = np.zeros(400, np.float32)
    heads = {}
    for method in ("lc", "lc_bias"):
        head = UserHead(4, lr=0.5, l2=0.0, steps=300)
        head.learn_many(g, h, correct(y, float(y.mean()), 0.2, method, n=400))
        heads[method] = head.predict_proba_many(g, h)
    assert abs(heads["lc_bias"].mean() - y.mean()) < 0.05 < abs(heads["lc"].mean() - y.mean())
    from stream_ctr.quality.metrics import auc

    assert auc(y, heads["lc_bias"]) == pytest.approx(auc(y, heads["lc"]), abs=0.01)  # ranks as well
