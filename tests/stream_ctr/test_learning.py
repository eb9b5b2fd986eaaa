import numpy as np
import pytest

from stream_ctr import learning
from stream_ctr.arms import ARMS
from stream_ctr.heads import HeadParams
from stream_ctr.state import UserState


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
    # A user seen for the first time is scored by untouched heads, i.e. exactly the global model.
    for arm in ARMS:
        np.testing.assert_allclose(preds[arm], preds["global"], rtol=1e-6)
    counts = {u: sum(1 for e in events[:300] if e.user_id == u) for u in set(users)}
    assert {u: s.ctr.n for u, s in states.items()} == counts
    assert labels.sum() == sum(e.label for e in events[:300])
    # After learning, the fine-tuned heads disagree with the global model on the next batch.
    nxt = learning.test_then_train([(e, 300 + i) for i, e in enumerate(events[300:600])], model, states, HeadParams())
    _, _, p2 = nxt.arrays()
    assert not np.allclose(p2["ft"], p2["global"])
    assert not np.allclose(p2["ft"], p2["ft_lc"])


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
