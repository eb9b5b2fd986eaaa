"""``stream_ctr.monitoring.freshness.Staleness``: events behind the model in use, per scored event and request."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_ctr.monitoring.freshness import SAMPLE_BUCKETS, Staleness


def test_events_count_what_was_read_and_not_learned_on_every_partition():
    s = Staleness(2)
    samples, seconds = s.events({0: 5, 1: 0}, 100.0, [0, 0, 1, 0], [5, 6, 0, 7], [101, 102, 103, 104])
    # p0 at 5: nothing unlearned; at 6: one on p0, scaled by 2/1 while only p0 was read; then p0 2 + p1 0; 2 + 1.
    assert samples.tolist() == [0, 2, 2, 3] and seconds.tolist() == [1, 2, 3, 4]
    assert (s.scored, s.ahead) == (4, 0)
    s.events({0: 10, 1: 0}, 100.0, [0], [8], [105])  # the model learned offset 8 already: ahead, staleness 0
    assert (s.scored, s.ahead) == (5, 1)
    assert s.request({0: 5, 1: 0}, 100.0) == (5, 5.0)  # read up to 9 on p0 and 1 on p1
    assert s.request({0: 9, 1: 1}, 105.0) == (0, 0.0)  # a model that learned everything read is fresh
    s.keep({1})
    assert s.request({0: 5, 1: 0}, 100.0) == (2, 5.0)  # p0 moved away: p1's 1 scaled to both partitions


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=60), st.integers(0, 60))
def test_one_partition_is_offset_minus_trained(gaps, trained):
    offsets = np.cumsum(gaps)
    s = Staleness(1)
    samples, _ = s.events({0: trained}, 0.0, [0] * len(offsets), offsets, [1.0] * len(offsets))
    assert samples.tolist() == np.maximum(offsets - trained, 0).tolist()


def test_seconds_are_undefined_before_the_model_learned_anything():
    s = Staleness(1)
    _, seconds = s.events({}, 0.0, [0], [0], [5.0])
    assert np.isnan(seconds).all() and np.isnan(s.request({}, 0.0)[1])


def test_quantiles_are_exact_and_the_histogram_agrees():
    s = Staleness(1)
    s.events({0: 0}, 1.0, [0] * 1000, np.arange(1000), np.full(1000, 2.0))  # stalenesses 0..999
    assert (s.quantile(0.5), s.quantile(0.99)) == (499.0, 989.0)
    assert s.quantiles() == {"p50": 499.0, "p90": 899.0, "p99": 989.0} and s.counted() == 1000
    assert s.quantiles("request") == {"p50": None, "p90": None, "p99": None} and s.counted("request") == 0
    samples = next(iter(s.collect()))
    buckets = {
        x.labels["le"]: x.value for x in samples.samples if x.name.endswith("_bucket") and x.labels["scored"] == "event"
    }
    assert buckets[str(SAMPLE_BUCKETS[3])] == 101 and buckets["+Inf"] == 1000  # le 100: 0..100


def test_records_passed_move_the_read_position_and_gate_newer_models():
    s = Staleness(2)
    s.passed([0, 0, 1], [3, 7, 2])  # dead-lettered records count as read too
    assert s.read.tolist() == [8, 3]
    assert s.covers({0: 8, 1: 3}) and not s.covers({0: 9, 1: 0})
    assert Staleness(2).covers({0: 100})  # partitions never read hold nothing back


def test_a_request_counts_the_events_written_and_not_yet_read():
    s = Staleness(2)
    s.events({0: 5, 1: 0}, 100.0, [0, 1], [9, 0], [101, 102])  # read up to 9 on p0 and 0 on p1
    assert s.request({0: 5, 1: 0}, 100.0)[0] == 5 + 1
    s.stream_ends({0: 14, 1: 1})  # 4 more on p0 written and unread; p1 read to its end
    assert s.request({0: 5, 1: 0}, 100.0)[0] == 9 + 1
    s.stream_ends({0: 12, 7: 3})  # an older answer moves nothing back; an unknown partition is ignored
    assert s.request({0: 5, 1: 0}, 100.0)[0] == 9 + 1
    s.passed([0], [20])  # read past the last end read: the read position counts
    assert s.request({0: 5, 1: 0}, 100.0)[0] == 16 + 1
    assert s.covers({0: 21}) and not s.covers({0: 22})  # the model gate stays on what was read
