import numpy as np
import pytest

from stream_ctr.learning.rolling import UserCTR


@pytest.mark.parametrize("window", [1, 7, 64, 100])
def test_window_matches_naive_rolling_mean(window):
    rng = np.random.default_rng(window)
    labels = (rng.random(300) < 0.3).astype(int)
    ctr = UserCTR(window)
    for i, y in enumerate(labels):
        ctr.update(y)
        recent = labels[max(0, i + 1 - window) : i + 1]
        assert ctr.window_ctr == pytest.approx(recent.mean())
        assert ctr.window_labels == recent.tolist()
    assert (ctr.n, ctr.clicks) == (300, labels.sum())
    assert ctr.lifetime_ctr == pytest.approx(labels.mean())


def test_roundtrip_is_exact_and_compact():
    ctr = UserCTR(100)
    for y in [1, 0, 0, 1, 1] * 50:
        ctr.update(y)
    data = ctr.to_bytes()
    assert len(data) == 10 + 13  # header + 100 bits
    back = UserCTR.from_bytes(data, 100)
    assert (back.n, back.clicks, back.window_labels, back.window_ctr) == (
        ctr.n,
        ctr.clicks,
        ctr.window_labels,
        pytest.approx(ctr.window_ctr),
    )
    back.update(0)  # keeps rolling after a restore
    assert back.window_n == 100


def test_estimate_is_shrunk_toward_global():
    ctr = UserCTR(50)
    assert ctr.estimate(0.4, 20) == pytest.approx(0.4)
    for _ in range(5):
        ctr.update(1)
    assert 0.4 < ctr.estimate(0.4, 20) < 1.0
    assert ctr.estimate(0.4, 0) == 1.0


@pytest.mark.parametrize("window,chunks", [(7, [3, 1, 9, 2]), (100, [1, 150, 40]), (64, [64, 65, 1])])
def test_update_many_equals_one_at_a_time(window, chunks):
    rng = np.random.default_rng(window)
    one, many = UserCTR(window), UserCTR(window)
    for m in chunks:
        labels = (rng.random(m) < 0.4).astype(np.float32)
        for y in labels:
            one.update(int(y))
        many.update_many(labels)
        assert (many.n, many.clicks, many.window_labels) == (one.n, one.clicks, one.window_labels)
