import numpy as np
import pytest

from stream_ctr.contracts.arms import ARMS
from stream_ctr.learning import loop as learning
from stream_ctr.learning.heads import HeadParams
from stream_ctr.learning.state import UserState


@pytest.fixture(scope="module")
def model_and_events(make_events, make_snapshot):
    events = make_events(users=40, events_per_user=50, seed=2).events
    return make_snapshot(train_on=events[:1000]).build(), events


def test_scores_before_learning_and_counts_exactly(model_and_events):
    model, events = model_and_events
    states = {}
    batch = [(e, i) for i, e in enumerate(events[:300])]
    result = learning.test_then_train(batch, model, states, HeadParams())
    users, labels, preds = result.arrays()
    assert result.applied == 300 and result.duplicates == 0
    # A user's first event is scored by untouched heads, i.e. exactly the global model; the user's later events in
    # the batch by heads that have learned the earlier ones.
    first = np.array([e is next(x for x in result.events if x.user_id == e.user_id) for e in result.events])
    for arm in ("ft", "ft_lc"):
        np.testing.assert_allclose(preds[arm][first], preds["global"][first], rtol=1e-6)
        assert not np.allclose(preds[arm][~first], preds["global"][~first])
    counts = {u: sum(1 for e in events[:300] if e.user_id == u) for u in set(users)}
    assert {u: s.ctr.n for u, s in states.items()} == counts
    assert labels.sum() == sum(e.label for e in events[:300])
    # After learning, the fine-tuned heads disagree with the global model on the next batch.
    nxt = learning.test_then_train([(e, 300 + i) for i, e in enumerate(events[300:600])], model, states, HeadParams())
    _, _, p2 = nxt.arrays()
    assert not np.allclose(p2["ft"], p2["global"])
    assert not np.allclose(p2["ft"], p2["ft_lc"])


def test_a_batch_scores_and_learns_as_its_events_one_at_a_time(model_and_events):
    """Within a batch each user's events are sequential (scored after the user's earlier ones were learned), while
    users are batched: the same predictions and the same states as feeding the events one by one."""
    model, events = model_and_events
    records = [(e, i) for i, e in enumerate(events[:400])]
    together, alone = {}, {}
    batched = learning.test_then_train(records, model, together, HeadParams())
    one = [learning.test_then_train([r], model, alone, HeadParams()) for r in records]
    order = {id(e): i for i, e in enumerate(batched.events)}  # the batch groups its events by user
    _, _, preds = batched.arrays()
    for arm in ARMS:
        got = np.array([preds[arm][order[id(e)]] for e, _ in records])
        want = np.concatenate([r.arrays()[2][arm] for r in one])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert batched.label_shift == pytest.approx(sum(r.label_shift for r in one), rel=1e-5)
    for uid, state in together.items():
        np.testing.assert_allclose(state.heads["ft_lc"].w, alone[uid].heads["ft_lc"].w, rtol=1e-4, atol=1e-6)
        mine, theirs = state.summary(), alone[uid].summary()
        mine.pop("drifting_since"), theirs.pop("drifting_since")  # judged once a batch, at its last event
        assert mine.pop("head_norm") == pytest.approx(theirs.pop("head_norm"), rel=1e-5) and mine == theirs


def test_redelivered_events_are_not_learned_twice(model_and_events):
    model, events = model_and_events
    states = {}
    batch = [(e, i) for i, e in enumerate(events[:200])]
    learning.test_then_train(batch, model, states, HeadParams())
    before = {u: s.to_bytes() for u, s in states.items()}
    again = learning.test_then_train(batch, model, states, HeadParams())
    assert again.applied == 0 and again.duplicates == 200
    assert {u: s.to_bytes() for u, s in states.items()} == before


def test_state_codec_and_reanchor_keep_the_head(model_and_events):
    model, events = model_and_events
    states = {}
    learning.test_then_train([(e, i) for i, e in enumerate(events[:400])], model, states, HeadParams())
    uid, state = next(iter(states.items()))
    back = UserState.from_bytes(state.to_bytes())
    assert back.summary() == state.summary()
    w = back.heads["ft_lc"].w.copy()
    back.reanchor(model.version + 1, model.rep_dim)
    np.testing.assert_array_equal(back.heads["ft_lc"].w, w)
    assert (back.anchor_version, back.reanchors) == (model.version + 1, 1)
    back.reanchor(model.version + 2, model.rep_dim + 1)  # a different width cannot be kept
    assert len(back.heads["ft"].w) == model.rep_dim + 1
