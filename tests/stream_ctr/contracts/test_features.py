"""The hashing encoder: what each kind of field becomes, and that a batch encodes as its rows do alone."""

import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_ctr.contracts.features import FeatureSpec, HashingEncoder

SPEC = FeatureSpec.parse("genres:multi:3,age:num,gender", buckets=1 << 12)


def _h(token: str) -> int:
    return 1 + zlib.crc32(token.encode()) % ((1 << 12) - 1)


def test_a_multi_field_takes_its_first_tokens_at_equal_weight_then_padding():
    enc = HashingEncoder(SPEC)
    ids, vals = enc.encode(
        [
            ("u", "i", {"genres": " A| B||C|D"}),
            ("u", "i", {"genres": "Drama"}),
            ("u", "i", {"genres": " | "}),
            ("u", "i", {}),
        ]
    )
    cols = slice(2, 5)  # user_id, item_id, then the multi field's 3 slots
    assert ids[0, cols].tolist() == [_h("genres=A"), _h("genres=B"), _h("genres=C")]
    np.testing.assert_allclose(vals[0, cols], [1 / 3] * 3)
    assert ids[1, cols].tolist() == [_h("genres=Drama"), 0, 0] and vals[1, cols].tolist() == [1.0, 0.0, 0.0]
    assert ids[2, cols].tolist() == [0, 0, 0] == ids[3, cols].tolist() and not vals[2:, cols].any()
    assert ids.dtype == np.int64 and vals.dtype == np.float32


def test_features_the_spec_does_not_name_are_counted_and_ignored():
    enc = HashingEncoder(SPEC)
    plain, _ = HashingEncoder(SPEC).encode([("u", "i", {"gender": "F"})])
    ids, _ = enc.encode([("u", "i", {"gender": "F", "colour": "red", "size": 3}), ("u", "i", {"shape": "x"})])
    assert enc.unknown_features == 3 and ids[0].tolist() == plain[0].tolist()


VALUE = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.floats(-1e6, 1e6))
ROW = st.tuples(
    st.text(min_size=1, max_size=4),
    st.text(min_size=1, max_size=4),
    st.dictionaries(st.sampled_from(["genres", "age", "gender", "other"]), VALUE, max_size=4),
)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(ROW, min_size=1, max_size=20))
def test_a_batch_encodes_as_each_row_alone(rows):
    batch_ids, batch_vals = HashingEncoder(SPEC).encode(rows)
    for k, row in enumerate(rows):
        ids, vals = HashingEncoder(SPEC).encode([row])
        assert batch_ids[k].tolist() == ids[0].tolist()
        np.testing.assert_array_equal(batch_vals[k], vals[0])
