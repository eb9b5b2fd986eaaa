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


def test_forgetting_a_user_drops_its_rows_and_keeps_the_others_in_time_order():
    ring = ScoreRows(("s",), capacity=5)
    for n in range(7):  # rows 2..6 held, the ring wrapped: storage order 5, 6, 2, 3, 4
        ring.append(user=n % 3, label=n % 2, scores=(n / 10,))
    assert ring.forget(user=2) == 2  # rows 2 and 5
    users, labels, scores = ring.view()
    assert users.tolist() == [0, 1, 0] and [round(x, 1) for x in scores["s"].tolist()] == [0.3, 0.4, 0.6]
    ring.append(user=9, label=1, scores=(0.9,))  # the newest row goes after them
    assert ring.view()[0].tolist() == [0, 1, 0, 9]
    assert ring.forget(user=7) == 0
    appended = ScoreRows(("s",), capacity=5, ring=False)
    appended.add(np.array([1, 2, 1]), np.zeros(3, np.float32), {"s": np.zeros(3, np.float32)})
    assert appended.forget(user=1) == 2 and appended.view()[0].tolist() == [2]
