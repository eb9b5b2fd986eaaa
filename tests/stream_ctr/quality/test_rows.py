"""ScoreRows: the one ring (and append store) of scored rows behind every windowed gAUC."""

import numpy as np
import pytest

from stream_ctr.quality.rows import ScoreRows


def _rows(store: ScoreRows) -> list[tuple]:
    users, labels, scores = store.view()
    return sorted(zip(users.tolist(), labels.tolist(), scores["a"].tolist(), scores["b"].tolist()))


@pytest.mark.parametrize("capacity", [1, 7, 50])
def test_a_ring_holds_the_newest_rows_whether_they_come_one_by_one_or_in_batches(capacity):
    rng = np.random.default_rng(capacity)
    n = 123
    users = np.arange(n, dtype=np.int64)
    labels = (rng.random(n) < 0.5).astype(np.float32)
    a, b = rng.random(n).astype(np.float32), rng.random(n).astype(np.float32)
    single, batched = ScoreRows(("a", "b"), capacity), ScoreRows(("a", "b"), capacity)
    for i in range(n):
        single.append(int(users[i]), float(labels[i]), (float(a[i]), float(b[i])))
    for lo, hi in ((0, 3), (3, 3), (3, 60), (60, 61), (61, n)):  # batches smaller and larger than the ring
        batched.add(users[lo:hi], labels[lo:hi], {"a": a[lo:hi], "b": b[lo:hi]})
    newest = sorted(zip(users.tolist(), labels.tolist(), a.tolist(), b.tolist()))[-capacity:]
    assert single.size == batched.size == capacity
    assert _rows(single) == _rows(batched) == newest
    later = np.array([1000, 1001], dtype=np.int64)  # user keys grow with time, so sorted rows are in time order
    single.add(later, labels[:2], {"a": a[:2], "b": b[:2]})  # a batch after single rows goes on with the ring
    added = list(zip(later.tolist(), labels[:2].tolist(), a[:2].tolist(), b[:2].tolist()))
    assert _rows(single) == (newest + added)[-capacity:]


def test_appended_rows_stop_at_capacity_and_keep_thins_them_in_place():
    store = ScoreRows(("a", "b"), capacity=4, ring=False)
    for i in range(6):
        store.append(i, i % 2, (i / 10, -i / 10))
    assert [r[0] for r in _rows(store)] == [0, 1, 2, 3]  # rows 4 and 5 dropped
    store.keep(store.view()[0] % 2 == 0)
    assert [r[0] for r in _rows(store)] == [0, 2] and store.size == 2
    store.add(np.array([8, 9, 10], dtype=np.int64), np.zeros(3, np.float32), {"a": np.ones(3), "b": np.ones(3)})
    assert [r[0] for r in _rows(store)] == [0, 2, 8, 9]  # appending goes on after the kept rows, up to capacity
    with pytest.raises(ValueError):
        ScoreRows(("a",), 3).keep(np.ones(0, bool))
