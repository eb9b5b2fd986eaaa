"""The scorer's replica of the users changelog: newest record per user, tombstones erase, at most ``capacity``
users (least recently used out), decoded on read, a foreign record scored as a cold user."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_ctr.learning.state import UserState
from stream_ctr.serving.replica import HeadsReplica


def _state(offset: int) -> bytes:
    state = UserState.new(window=8, rep_dim=4, arms=("ft", "ft_lc"))
    state.last_offset = offset
    state.heads["ft"].w[:] = offset / 7.0
    return state.to_bytes()


USERS = st.sampled_from([f"u{n}" for n in range(6)])
#: ("write", user, offset) a changelog record; ("erase", user) a tombstone; ("read", user) a scoring lookup.
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), USERS, st.integers(0, 10_000)),
        st.tuples(st.just("erase"), USERS),
        st.tuples(st.just("read"), USERS),
    ),
    max_size=60,
)


@given(ops=OPS, capacity=st.integers(1, 5))
def test_the_replica_holds_what_an_lru_of_the_newest_records_holds(ops, capacity):
    replica, expected = HeadsReplica(capacity), OrderedDict()
    evicted = 0
    for op in ops:
        user = op[1]
        if op[0] == "write":
            replica.apply(user.encode(), _state(op[2]))
            expected[user] = op[2]
            expected.move_to_end(user)
            while len(expected) > capacity:
                expected.popitem(last=False)
                evicted += 1
        elif op[0] == "erase":
            replica.apply(user.encode(), None)
            expected.pop(user, None)
        else:
            state = replica.get(user)
            assert (state is None) == (user not in expected)
            if state is not None:
                assert state.last_offset == expected[user]
                assert state.heads["ft"].w[0] == pytest.approx(expected[user] / 7.0)
                expected.move_to_end(user)
        assert list(replica) == list(expected) and len(replica) <= capacity
    assert replica.evicted == evicted


def test_a_state_is_decoded_once_and_the_same_object_is_served_until_it_changes():
    replica = HeadsReplica(4)
    replica.apply(b"u1", _state(3))
    first = replica["u1"]
    assert replica["u1"] is first
    replica.apply(b"u1", _state(4))
    assert replica["u1"] is not first and replica["u1"].last_offset == 4


def test_a_foreign_record_is_a_cold_user_and_counted():
    replica = HeadsReplica(4)
    replica.apply(b"u1", b"not a user state")
    assert replica.get("u1") is None and "u1" not in replica
    assert replica.unreadable == 1
    replica.apply(None, _state(1))  # a record without a key names no user
    assert len(replica) == 0


def test_capacity_must_hold_a_user():
    with pytest.raises(ValueError, match="capacity"):
        HeadsReplica(0)
